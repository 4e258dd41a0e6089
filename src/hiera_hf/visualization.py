"""Drawing masks, clicks and boxes on an image, for notebooks and for the `hiera-hf` overlays (one drawing path).

`draw(image, masks=..., points=..., labels=..., boxes=...)` returns a PIL image; `blend_labels` tints a label map
(pixel value = object id) into an RGB array, as the tracking overlay video does frame by frame.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

FOREGROUND, BACKGROUND = (0, 200, 0), (220, 0, 0)  # click colours: label 1 / label 0


def palette() -> np.ndarray:
    """`(256, 3)` uint8 colours: black for 0, then well-separated hues (golden-ratio steps); colour `i` marks object
    (or mask) `i` everywhere: palette PNGs, overlays, boxes."""
    colours = [(0.0, 0.0, 0.0)] + [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 1.0) for i in range(1, 256)]
    return (np.array(colours) * 255).round().astype(np.uint8)


def blend_labels(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """`(H, W, 3)` uint8: `rgb` `(H, W, 3)` uint8 with each nonzero pixel of the label map `labels` `(H, W)`
    (uint8 object ids) blended with its object's `palette()` colour by `alpha`."""
    if rgb.shape[:2] != labels.shape:
        raise ValueError(f"labels {labels.shape} must match the image's height and width {rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    tinted = (1.0 - alpha) * rgb + alpha * palette()[labels].astype(np.float64)
    return np.where(labels[..., None] > 0, np.rint(tinted), rgb).astype(np.uint8)


def draw(
    image,
    masks=None,
    points: Sequence[Sequence[float]] | None = None,
    labels: Sequence[int] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    alpha: float = 0.5,
    marker_size: int = 6,
) -> Image.Image:
    """A copy of `image` (PIL image or `(H, W, 3)` uint8 array) with, in this order:

    - `masks`: one boolean `(H, W)` mask or several `(N, H, W)` (array, tensor or list), mask `i` tinted with
      `palette()[i + 1]` (later masks on top);
    - `boxes`: `(N, 4)` boxes `x0, y0, x1, y1` in pixels, outlined in the same colours;
    - `points`: `(P, 2)` clicks `x, y` in pixels with their `labels` (1 foreground, green; 0 background, red;
      default all 1).
    """
    rgb = np.array(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be RGB (H, W, 3), got shape {rgb.shape}")
    if masks is not None:
        stack = np.asarray(masks.cpu() if hasattr(masks, "cpu") else masks).astype(bool)
        stack = stack[None] if stack.ndim == 2 else stack
        if stack.ndim != 3 or len(stack) > 255:
            raise ValueError(f"masks must be one (H, W) mask or at most 255 (N, H, W), got shape {stack.shape}")
        ids = np.zeros(stack.shape[1:], dtype=np.uint8)
        for index, mask in enumerate(stack, start=1):
            ids[mask] = index
        rgb = blend_labels(rgb, ids, alpha)
    boxes = np.asarray(boxes if boxes is not None else [], dtype=float).reshape(-1, 4)
    return mark_prompts(rgb, points, labels, boxes, range(1, len(boxes) + 1), marker_size)


def mark_prompts(
    image: np.ndarray,
    points: Sequence[Sequence[float]] | None = None,
    labels: Sequence[int] | None = None,
    boxes: Sequence[Sequence[float]] = (),
    box_colours: Sequence[int] = (),
    marker_size: int = 6,
) -> Image.Image:
    """`image` `(H, W, 3)` uint8 as a PIL image with `boxes` `(N, 4)` (x0, y0, x1, y1 pixels) outlined in the
    `palette()` colours of `box_colours` (one index each), then the clicks `points` `(P, 2)` with their `labels`
    (1 foreground, green; 0 background, red; default all 1) on top."""
    canvas = Image.fromarray(image)
    pen = ImageDraw.Draw(canvas)
    colours = palette()
    for box, colour in zip(np.asarray(boxes, dtype=float).reshape(-1, 4), box_colours):
        pen.rectangle(box.tolist(), outline=tuple(colours[colour % 256].tolist()), width=max(2, marker_size // 2))
    points = np.asarray(points if points is not None else [], dtype=float).reshape(-1, 2)
    labels = [1] * len(points) if labels is None else list(labels)
    if len(labels) != len(points):
        raise ValueError(f"Give one label per point ({len(points)} points, {len(labels)} labels)")
    for (x, y), label in zip(points.tolist(), labels):
        r = marker_size
        pen.ellipse((x - r, y - r, x + r, y + r), fill=FOREGROUND if label else BACKGROUND, outline=(255, 255, 255))
    return canvas


__all__ = ["blend_labels", "draw", "mark_prompts", "palette"]
