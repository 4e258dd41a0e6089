"""The `hiera-hf` command. Each subcommand is a pair: `add_<name>_arguments(parser)` and `run_<name>(args)`,
listed in `SUBCOMMANDS`; add a command by writing that pair and one entry.

Every command takes the same flags for the same things: `--model` (a folder, an official variant name or a Hub
repo id, resolved by `hub.resolve_model`), `--device`, `--quiet` and `--overwrite` (outputs are never replaced
without it). Arguments are checked before any model loads; heavy modules are imported inside the commands, so that
`--help`, `--version` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import USER_ERRORS, user_message
from .file_types import IMAGE_EXTENSIONS
from .progress import library_output
from .sam2.presets import SAM2_PRESETS

SAM2_TYPES = ("hiera_hf_sam2",)
SAM2_NEEDED = "a converted SAM 2 folder (hiera-hf convert --variant sam2.1_hiera_tiny ...)"
HIERA_TYPES = ("hiera_hf", "hiera")  # ours, and transformers' (facebook/hiera-*-hf)
CLASSIFY_NEEDED = "classify needs a Hiera classifier folder"


MODEL_HELP = (
    "a converted folder, an official variant name (e.g. {example}: Meta's checkpoint is downloaded and converted "
    "into the cache on first use, then reused) or a Hugging Face Hub repo id (owner/name, downloaded and cached)"
)


def add_model_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """`--model NAME_OR_DIR` (what `hub.resolve_model` accepts) with the same help in every command."""
    parser.add_argument("--model", required=True, metavar="NAME_OR_DIR", help=MODEL_HELP.format(example=example))


def add_run_arguments(parser: argparse.ArgumentParser, device: bool = True) -> None:
    """`--quiet` (and its old spelling `--no-progress`) and, for commands that run a model, `--device`."""
    if device:
        parser.add_argument("--device", metavar="DEVICE", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no messages but the results")
    parser.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)


def add_overwrite_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what} when present (refused by default)")


def refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    """`FileExistsError` naming the first of `paths` that exists, unless `overwrite`."""
    for path in paths:
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")


def start(args: argparse.Namespace):
    """Prepare a model-running command: returns the `torch.device` to use (checked: it exists and is available
    here). `--quiet` is applied around the whole command by `main` (`progress.library_output`)."""
    import torch

    requested = getattr(args, "device", None)
    try:
        device = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as error:
        raise ValueError(f"--device {requested!r} is not a torch device: {error}") from None
    backend = getattr(torch, device.type, None)  # torch.cuda, torch.mps, torch.xpu, ...
    if device.type != "cpu" and not (hasattr(backend, "is_available") and backend.is_available()):
        raise ValueError(f"--device {requested}: no {device.type} device is available here")
    return device


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `convert` (shared with `conversion_scripts/convert_to_hf.py`)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="Meta's Hiera .pth ({'model_state': ...}) or SAM 2 .pt ({'model': ...}); downloaded if omitted",
    )
    source.add_argument(
        "--from-transformers",
        metavar="DIR",
        help="a transformers-format folder: Hiera (facebook/hiera-*-hf) or SAM 2 (facebook/sam2*-hiera-*)",
    )
    parser.add_argument(
        "--variant",
        metavar="NAME",
        help="official variant (required for Meta checkpoints): "
        "hiera_{tiny,small,base,base_plus,large,huge}_224, hiera_{base,base_plus,large,huge}_16x224, their mae_ "
        f"pre-training counterparts, {', '.join(SAM2_PRESETS)}",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to create")
    parser.add_argument(
        "--checkpoint-name", metavar="NAME", help="which official checkpoint, e.g. mae_in1k_ft_in1k or mae_in1k"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the parity check against the reference code")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hugging Face Hub repo")
    add_overwrite_argument(parser, "the output folder")
    add_run_arguments(parser, device=False)


def run_convert(args: argparse.Namespace) -> None:
    from .hiera.presets import HIERA_PRESETS

    if args.variant is None and args.from_transformers is None:
        raise ValueError("--variant NAME is required unless --from-transformers DIR is given")
    if args.variant is not None and args.variant not in HIERA_PRESETS and args.variant not in SAM2_PRESETS:
        raise ValueError(
            f"Unknown variant {args.variant!r}; Hiera variants: {', '.join(sorted(HIERA_PRESETS))}; SAM 2 variants: "
            f"{', '.join(SAM2_PRESETS)}"
        )
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"Checkpoint file not found: {args.checkpoint}")
    refuse_existing([Path(args.output)], args.overwrite)
    start(args)
    from .conversion import convert_hiera, convert_sam2
    from .conversion.sam2 import TRANSFORMERS_SAM2_MODEL_TYPES
    from .hiera.model_folder import read_config

    config_file = Path(args.from_transformers or "", "config.json")
    if args.variant in SAM2_PRESETS or (
        args.from_transformers is not None
        and config_file.is_file()
        and read_config(config_file).get("model_type") in TRANSFORMERS_SAM2_MODEL_TYPES
    ):
        if args.checkpoint_name is not None:
            raise ValueError("--checkpoint-name applies to Hiera only: each SAM 2 variant has one checkpoint")
        convert = convert_sam2
    else:
        convert = functools.partial(convert_hiera, checkpoint_name=args.checkpoint_name)
    try:
        output = convert(
            args.output,
            variant=args.variant,
            checkpoint=args.checkpoint,
            from_transformers=args.from_transformers,
            verify=not args.no_verify,
            push_to_hub=args.push_to_hub,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except ValueError as error:
        match = None if args.checkpoint is None else matching_variant(Path(args.checkpoint))
        if match is None or match == args.variant:
            raise
        raise ValueError(
            f"{args.checkpoint} does not hold a {args.variant} but matches {match}: pass --variant {match}"
        ) from error
    if not args.quiet:
        print(f"Wrote {output}")


def matching_variant(checkpoint: Path) -> str | None:
    """The official variant whose architecture fits a Meta checkpoint (block count, width, image or video, MAE
    decoder, classifier size; for SAM 2, SAM 2 or 2.1), or None when none or several do."""
    from .conversion.hiera import load_meta_state_dict
    from .hiera.presets import HIERA_PRESETS

    is_sam2 = checkpoint.suffix == ".pt"
    try:
        state = load_meta_state_dict(checkpoint, entry="model" if is_sam2 else "model_state")
    except ValueError:
        return None
    prefix = "image_encoder.trunk." if is_sam2 else ""
    blocks = {int(k[len(prefix) :].split(".")[1]) for k in state if k.startswith(f"{prefix}blocks.")}
    patch = state.get(f"{prefix}patch_embed.proj.weight")
    if patch is None or not blocks:
        return None
    width, depth = patch.shape[0], max(blocks) + 1
    if is_sam2:
        matches = [
            name
            for name, preset in SAM2_PRESETS.items()
            if preset.config["embed_dim"] == width
            and sum(preset.config["depths"]) == depth
            and preset.config["no_obj_embed_spatial"] == ("no_obj_embed_spatial" in state)
        ]
    else:
        head = state.get("head.projection.weight")
        matches = [
            name
            for name, preset in HIERA_PRESETS.items()
            if preset.config["embed_dim"] == width
            and sum(preset.config["depths"]) == depth
            and preset.is_video == (patch.ndim == 5)
            and preset.is_mae == any(k.startswith("decoder_") for k in state)
            and (head is None or preset.config.get("num_labels") == head.shape[0])
        ]
    return matches[0] if len(matches) == 1 else None


def add_classify_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `classify`."""
    parser.add_argument(
        "input",
        metavar="IMAGE_OR_VIDEO",
        help=f"an image ({', '.join(IMAGE_EXTENSIONS)}) for image models; a video file (e.g. .mp4) or a folder of "
        "frames for video models",
    )
    add_model_argument(parser, "hiera_base_224, hiera_base_16x224")
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="number of labels to print (default 5)")
    add_run_arguments(parser)


