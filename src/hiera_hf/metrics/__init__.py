"""`evaluate` metrics shipped with the package, usable offline."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _load(script: str, **kwargs):
    import evaluate

    return evaluate.load(str(_HERE / script), **kwargs)


def load_accuracy(**kwargs):
    """`evaluate.load` of the packaged accuracy metric (no Hub access): `.compute(predictions=, references=)`."""
    return _load("accuracy.py", **kwargs)


def load_mean_iou(**kwargs):
    """`evaluate.load` of the packaged mean IoU of binary masks (`mean_iou.py`, no Hub access)."""
    return _load("mean_iou.py", **kwargs)


def load_semantic_mean_iou(**kwargs):
    """`evaluate.load` of the packaged class-wise mean IoU of semantic segmentation (`semantic_mean_iou.py`, no Hub
    access): `.compute(predictions=, references=, num_labels=[, ignore_index=255, reduce_labels=False])`, the keys of
    `evaluate`'s `mean_iou`."""
    return _load("semantic_mean_iou.py", **kwargs)


def load_j_and_f(**kwargs):
    """`evaluate.load` of the packaged DAVIS J&F of masklets (`j_and_f.py`, no Hub access)."""
    return _load("j_and_f.py", **kwargs)


def load_box_tracking(**kwargs):
    """`evaluate.load` of the packaged one-pass evaluation of box tracks (`box_tracking.py`, no Hub access): success
    AUC, precision at 20 px, normalized precision."""
    return _load("box_tracking.py", **kwargs)


__all__ = ["load_accuracy", "load_box_tracking", "load_j_and_f", "load_mean_iou", "load_semantic_mean_iou"]
