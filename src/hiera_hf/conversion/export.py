"""Convert a Hiera or SAM 2 checkpoint into a hiera-hf folder: weights, config, preprocessing, model card, parity.

`convert_hiera` and `convert_sam2` are what `hiera-hf convert` and `conversion_scripts/convert_to_hf.py` run.
Both share the folder writing (atomic, `io_utils.staged_folder`: into a hidden folder beside the output, renamed at
the end, removed on any failure; `overwrite` replaces only a model folder and never one holding the input), the
model-card filling and the upload.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from string import Template

import torch
from huggingface_hub import create_repo, upload_folder
from safetensors import SafetensorError
from tqdm.auto import tqdm
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..checkpoints import checkpoint_url, download_checkpoint
from ..hiera import HieraConfig, add_remote_code
from ..hiera.presets import HieraPreset, get_preset
from ..io_utils import check_replaceable, staged_folder
from ..labels import label_fields
from ..progress import library_output
from ..sam2 import Sam2Config, Sam2Model
from ..sam2.modeling_sam2 import VIDEO_ONLY_KEYS
from ..sam2.modeling_sam2_video import Sam2VideoModel
from ..sam2.presets import Sam2Preset, get_sam2_preset
from .hiera import (
    build_model,
    config_from_transformers,
    convert_meta_hiera_state_dict,
    convert_transformers_hiera_state_dict,
    load_meta_state_dict,
    load_transformers_folder,
    model_class_for,
)
from .sam2 import convert_meta_sam2_state_dict, convert_transformers_sam2_state_dict, sam2_config_from_transformers
from .verify import (
    ParityReport,
    verify_against_meta,
    verify_against_transformers,
    verify_sam2_against_meta,
    verify_sam2_against_transformers,
)

logger = logging.getLogger(__name__)

META_HIERA_REPO = "https://github.com/facebookresearch/hiera"
META_SAM2_REPO = "https://github.com/facebookresearch/sam2"
_TRANSFORMERS_ARCHITECTURES = ("HieraModel", "HieraForImageClassification", "HieraForPreTraining")


def convert_hiera(
    output: str | Path,
    variant: str | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_name: str | None = None,
    from_transformers: str | Path | None = None,
    verify: bool = True,
    push_to_hub: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert one Hiera checkpoint to the folder `output` and return its path.

    Args:
        output: folder to create (`config.json`, `model.safetensors`, `preprocessor_config.json`, `README.md`).
        variant: official variant name (`hiera_base_224`, `mae_hiera_base_16x224`, ...; see `HIERA_PRESETS`).
            Required for Meta checkpoints; optional with `from_transformers` (it then only names the base variant
            and the preprocessing in the card).
        checkpoint: Meta's `.pth` (`{"model_state": ...}`). When neither `checkpoint` nor `from_transformers` is
            given, the variant's official checkpoint is downloaded into the cache (see `hiera_hf.checkpoints`).
        checkpoint_name: which of the variant's official checkpoints (`mae_in1k_ft_in1k`, `mae_in1k`, ...).
        from_transformers: a transformers-format Hiera folder (`facebook/hiera-*-hf` layout) instead of a `.pth`.
        verify: compare with the reference code (Meta's `hiera` when installed; transformers' Hiera for
            `from_transformers`) and fail, writing nothing, if any output differs by more than 1e-4.
        push_to_hub: upload the folder to this Hub repo (created if needed) after writing it.
        overwrite: replace an existing `output` folder.
        progress: show progress bars.
    """
    output = Path(output)
    _check_sources(variant, checkpoint, from_transformers, "hiera_base_224")
    preset = get_preset(variant) if variant is not None else None
    if checkpoint_name is not None and preset is not None:
        checkpoint_url(preset, checkpoint_name)  # validates the name
    _check_output(output, overwrite, checkpoint, from_transformers)
    if preset is not None and checkpoint is None and from_transformers is None:
        checkpoint_name = checkpoint_name or preset.default_checkpoint
        checkpoint = _download(preset.name, checkpoint_name, progress)

    steps = tqdm(total=3, desc="convert", disable=not progress)
    if from_transformers is not None:
        model, card, report = _from_transformers(Path(from_transformers), verify, steps)
    else:
        model, card, report = _from_meta(Path(checkpoint), preset, checkpoint_name, verify, steps)
    steps.set_postfix_str("writing")
    mean, std = (preset.mean, preset.std) if preset else (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    files = {
        "preprocessor_config.json": json.dumps(preprocessor_config(model.config, mean, std), indent=2) + "\n",
        "README.md": model_card(model, preset, card, report),
    }
    _write_folder(output, model, files, overwrite, add_remote_code, (checkpoint, from_transformers))
    steps.update()
    steps.close()
    _push(output, push_to_hub, "Hiera")
    return output


def _download(variant: str, checkpoint_name: str | None, progress: bool) -> Path:
    """`download_checkpoint`, its offline message also naming `convert`'s own way: the file as `--checkpoint`."""
    try:
        return download_checkpoint(variant, checkpoint_name, progress=progress)
    except ConnectionError as error:
        raise ConnectionError(f"{error} Or pass --checkpoint FILE with the downloaded file.") from error


def _check_sources(variant: str | None, checkpoint, from_transformers, example: str) -> None:
    if checkpoint is not None and from_transformers is not None:
        raise ValueError("Pass either checkpoint (Meta's file) or from_transformers (a folder), not both")
    if variant is None and from_transformers is None:
        raise ValueError(f"variant is required to convert a Meta checkpoint (e.g. {example})")


# What `save_pretrained`, the converters and `add_remote_code` put in a folder: `overwrite` replaces only these.
_MODEL_FOLDER_FILES = re.compile(
    r"(config\.json|preprocessor_config\.json|video_preprocessor_config\.json|README\.md|generation_config\.json"
    r"|model(-\d+-of-\d+)?\.safetensors|model\.safetensors\.index\.json|[a-z_]+\.py)"
)


def is_model_folder(folder: Path) -> bool:
    """Whether `folder` looks like a hiera-hf model folder: a `config.json` of one of our model types and no
    file a conversion would not write (so replacing it loses nothing else)."""
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return False
    if model_type not in (HieraConfig.model_type, Sam2Config.model_type):
        return False
    return all(entry.is_file() and _MODEL_FOLDER_FILES.fullmatch(entry.name) for entry in folder.iterdir())


def _check_output(output: Path, overwrite: bool, *inputs) -> None:
    """Refuses an output that exists without `overwrite`, that is not a model folder, or that holds an input."""
    check_replaceable(output, overwrite, is_model_folder, inputs)


def _from_meta(
    checkpoint: Path, preset: HieraPreset, checkpoint_name: str | None, verify: bool, steps: tqdm
) -> tuple[torch.nn.Module, dict, ParityReport | None]:
    steps.set_postfix_str("loading")
    meta_state_dict = load_meta_state_dict(checkpoint)
    try:
        state_dict = convert_meta_hiera_state_dict(meta_state_dict)
    except KeyError as error:
        raise ValueError(f"{checkpoint}: {error.args[0]}") from None
    new_head = not preset.is_mae and "classifier.weight" not in state_dict
    # A trained head gets its dataset's class names; a new one (an MAE trunk checkpoint) keeps LABEL_i.
    names = {} if preset.is_mae or new_head else label_fields(preset.dataset)
    config = HieraConfig.from_preset(preset.name, **names)
    model, notes = build_model(model_class_for(config), config, state_dict, allow_new_head=not preset.is_mae)
    for note in notes:
        logger.warning(note)
    steps.update()
    report = None
    if verify and find_spec("hiera") is not None:
        steps.set_postfix_str("verifying")
        report = verify_against_meta(model, preset, meta_state_dict, new_head=new_head)
        report.check()
    elif verify:
        logger.warning("hiera-transformer is not installed: the conversion is not verified against Meta's code")
    steps.update()
    name = checkpoint_name or _official_name(preset, checkpoint)
    card = {"checkpoint": name, "source_url": preset.checkpoints.get(name, META_HIERA_REPO), "notes": notes}
    return model, card, report


def _from_transformers(
    folder: Path, verify: bool, steps: tqdm
) -> tuple[torch.nn.Module, dict, ParityReport | None]:
    steps.set_postfix_str("loading")
    config_dict, transformers_state_dict = load_transformers_folder(folder)
    architecture = (config_dict.get("architectures") or ["HieraModel"])[0]
    if architecture not in _TRANSFORMERS_ARCHITECTURES:
        raise ValueError(
            f"{folder}: cannot convert a transformers {architecture}; supported: {', '.join(_TRANSFORMERS_ARCHITECTURES)}"
        )
    config = config_from_transformers(config_dict)
    try:
        state_dict = convert_transformers_hiera_state_dict(transformers_state_dict, config.depths)
    except KeyError as error:
        raise ValueError(f"{folder}: {error.args[0]}") from None
    model, _ = build_model(model_class_for(config, architecture), config, state_dict)
    steps.update()
    report = None
    if verify:
        steps.set_postfix_str("verifying")
        report = verify_against_transformers(model, folder, architecture)
        report.check()
    steps.update()
    card = {"checkpoint": f"transformers {architecture} ({folder.name})", "source_url": META_HIERA_REPO, "notes": []}
    return model, card, report


def _official_name(preset: HieraPreset, checkpoint: Path) -> str:
    """The official checkpoint name whose download file is `checkpoint`'s name, else a description."""
    for name, url in preset.checkpoints.items():
        if url.rsplit("/", 1)[-1] == checkpoint.name:
            return name
    return f"custom checkpoint ({checkpoint.name})"


def preprocessor_config(config: HieraConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> dict:
    """Meta's evaluation preprocessing: images are resized (bicubic) so that the shorter side is 256/224 of the
    model's size, then center-cropped; videos are 16 frames (stride 4) resized to the model's size. Both are
    scaled to [0, 1] and normalised with the dataset's mean and std."""
    common = {
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": mean,
        "image_std": std,
    }
    height, width = config.image_size[-2:]
    if config.is_video:
        return {
            "video_processor_type": "HieraVideoProcessor",
            "num_frames": config.image_size[0],
            "frame_stride": 4,
            "do_resize": True,
            "size": {"height": height, "width": width},
            **common,
        }
    return {
        "image_processor_type": "HieraImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": int(256 / 224 * min(height, width))},
        "resample": 3,  # PIL bicubic
        "do_center_crop": True,
        "crop_size": {"height": height, "width": width},
        **common,
    }


def model_card(model: torch.nn.Module, preset: HieraPreset | None, card: dict, report: ParityReport | None) -> str:
    """The README of a converted folder, from the `model_cards/hiera.md` template."""
    config = model.config
    is_mae = config.decoder_hidden_size is not None
    if is_mae:
        pipeline_tag = "feature-extraction" if config.is_video else "image-feature-extraction"
    else:
        pipeline_tag = "video-classification" if config.is_video else "image-classification"
    tags = ["hiera", "hiera-hf", "vision", "video" if config.is_video else "image", "mae" if is_mae else pipeline_tag]
    return _fill_card(
        "hiera.md",
        card,
        _parity_section(report, "the same random input", "hiera-transformer", config.image_size),
        license=preset.license if preset else "cc-by-nc-4.0",
        pipeline_tag=pipeline_tag,
        tags="\n".join(f"- {tag}" for tag in tags),
        dataset=preset.dataset if preset else "imagenet-1k",
        variant=preset.name if preset else "unknown (converted from a transformers folder)",
        model_class=type(model).__name__,
    )


def _parity_section(report: ParityReport | None, inputs: str, package: str, size: tuple[int, ...]) -> str:
    if report is None:
        return f"Not verified during conversion (skipped, or the reference package `{package}` was missing)."
    return (
        f"Measured during conversion against {report.reference}, {inputs} (seed 0, batch 1, "
        f"{'x'.join(map(str, size))}), float32:\n\n{report.to_markdown()}"
    )


def _fill_card(template: str, card: dict, parity: str, **fields: str) -> str:
    """A model card from `model_cards/<template>`: the conversion's `card` (checkpoint, source_url, notes), the
    parity section and the template's other `fields`."""
    notes = "".join(f"\n> **Note:** {note}\n" for note in card["notes"])
    text = (resources.files("hiera_hf") / "model_cards" / template).read_text()
    return Template(text).substitute(
        checkpoint=card["checkpoint"], source_url=card["source_url"], notes=notes, parity=parity, **fields
    )


def _push(output: Path, repo: str | None, what: str) -> None:
    """Upload the written folder to the Hub repo `repo` (created if needed); nothing when `repo` is None."""
    if repo:
        create_repo(repo, exist_ok=True)
        upload_folder(repo_id=repo, folder_path=str(output), commit_message=f"Upload {what} converted by hiera-hf")


def _write_folder(
    output: Path,
    model: torch.nn.Module,
    files: dict[str, str],
    overwrite: bool,
    finish: Callable[[Path], object] | None = None,
    inputs: tuple = (),
) -> None:
    """Write `model.save_pretrained` plus the text `files` (name -> content), then `finish(folder)`, as the folder
    `output` in one rename (`io_utils.staged_folder`: an existing model folder is replaced only when `overwrite`,
    a folder holding one of `inputs` never)."""
    with staged_folder(output, overwrite, is_model_folder, inputs) as staging:
        with library_output(bars=False):  # transformers' "Writing model shards" bar inside our step bar
            try:
                model.save_pretrained(staging)
            except SafetensorError as error:  # how safetensors reports a failed write (a full disk, ...)
                raise OSError(f"Cannot write {output / 'model.safetensors'}: {error}") from None
        for name, content in files.items():
            (staging / name).write_text(content)
        if finish is not None:
            finish(staging)


# ---------------------------------------------------------------------------------------------------------------
# SAM 2
# ---------------------------------------------------------------------------------------------------------------


def convert_sam2(
    output: str | Path,
    variant: str | None = None,
    checkpoint: str | Path | None = None,
    from_transformers: str | Path | None = None,
    verify: bool = True,
    push_to_hub: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert one SAM 2 / 2.1 checkpoint to the folder `output` and return its path.

    The folder holds every weight of the checkpoint (image model and video model), so `Sam2Model`,
    `Sam2HieraBackbone` and `Sam2VideoModel` all load it.

    Args:
        output: folder to create (`config.json`, `model.safetensors`, `preprocessor_config.json`, `README.md`).
        variant: official variant name (`sam2_hiera_tiny` ... `sam2.1_hiera_large`; see `SAM2_PRESETS`). Required
            for Meta checkpoints; optional with `from_transformers` (it then only names the variant in the card).
        checkpoint: Meta's `.pt` (`{"model": ...}`). When neither `checkpoint` nor `from_transformers` is given, the
            variant's official checkpoint is downloaded into the cache (see `hiera_hf.checkpoints`).
        from_transformers: a transformers-format SAM 2 folder (`facebook/sam2*-hiera-*` layout: `Sam2Model` or
            `Sam2VideoModel` saved with `save_pretrained`) instead of a `.pt`.
        verify: compare with the reference code (Meta's `sam2` when installed; transformers' `Sam2Model` for
            `from_transformers`) and fail, writing nothing, if any output differs by more than 1e-4 (mask logits:
            relative to their largest magnitude).
        push_to_hub: upload the folder to this Hub repo (created if needed) after writing it.
        overwrite: replace an existing `output` folder.
        progress: show progress bars.
    """
    output = Path(output)
    _check_sources(variant, checkpoint, from_transformers, "sam2.1_hiera_tiny")
    preset = get_sam2_preset(variant) if variant is not None else None
    _check_output(output, overwrite, checkpoint, from_transformers)
    if preset is not None and checkpoint is None and from_transformers is None:
        checkpoint = _download(preset.name, None, progress)

    steps = tqdm(total=3, desc="convert", disable=not progress)
    steps.set_postfix_str("loading")
    if from_transformers is not None:
        folder = Path(from_transformers)
        config_dict, source_state_dict = load_transformers_folder(folder)
        config = sam2_config_from_transformers(config_dict)
        source, convert = folder, convert_transformers_sam2_state_dict
        card = {
            "checkpoint": f"transformers {config_dict['model_type']} ({folder.name})",
            "source_url": META_SAM2_REPO,
        }
    else:
        source_state_dict = load_meta_state_dict(checkpoint, entry="model")
        config = Sam2Config.from_preset(preset.name)
        source, convert = Path(checkpoint), convert_meta_sam2_state_dict
        official = preset.checkpoint.rsplit("/", 1)[-1] == source.name
        card = {"checkpoint": source.name, "source_url": preset.checkpoint if official else META_SAM2_REPO}
    try:  # `source_state_dict`: the weights as read, in Meta's or transformers' layout
        state_dict = convert(source_state_dict)
    except KeyError as error:
        raise ValueError(f"{source}: {error.args[0]}") from None
    image_weights = {k: v for k, v in state_dict.items() if not any(re.match(p, k) for p in VIDEO_ONLY_KEYS)}
    has_video = len(image_weights) < len(state_dict)
    model, _ = build_model(Sam2VideoModel if has_video else Sam2Model, config, state_dict)
    card["notes"] = (
        [] if has_video else ["The checkpoint holds the image model only: `Sam2VideoModel` cannot load it."]
    )
    steps.update()
    report = None
    if verify and (from_transformers is not None or find_spec("sam2") is not None):
        steps.set_postfix_str("verifying")
        image_model, _ = build_model(Sam2Model, config, image_weights)  # shares the tensors of `model`
        if from_transformers is not None:
            report = verify_sam2_against_transformers(image_model, from_transformers)
        else:
            report = verify_sam2_against_meta(image_model, preset, source_state_dict)
        report.check()
    elif verify:
        logger.warning("sam2 is not installed: the conversion is not verified against Meta's code")
    steps.update()
    steps.set_postfix_str("writing")
    files = {
        "preprocessor_config.json": json.dumps(sam2_preprocessor_config(config), indent=2) + "\n",
        "README.md": sam2_model_card(model, preset, card, report),
    }
    _write_folder(output, model, files, overwrite, inputs=(checkpoint, from_transformers))
    steps.update()
    steps.close()
    _push(output, push_to_hub, "SAM 2")
    return output


def sam2_preprocessor_config(config: Sam2Config) -> dict:
    """Meta's SAM 2 preprocessing for `Sam2ImageProcessor`: stretch to `image_size` x `image_size` (no aspect
    preservation, no padding), scale to [0, 1], normalise with ImageNet mean/std."""
    return {
        "image_processor_type": "HieraHfSam2ImageProcessor",  # not transformers' own class name (see that class)
        "do_resize": True,
        "size": {"height": config.image_size, "width": config.image_size},
        "resample": 2,  # bilinear
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": IMAGENET_DEFAULT_MEAN,
        "image_std": IMAGENET_DEFAULT_STD,
    }


def sam2_model_card(model: torch.nn.Module, preset: Sam2Preset | None, card: dict, report: ParityReport | None) -> str:
    """The README of a converted SAM 2 folder, from the `model_cards/sam2.md` template."""
    return _fill_card(
        "sam2.md",
        card,
        _parity_section(report, "the same random image and prompts", "sam2", (model.config.image_size,) * 2),
        license=preset.license if preset else "apache-2.0",
        variant=preset.name if preset else "unknown (converted from a transformers folder)",
        hub_id=preset.hub_id if preset else "facebook/sam2.1-hiera-*",
    )


__all__ = [
    "convert_hiera",
    "convert_sam2",
    "model_card",
    "preprocessor_config",
    "sam2_model_card",
    "sam2_preprocessor_config",
]