def run_classify(args: argparse.Namespace) -> None:
    """Print the top-k labels of `args.input`, one `probability  label` line each, most likely first."""
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    path = Path(args.input)
    if not path.exists():
        raise FileNotFoundError(f"No such image or video: {path}")
    device = start(args)
    import torch
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModelForImageClassification,
        AutoModelForVideoClassification,
        AutoVideoProcessor,
    )

    from .hiera.model_folder import check_model_folder
    from .hub import load_pretrained, resolve_model
    from .image_utils import open_image

    folder = resolve_model(args.model, progress=not args.quiet)
    check_model_folder(folder, HIERA_TYPES, CLASSIFY_NEEDED, values=False)
    architectures = AutoConfig.from_pretrained(folder).architectures or []
    is_video = any(name.endswith("ForVideoClassification") for name in architectures)
    if not is_video and not any(name.endswith("ForImageClassification") for name in architectures):
        raise ValueError(
            f"{args.model} is a {', '.join(architectures) or 'model'} without a classification head; classify needs "
            "an image or video classifier (e.g. a converted hiera_base_224 or hiera_base_16x224)"
        )
    is_image = path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
    if is_video and is_image:
        raise ValueError(f"{args.model} is a video model; give it a video file or a folder of frames, not {path}")
    if not is_video and not is_image:
        raise ValueError(
            f"{args.model} is an image model; give it an image ({', '.join(IMAGE_EXTENSIONS)}), not {path}"
        )
    processor_class, model_class = (
        (AutoVideoProcessor, AutoModelForVideoClassification)
        if is_video
        else (AutoImageProcessor, AutoModelForImageClassification)
    )
    processor = processor_class.from_pretrained(folder)
    if is_video:
        try:
            inputs = processor(str(path), return_tensors="pt")
        except (ValueError, OSError, IndexError, RuntimeError) as error:  # PyAV's errors derive from these
            raise ValueError(f"Cannot read the video {path}: {error}") from error
    else:
        inputs = processor(open_image(path), return_tensors="pt")
    model = load_pretrained(model_class, folder, HIERA_TYPES, CLASSIFY_NEEDED).eval().to(device)
    with torch.inference_mode():
        probabilities = model(**inputs.to(device)).logits.softmax(-1)[0].cpu()
    top = probabilities.topk(min(args.top_k, probabilities.numel()))
    if not args.quiet:
        print(f"Top {len(top.indices)} labels for {path} ({args.model}):")
    for probability, index in zip(top.values.tolist(), top.indices.tolist()):
        print(f"{probability:.4f}  {model.config.id2label.get(index, f'LABEL_{index}')}")


# ---------------------------------------------------------------------------------------------------------------
# SAM 2 images: segment (prompted) and generate-masks (automatic)
# ---------------------------------------------------------------------------------------------------------------


