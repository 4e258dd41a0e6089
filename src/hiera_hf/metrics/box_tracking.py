"""One-pass evaluation of box trackers (the OTB / LaSOT / GOT-10k protocol), as an `evaluate` metric shipped with
hiera-hf (no Hub access): success AUC, precision at 20 pixels and normalized precision.

Load it with `hiera_hf.metrics.load_box_tracking()`. Boxes are `(x, y, w, h)` in pixels, as `track --format boxes`
writes them. For each sequence:

- success curve: the fraction of frames whose IoU of predicted and reference box exceeds each of 21 thresholds
  0, 0.05, ..., 1; the success AUC is the curve's mean;
- precision curve: the fraction of frames whose centre error (distance between the box centres, a centre being
  `x + (w - 1) / 2`, `y + (h - 1) / 2` as in OTB's toolkit) is at most 0, 1, ..., 50 pixels; precision is its value
  at 20 pixels;
- normalized precision curve: the same with each centre's x divided by the reference box's width and y by its
  height (LaSOT's), at 0, 0.01, ..., 0.5; normalized precision is its value at 0.2.

The curves are averaged over sequences, then scored, as GOT-10k's toolkit (PyPI `got10k`) reports OTB-style results.
A predicted box without area (an object predicted absent, `0,0,0,0`) misses every threshold. Frames whose reference
box has no area (the target is not visible) are left out. OPE reports usually give the tracker the first frame's
reference box: put `references[i][0]` as `predictions[i][0]` to score that way.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Success AUC, precision at 20 px and normalized precision of box tracks (one-pass evaluation)."
_INPUTS = """
Args:
    predictions (`list` of `(T, 4)` arrays): one predicted track per sequence, `x, y, w, h` per frame.
    references (`list` of `(T, 4)` arrays): the reference track of each sequence, frame for frame.
Returns:
    `{"success_auc": float, "precision": float, "normalized_precision": float, "success_curve": list,
    "precision_curve": list, "normalized_precision_curve": list}` (curves at the thresholds of the module docstring)
"""

IOU_THRESHOLDS = np.linspace(0.0, 1.0, 21)
CENTER_THRESHOLDS = np.arange(51, dtype=np.float64)  # pixels
NORMALIZED_THRESHOLDS = np.arange(51, dtype=np.float64) / 100.0


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of `(T, 4)` `x, y, w, h` boxes, frame by frame `(T,)` (0 where either box has no area)."""
    low = np.maximum(boxes1[:, :2], boxes2[:, :2])
    high = np.minimum(boxes1[:, :2] + boxes1[:, 2:], boxes2[:, :2] + boxes2[:, 2:])
    inter = np.prod(np.clip(high - low, 0.0, None), axis=1)
    union = np.prod(boxes1[:, 2:], axis=1) + np.prod(boxes2[:, 2:], axis=1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _centres(boxes: np.ndarray) -> np.ndarray:
    return boxes[:, :2] + (boxes[:, 2:] - 1.0) / 2.0


def sequence_curves(prediction: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Success `(21,)`, precision `(51,)` and normalized precision `(51,)` curves of one track `(T, 4)` against its
    reference `(T, 4)`, over the frames where the reference box has an area."""
    visible = (reference[:, 2] > 0) & (reference[:, 3] > 0)
    prediction, reference = prediction[visible], reference[visible]
    absent = (prediction[:, 2] <= 0) | (prediction[:, 3] <= 0)
    ious = np.where(absent, 0.0, box_iou(prediction, reference))
    offsets = _centres(prediction) - _centres(reference)
    errors = np.where(absent, np.inf, np.linalg.norm(offsets, axis=1))
    normalized = np.where(absent, np.inf, np.linalg.norm(offsets / reference[:, 2:], axis=1))
    return (
        (ious[:, None] > IOU_THRESHOLDS[None]).mean(axis=0),
        (errors[:, None] <= CENTER_THRESHOLDS[None]).mean(axis=0),
        (normalized[:, None] <= NORMALIZED_THRESHOLDS[None]).mean(axis=0),
    )


def _track(value, name: str, index: int) -> np.ndarray:
    track = np.asarray(value, dtype=np.float64)
    if track.ndim != 2 or track.shape[1] != 4 or not len(track):
        raise ValueError(f"{name}[{index}] must be a (T, 4) track of x, y, w, h boxes, got shape {track.shape}")
    if not np.isfinite(track).all():
        raise ValueError(f"{name}[{index}] holds a value that is not a finite number")
    return track


class BoxTracking(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        track = datasets.Sequence(datasets.Sequence(datasets.Value("float64")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": track, "references": track}),
        )

    def _compute(self, predictions, references) -> dict:
        if not len(predictions):
            raise ValueError("Give at least one predicted track")
        curves = []
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            prediction, reference = _track(prediction, "predictions", index), _track(reference, "references", index)
            if prediction.shape != reference.shape:
                raise ValueError(
                    f"Track {index} has {len(prediction)} predicted boxes for {len(reference)} reference boxes"
                )
            if ((reference[:, 2] > 0) & (reference[:, 3] > 0)).any():
                curves.append(sequence_curves(prediction, reference))
        if not curves:
            raise ValueError("No reference box has an area: there is nothing to score")
        success, precision, normalized = (np.mean(curve, axis=0) for curve in zip(*curves))
        return {
            "success_auc": float(success.mean()),
            "precision": float(precision[20]),
            "normalized_precision": float(normalized[20]),
            "success_curve": success.tolist(),
            "precision_curve": precision.tolist(),
            "normalized_precision_curve": normalized.tolist(),
        }
