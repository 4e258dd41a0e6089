"""The `hiera-hf` command. Each subcommand is a pair: `add_<name>_arguments(parser)` and `run_<name>(args)`,
listed in `SUBCOMMANDS`; add a command by writing that pair and one entry."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .hiera.presets import HIERA_PRESETS
from .sam2.presets import SAM2_PRESETS

# Errors with a message for the user, printed as one line without a traceback: bad values and files (ValueError;
# our loaders turn damaged files into it, naming them), missing or existing paths, unreadable or unwritable files
# (OSError: permissions, read-only or full disks), no network, missing optional packages. TypeError, KeyError and
# the rest are bugs and keep their traceback.
USER_ERRORS = (ValueError, OSError, ImportError)
SAM2_TYPES = ("hiera_hf_sam2",)
SAM2_NEEDED = "a converted SAM 2 folder (hiera-hf convert --variant sam2.1_hiera_tiny ...)"


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
        f"{', '.join(sorted(HIERA_PRESETS))}, {', '.join(SAM2_PRESETS)}",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to create")
    parser.add_argument(
        "--checkpoint-name", metavar="NAME", help="which official checkpoint, e.g. mae_in1k_ft_in1k or mae_in1k"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the parity check against the reference code")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hugging Face Hub repo")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run_convert(args: argparse.Namespace) -> None:
    from .conversion import convert_hiera, convert_sam2
    from .conversion.sam2 import TRANSFORMERS_SAM2_MODEL_TYPES
    from .hub import read_config

    if args.variant is None and args.from_transformers is None:
        raise ValueError("--variant NAME is required unless --from-transformers DIR is given")
    if args.variant is not None and args.variant not in HIERA_PRESETS and args.variant not in SAM2_PRESETS:
        raise ValueError(
            f"Unknown variant {args.variant!r}; Hiera variants: {', '.join(sorted(HIERA_PRESETS))}; SAM 2 variants: "
            f"{', '.join(SAM2_PRESETS)}"
        )
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
    output = convert(
        args.output,
        variant=args.variant,
        checkpoint=args.checkpoint,
        from_transformers=args.from_transformers,
        verify=not args.no_verify,
        push_to_hub=args.push_to_hub,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"Wrote {output}")


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def add_classify_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `classify`."""
    parser.add_argument(
        "input",
        metavar="IMAGE_OR_VIDEO",
        help=f"an image ({', '.join(IMAGE_EXTENSIONS)}) for image models; a video file (e.g. .mp4) or a folder of "
        "frames for video models",
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="NAME_OR_DIR",
        help="a converted folder, or an official variant name (e.g. hiera_base_224, hiera_base_16x224): Meta's "
        "checkpoint is downloaded and converted into the cache on first use, then reused",
    )
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="number of labels to print (default 5)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, no header: only the label lines")


def run_classify(args: argparse.Namespace) -> None:
    """Print the top-k labels of `args.input`, one `probability  label` line each, most likely first."""
    import torch
    from PIL import Image
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModelForImageClassification,
        AutoModelForVideoClassification,
        AutoVideoProcessor,
    )
    from transformers.utils import logging as transformers_logging

    from .hub import check_model_folder, resolve_model

    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    path = Path(args.input)
    if not path.exists():
        raise FileNotFoundError(f"No such image or video: {path}")
    folder = resolve_model(args.model, progress=not args.quiet)
    check_model_folder(folder, ("hiera_hf", "hiera"), "classify needs a Hiera classifier folder")
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
    try:
        with contextlib.nullcontext(str(path)) if is_video else Image.open(path) as media:
            inputs = processor(media, return_tensors="pt")
    except (ValueError, OSError, IndexError, RuntimeError) as error:  # PIL's and PyAV's errors derive from these
        raise ValueError(f"Cannot read the {'video' if is_video else 'image'} {path}: {error}") from error
    if args.quiet:
        transformers_logging.disable_progress_bar()
    model = model_class.from_pretrained(folder).eval()
    with torch.inference_mode():
        probabilities = model(**inputs).logits.softmax(-1)[0]
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
    from .sam2.prompts import check_boxes, check_coordinates, check_index, check_labels

    counts = (ids + coordinates, ids + coordinates + 1) if label else ids + coordinates
    values = _numbers(text, counts, what)
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


