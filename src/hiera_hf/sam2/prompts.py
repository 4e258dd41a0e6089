"""Prompts given by users: the one place that checks them, and the label values of Meta's prompt encoding.
Torch-free (numpy only), so the ONNX runtime checks prompts with the same rules; prompts sampled from ground-truth
masks for training are `prompt_sampling`'s.

Checking (used by `Sam2ImageProcessor`, the video sessions, the ONNX image predictor and the CLI): coordinates are (x, y) in pixels of the
original image or frame, continuous, within `[0, W] x [0, H]` (W is the right edge of the last pixel column);
nothing is clipped, a coordinate outside (or NaN / infinite) raises. Boxes are (x0, y0, x1, y1) with x0 < x1 and
y0 < y1. Click labels are exactly 0 (background) or 1 (foreground); the image processor alone also accepts -10,
the padding label it writes itself. Frame indices and object ids are integers (2.9 is refused, never truncated).
Every failure is a `ValueError` naming the argument and the offending value.
"""

from __future__ import annotations

import numbers

import numpy as np

CLICK_LABELS = (0, 1)  # background, foreground
BOX_LABELS = (2, 3)  # top-left and bottom-right corners of a box
NOT_A_POINT_LABEL = -1  # Meta's padding point, always appended to the sparse prompt
PADDING_LABEL = -10  # a point to ignore (pads prompts with fewer clicks)


def _index_text(name: str, index: tuple[int, ...]) -> str:
    return name + "".join(f"[{i}]" for i in index)


def _to_numpy(values):
    """A torch tensor (on any device) as a numpy array; anything else unchanged (torch is never imported)."""
    if type(values).__module__.startswith("torch"):
        return values.detach().cpu().numpy()
    return values


def _as_float_array(values, name: str) -> np.ndarray:
    values = _to_numpy(values)
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numbers, got {values!r} ({error})") from None
    return array


def check_finite(values, name: str) -> np.ndarray:
    """`values` as a float64 array; `ValueError` naming the first NaN or infinite entry."""
    array = _as_float_array(values, name)
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        index = tuple(int(i) for i in bad[0])
        raise ValueError(f"{_index_text(name, index)} = {array[index]} is not a finite number")
    return array


def check_coordinates(xy, width: int | None, height: int | None, name: str = "points") -> np.ndarray:
    """(x, y) pixel coordinates `(..., 2)` -> float64 array, each finite and inside `[0, width] x [0, height]`
    (with `width`, `height` None, before the image is known: finite and >= 0)."""
    array = check_finite(xy, name)
    if array.ndim < 1 or array.shape[-1] != 2:
        raise ValueError(f"{name} must hold (x, y) pairs, shape (..., 2), got shape {array.shape}")
    known = width is not None and height is not None
    bounds = np.array([width, height], dtype=np.float64) if known else np.array([np.inf, np.inf])
    outside = np.argwhere(((array < 0) | (array > bounds)).any(axis=-1))
    if len(outside):
        index = tuple(int(i) for i in outside[0])
        x, y = array[index]
        where = (
            f"outside the {width}x{height} image: x must be within [0, {width}] and y within [0, {height}]"
            if known
            else "outside the image: coordinates must be >= 0"
        )
        raise ValueError(f"{_index_text(name, index)} = ({x:g}, {y:g}) lies {where} (pixels of the original image)")
    return array


def check_boxes(boxes, width: int | None, height: int | None, name: str = "box") -> np.ndarray:
    """Boxes `(..., 4)` as (x0, y0, x1, y1) -> float64 array: corners inside the image, x0 < x1 and y0 < y1."""
    array = _as_float_array(boxes, name)
    if array.ndim < 1 or array.shape[-1] != 4:
        raise ValueError(f"{name} must be (x0, y0, x1, y1), shape (..., 4), got shape {array.shape}")
    check_coordinates(array.reshape(*array.shape[:-1], 2, 2), width, height, name)
    inverted = np.argwhere((array[..., 2:] <= array[..., :2]).any(axis=-1))
    if len(inverted):
        index = tuple(int(i) for i in inverted[0])
        values = ", ".join(f"{v:g}" for v in array[index])
        raise ValueError(f"{_index_text(name, index)} = ({values}) must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1")
    return array