def _numbers(text: str, count: int | tuple[int, ...], what: str) -> list[float]:
    """`count` (or any of the counts) comma-separated numbers, e.g. "120,45" for a point."""
    counts = (count,) if isinstance(count, int) else count
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        expected = " or ".join(map(str, counts))
        raise ValueError(f"{what} must be {expected} comma-separated numbers, got {text!r}")
    return values


def _prompt(text: str, what: str, ids: int, coordinates: int, label: bool = False) -> list[float]:
    """A prompt flag's numbers, checked as far as they can be before the image is read (`sam2.prompts`): `ids`
    leading integers (frame >= 0, then object 1..255), `coordinates` finite pixel values >= 0 ((x, y) pairs; four
    are a box with x0 < x1, y0 < y1), then an optional click label 0 or 1 when `label`."""
    counts = (ids + coordinates, ids + coordinates + 1) if label else ids + coordinates
    values = _numbers(text, counts, what)  # first: a malformed flag is refused before torch is imported
    from .sam2.prompts import check_boxes, check_coordinates, check_index, check_labels

    for i, (name, low, high) in enumerate((("frame", 0, None), ("object id", 1, 255))[:ids]):
        values[i] = check_index(values[i], f"{what} {text}: {name}", low, high)
    numbers = values[ids : ids + coordinates]
    if coordinates == 4:
        check_boxes(numbers, None, None, f"{what} {text}: box")
    else:
        check_coordinates([numbers], None, None, f"{what} {text}: point")
    if len(values) > ids + coordinates:
        values[-1] = int(check_labels(values[-1:], f"{what} {text}: label")[0])
    return values


def _prompt_type(what: str, ids: int, coordinates: int, label: bool = False) -> Callable[[str], list[float]]:
    """An argparse `type` for `_prompt`: a bad value is a usage error (exit 2) with its message."""

    def parse(text: str) -> list[float]:
        try:
            return _prompt(text, what, ids, coordinates, label)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _label(text: str) -> int:
    """An argparse `type` for `--label`: exactly 0 or 1."""
    if text.strip() not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"--label must be 0 (background) or 1 (foreground), got {text!r}")
    return int(text)


def _load_sam2(model: str, device, quiet: bool):
    """(model on `device`, image processor) of a SAM 2 folder (or a name `hub.resolve_model` knows)."""
    from .hub import load_pretrained, resolve_model
    from .sam2 import Sam2ImageProcessor, Sam2Model

    folder = resolve_model(model, progress=not quiet)
    sam = load_pretrained(Sam2Model, folder, SAM2_TYPES, SAM2_NEEDED).eval().to(device)
    if (Path(folder) / "preprocessor_config.json").is_file():
        processor = Sam2ImageProcessor.from_pretrained(folder)
    else:
        size = sam.config.image_size
        processor = Sam2ImageProcessor(size={"height": size, "width": size})
    return sam, processor


def _save_png(image, path: Path) -> None:
    """Write a PIL image or an array as a PNG, atomically, mode 0644."""
    from PIL import Image

    from .io_utils import atomic_write

    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    atomic_write(path, lambda partial: image.save(partial, format="PNG"))


def _number(kind: type = float, low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    """An argparse `type`: a finite `kind` (a NaN threshold would silently give empty masks) in [low, high]."""

    def parse(text: str):
        value = kind(text)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if low is not None and high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}], got {text}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        return value

    return parse


_finite, _area, _fraction, _positive = _number(), _number(low=0), _number(low=0, high=1), _number(int, low=1)


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file")
    add_model_argument(parser, "sam2.1_hiera_tiny")
    parser.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="X,Y",
        type=_prompt_type("--point", 0, 2),
        help="click in image pixels",
    )
    parser.add_argument(
        "--label", action="append", type=_label, metavar="0|1", help="label per --point (1 foreground, 0 background)"
    )
    parser.add_argument("--box", metavar="X0,Y0,X1,Y1", type=_prompt_type("--box", 0, 4), help="box in image pixels")
    add_text_arguments(parser)
    parser.add_argument(
        "--out",
        required=True,
        metavar="MASK.png",
        help="mask PNG; the overlay goes to *_overlay.png. With --text: a palette PNG (pixel value = object id, "
        "1, 2, ... best detection first) and MASK.json, the objects' COCO records (name = phrase)",
    )
    parser.add_argument("--mask-threshold", type=_finite, default=0.0, help="logit threshold (default 0)")
    parser.add_argument("--max-hole-area", type=_area, default=0.0, help="fill holes up to this low-res area")
    parser.add_argument("--max-sprinkle-area", type=_area, default=0.0, help="remove specks up to this low-res area")
    add_overwrite_argument(parser, "the mask and overlay PNGs")
    add_run_arguments(parser)


def add_text_arguments(parser: argparse.ArgumentParser, video: bool = False) -> None:
    """`--text`, `--detector`, `--threshold` (and for videos `--detect-every`): objects found by name
    (`sam2.text_prompts`)."""
    parser.add_argument(
        "--text",
        metavar='"A DOG. A CAT."',
        help="find the objects by name instead of prompts: phrases separated by periods; each object found by "
        "--detector is named by its phrase",
    )
    parser.add_argument(
        "--detector",
        metavar="ID_OR_DIR",
        help="with --text: a transformers zero-shot-object-detection model (Grounding DINO, OWLv2, OWL-ViT, "
        "OmDet-Turbo), a Hub id in the Hugging Face cache (e.g. IDEA-Research/grounding-dino-tiny) or a local folder",
    )
    parser.add_argument(
        "--threshold",
        type=_fraction,
        metavar="SCORE",
        help="with --text: the lowest detection score kept (default: the detector's own, 0.1 in transformers)",
    )
    if video:
        parser.add_argument(
            "--detect-every",
            type=_positive,
            metavar="N",
            help="with --text: detect again every N frames and add the objects that match no tracked one (IoU of "
            "the box with the object's mask box below 0.5); default: on the start frame only",
        )


