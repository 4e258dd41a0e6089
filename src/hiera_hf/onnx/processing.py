"""SAM 2's pre- and post-processing in numpy (torch-free), with the semantics of `Sam2ImageProcessor`: float RGB in
[0, 1], an antialiased bilinear stretch to the model size, ImageNet normalisation; prompts scaled per axis; mask
logits upsampled bilinearly (`align_corners=False`) to the original size.

A resize runs over the rows, then the columns: each output is a weighted sum of a few input taps, with the weights
of torch's `F.interpolate(mode="bilinear", align_corners=False)`, antialiased or not.
"""

from __future__ import annotations

import os

import numpy as np

from ..image_utils import open_image, to_rgb_float
from ..sam2.prompts import BOX_LABELS, NOT_A_POINT_LABEL


def resize_taps(in_size: int, out_size: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation taps of one axis: input indices and weights, both `(out_size, taps)` (weights float32; unused
    taps have weight 0).

    Without antialiasing: linear interpolation at source position `(i + 0.5) * in / out - 0.5` (clamped at 0),
    computed in float32 like torch's kernel. With it (torch's and PIL's triangle filter): output pixel `i` averages
    the inputs within `max(scale, 1)` of its centre `(i + 0.5) * scale` with weights `1 - |distance| / max(scale,
    1)`, normalised; `scale = in / out`.
    """
    scale = in_size / out_size
    rows = np.arange(out_size)
    if not antialias:
        half = np.float32(0.5)
        source = np.maximum((rows.astype(np.float32) + half) * np.float32(scale) - half, np.float32(0))
        low = np.floor(source).astype(np.int64)
        fraction = source - low.astype(np.float32)
        indices = np.stack((low, np.minimum(low + 1, in_size - 1)), axis=1)
        return indices, np.stack((1 - fraction, fraction), axis=1).astype(np.float32)
    support = max(scale, 1.0)
    centres = (rows + 0.5) * scale
    starts = np.maximum((centres - support + 0.5).astype(np.int64), 0)
    stops = np.minimum((centres + support + 0.5).astype(np.int64), in_size)
    taps = int((stops - starts).max())
    indices = starts[:, None] + np.arange(taps)[None]
    weights = np.clip(1.0 - np.abs((indices - centres[:, None] + 0.5) / support), 0.0, None)
    weights[indices >= stops[:, None]] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    return np.minimum(indices, in_size - 1), weights.astype(np.float32)


def _resize_axis(array: np.ndarray, size: int, axis: int, antialias: bool) -> np.ndarray:
    indices, weights = resize_taps(array.shape[axis], size, antialias)
    shape = [1] * array.ndim
    shape[axis] = size
    output = np.zeros(array.shape[:axis] + (size,) + array.shape[axis + 1 :], dtype=np.float32)
    for tap in range(indices.shape[1]):
        output += np.take(array, indices[:, tap], axis=axis) * weights[:, tap].reshape(shape)
    return output


def resize(array: np.ndarray, size: tuple[int, int], antialias: bool = False) -> np.ndarray:
    """Bilinear resize of the last two axes of `array` `(..., H, W)` to `size` = (height, width), float32: the
    rows, then the columns, each output a weighted sum of a few input taps."""
    rows = _resize_axis(np.asarray(array, dtype=np.float32), size[0], array.ndim - 2, antialias)
    return _resize_axis(rows, size[1], array.ndim - 1, antialias)


def preprocess(image, size: int, mean, std) -> tuple[np.ndarray, tuple[int, int]]:
    """One image (a path, read with `open_image`, or what `to_rgb_float` takes) -> `pixel_values`
    `(1, 3, size, size)` float32 and its original (height, width)."""
    rgb = to_rgb_float(open_image(image) if isinstance(image, (str, os.PathLike)) else image)
    resized = resize(rgb, (size, size), antialias=True)
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    return ((resized - mean) / std)[None].astype(np.float32), tuple(rgb.shape[-2:])


def build_prompt(
    points: np.ndarray | None, labels: np.ndarray | None, box: np.ndarray | None, scale: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """One prompt in Meta's form for the decoder graph: `point_coords` `(1, K, 2)` float32 in model-input pixels
    (box corners first, then clicks, then the "not a point" (0, 0)) and `point_labels` `(1, K)` int64.
    `points` `(n, 2)` (x, y) and `box` `(4,)` are in original pixels; `scale` = (sx, sy) to model pixels."""
    coords, point_labels = [], []
    factor = np.asarray(scale, dtype=np.float32)
    if box is not None:
        coords.append(np.asarray(box, dtype=np.float32).reshape(2, 2) * factor)
        point_labels.append(np.asarray(BOX_LABELS, dtype=np.int64))
    if points is not None:
        coords.append(np.asarray(points, dtype=np.float32).reshape(-1, 2) * factor)
        point_labels.append(np.asarray(labels, dtype=np.int64).reshape(-1))
    coords.append(np.zeros((1, 2), dtype=np.float32))
    point_labels.append(np.asarray([NOT_A_POINT_LABEL], dtype=np.int64))
    return np.concatenate(coords)[None], np.concatenate(point_labels)[None]


__all__ = ["build_prompt", "preprocess", "resize", "resize_taps"]
