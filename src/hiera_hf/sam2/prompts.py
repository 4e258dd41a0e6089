"""Prompts: the one place that checks prompts given by users, and prompts sampled from ground-truth masks.

Checking (used by `Sam2ImageProcessor`, `Sam2VideoSession` and the CLI): coordinates are (x, y) in pixels of the
original image or frame, continuous, within `[0, W] x [0, H]` (W is the right edge of the last pixel column);
nothing is clipped, a coordinate outside (or NaN / infinite) raises. Boxes are (x0, y0, x1, y1) with x0 < x1 and
y0 < y1. Click labels are exactly 0 (background) or 1 (foreground); the image processor alone also accepts -10,
the padding label it writes itself. Frame indices and object ids are integers (2.9 is refused, never truncated).
Every failure is a `ValueError` naming the argument and the offending value.

Sampling, as in SAM 2's training: a click inside the object, a noisy box around it, and corrective clicks in the
error region of a prediction (Meta's `sam2_utils.get_next_point(method="uniform")` and `sample_box_points`). Masks
are `(N, H, W)` booleans; points come back as (x, y) in the pixels of a model input of side `image_size` (default
`W`: the masks' own grid), a mask pixel standing for the input pixels it covers (its centre).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from .modeling_sam2 import BOX_LABELS

CLICK_LABELS = (0, 1)  # background, foreground


def _index_text(name: str, index: tuple[int, ...]) -> str:
    return name + "".join(f"[{i}]" for i in index)


def _as_float_array(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
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


def check_clicks(points, labels, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """User clicks of one object: `points` `(K, 2)` (x, y) in pixels of a `width` x `height` image with `labels`
    `(K,)` of 0/1 (either may be `None`: no clicks). Returns float32 `(K, 2)` and int64 `(K,)` tensors."""
    if (points is None) != (labels is None):
        raise ValueError("points and labels must be given together (one label per point)")
    if points is None:
        return torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
    coords, point_labels = _as_float_array(points, "points"), _as_float_array(labels, "labels")
    if coords.ndim != 2 or coords.shape[1] != 2 or point_labels.shape != coords.shape[:1]:
        raise ValueError(
            f"points must be (K, 2) and labels (K,), got shapes {coords.shape} and {point_labels.shape}"
        )
    coords = check_coordinates(coords, width, height, "points")
    point_labels = check_labels(point_labels, "labels")
    return torch.from_numpy(coords).float(), torch.from_numpy(point_labels)


def check_box(box, width: int, height: int, name: str = "box") -> torch.Tensor:
    """One box (x0, y0, x1, y1) in pixels of a `width` x `height` image -> float32 tensor `(4,)`."""
    array = _as_float_array(box, name)
    if array.size != 4:
        raise ValueError(f"{name} must be (x0, y0, x1, y1), got {array.tolist()}")
    return torch.from_numpy(check_boxes(array.reshape(4), width, height, name)).float()


def check_mask(mask, width: int, height: int, name: str = "mask") -> torch.Tensor:
    """A user mask of a `width` x `height` image: `(height, width)`, bool or finite numbers (> 0.5 inside)."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.ndim != 2 or array.shape != (height, width):
        raise ValueError(f"{name} must be (height, width) = ({height}, {width}) like the frame, got shape {array.shape}")
    if array.dtype != np.bool_:
        array = check_finite(array, name)
    return torch.from_numpy(array.astype(np.float32))


def _to_input_pixels(xy: torch.Tensor, mask_size: int, image_size: int | None) -> torch.Tensor:
    """Mask-grid coordinates `(..., 2)` -> model-input pixels (the centre of the covered area)."""
    if image_size is None or image_size == mask_size:
        return xy.float()
    scale = image_size / mask_size
    return (xy.float() + 0.5) * scale - 0.5