def check_labels(labels, name: str = "labels", allowed: tuple[int, ...] = CLICK_LABELS) -> np.ndarray:
    """Click labels -> int64 array; every value exactly one of `allowed` (0.7 or 2 raise, nothing is rounded)."""
    array = check_finite(labels, name)
    bad = np.argwhere(~np.isin(array, allowed))
    if len(bad):
        index = tuple(int(i) for i in bad[0])
        meaning = "0 (background) or 1 (foreground)" + (" or -10 (padding)" if -10 in allowed else "")
        raise ValueError(f"{_index_text(name, index)} = {array[index]:g}: click labels must be {meaning}")
    return array.astype(np.int64)


def check_index(value, name: str, minimum: int = 0, maximum: int | None = None) -> int:
    """An integral id (frame index, object id) as `int`, within `[minimum, maximum]`: integers and integral floats
    (2.0) pass; 2.9, NaN, booleans and strings raise `ValueError` (never truncated)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not float(value).is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        limits = f"{minimum}..{maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"{name} must be {limits}, got {value}")
    return value


def wants_multimask(config, num_points: int, tracking: bool) -> bool:
    """Meta's rule for predicting several masks on a video frame: `num_points` prompt points (box corners included)
    within `[multimask_min_pt_num, multimask_max_pt_num]` of the `Sam2Config` (or its fields as attributes), on a
    frame with memory only if `multimask_output_for_tracking`."""
    return (
        config.multimask_output_in_sam
        and (not tracking or config.multimask_output_for_tracking)
        and config.multimask_min_pt_num <= num_points <= config.multimask_max_pt_num
    )


def check_clicks(
    points, labels, width: int, height: int, names: tuple[str, str] = ("points", "labels")
) -> tuple[np.ndarray, np.ndarray]:
    """User clicks of one object: `points` `(K, 2)` (x, y) in pixels of a `width` x `height` image with `labels`
    `(K,)` of 0/1 (either may be `None`: no clicks); messages call them by `names`. Returns float32 `(K, 2)` and
    int64 `(K,)` arrays."""
    points_name, labels_name = names
    if (points is None) != (labels is None):
        raise ValueError(f"{points_name} and {labels_name} must be given together (one label per point)")
    if points is None:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    coords, point_labels = _as_float_array(points, points_name), _as_float_array(labels, labels_name)
    if coords.ndim != 2 or coords.shape[1] != 2 or point_labels.shape != coords.shape[:1]:
        raise ValueError(
            f"{points_name} must be (K, 2) and {labels_name} (K,), got shapes {coords.shape} and {point_labels.shape}"
        )
    coords = check_coordinates(coords, width, height, points_name)
    point_labels = check_labels(point_labels, labels_name)
    return coords.astype(np.float32), point_labels


def check_box(box, width: int, height: int, name: str = "box") -> np.ndarray:
    """One box (x0, y0, x1, y1) in pixels of a `width` x `height` image -> float32 array `(4,)`."""
    array = _as_float_array(box, name)
    if array.size != 4:
        raise ValueError(f"{name} must be (x0, y0, x1, y1), got {array.tolist()}")
    return check_boxes(array.reshape(4), width, height, name).astype(np.float32)


def check_mask(mask, width: int, height: int, name: str = "mask") -> np.ndarray:
    """A user mask of a `width` x `height` image: `(height, width)`, bool or finite numbers (> 0.5 inside) ->
    float32 array."""
    array = np.asarray(_to_numpy(mask))
    if array.ndim != 2 or array.shape != (height, width):
        raise ValueError(f"{name} must be (height, width) = ({height}, {width}) like the frame, got shape {array.shape}")
    if array.dtype != np.bool_:
        array = check_finite(array, name)
    return array.astype(np.float32)


def check_mask_logits(mask, size: int, name: str = "mask_input") -> np.ndarray:
    """A low-resolution mask prompt (the `low_res_logits` of an earlier prediction): `(size, size)`, `(1, size,
    size)` or `(1, 1, size, size)` finite logits -> float32 `(size, size)`."""
    array = _as_float_array(mask, name)
    if array.shape[-2:] != (size, size) or array.ndim > 4 or array.size != size * size:
        raise ValueError(
            f"{name} must be one mask of low-resolution logits, shape (1, {size}, {size}) (a low_res_logits output), "
            f"got shape {array.shape}"
        )
    return check_finite(array, name).reshape(size, size).astype(np.float32)


__all__ = [
    "BOX_LABELS",
    "CLICK_LABELS",
    "NOT_A_POINT_LABEL",
    "PADDING_LABEL",
    "check_box",
    "check_boxes",
    "check_clicks",
    "check_coordinates",
    "check_finite",
    "check_index",
    "check_labels",
    "check_mask",
    "check_mask_logits",
    "wants_multimask",
]
