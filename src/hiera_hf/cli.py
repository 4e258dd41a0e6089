"""The `hiera-hf` command. Each subcommand is a pair: `add_<name>_arguments(parser)` and `run_<name>(args)`,
listed in `SUBCOMMANDS`; add a command by writing that pair and one entry."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .hiera.presets import HIERA_PRESETS
from .sam2.presets import SAM2_PRESETS

# Errors with a message for the user: printed without a traceback.
USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, ConnectionError, ImportError)


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `convert` (shared with `conversion_scripts/convert_hiera_to_hf.py`)."""
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
        and json.loads(config_file.read_text()).get("model_type") in TRANSFORMERS_SAM2_MODEL_TYPES
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

    from .hub import resolve_model

    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    path = Path(args.input)
    if not path.exists():
        raise FileNotFoundError(f"No such image or video: {path}")
    folder = resolve_model(args.model, progress=not args.quiet)
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


SUBCOMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "convert": ("convert a Meta or transformers Hiera or SAM 2 checkpoint", add_convert_arguments, run_convert),
    "classify": ("print the top labels of an image or a video", add_classify_arguments, run_classify),
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
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"hiera-hf {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