def _check_text_arguments(args: argparse.Namespace, prompts: bool) -> list[str] | None:
    """The phrases of `--text` (None without it), the flags that go with it checked: `--detector` needed, the
    detection flags only with `--text`, and `--text` not mixed with other prompts (`prompts`)."""
    from .sam2.text_prompts import parse_phrases

    detection = [f for f in ("detector", "threshold", "detect_every") if getattr(args, f, None) is not None]
    if args.text is None:
        if detection:
            raise ValueError(f"--{detection[0].replace('_', '-')} goes with --text")
        return None
    if args.detector is None:
        raise ValueError("--text needs --detector ID_OR_DIR (a zero-shot-object-detection model)")
    if prompts:
        raise ValueError("Give --text or prompts (--point, --box, --mask, --box-file), not both")
    return parse_phrases(args.text)


def _text_detector(args: argparse.Namespace, device):
    """The `TextDetector` of `--detector` and `--threshold` on `device`."""
    from .sam2.text_prompts import TextDetector

    return TextDetector(args.detector, args.threshold, device=device)


def run_segment(args: argparse.Namespace) -> None:
    phrases = _check_text_arguments(args, bool(args.point or args.box is not None or args.label))
    if phrases is not None:
        return _segment_text(args, phrases)
    if not args.point and args.box is None:
        raise ValueError("Give at least one --point X,Y or a --box X0,Y0,X1,Y1")
    labels = args.label if args.label is not None else [1] * len(args.point)
    if len(labels) != len(args.point):
        raise ValueError(f"Give one --label per --point ({len(args.point)} points, {len(labels)} labels)")
    out = Path(args.out)
    overlay = out.with_name(f"{out.stem}_overlay.png")
    refuse_existing([out, overlay], args.overwrite)
    from .image_utils import open_image

    image = open_image(args.image)
    device = start(args)
    import torch

    from .visualization import draw

    model, processor = _load_sam2(args.model, device, args.quiet)
    prompts = {}
    if args.point:
        prompts["input_points"] = [[args.point]]
        prompts["input_labels"] = [[labels]]
    if args.box is not None:
        prompts["input_boxes"] = [[args.box]]
    inputs = processor(image, **prompts)
    with torch.inference_mode():
        model_inputs = {k: v.to(device) for k, v in inputs.items() if k != "original_sizes"}
        outputs = model(**model_inputs, multimask_output=True)
    masks = processor.post_process_masks(
        outputs.pred_masks.cpu(), inputs["original_sizes"], args.mask_threshold, args.max_hole_area,
        args.max_sprinkle_area,
    )[0][0]  # fmt: skip
    best = int(outputs.iou_scores[0, 0].argmax())
    mask = masks[best].numpy()
    _save_png((mask * 255).astype("uint8"), out)
    _save_png(draw(image, mask, points=args.point or None, labels=labels, boxes=args.box and [args.box]), overlay)
    if not args.quiet:
        print(f"Wrote {out} and {overlay} (predicted IoU {outputs.iou_scores[0, 0, best].item():.3f})")


def _segment_text(args: argparse.Namespace, phrases: list[str]) -> None:
    """`segment --text`: the label map, its overlay (with the detections' boxes) and the COCO records."""
    out = Path(args.out)
    overlay, records_file = out.with_name(f"{out.stem}_overlay.png"), out.with_suffix(".json")
    refuse_existing([out, overlay, records_file], args.overwrite)
    from .image_utils import open_image

    image = open_image(args.image)
    device = start(args)
    import numpy as np

    from .io_utils import atomic_write
    from .sam2.mask_generation import coco_encode_rle, mask_to_rle
    from .sam2.text_prompts import MAX_OBJECT_ID, segment_text
    from .sam2.video_output import write_palette_png
    from .visualization import draw

    detector = _text_detector(args, device)  # first: a detector missing offline is told before SAM 2 loads
    model, processor = _load_sam2(args.model, device, args.quiet)
    post_process = {k: getattr(args, k) for k in ("mask_threshold", "max_hole_area", "max_sprinkle_area")}
    records = segment_text(model, processor, image, detector, phrases, **post_process)
    if len(records) > MAX_OBJECT_ID:  # a palette PNG holds 255 objects
        print(f"Kept the {MAX_OBJECT_ID} best of {len(records)} objects; raise --threshold for fewer", file=sys.stderr)
        records = records[:MAX_OBJECT_ID]
    labels = np.zeros((image.height, image.width), np.uint8)
    for record in reversed(records):  # the best detection on top
        labels[record["segmentation"]] = record["id"]
    write_palette_png(labels, out)
    masks = [r["segmentation"] for r in records]
    _save_png(draw(image, masks or None, boxes=[r["box"] for r in records] or None), overlay)
    coco = [{**r, "segmentation": coco_encode_rle(mask_to_rle(r["segmentation"]))} for r in records]
    text = json.dumps(coco, indent=1) + "\n"
    atomic_write(records_file, lambda partial: Path(partial).write_text(text))
    if not args.quiet:
        found = ", ".join(f"{r['id']} {r['name']} ({r['score']:.2f})" for r in records) or "nothing"
        print(f"Found {found}; wrote {out}, {overlay} and {records_file}")
    if not records:
        print(f"No object scored --threshold or more for {'. '.join(phrases)}; lower it to keep more", file=sys.stderr)


