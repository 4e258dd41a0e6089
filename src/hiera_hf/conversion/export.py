"""Convert a Hiera checkpoint into a hiera-hf folder: weights, config, preprocessing, model card, parity check.

`convert_hiera` is what `hiera-hf convert` and `conversion_scripts/convert_hiera_to_hf.py` run. The folder is
written atomically: into a temporary folder beside the output, renamed at the end, removed on any failure.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from string import Template

import torch
from huggingface_hub import create_repo, upload_folder
from tqdm.auto import tqdm

from ..hiera import HieraConfig
from ..hiera.presets import IMAGENET_MEAN, IMAGENET_STD, HieraPreset
from ..hub import checkpoint_url, download_checkpoint, official_preset
from .hiera import (
    build_model,
    config_from_transformers,
    convert_meta_hiera_state_dict,
    convert_transformers_hiera_state_dict,
    load_meta_state_dict,
    load_transformers_folder,
    model_class_for,
)
from .verify import ParityReport, verify_against_meta, verify_against_transformers

logger = logging.getLogger(__name__)

META_HIERA_REPO = "https://github.com/facebookresearch/hiera"
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
            given, the variant's official checkpoint is downloaded into the cache (see `hiera_hf.hub`).
        checkpoint_name: which of the variant's official checkpoints (`mae_in1k_ft_in1k`, `mae_in1k`, ...).
        from_transformers: a transformers-format Hiera folder (`facebook/hiera-*-hf` layout) instead of a `.pth`.
        verify: compare with the reference code (Meta's `hiera` when installed; transformers' Hiera for
            `from_transformers`) and fail, writing nothing, if any output differs by more than 1e-4.
        push_to_hub: upload the folder to this Hub repo (created if needed) after writing it.
        overwrite: replace an existing `output` folder.
        progress: show progress bars.
    """
    output = Path(output)
    if checkpoint is not None and from_transformers is not None:
        raise ValueError("Pass either checkpoint (a Meta .pth) or from_transformers (a folder), not both")
    if variant is None and from_transformers is None:
        raise ValueError("variant is required to convert a Meta checkpoint (e.g. hiera_base_224)")
    preset = official_preset(variant) if variant is not None else None
    if checkpoint_name is not None and preset is not None:
        checkpoint_url(preset, checkpoint_name)  # validates the name
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; choose another output folder or pass overwrite")
    if preset is not None and checkpoint is None and from_transformers is None:
        checkpoint_name = checkpoint_name or preset.default_checkpoint
        checkpoint = download_checkpoint(preset.name, checkpoint_name, progress=progress)

    steps = tqdm(total=3, desc="convert", disable=not progress)
    if from_transformers is not None:
        model, card, report = _from_transformers(Path(from_transformers), preset, verify, steps)
    else:
        model, card, report = _from_meta(Path(checkpoint), preset, checkpoint_name, verify, steps)
    steps.set_postfix_str("writing")
    _write_folder(output, model, preset, card, report, overwrite)
    steps.update()
    steps.close()
    if push_to_hub:
        create_repo(push_to_hub, exist_ok=True)
        upload_folder(
            repo_id=push_to_hub, folder_path=str(output), commit_message="Upload Hiera converted by hiera-hf"
        )
    return output


def _from_meta(
    checkpoint: Path, preset: HieraPreset, checkpoint_name: str | None, verify: bool, steps: tqdm
) -> tuple[torch.nn.Module, dict, ParityReport | None]:
    steps.set_postfix_str("loading")
    meta_state_dict = load_meta_state_dict(checkpoint)
    try:
        state_dict = convert_meta_hiera_state_dict(meta_state_dict)
    except KeyError as error:
        raise ValueError(f"{checkpoint}: {error.args[0]}") from None
    config = HieraConfig.from_preset(preset.name)
    model, notes = build_model(model_class_for(config), config, state_dict, allow_new_head=not preset.is_mae)
    new_head = not preset.is_mae and "classifier.weight" not in state_dict
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
    folder: Path, preset: HieraPreset | None, verify: bool, steps: tqdm
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
    if report is None:
        parity = "Not verified during conversion (skipped, or the reference package `hiera-transformer` was missing)."
    else:
        parity = (
            f"Measured during conversion against {report.reference}, same random input "
            f"(seed 0, batch 1, {'x'.join(map(str, config.image_size))}), float32:\n\n{report.to_markdown()}"
        )
    notes = "".join(f"\n> **Note:** {note}\n" for note in card["notes"])
    template = Template((resources.files("hiera_hf") / "model_cards" / "hiera.md").read_text())
    return template.substitute(
        license=preset.license if preset else "cc-by-nc-4.0",
        pipeline_tag=pipeline_tag,
        tags="\n".join(f"- {tag}" for tag in tags),
        dataset=preset.dataset if preset else "imagenet-1k",
        variant=preset.name if preset else "unknown (converted from a transformers folder)",
        checkpoint=card["checkpoint"],
        source_url=card["source_url"],
        model_class=type(model).__name__,
        parity=parity,
        notes=notes,
    )


def _write_folder(
    output: Path, model: torch.nn.Module, preset: HieraPreset | None, card: dict, report: ParityReport | None,
    overwrite: bool,
) -> None:  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp creates it private
    previous = None
    try:
        model.save_pretrained(staging)
        mean, std = (preset.mean, preset.std) if preset else (IMAGENET_MEAN, IMAGENET_STD)
        processor = preprocessor_config(model.config, mean, std)
        (staging / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
        (staging / "README.md").write_text(model_card(model, preset, card, report))
        if output.exists() and overwrite:
            previous = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
            os.replace(output, previous / output.name)
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if previous is not None and not output.exists():
            os.replace(previous / output.name, output)
        raise
    finally:
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)


__all__ = ["convert_hiera", "model_card", "preprocessor_config"]
