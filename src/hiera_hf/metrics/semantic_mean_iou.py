"""Class-wise mean IoU of semantic segmentation, as an `evaluate` metric shipped with hiera-hf (no Hub access).

Load it with `hiera_hf.metrics.load_semantic_mean_iou()`. It computes what mmsegmentation's `mean_iou` and
`evaluate`'s Hub metric `mean_iou` compute, with the same keys and NaN conventions:

- per class `c`, over the whole dataset: `I[c]` the pixels predicted `c` whose reference is `c`, `P[c]` the pixels
  predicted `c`, `L[c]` the pixels whose reference is `c`, each summed over the images before any division;
- `per_category_iou = I / (P + L - I)`, NaN for a class neither predicted nor in the references;
  `per_category_accuracy = I / L`, NaN for a class absent from the references;
- `mean_iou`, `mean_accuracy`: their means over the classes that are not NaN; `overall_accuracy = sum(I) / sum(L)`.

Pixels whose reference is `ignore_index` are left out. Other values outside `0..num_labels - 1` belong to no class:
a reference pixel of such a value still counts the pixel's predicted class in `P`, a predicted one misses its
reference class. `reduce_labels` first maps the references' 0 (a background that is not a class, as ADE20k's) to 255
and every other value `v` to `v - 1`, 255 staying 255.

Without `evaluate`: `semantic_mean_iou(predictions, references, num_labels)`; or, batch by batch (the Trainer's
`batch_eval_metrics`, as `examples/finetune_semantic_segmentation.py` does), sum `class_areas` of every image and
call `scores` on the sum.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Mean IoU of semantic segmentation: per-class IoU over the dataset, averaged over classes."
_INPUTS = """
Args:
    predictions (`list` of `(H, W)` integer arrays): predicted class maps.
    references (`list` of `(H, W)` integer arrays): reference class maps of the same shapes.
    num_labels (`int`): number of classes.
    ignore_index (`int`, defaults to 255): reference value of the pixels left out.
    reduce_labels (`bool`, defaults to `False`): references' 0 -> 255 and `v` -> `v - 1` first.
Returns:
    `{"mean_iou": float, "mean_accuracy": float, "overall_accuracy": float, "per_category_iou": (num_labels,)
    ndarray, "per_category_accuracy": (num_labels,) ndarray}`
"""


def reduce_reference_labels(reference: np.ndarray) -> np.ndarray:
    """Reference map with 0 (a background that is no class) -> 255 and every other value `v` -> `v - 1`, 255
    staying 255; int64, same shape."""
    reference = np.asarray(reference).astype(np.int64)
    return np.where((reference == 0) | (reference == 255), 255, reference - 1)


def _class_counts(values: np.ndarray, num_labels: int) -> np.ndarray:
    """Pixels of each class `(num_labels,)` among `values` (values outside `0..num_labels - 1` count for none)."""
    values = values[(values >= 0) & (values < num_labels)]
    return np.bincount(values.astype(np.int64), minlength=num_labels)


def class_areas(prediction, reference, num_labels: int, ignore_index: int = 255, reduce: bool = False) -> np.ndarray:
    """Per-class areas of one image `(3, num_labels)`: intersection `I`, predicted `P` and reference `L` pixels
    (module docstring) of the class maps `prediction` and `reference` `(H, W)`."""
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    if prediction.shape != reference.shape:
        raise ValueError(f"A prediction {prediction.shape} and its reference {reference.shape} differ in shape")
    if reduce:
        reference = reduce_reference_labels(reference)
    kept = reference != ignore_index
    prediction, reference = prediction[kept], reference[kept]
    return np.stack(
        [
            _class_counts(reference[prediction == reference], num_labels),
            _class_counts(prediction, num_labels),
            _class_counts(reference, num_labels),
        ]
    )


def _nanmean(values: np.ndarray) -> float:
    """Mean of the values that are not NaN (NaN, without a warning, when all are)."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """`numerator / denominator`, NaN where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def scores(areas: np.ndarray) -> dict:
    """The metric's results from the areas `(3, num_labels)` of `class_areas` summed over the images."""
    intersection, predicted, labelled = np.asarray(areas, dtype=np.float64)
    iou = _ratio(intersection, predicted + labelled - intersection)
    accuracy = _ratio(intersection, labelled)
    return {
        "mean_iou": _nanmean(iou),
        "mean_accuracy": _nanmean(accuracy),
        "overall_accuracy": float(_ratio(intersection.sum(), labelled.sum())),
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
    }


def semantic_mean_iou(
    predictions, references, num_labels: int, ignore_index: int = 255, reduce_labels: bool = False
) -> dict:
    """The metric on lists of `(H, W)` class maps (module docstring), without `evaluate`."""
    if len(predictions) != len(references) or not len(predictions):
        raise ValueError(
            f"Give as many predictions as references (at least one), got {len(predictions)} and {len(references)}"
        )
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}")
    return scores(
        sum(class_areas(p, r, num_labels, ignore_index, reduce_labels) for p, r in zip(predictions, references))
    )


class SemanticMeanIoU(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        class_map = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="MMSegmentation Contributors, OpenMMLab Semantic Segmentation Toolbox and Benchmark, 2020",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": class_map, "references": class_map}),
        )

    def _compute(
        self, predictions, references, num_labels: int, ignore_index: int = 255, reduce_labels: bool = False
    ) -> dict:
        return semantic_mean_iou(predictions, references, num_labels, ignore_index, reduce_labels)
