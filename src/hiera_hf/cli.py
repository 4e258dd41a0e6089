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


SUBCOMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "convert": ("convert a Meta or transformers Hiera checkpoint", add_convert_arguments, run_convert),
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