def _uniform(
    shape: tuple[int, ...] | torch.Size, device: torch.device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform samples in [0, 1) of `shape` on `device`: drawn on the generator's own device and moved (so a seeded
    CPU generator serves tensors on any device, with the same values), or from torch's default generator of
    `device` without one."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def sample_click(
    gt_masks: torch.Tensor,
    pred_masks: torch.Tensor | None = None,
    image_size: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One click per object, uniformly among the wrongly predicted pixels: positive (label 1) on a missed object
    pixel, negative (0) on a false positive. Without `pred_masks` (nothing predicted yet) it is a positive click
    inside the object; when the prediction is exactly right, a negative click on the background.

    Args:
        gt_masks: `(N, H, W)` bool ground truth.
        pred_masks: `(N, H, W)` bool predictions, or `None`.
    Returns:
        points `(N, 1, 2)` float (x, y) and labels `(N, 1)` long.
    """
    if gt_masks.ndim != 3 or gt_masks.dtype != torch.bool:
        raise ValueError(
            f"gt_masks must be a (num_objects, H, W) bool tensor, got {gt_masks.dtype} {tuple(gt_masks.shape)}"
        )
    if pred_masks is None:
        pred_masks = torch.zeros_like(gt_masks)
    if pred_masks.shape != gt_masks.shape or pred_masks.dtype != torch.bool:
        raise ValueError(
            f"pred_masks must be a bool tensor shaped like gt_masks {tuple(gt_masks.shape)}, got "
            f"{pred_masks.dtype} {tuple(pred_masks.shape)}"
        )
    num, height, width = gt_masks.shape
    errors = gt_masks ^ pred_masks
    all_right = ~errors.flatten(1).any(dim=1)
    candidates = torch.where(all_right[:, None, None], ~gt_masks, errors).flatten(1)
    noise = _uniform(candidates.shape, gt_masks.device, generator)
    index = (noise * candidates).argmax(dim=1)
    labels = gt_masks.flatten(1).gather(1, index[:, None]).long()  # inside the object: a positive click
    xy = torch.stack((index % width, torch.div(index, width, rounding_mode="floor")), dim=-1)[:, None]
    return _to_input_pixels(xy, width, image_size), labels


def mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes `(N, 4)` (x0, y0, x1, y1, inclusive pixel indices) of `(N, H, W)` bool masks; an empty mask
    gives the whole grid."""
    num, height, width = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    ys = torch.arange(height, device=masks.device)
    xs = torch.arange(width, device=masks.device)
    empty = ~rows.any(dim=1)
    x0 = torch.where(cols, xs, width).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1)
    y0 = torch.where(rows, ys, height).amin(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1)
    boxes = torch.stack((x0, y0, x1, y1), dim=1)
    whole = torch.tensor([0, 0, width - 1, height - 1], device=masks.device)
    return torch.where(empty[:, None], whole, boxes)


def sample_box(
    gt_masks: torch.Tensor,
    noise: float = 0.1,
    noise_bound: float = 20.0,
    image_size: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The box of each mask with every side moved uniformly by up to `noise` times the box width (height), at
    most `noise_bound` mask pixels (SAM's defaults), clamped to the grid. Returns corner points `(N, 2, 2)` and
    their labels `(N, 2)` (2 top-left, 3 bottom-right), the form `Sam2VideoModel` takes; `input_boxes` of
    `Sam2Model` are `points.flatten(1)`."""
    num, height, width = gt_masks.shape
    boxes = mask_to_box(gt_masks).float()
    if noise > 0:
        size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # (w, h, w, h)
        reach = torch.clamp(size * noise, max=noise_bound)
        shift = 2 * _uniform(boxes.shape, boxes.device, generator) - 1
        bounds = torch.tensor([width - 1, height - 1] * 2, dtype=boxes.dtype, device=boxes.device)
        boxes = torch.minimum((boxes + shift * reach).clamp(min=0), bounds)
    points = _to_input_pixels(boxes.reshape(num, 2, 2), width, image_size)
    labels = torch.tensor(BOX_LABELS, device=boxes.device).expand(num, 2)
    return points, labels


__all__ = [
    "CLICK_LABELS",
    "check_box",
    "check_boxes",
    "check_clicks",
    "check_coordinates",
    "check_finite",
    "check_index",
    "check_labels",
    "check_mask",
    "mask_to_box",
    "sample_box",
    "sample_click",
]