def add_generate_masks_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file")
    add_model_argument(parser, "sam2.1_hiera_tiny")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for overlay.png and masks.json")
    parser.add_argument("--points-per-side", type=_positive, default=32, help="click grid size (default 32)")
    parser.add_argument("--points-per-batch", type=_positive, default=64, help="clicks decoded at once (default 64)")
    parser.add_argument("--pred-iou-thresh", type=_fraction, default=0.8, help="minimum predicted IoU (default 0.8)")
    parser.add_argument("--stability-score-thresh", type=_fraction, default=0.95, help="minimum stability (0.95)")
    parser.add_argument("--crop-n-layers", type=int, default=0, help="layers of image crops (default 0)")
    parser.add_argument("--min-mask-region-area", type=int, default=0, help="fill holes / remove specks (low-res px)")
    parser.add_argument("--use-m2m", action="store_true", help="refine each mask once with its own logits")
    add_overwrite_argument(parser, "masks.json and overlay.png")
    add_run_arguments(parser)


def run_generate_masks(args: argparse.Namespace) -> None:
    out = Path(args.out)
    refuse_existing([out / "masks.json", out / "overlay.png"], args.overwrite)
    from .image_utils import open_image

    image = open_image(args.image)
    device = start(args)
    from .io_utils import atomic_write
    from .sam2.mask_generation import Sam2AutomaticMaskGenerator, coco_encode_rle, mask_to_rle
    from .visualization import draw

    model, processor = _load_sam2(args.model, device, args.quiet)
    generator = Sam2AutomaticMaskGenerator(
        model,
        processor,
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        crop_n_layers=args.crop_n_layers,
        min_mask_region_area=args.min_mask_region_area,
        use_m2m=args.use_m2m,
        output_mode="binary_mask",
        progress=not args.quiet,
    )
    records = generator.generate(image)
    by_area = sorted(records, key=lambda r: -r["area"])  # small masks drawn last, on top
    _save_png(draw(image, [r["segmentation"] for r in by_area] or None), out / "overlay.png")
    coco = [{**r, "segmentation": coco_encode_rle(mask_to_rle(r["segmentation"]))} for r in records]
    text = json.dumps(coco, indent=1) + "\n"
    atomic_write(out / "masks.json", lambda partial: Path(partial).write_text(text))
    if not args.quiet:
        print(f"Wrote {plural(len(records), 'mask')} to {out / 'masks.json'} and {out / 'overlay.png'}")
    if not records:
        print(
            f"No mask passed --pred-iou-thresh {args.pred_iou_thresh} and --stability-score-thresh "
            f"{args.stability_score_thresh}; lower them to keep more",
            file=sys.stderr,
        )


def _mask_prompt(text: str) -> tuple[int, int, Path]:
    """An argparse `type` for `--mask FRAME,OBJ,FILE.png`."""
    frame, obj, file = (text.split(",", 2) + ["", ""])[:3]
    if not (frame.isdigit() and obj.isdigit() and file):
        raise argparse.ArgumentTypeError(f"--mask must be FRAME,OBJ,FILE.png, got {text!r}")
    if not 1 <= int(obj) <= 255:
        raise argparse.ArgumentTypeError(f"--mask {text}: object id must be 1..255, got {obj}")
    if not Path(file).is_file():
        raise argparse.ArgumentTypeError(f"--mask {text}: no such file {file}")
    return int(frame), int(obj), Path(file)


def _formats(text: str) -> tuple[str, ...]:
    """An argparse `type` for `--format`: comma-separated names out of `video_output.FORMATS`."""
    from .sam2.video_output import check_formats

    names = tuple(dict.fromkeys(name.strip() for name in text.split(",")))
    try:
        check_formats(names)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return names


