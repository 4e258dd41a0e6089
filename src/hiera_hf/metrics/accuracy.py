"""Accuracy as an `evaluate` metric, shipped with hiera-hf so that `evaluate.load` works without the Hub.

Load it with `hiera_hf.metrics.load_accuracy()`; it computes the same value as `evaluate.load("accuracy")`.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy: the (optionally weighted) fraction of predictions equal to their reference."
_INPUTS = """
Args:
    predictions (`list[int]`): predicted labels.
    references (`list[int]`): true labels.
    normalize (`bool`, defaults to `True`): return the fraction (True) or the count (False) of correct predictions.
    sample_weight (`list[float]`, *optional*): per-sample weights.
Returns:
    `{"accuracy": float}`
"""


class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, normalize: bool = True, sample_weight=None) -> dict[str, float]:
        predictions, references = np.asarray(predictions), np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(f"predictions {predictions.shape} and references {references.shape} differ in shape")
        weights = np.ones(len(predictions)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        if weights.shape != predictions.shape:
            raise ValueError(f"sample_weight has shape {weights.shape}, expected {predictions.shape}")
        correct = float(np.sum(weights * (predictions == references)))
        return {"accuracy": correct / float(np.sum(weights)) if normalize else correct}
