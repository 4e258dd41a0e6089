"""Flags of `hiera-hf app` (light: nothing heavy is imported until the app starts)."""

from __future__ import annotations

import argparse


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `app`."""
    parser.add_argument(
        "--model",
        default="sam2.1_hiera_tiny",
        metavar="NAME_OR_DIR",
        help="a converted SAM 2 folder or an official variant name (default sam2.1_hiera_tiny; converted into the "
        "cache on first use)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1; 0.0.0.0: all)")
    parser.add_argument("--port", type=int, metavar="N", help="port (default: the first free one from 7860)")
    parser.add_argument("--device", metavar="DEVICE", help="torch device (default: cuda when available, else cpu)")


def run_app(args: argparse.Namespace) -> None:
    """Start the app (blocks until interrupted)."""
    if args.port is not None and not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    try:
        from .ui import launch
    except ImportError as error:
        raise ImportError(f'The app needs Gradio: pip install "hiera-hf[app]" ({error})') from error
    launch(args.model, host=args.host, port=args.port, device=args.device)


__all__ = ["add_app_arguments", "run_app"]
