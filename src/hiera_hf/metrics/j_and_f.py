"""DAVIS J&F for video object segmentation, as an `evaluate` metric shipped with hiera-hf (no Hub access).

Load it with `hiera_hf.metrics.load_j_and_f()`. Each prediction/reference is one object's masklet `(T, H, W)`
(`j_and_f()` without `evaluate` also takes single masks `(H, W)`). As the DAVIS 2017 benchmark (`davis2017-evaluation`, `metrics.py`) computes them:

- J (region similarity) is the IoU of a frame's masks, 1 when both are empty;
- F (boundary accuracy) is the F-measure of the masks' one-pixel boundaries, each boundary pixel matching if the
  other boundary lies within `ceil(0.008 * image diagonal)` pixels (a disk-shaped dilation);
- both are averaged over the frames of a masklet, then over masklets; J&F is their mean.

DAVIS leaves out the first frame (it holds the prompt) and the last one of every video; pass the frames to score.
"""

from __future__ import annotations

import math

import datasets
import evaluate
import numpy as np
import torch
import torch.nn.functional as F

_DESCRIPTION = "DAVIS J&F: mean of region similarity (J, mask IoU) and boundary F-measure (F) over masklets."
_INPUTS = """
Args:
    predictions (`list` of `(T, H, W)` binary arrays): predicted masklets, one per object.
    references (`list` of arrays of the same shapes): ground-truth masklets.
    bound_th (`float`, defaults to 0.008): boundary tolerance, a fraction of the image diagonal (>= 1: pixels).
Returns:
    `{"J&F": float, "J": float, "F": float}`, means over masklets of their per-frame means.
"""


def region_similarity(prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """IoU of binary masks `(..., H, W)` -> `(...)`, 1 where both masks are empty (DAVIS's `db_eval_iou`)."""
    prediction, reference = prediction.astype(bool), reference.astype(bool)
    intersection = (prediction & reference).sum(axis=(-2, -1))
    union = (prediction | reference).sum(axis=(-2, -1))
    return np.where(union == 0, 1.0, intersection / np.maximum(union, 1))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary mask `(H, W)`: pixels differing from their right, lower or lower-right
    neighbour (outside the image counts as background except along the last row and column, as DAVIS's
    `_seg2bmap`)."""
    mask = mask.astype(bool)
    right, below, diagonal = np.zeros_like(mask), np.zeros_like(mask), np.zeros_like(mask)
    right[:, :-1], below[:-1, :], diagonal[:-1, :-1] = mask[:, 1:], mask[1:, :], mask[1:, 1:]
    boundary = (mask ^ right) | (mask ^ below) | (mask ^ diagonal)
    boundary[-1, :] = mask[-1, :] ^ right[-1, :]
    boundary[:, -1] = mask[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def _dilate(boundary: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of `(H, W)` by a disk of `radius` (the points with x^2 + y^2 <= radius^2)."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disk = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).float()
    image = torch.from_numpy(boundary.astype(np.float32))[None, None]
    return (F.conv2d(image, disk[None, None], padding=radius)[0, 0] > 0).numpy()


def boundary_f_measure(prediction: np.ndarray, reference: np.ndarray, bound_th: float = 0.008) -> float:
    """DAVIS's boundary F-measure of two binary masks `(H, W)` (`f_measure`)."""
    height, width = prediction.shape
    radius = int(bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(height, width)))
    predicted, true = boundary_map(prediction), boundary_map(reference)
    num_predicted, num_true = int(predicted.sum()), int(true.sum())
    if num_predicted == 0 or num_true == 0:  # DAVIS's conventions for empty boundaries
        return 1.0 if num_predicted == num_true else 0.0
    precision = float((predicted & _dilate(true, radius)).sum()) / num_predicted
    recall = float((true & _dilate(predicted, radius)).sum()) / num_true
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def j_and_f(predictions, references, bound_th: float = 0.008) -> dict[str, float]:
    """The metric on lists of masklets (see the module docstring), without `evaluate`."""
    if len(predictions) != len(references) or not len(predictions):
        raise ValueError(
            f"Give as many predictions as references (at least one), got {len(predictions)} and {len(references)}"
        )
    region, boundary = [], []
    for prediction, reference in zip(predictions, references):
        prediction, reference = np.asarray(prediction), np.asarray(reference)
        if prediction.shape != reference.shape or prediction.ndim not in (2, 3):
            raise ValueError(
                f"Each prediction and reference must be a (T, H, W) or (H, W) mask of the same shape, got "
                f"{prediction.shape} and {reference.shape}"
            )
        prediction, reference = (
            prediction.reshape(-1, *prediction.shape[-2:]),
            reference.reshape(-1, *reference.shape[-2:]),
        )
        region.append(region_similarity(prediction, reference).mean())
        boundary.append(np.mean([boundary_f_measure(p, r, bound_th) for p, r in zip(prediction, reference)]))
    j, f = float(np.mean(region)), float(np.mean(boundary))
    return {"J&F": (j + f) / 2, "J": j, "F": f}


class JAndF(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        masklet = datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("uint8"))))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Perazzi et al., A Benchmark Dataset and Evaluation Methodology for Video Object Segmentation, 2016",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": masklet, "references": masklet}),
        )

    def _compute(self, predictions, references, bound_th: float = 0.008) -> dict[str, float]:
        return j_and_f(predictions, references, bound_th)
