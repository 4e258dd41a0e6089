"""Semantic segmentation: the class-wise mean IoU metric (`hiera_hf.metrics.load_semantic_mean_iou`) against
`evaluate`'s documented `mean_iou` results, a confusion matrix from scikit-image and hand-computed cases; and
`examples/finetune_semantic_segmentation.py` (UperNet on a converted Hiera) run directly and under `accelerate
launch`."""

import numpy as np
import pytest
from skimage.metrics import contingency_table

from hiera_hf.metrics import load_semantic_mean_iou
from hiera_hf.metrics.semantic_mean_iou import semantic_mean_iou

# -- the metric ----------------------------------------------------------------------------------------------------


def test_matches_the_example_documented_by_evaluates_mean_iou():
    """The inputs and results of the docstring of `evaluate`'s Hub metric `mean_iou` (ignored pixels predicted 255)."""
    predictions = [
        np.array([[1, 2], [3, 4], [5, 255]]),
        np.array([[2, 7], [9, 2], [3, 6]]),
        np.array([[2, 2, 3], [8, 2, 4], [3, 255, 2]]),
    ]
    references = [
        np.array([[0, 3], [5, 4], [6, 255]]),
        np.array([[1, 7], [9, 2], [3, 6]]),
        np.array([[1, 2, 2], [8, 2, 1], [3, 255, 1]]),
    ]
    result = load_semantic_mean_iou().compute(predictions=predictions, references=references, num_labels=10)
    assert result["mean_iou"] == pytest.approx(0.4775, abs=1e-15)
    assert result["mean_accuracy"] == pytest.approx(0.5916666666666666, abs=1e-15)
    assert result["overall_accuracy"] == pytest.approx(10 / 19, abs=1e-15)
    np.testing.assert_array_equal(result["per_category_iou"], [0, 0, 3 / 8, 2 / 5, 1 / 2, 0, 1 / 2, 1, 1, 1])
    np.testing.assert_array_equal(result["per_category_accuracy"], [0, 0, 3 / 4, 2 / 3, 1, 0, 1 / 2, 1, 1, 1])


def _confusion_matrix_scores(predictions, references, num_labels: int) -> dict:
    """The metric from a confusion matrix summed over the images (`skimage.metrics.contingency_table`, reference
    pixels of 255 left out): IoU = diagonal / (row + column - diagonal), accuracy = diagonal / row."""
    table = np.zeros((256, 256))
    for prediction, reference in zip(predictions, references):
        counts = contingency_table(reference, prediction, ignore_labels=[255]).toarray()
        table[: counts.shape[0], : counts.shape[1]] += counts
    correct, labelled = np.diag(table)[:num_labels], table[:num_labels].sum(axis=1)
    union = labelled + table[:, :num_labels].sum(axis=0) - correct
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, accuracy = correct / union, correct / labelled
    return {
        "mean_iou": np.nanmean(iou),
        "mean_accuracy": np.nanmean(accuracy),
        "overall_accuracy": correct.sum() / labelled.sum(),
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
    }


def test_matches_a_confusion_matrix_over_the_dataset():
    """Images of different sizes; ignored pixels; predictions of 255 (a miss); class 4 predicted but in no
    reference (IoU 0, accuracy NaN), class 5 in neither (NaN, NaN)."""
    generator = np.random.default_rng(0)
    predictions, references = [], []
    for shape in [(7, 9), (12, 5), (6, 6)]:
        reference = generator.integers(0, 4, shape)
        prediction = np.where(generator.random(shape) < 0.6, reference, generator.integers(0, 5, shape))
        reference[generator.random(shape) < 0.15] = 255
        prediction[generator.random(shape) < 0.05] = 255
        predictions.append(prediction)
        references.append(reference)
    result = load_semantic_mean_iou().compute(predictions=predictions, references=references, num_labels=6)
    expected = _confusion_matrix_scores(predictions, references, 6)
    assert np.isnan(result["per_category_iou"][5]) and result["per_category_iou"][4] == 0
    assert np.isnan(result["per_category_accuracy"][4:]).all()
    for key in ("per_category_iou", "per_category_accuracy"):
        np.testing.assert_array_equal(result[key], expected[key])
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert result[key] == pytest.approx(expected[key], rel=1e-12, abs=0)
    # Summed over the dataset, not averaged over images:
    per_image = [semantic_mean_iou([p], [r], 6)["mean_iou"] for p, r in zip(predictions, references)]
    assert result["mean_iou"] != pytest.approx(np.mean(per_image), rel=1e-3)


REFERENCE = np.array([[0, 1, 2], [3, 255, 1]])


def test_reduce_labels_by_hand():
    """0 -> 255 (ignored with 255), 1, 2, 3 -> classes 0, 1, 2. Kept pixels (reference, prediction): (0, 0), (1, 2),
    (2, 2), (0, 0): I = [2, 0, 1], P = [2, 0, 2], L = [2, 1, 1]."""
    prediction = np.array([[2, 0, 2], [2, 1, 0]])
    result = semantic_mean_iou([prediction], [REFERENCE], num_labels=3, reduce_labels=True)
    np.testing.assert_array_equal(result["per_category_iou"], [1, 0, 1 / 2])
    np.testing.assert_array_equal(result["per_category_accuracy"], [1, 0, 1])
    assert (result["mean_iou"], result["overall_accuracy"]) == (1 / 2, 3 / 4)
    assert result["mean_accuracy"] == pytest.approx(2 / 3, abs=1e-15)
    unreduced = semantic_mean_iou([prediction], [REFERENCE], num_labels=3)
    assert unreduced["per_category_iou"][0] == 0  # without reduction, 0 is a class


def test_ignore_index_and_references_outside_the_classes_by_hand():
    """ignore_index 0; the reference 255 is then no class of 4: it counts its prediction (1) in P only. Kept pixels
    (reference, prediction): (1, 0), (2, 2), (3, 2), (255, 1), (1, 0): I = [0, 0, 1, 0], P = [2, 1, 2, 0],
    L = [0, 2, 1, 1]."""
    prediction = np.array([[3, 0, 2], [2, 1, 0]])
    result = semantic_mean_iou([prediction], [REFERENCE], num_labels=4, ignore_index=0)
    np.testing.assert_array_equal(result["per_category_iou"], [0, 0, 1 / 2, 0])
    np.testing.assert_array_equal(result["per_category_accuracy"], [np.nan, 0, 1, 0])
    assert (result["mean_iou"], result["overall_accuracy"]) == (1 / 8, 1 / 4)
    assert result["mean_accuracy"] == pytest.approx(1 / 3, abs=1e-15)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        semantic_mean_iou([np.zeros((2, 3))], [np.zeros((3, 2))], num_labels=2)
    with pytest.raises(ValueError, match="as many predictions"):
        semantic_mean_iou([], [], num_labels=2)
    with pytest.raises(ValueError, match="num_labels"):
        semantic_mean_iou([np.zeros((2, 2))], [np.zeros((2, 2))], num_labels=0)