def add_track_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `track`."""
    parser.add_argument("video", metavar="VIDEO", help="a video file or a folder of JPEG/PNG frames")
    add_model_argument(parser, "sam2.1_hiera_tiny")
    order = " Prompts go to the model in the order of the command line (objects batched in the order first prompted)"
    parser.add_argument(
        "--point",
        action="append",
        dest="prompts",
        default=[],
        metavar="FRAME,OBJ,X,Y[,LABEL]",
        type=_tagged("point", _prompt_type("--point", 2, 2, label=True)),
        help="a click on object OBJ (1-255) at pixel (X, Y) of FRAME; LABEL 1 foreground (default) or 0 background."
        + order,
    )
    parser.add_argument(
        "--box",
        action="append",
        dest="prompts",
        metavar="FRAME,OBJ,X0,Y0,X1,Y1",
        type=_tagged("box", _prompt_type("--box", 2, 4)),
        help="a box around object OBJ on FRAME, in pixels",
    )
    parser.add_argument(
        "--box-file",
        action="append",
        dest="prompts",
        metavar="GROUNDTRUTH.txt",
        type=_tagged("box-file", str),
        help="object 1's box on frame 0 from the first line of a LaSOT / GOT-10k / OTB groundtruth.txt (x,y,w,h)",
    )
    parser.add_argument(
        "--mask",
        action="append",
        dest="prompts",
        metavar="FRAME,OBJ,FILE.png",
        type=_tagged("mask", _mask_prompt),
        help="a mask of object OBJ on FRAME: the nonzero pixels of a PNG the size of the video (of a palette PNG "
        "such as track writes: the pixels equal to OBJ)",
    )
    parser.add_argument(
        "--prompts",
        dest="prompts_file",
        metavar="FILE.json",
        help="replay a session of the app (its exported prompts.json: clicks, boxes, tracking and corrections in "
        "the order they were done), writing the files the app exports, byte for byte; instead of the prompt and "
        "tracking flags",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="writes DIR/masks/00000.png ... (png), DIR/rle/00000.json ... (rle), DIR/objects/OBJ/00000.png ... "
        "(objects), DIR/boxes/OBJ.txt (boxes) and DIR/overlay.mp4 (mp4)",
    )
    parser.add_argument(
        "--format",
        type=_formats,
        metavar="png,rle,objects,boxes,mp4",
        help="what to write (default png,mp4; with --text png,rle,mp4, so that the names are written): palette PNGs "
        "(pixel value = object id), per-frame COCO RLE JSON (object id, name, frame, area, bbox), one 0/255 PNG per "
        "object and frame, per object one x,y,w,h line per frame (line N = frame N; 0,0,0,0 where absent), the "
        "overlay video",
    )
    add_text_arguments(parser, video=True)
    parser.add_argument(
        "--start-frame", type=int, metavar="FRAME", help="frame to track from (default: first prompt; with --text 0)"
    )
    parser.add_argument(
        "--direction",
        choices=("forward", "backward", "both"),
        help="which way to track from the start frame (default both)",
    )
    parser.add_argument("--max-frames", type=_positive, metavar="N", help="track at most N frames each way")
    from .sam2.tracking_strategies import STRATEGY_NAMES

    parser.add_argument(
        "--strategy",
        choices=STRATEGY_NAMES,
        default="sam2",
        help=(
            "tracking strategy (default sam2, Meta's; samurai: Kalman-filtered mask choice and a gated memory; "
            "dam4sam: distractor-aware memory)"
        ),
    )
    parser.add_argument(
        "--strategy-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=_setting,
        help="change one of the strategy's settings, e.g. kf_score_weight=0.3 (repeatable; see the README)",
    )
    add_overwrite_argument(parser, "the outputs an earlier run wrote in DIR")
    add_run_arguments(parser)


def _setting(text: str) -> tuple[str, int | float]:
    """`NAME=VALUE` with a number (an integer when written as one)."""
    name, equals, value = text.partition("=")
    try:
        number = int(value) if value.strip().lstrip("+-").isdigit() else float(value)
    except ValueError:
        number = None
    if not equals or not name.strip() or number is None:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}")
    return name.strip(), number


def _track_strategy(args: argparse.Namespace):
    """The strategy settings of the flags, checked (unknown or repeated settings refused)."""
    from .sam2.tracking_strategies import strategy_settings

    names = [name for name, _ in args.strategy_setting]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--strategy-setting {', '.join(repeated)} given more than once")
    return strategy_settings(args.strategy, dict(args.strategy_setting))


def _tagged(kind: str, parse: Callable[[str], object]) -> Callable[[str], tuple[str, object]]:
    """An argparse `type` giving `(kind, parse(text))`: the prompt flags share one list, in command-line order."""

    def tag(text: str) -> tuple[str, object]:
        return kind, parse(text)

    return tag


TRACK_FLAGS = "--point, --box, --box-file, --mask, --start-frame, --direction or --max-frames"


def _track_prompts(args: argparse.Namespace) -> dict:
    """`(frame, object) -> VideoPrompt` from the prompt flags in command-line order (objects are batched in the
    order they are first prompted), checked (masks read)."""
    from .sam2.video_prompts import VideoPrompt, read_first_box, read_mask

    prompts: dict[tuple[int, int], VideoPrompt] = {}
    for kind, value in args.prompts:
        frame, obj = (0, 1) if kind == "box-file" else value[:2]  # ids checked when parsed
        prompt = prompts.setdefault((frame, obj), VideoPrompt())
        given = prompt.mask is not None or prompt.clicks or prompt.box is not None
        if (kind == "mask" and given) or (kind != "mask" and prompt.mask is not None):
            raise ValueError(f"Object {obj} on frame {frame}: give a --mask or clicks and a box, not both")
        if kind == "mask":
            prompt.mask = read_mask(value[2], obj)
        elif kind == "point":
            x, y, *label = value[2:]
            prompt.clicks.append((x, y, label[0] if label else 1))
        elif prompt.box is not None:
            raise ValueError(f"More than one --box (or --box-file) for object {obj} on frame {frame}")
        else:
            prompt.box = read_first_box(value) if kind == "box-file" else value[2:]
    if not prompts and args.text is None:
        raise ValueError("Give at least one --point or --box (or --mask), --prompts or --text")
    if args.start_frame is not None and args.start_frame < 0:
        raise ValueError(f"--start-frame must be at least 0, got {args.start_frame}")
    return prompts


def _track_inputs(args: argparse.Namespace):
    """What `track` is asked to do, checked before any model loads: the prompts of the flags (`_track_prompts`), or
    the steps of a prompts file (`video_prompts.read_prompts`)."""
    if args.prompts_file is None:
        return _track_prompts(args)
    tracking = (args.start_frame, args.direction, args.max_frames)
    if args.prompts or any(value is not None for value in tracking) or args.strategy != "sam2" or args.strategy_setting:
        given = f"give no {TRACK_FLAGS} with it (nor --strategy: the file has the app's)"
        raise ValueError(f"--prompts replays a session of the app, its tracking included: {given}")
    from .sam2.video_prompts import read_prompts

    return read_prompts(args.prompts_file)


def _replay(session, recorded, args: argparse.Namespace, formats: Sequence[str], inputs: list) -> list[int]:
    """Replay a prompts file (`video_prompts.PromptLog`) into label maps in a scratch folder, then write them as the
    app exports them; returns the indices of the frames written."""
    import tempfile

    from .sam2.video_output import LabelMapFolder, write_tracking
    from .sam2.video_prompts import PromptLog

    made = (recorded.width, recorded.height, recorded.num_frames)
    found = (session.video_width, session.video_height, session.num_frames)
    if made != found:
        raise ValueError(
            f"{args.prompts_file} was made on a video of {made[0]}x{made[1]} pixels and {made[2]} frames; "
            f"{args.video} has {found[0]}x{found[1]} pixels and {found[2]} frames"
        )
    with tempfile.TemporaryDirectory(prefix="hiera-hf-replay-") as scratch:
        log = PromptLog(session, LabelMapFolder(scratch))
        log.replay(recorded.steps, str(args.prompts_file))
        if not log.labels.frames():
            raise ValueError(f"{args.prompts_file} gives no masks: it has no click or box")
        frames = log.labels.items()
        return write_tracking(
            args.out, formats, frames, session.object_ids, session.frame, session.fps, recorded.names,
            args.overwrite, inputs, log.prompts,
        )  # fmt: skip


def run_track(args: argparse.Namespace) -> None:
    """Everything is checked (prompts, output, model, video, prompts against the frames) before anything is
    written; the outputs are written by `sam2.video_output.write_tracking` (each folder staged; with --overwrite,
    replacing an earlier run's as a whole; a failed run leaves no folder it created). A video that stops decoding
    part-way keeps the frames tracked so far, and the error says which (with --prompts, nothing is written)."""
    from .sam2.video_output import check_output

    prompts = _track_inputs(args)
    replaying = args.prompts_file is not None
    strategy = _track_strategy(args)
    phrases = _check_text_arguments(args, bool(args.prompts) or replaying)
    formats = args.format or (("png", "mp4") if phrases is None else ("png", "rle", "mp4"))
    direction = args.direction or "both"
    out = Path(args.out)
    masks = [value[2] for kind, value in args.prompts if kind == "mask"]
    inputs = [args.video, *masks, *([args.prompts_file] if replaying else [])]
    check_output(out, formats, args.overwrite, inputs)
    device = start(args)
    detector = None if phrases is None else _text_detector(args, device)  # told before SAM 2 loads
    from .hub import load_pretrained, resolve_model
    from .sam2 import Sam2VideoModel, Sam2VideoSession
    from .sam2.video_output import label_map, write_tracking
    from .sam2.video_prompts import apply_prompts, propagate
    from .video_io import VideoDecodeError

    folder = resolve_model(args.model, progress=not args.quiet)
    model = load_pretrained(Sam2VideoModel, folder, SAM2_TYPES, f"track needs {SAM2_NEEDED}").to(device)
    failure, tracker = None, None
    options = {"add_all_frames_to_correct_as_cond": prompts.add_all_frames_to_correct_as_cond} if replaying else {}
    with Sam2VideoSession(model, args.video, progress=not args.quiet, strategy=strategy, **options) as session:
        if replaying:
            order = _replay(session, prompts, args, formats, inputs)
        else:
            try:
                if phrases is None:
                    apply_prompts(session, prompts)
                    first = min(frame for frame, _ in prompts) if args.start_frame is None else args.start_frame
                    results = propagate(session, first, direction, args.max_frames)
                else:
                    first = args.start_frame or 0
                    results, tracker = _track_text(args, phrases, session, first, detector, direction)
            except VideoDecodeError as error:
                raise ValueError(f"{error}; nothing was written") from None

            def label_maps():
                nonlocal failure
                try:
                    for result in results:
                        yield result.frame_idx, label_map(result)
                except VideoDecodeError as error:
                    failure = error

            names = None if tracker is None else tracker.names
            marked = prompts if phrases is None else None
            order = write_tracking(
                out, formats, label_maps(), lambda: session.object_ids, session.frame, session.fps, names,
                args.overwrite, inputs, marked,
            )  # fmt: skip
    span = f" (frames {order[0]}-{order[-1]})" if order else ""
    folders = {"png": "masks/", "rle": "rle/", "objects": "objects/", "boxes": "boxes/", "mp4": "overlay.mp4"}
    written = f"{plural(len(order), 'frame')}{span}: {', '.join(folders[f] for f in formats)} in {out}"
    if failure is not None:
        raise ValueError(f"{failure}; tracking stopped there and wrote {written}")
    if not args.quiet:
        objects = "" if tracker is None else f" of {', '.join(f'{i} {n}' for i, n in tracker.names.items())}"
        print(f"Tracked {written}{objects}")


def _track_text(args: argparse.Namespace, phrases: list[str], session, first: int, detector, direction: str):
    """`track --text`: the objects `detector` finds on frame `first` added to `session`; (results, `TextTracker`);
    `ValueError` when nothing is found there."""
    from .sam2.text_prompts import TextTracker

    if first >= session.num_frames:
        raise ValueError(f"--start-frame {first} is out of range for a video of {session.num_frames} frames")
    tracker = TextTracker(session, detector, phrases, args.detect_every)
    if tracker.detect(first) is None:
        raise ValueError(
            f"No object of --text {args.text!r} scored --threshold or more on frame {first}; lower --threshold or "
            "choose another --start-frame; nothing was written"
        )
    return tracker.propagate(first, direction, args.max_frames), tracker


def add_export_onnx_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `export-onnx` (`hiera_hf.onnx.export.export_onnx`)."""
    add_model_argument(parser, "sam2.1_hiera_tiny")
    parser.add_argument("--output", required=True, metavar="DIR", help="new (or empty) folder for the ONNX files")
    add_overwrite_argument(parser, "an earlier export in the output folder")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (at least 18; default 18)")
    parser.add_argument("--int8", action="store_true", help="also write int8 *_quantized.onnx image-encoder graphs")
    parser.add_argument(
        "--calibration", metavar="FOLDER", help="images for static int8 calibration (default: dynamic quantization)"
    )
    add_run_arguments(parser, device=False)


def run_export_onnx(args: argparse.Namespace) -> None:
    start(args)
    from .onnx.export import export_onnx

    folder = export_onnx(
        args.model, args.output, args.opset, args.int8, args.calibration, not args.quiet, args.overwrite
    )
    if not args.quiet:
        print(f"Wrote {folder}")


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `app`: the interactive SAM 2 page of `hiera_hf.app` (Gradio)."""
    parser.add_argument(
        "--model",
        default="sam2.1_hiera_tiny",
        metavar="NAME_OR_DIR",
        help=MODEL_HELP.format(example="sam2.1_hiera_tiny") + "; default sam2.1_hiera_tiny",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1; 0.0.0.0: all)")
    parser.add_argument("--port", type=int, metavar="N", help="port (default: the first free one from 7860)")
    parser.add_argument(
        "--detector",
        metavar="ID_OR_DIR",
        help="a zero-shot-object-detection model for the \"Find\" boxes (objects by name; see segment --detector)",
    )
    parser.add_argument(
        "--threshold", type=_fraction, metavar="SCORE", help="lowest detection score kept (default: the detector's)"
    )
    add_run_arguments(parser)


def run_app(args: argparse.Namespace) -> None:
    """Start the app (blocks until interrupted)."""
    if args.port is not None and not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if args.threshold is not None and args.detector is None:
        raise ValueError("--threshold goes with --detector")
    device = start(args)
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise ImportError(f'The app needs Gradio: pip install "hiera-hf[app]" ({error})') from error
    from .app import launch

    detector = {"detector": args.detector, "threshold": args.threshold}
    launch(args.model, host=args.host, port=args.port, device=str(device), **detector)


SUBCOMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "convert": ("convert a Meta or transformers Hiera or SAM 2 checkpoint", add_convert_arguments, run_convert),
    "classify": ("print the top labels of an image or a video", add_classify_arguments, run_classify),
    "segment": ("segment an image with SAM 2 from clicks, a box or --text", add_segment_arguments, run_segment),
    "generate-masks": ("segment everything in an image with SAM 2", add_generate_masks_arguments, run_generate_masks),
    "track": ("track objects through a video with SAM 2", add_track_arguments, run_track),
    "export-onnx": ("export Hiera or SAM 2 to ONNX (torch-free runtime)", add_export_onnx_arguments, run_export_onnx),
    "app": ("start the interactive SAM 2 app (Gradio) in the browser", add_app_arguments, run_app),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hiera-hf", description="Meta's Hiera and SAM 2 in the Hugging Face ecosystem."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, add_arguments, run) in SUBCOMMANDS.items():
        command = commands.add_parser(name, help=summary, description=summary)
        add_arguments(command)
        command.set_defaults(run=run)
    return parser


# Flags whose value is a list of numbers: argparse takes `--point -5,10` for two flags (`-5,10` is not one of the
# negative numbers it knows), so such a value is attached (`--point=-5,10`) and refused by the flag's own check.
LIST_FLAGS = ("--point", "--box", "--mask")
_NEGATIVE_LIST = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)


def attach_negative_values(argv: Sequence[str]) -> list[str]:
    """`argv` with a negative-looking value after a flag of `LIST_FLAGS` attached to it: `--point`, `-5,10` ->
    `--point=-5,10`."""
    attached: list[str] = []
    for arg in argv:
        if attached and attached[-1] in LIST_FLAGS and _NEGATIVE_LIST.match(arg):
            attached[-1] = f"{attached[-1]}={arg}"
        else:
            attached.append(arg)
    return attached


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hiera-hf`; returns the exit status (errors meant for the user print as `error: ...`)."""
    parser = build_parser()
    args = parser.parse_args(attach_negative_values(sys.argv[1:] if argv is None else argv))
    try:
        quiet = getattr(args, "quiet", False)
        with library_output(bars=not quiet, messages=not quiet):
            args.run(args)
    except USER_ERRORS as error:
        print(f"hiera-hf {args.command}: error: {user_message(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
