"""The `hiera-hf` command. Each subcommand is a pair: `add_<name>_arguments(parser)` and `run_<name>(args)`,
listed in `SUBCOMMANDS`; add a command by writing that pair and one entry."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .hiera.presets import HIERA_PRESETS

# Errors with a message for the user: printed without a traceback.
USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, ConnectionError, ImportError)


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `convert` (shared with `conversion_scripts/convert_hiera_to_hf.py`)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--checkpoint", metavar="FILE", help="Meta's .pth ({'model_state': ...}); downloaded if omitted"
    )
    source.add_argument(
        "--from-transformers", metavar="DIR", help="a transformers-format Hiera folder (facebook/hiera-*-hf layout)"
    )
    parser.add_argument(
        "--variant",
        metavar="NAME",
        help=f"official variant (required for Meta checkpoints): {', '.join(sorted(HIERA_PRESETS))}",
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
    from .conversion import convert_hiera

    if args.variant is None and args.from_transformers is None:
        raise ValueError("--variant NAME is required unless --from-transformers DIR is given")
    output = convert_hiera(
        args.output,
        variant=args.variant,
        checkpoint=args.checkpoint,
        checkpoint_name=args.checkpoint_name,
        from_transformers=args.from_transformers,
        verify=not args.no_verify,
        push_to_hub=args.push_to_hub,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"Wrote {output}")


def _prompt_values(text: str, counts: tuple[int, ...], flag: str) -> list[float]:
    values = text.split(",")
    try:
        if len(values) not in counts:
            raise ValueError
        return [float(v) for v in values]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{flag} expects {' or '.join(map(str, counts))} numbers, got {text!r}"
        ) from None


def add_track_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `track`."""
    parser.add_argument("video", metavar="VIDEO", help="a video file or a folder of JPEG/PNG frames")
    parser.add_argument("--model", required=True, metavar="NAME_OR_DIR", help="a converted SAM 2 folder or name")
    parser.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="FRAME,OBJ,X,Y[,LABEL]",
        type=lambda text: _prompt_values(text, (4, 5), "--point"),
        help="a click on object OBJ (1-255) at pixel (X, Y) of FRAME; LABEL 1 foreground (default) or 0 background",
    )
    parser.add_argument(
        "--box",
        action="append",
        default=[],
        metavar="FRAME,OBJ,X0,Y0,X1,Y1",
        type=lambda text: _prompt_values(text, (6,), "--box"),
        help="a box around object OBJ on FRAME, in pixels",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="writes DIR/masks/00000.png ... and DIR/overlay.mp4"
    )
    parser.add_argument("--max-frames", type=int, metavar="N", help="track at most N frames each way")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_track(args: argparse.Namespace) -> None:
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from .hub import resolve_model
    from .sam2 import Sam2VideoModel, Sam2VideoSession
    from .sam2.video_output import label_map, write_overlay_video, write_palette_png

    prompts: dict[tuple[int, int], dict] = {}  # (frame, object) -> box and clicks
    for frame, obj, *box in args.box:
        if "box" in prompts.setdefault((int(frame), int(obj)), {}):
            raise ValueError(f"More than one --box for object {int(obj)} on frame {int(frame)}")
        prompts[int(frame), int(obj)]["box"] = box
    for frame, obj, x, y, *label in args.point:
        clicks = prompts.setdefault((int(frame), int(obj)), {}).setdefault("clicks", [])
        clicks.append((x, y, int(label[0]) if label else 1))
    if not prompts:
        raise ValueError("Give at least one --point or --box")
    if any(not 1 <= obj <= 255 for _, obj in prompts):
        raise ValueError(f"Object ids must be 1..255 (mask PNG values), got {sorted({obj for _, obj in prompts})}")
    model = Sam2VideoModel.from_pretrained(resolve_model(args.model, progress=not args.quiet))
    out = Path(args.out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    with Sam2VideoSession(model, args.video, progress=not args.quiet) as session:
        for (frame, obj), prompt in prompts.items():
            clicks = prompt.get("clicks")
            points = None if clicks is None else [c[:2] for c in clicks]
            labels = None if clicks is None else [c[2] for c in clicks]
            session.add_points(frame, obj, points, labels, box=prompt.get("box"))
        tracked = set()
        for result in session.propagate(reverse="both", max_frames=args.max_frames):
            write_palette_png(label_map(result), out / "masks" / f"{result.frame_idx:05d}.png")
            tracked.add(result.frame_idx)
        order = sorted(tracked)
        frames = (session.frame(t) for t in order)
        labels = (np.asarray(Image.open(out / "masks" / f"{t:05d}.png")) for t in order)
        write_overlay_video(frames, labels, out / "overlay.mp4", session.fps or 24.0)
    if not args.quiet:
        print(f"Wrote {len(order)} masks to {out / 'masks'} and {out / 'overlay.mp4'}")


SUBCOMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "convert": ("convert a Meta or transformers Hiera checkpoint", add_convert_arguments, run_convert),
    "track": (
        "track objects through a video with SAM 2 (clicks and boxes as prompts)",
        add_track_arguments,
        run_track,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hiera-hf", description="Meta's Hiera in the Hugging Face ecosystem.")
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
