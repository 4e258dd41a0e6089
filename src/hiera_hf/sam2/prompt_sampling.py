"""Prompts sampled from ground-truth masks, as in SAM 2's training: a click inside the object, a noisy box around
it, and corrective clicks in the error region of a prediction (Meta's `sam2_utils.get_next_point(method="uniform")`
and `sample_box_points`). Masks are `(N, H, W)` booleans; points come back as (x, y) in the pixels of a model input
of side `image_size` (default `W`: the masks' own grid), a mask pixel standing for the input pixels it covers (its
centre). Prompts given by users are checked in `prompts`.
"""

from __future__ import annotations

import torch

from .prompts import BOX_LABELS


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
    samples = torch.rand(shape, generator=generator, device=generator.device)
    return samples.to(device, non_blocking=samples.device.type == "cpu")  # a copy from the host need not wait


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


__all__ = ["mask_to_box", "sample_box", "sample_click"]
