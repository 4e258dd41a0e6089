"""The one-pass box-tracking metric (`hiera_hf.metrics.load_box_tracking`) against GOT-10k's official toolkit
(PyPI `got10k` 0.1.3: `rect_iou`, `center_error` and `ExperimentOTB._calc_curves`, averaged over sequences as its
`report` does), on synthetic tracks and on tracks shaped like real ones (a drifting, then lost, then recovered
target); and hand-computed cases for what the toolkit does not cover (absent objects, left-out frames)."""

import types

import numpy as np
import pytest
from got10k.experiments.otb import ExperimentOTB
from got10k.utils.metrics import center_error, rect_iou

from hiera_hf.metrics import load_box_tracking


def _got10k_report(predictions, references) -> dict:
    """GOT-10k's OTB scores: per-sequence curves from its own functions, averaged, then scored."""
    experiment = types.SimpleNamespace(nbins_iou=21, nbins_ce=51)
    success, precision = [], []
    for prediction, reference in zip(predictions, references):
        ious = rect_iou(prediction.copy(), reference.copy())
        errors = center_error(prediction, reference)
        curves = ExperimentOTB._calc_curves(experiment, ious, errors)
        success.append(curves[0])
        precision.append(curves[1])
    success, precision = np.mean(success, axis=0), np.mean(precision, axis=0)
    return {"success_auc": np.mean(success), "precision": precision[20], "curves": (success, precision)}


def _synthetic(generator, length: int, size: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A reference track (boxes moving about a 640x480 frame) and a noisy prediction of it."""
    centres = np.cumsum(generator.normal(0, 6, (length, 2)), axis=0) + [320, 240]
    sizes = np.full((length, 2), size) if size else np.exp(generator.normal(4, 0.3, (length, 2)))
    reference = np.concatenate([centres - sizes / 2, sizes], axis=1)
    noise = generator.normal(0, 1, (length, 4)) * [8, 8, 6, 6]
    return reference + noise, reference


def _real_shaped(generator) -> tuple[np.ndarray, np.ndarray]:
    """A 120-frame track: follows the target, drifts off it, loses it (a far-away box), then recovers."""
    prediction, reference = _synthetic(generator, 120)
    prediction[40:70, :2] += np.linspace(0, 60, 30)[:, None]  # drifting
    prediction[70:90] = [600, 20, 30, 30]  # on a distractor in a corner
    return prediction, reference


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_and_curves_match_got10k(seed):
    generator = np.random.default_rng(seed)
    tracks = [_synthetic(generator, length) for length in (30, 75, 200)] + [_real_shaped(generator)]
    predictions, references = [p for p, _ in tracks], [r for _, r in tracks]
    ours = load_box_tracking().compute(predictions=predictions, references=references)
    expected = _got10k_report(predictions, references)
    assert ours["success_auc"] == pytest.approx(expected["success_auc"], abs=1e-12)
    assert ours["precision"] == pytest.approx(expected["precision"], abs=1e-12)
    np.testing.assert_allclose(ours["success_curve"], expected["curves"][0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["precision_curve"], expected["curves"][1], rtol=0, atol=1e-12)
    assert 0.05 < ours["success_auc"] < 0.95 and 0.05 < ours["precision"] < 0.95  # neither trivial nor perfect


def test_normalized_precision_is_precision_for_100_pixel_references():
    """With every reference box 100x100, a normalized error of 0.01 is one pixel: the normalized precision curve
    equals GOT-10k's precision curve."""
    generator = np.random.default_rng(3)
    tracks = [_synthetic(generator, length, size=100.0) for length in (40, 90)]
    predictions, references = [p for p, _ in tracks], [r for _, r in tracks]
    ours = load_box_tracking().compute(predictions=predictions, references=references)
    expected = _got10k_report(predictions, references)
    np.testing.assert_allclose(ours["normalized_precision_curve"], expected["curves"][1], rtol=0, atol=1e-12)
    assert ours["normalized_precision"] == pytest.approx(expected["precision"], abs=1e-12)


def test_hand_computed_cases():
    metric = load_box_tracking()
    reference = [[10, 10, 20, 20]] * 4
    perfect = metric.compute(predictions=[reference], references=[reference])
    assert perfect["success_auc"] == pytest.approx(20 / 21)  # IoU 1 exceeds every threshold but 1
    assert perfect["precision"] == perfect["normalized_precision"] == 1.0
    # frame 1 absent (no area), frame 2 shifted by 10 px in x (IoU 10*20 / (2*400 - 200) = 1/3), frame 3 left out
    prediction = [[10, 10, 20, 20], [0, 0, 0, 0], [20, 10, 20, 20], [500, 500, 5, 5]]
    result = metric.compute(predictions=[prediction], references=[[*reference[:3], [40, 40, 0, 0]]])
    success = np.asarray(result["success_curve"])
    thresholds = np.linspace(0, 1, 21)
    expected = ((1.0 > thresholds).astype(float) + (1 / 3 > thresholds)) / 3
    np.testing.assert_allclose(success, expected)
    assert result["precision"] == pytest.approx(2 / 3)  # 0 and 10 px; the absent frame misses
    assert result["normalized_precision"] == pytest.approx(1 / 3)  # 10 px of a 20 px wide box: 0.5 > 0.2
    assert result["normalized_precision_curve"][50] == pytest.approx(2 / 3)
    assert result["normalized_precision_curve"][49] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "predictions, references, message",
    [
        ([], [], "at least one"),
        ([[[1, 2, 3]]], [[[1, 2, 3]]], r"\(T, 4\)"),
        ([[[1, 2, 3, float("nan")]]], [[[1, 2, 3, 4]]], "finite"),
        ([[[1, 2, 3, 4]] * 2], [[[1, 2, 3, 4]]], "2 predicted boxes for 1"),
        ([[[1, 2, 3, 4]]], [[[1, 2, 0, 4]]], "nothing to score"),
    ],
)
def test_bad_input_is_refused(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        load_box_tracking().compute(predictions=predictions, references=references)
