"""`evaluate` metrics shipped with the package, usable offline."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def load_accuracy(**kwargs):
    """`evaluate.load` of the packaged accuracy metric (no Hub access): `.compute(predictions=, references=)`."""
    import evaluate

    return evaluate.load(str(_HERE / "accuracy.py"), **kwargs)


__all__ = ["load_accuracy"]
