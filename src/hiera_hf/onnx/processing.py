"""SAM 2's pre- and post-processing in numpy (torch-free), with the semantics of `Sam2ImageProcessor`: float RGB in
[0, 1], an antialiased bilinear stretch to the model size, ImageNet normalisation; prompts scaled per axis; mask
logits upsampled bilinearly (`align_corners=False`) to the original size.

The resize is `hiera_hf.sam2.frame_arithmetic.resize` (torch's `F.interpolate(mode="bilinear",
align_corners=False)` weights, antialiased or not), shared with the video sessions.
"""

from __future__ import annotations

import os

import numpy as np

from ..image_utils import open_image, to_rgb_float
from ..sam2.frame_arithmetic import resize
from ..sam2.prompts import BOX_LABELS, NOT_A_POINT_LABEL


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


__all__ = ["build_prompt", "preprocess"]
