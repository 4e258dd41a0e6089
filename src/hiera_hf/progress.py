"""What the libraries under hiera-hf print: their progress bars and info messages, switched off for a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def library_output(bars: bool = True, messages: bool = True) -> Iterator[None]:
    """Inside the block, transformers' and huggingface_hub's progress bars are off unless `bars`, and transformers'
    info and warning messages unless `messages`; afterwards everything is as it was (callers may run in-process,
    e.g. `hiera_hf.cli.main` from a notebook or a test). Used for `--quiet`, and by `convert`, whose own step bar
    would otherwise have transformers' bars nested inside it."""
    if bars and messages:
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    verbosity, bars_on = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    hub_bars_off = are_progress_bars_disabled()
    if not bars:
        transformers_logging.disable_progress_bar()
        disable_progress_bars()
    if not messages:
        transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars_on:
            transformers_logging.enable_progress_bar()
        if not hub_bars_off:
            enable_progress_bars()


__all__ = ["library_output"]