def _load_sam2(model: str, progress: bool):
    """(model, image processor) of a SAM 2 folder (or a name `hub.resolve_model` knows)."""
    from .hub import load_pretrained, resolve_model
    from .sam2 import Sam2ImageProcessor, Sam2Model

    folder = resolve_model(model, progress=progress)
    sam = load_pretrained(Sam2Model, folder, SAM2_TYPES, SAM2_NEEDED).eval()
    if (Path(folder) / "preprocessor_config.json").is_file():
        processor = Sam2ImageProcessor.from_pretrained(folder)
    else:
        size = sam.config.image_size
        processor = Sam2ImageProcessor(size={"height": size, "width": size})
    return sam, processor


def _write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """Write through `write(temporary_path)` next to `path`, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        write(partial)
        os.chmod(partial, 0o644)  # mkstemp creates owner-only files
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _save_png(array, path: Path) -> None:
    from PIL import Image

    _write_atomic(path, lambda partial: Image.fromarray(array).save(partial, format="PNG"))


def _overlay(image, masks: list, alpha: float = 0.5):
    """The RGB image `(H, W, 3)` uint8 with each boolean mask `(H, W)` tinted in its own colour (later on top)."""
    import numpy as np

    from .image_utils import to_rgb_float

    rgb = to_rgb_float(image).permute(1, 2, 0).numpy() * 255.0
    colours = np.random.default_rng(0).uniform(40, 255, size=(max(len(masks), 1), 3))
    colours[0] = (30, 144, 255)
    for mask, colour in zip(masks, colours):
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file")
    parser.add_argument("--model", required=True, metavar="DIR", help="converted SAM 2 folder")
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
    parser.add_argument("--out", required=True, metavar="MASK.png", help="mask PNG; the overlay goes to *_overlay.png")
    parser.add_argument("--mask-threshold", type=float, default=0.0, help="logit threshold (default 0)")
    parser.add_argument("--max-hole-area", type=float, default=0.0, help="fill holes up to this low-res area")
    parser.add_argument("--max-sprinkle-area", type=float, default=0.0, help="remove specks up to this low-res area")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run_segment(args: argparse.Namespace) -> None:
    import torch

    from .image_utils import open_image

    if not args.point and args.box is None:
        raise ValueError("Give at least one --point X,Y or a --box X0,Y0,X1,Y1")
    labels = args.label if args.label is not None else [1] * len(args.point)
    if len(labels) != len(args.point):
        raise ValueError(f"Give one --label per --point ({len(args.point)} points, {len(labels)} labels)")
    image = open_image(args.image)
    model, processor = _load_sam2(args.model, progress=not args.no_progress)
    prompts = {}
    if args.point:
        prompts["input_points"] = [[args.point]]
        prompts["input_labels"] = [[labels]]
    if args.box is not None:
        prompts["input_boxes"] = [[args.box]]
    inputs = processor(image, **prompts)
    with torch.no_grad():
        outputs = model(**{k: v for k, v in inputs.items() if k != "original_sizes"}, multimask_output=True)
    masks = processor.post_process_masks(
        outputs.pred_masks, inputs["original_sizes"], args.mask_threshold, args.max_hole_area, args.max_sprinkle_area
    )[0][0]
    best = int(outputs.iou_scores[0, 0].argmax())
    mask = masks[best].numpy()
    out = Path(args.out)
    _save_png((mask * 255).astype("uint8"), out)
    overlay = out.with_name(f"{out.stem}_overlay.png")
    _save_png(_overlay(image, [mask]), overlay)
    print(f"Wrote {out} and {overlay} (predicted IoU {outputs.iou_scores[0, 0, best].item():.3f})")


def add_generate_masks_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file")
    parser.add_argument("--model", required=True, metavar="DIR", help="converted SAM 2 folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for overlay.png and masks.json")
    parser.add_argument("--points-per-side", type=int, default=32, help="click grid size (default 32)")
    parser.add_argument("--points-per-batch", type=int, default=64, help="clicks decoded at once (default 64)")
    parser.add_argument("--pred-iou-thresh", type=float, default=0.8, help="minimum predicted IoU (default 0.8)")
    parser.add_argument("--stability-score-thresh", type=float, default=0.95, help="minimum stability (0.95)")
    parser.add_argument("--crop-n-layers", type=int, default=0, help="layers of image crops (default 0)")
    parser.add_argument("--min-mask-region-area", type=int, default=0, help="fill holes / remove specks (low-res px)")
    parser.add_argument("--use-m2m", action="store_true", help="refine each mask once with its own logits")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run_generate_masks(args: argparse.Namespace) -> None:
    from .image_utils import open_image
    from .sam2.mask_generation import Sam2AutomaticMaskGenerator, coco_encode_rle, mask_to_rle

    image = open_image(args.image)
    model, processor = _load_sam2(args.model, progress=not args.no_progress)
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
        progress=not args.no_progress,
    )
    records = generator.generate(image)
    out = Path(args.out)
    by_area = sorted(records, key=lambda r: -r["area"])  # small masks drawn last, on top
    _save_png(_overlay(image, [r["segmentation"] for r in by_area]), out / "overlay.png")
    coco = [{**r, "segmentation": coco_encode_rle(mask_to_rle(r["segmentation"]))} for r in records]
    text = json.dumps(coco, indent=1) + "\n"
    _write_atomic(out / "masks.json", lambda partial: Path(partial).write_text(text))
    print(f"Wrote {len(records)} masks to {out / 'masks.json'} and {out / 'overlay.png'}")


def add_track_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `track`."""
    parser.add_argument("video", metavar="VIDEO", help="a video file or a folder of JPEG/PNG frames")
    parser.add_argument("--model", required=True, metavar="NAME_OR_DIR", help="a converted SAM 2 folder or name")
    parser.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="FRAME,OBJ,X,Y[,LABEL]",
        type=_prompt_type("--point", 2, 2, label=True),
        help="a click on object OBJ (1-255) at pixel (X, Y) of FRAME; LABEL 1 foreground (default) or 0 background",
    )
    parser.add_argument(
        "--box",
        action="append",
        default=[],
        metavar="FRAME,OBJ,X0,Y0,X1,Y1",
        type=_prompt_type("--box", 2, 4),
        help="a box around object OBJ on FRAME, in pixels",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="writes DIR/masks/00000.png ... and DIR/overlay.mp4"
    )
    parser.add_argument("--max-frames", type=int, metavar="N", help="track at most N frames each way")
    parser.add_argument("--device", metavar="DEVICE", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


_MASK_NAME = re.compile(r"\d{5}\.png")


def _is_mask_folder(folder: Path) -> bool:
    """Whether `folder` holds only masks a previous `track` wrote (`00012.png`, ...): it may be replaced."""
    return all(entry.is_file() and _MASK_NAME.fullmatch(entry.name) for entry in folder.iterdir())


def _check_track_output(out: Path) -> None:
    """`track` writes `out/masks/` (replacing only the masks of an earlier run) and `out/overlay.mp4`."""
    from .io_utils import check_replaceable

    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder")
    check_replaceable(out / "masks", True, _is_mask_folder, what="masks folder")
    if (out / "overlay.mp4").is_dir():
        raise FileExistsError(f"{out / 'overlay.mp4'} is a folder; choose another --out")


def run_track(args: argparse.Namespace) -> None:
    """Everything is checked (prompts, output, model, video, prompts against the frames) before anything is
    written; the masks go to a hidden folder renamed to `OUT/masks` at the end (an earlier run's masks are
    replaced as a whole, never mixed with new ones). A video that stops decoding part-way keeps the frames
    tracked so far, and the error says which."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers.utils import logging as transformers_logging

    from .hub import load_pretrained, resolve_model
    from .io_utils import staged_folder
    from .sam2 import Sam2VideoModel, Sam2VideoSession
    from .sam2.video_output import label_map, write_overlay_video, write_palette_png
    from .video_io import VideoDecodeError

    prompts: dict[tuple[int, int], dict] = {}  # (frame, object) -> box and clicks; ids checked when parsed
    for frame, obj, *box in args.box:
        if "box" in prompts.setdefault((frame, obj), {}):
            raise ValueError(f"More than one --box for object {obj} on frame {frame}")
        prompts[frame, obj]["box"] = box
    for frame, obj, x, y, *label in args.point:
        prompts.setdefault((frame, obj), {}).setdefault("clicks", []).append((x, y, label[0] if label else 1))
    if not prompts:
        raise ValueError("Give at least one --point or --box")
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be at least 1, got {args.max_frames}")
    out = Path(args.out)
    _check_track_output(out)
    if args.quiet:
        transformers_logging.disable_progress_bar()
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as error:
        raise ValueError(f"--device {args.device!r} is not a torch device: {error}") from None
    backend = getattr(torch, device.type, None)  # torch.cuda, torch.mps, torch.xpu, ...
    if device.type != "cpu" and not (hasattr(backend, "is_available") and backend.is_available()):
        raise ValueError(f"--device {args.device}: no {device.type} device is available here")
    folder = resolve_model(args.model, progress=not args.quiet)
    model = load_pretrained(Sam2VideoModel, folder, SAM2_TYPES, f"track needs {SAM2_NEEDED}").to(device)
    failure = None
    with Sam2VideoSession(model, args.video, progress=not args.quiet) as session:
        try:
            for (frame, obj), prompt in prompts.items():
                clicks = prompt.get("clicks")
                points = None if clicks is None else [c[:2] for c in clicks]
                labels = None if clicks is None else [c[2] for c in clicks]
                session.add_points(frame, obj, points, labels, box=prompt.get("box"))
        except VideoDecodeError as error:
            raise ValueError(f"{error}; nothing was written") from None
        tracked = set()
        with staged_folder(out / "masks", overwrite=True, is_replaceable=_is_mask_folder) as staging:
            try:
                for result in session.propagate(reverse="both", max_frames=args.max_frames):
                    write_palette_png(label_map(result), staging / f"{result.frame_idx:05d}.png")
                    tracked.add(result.frame_idx)
            except VideoDecodeError as error:
                failure = error
            (out / "overlay.mp4").unlink(missing_ok=True)  # an earlier run's, about to be stale
        order = sorted(tracked)
        frames = (session.frame(t) for t in order)
        labels = (np.asarray(Image.open(out / "masks" / f"{t:05d}.png")) for t in order)
        write_overlay_video(frames, labels, out / "overlay.mp4", session.fps or 24.0)
    span = f" (frames {order[0]}-{order[-1]})" if order else ""
    written = f"{len(order)} masks{span} to {out / 'masks'} and {out / 'overlay.mp4'}"
    if failure is not None:
        raise ValueError(f"{failure}; tracking stopped there and wrote {written}")
    if not args.quiet:
        print(f"Wrote {written}")


SUBCOMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "convert": ("convert a Meta or transformers Hiera or SAM 2 checkpoint", add_convert_arguments, run_convert),
    "classify": ("print the top labels of an image or a video", add_classify_arguments, run_classify),
    "segment": ("segment an image with SAM 2 from clicks and/or a box", add_segment_arguments, run_segment),
    "generate-masks": ("segment everything in an image with SAM 2", add_generate_masks_arguments, run_generate_masks),
    "track": ("track objects through a video with SAM 2", add_track_arguments, run_track),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hiera-hf", description="Meta's Hiera and SAM 2 in the Hugging Face ecosystem."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, add_arguments, run) in SUBCOMMANDS.items():
        command = commands.add_parser(name, help=summary, description=summary)
        add_arguments(command)
        command.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hiera-hf`; returns the exit status (errors meant for the user print as `error: ...`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS as error:
        print(f"hiera-hf {args.command}: error: {_message(error)}", file=sys.stderr)
        return 1
    return 0


def _message(error: Exception) -> str:
    """One line for the user: an OSError as "what: file" (`[Errno 28] No space left on device: 'x'` ->
    "No space left on device: x"), anything else its text with line breaks folded."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
