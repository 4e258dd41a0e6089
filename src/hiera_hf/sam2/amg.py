"""The math of automatic mask generation (Meta's `sam2.utils.amg` semantics), shared by
[`~hiera_hf.sam2.mask_generation.Sam2AutomaticMaskGenerator`] and the mask-generation hooks of
[`~hiera_hf.sam2.processing_sam2.Sam2ImageProcessor`] (which transformers' `MaskGenerationPipeline` calls):
point grids, crop boxes, the IoU / stability / crop-edge filters, box NMS within and across crops, and COCO RLE.
Pure functions on tensors and arrays; nothing here knows the model.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any

import numpy as np
import torch

from .prompt_sampling import mask_to_box

CROP_EDGE_TOLERANCE = 20.0  # pixels: a box this close to an inner crop edge touches it (Meta's `atol`)


def check_grid_settings(
    points_per_side: int,
    crop_n_layers: int,
    crop_n_points_downscale_factor: int,
    names: tuple[str, str] = ("points_per_side", "crop_n_layers"),
) -> None:
    """Raise a ValueError naming the argument unless the grid settings leave at least one point in every layer
    (`names`: what the caller calls `points_per_side` and `crop_n_layers`)."""
    side_name, layers_name = names
    for name, value in (
        (side_name, points_per_side),
        ("crop_n_points_downscale_factor", crop_n_points_downscale_factor),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(crop_n_layers, int) or isinstance(crop_n_layers, bool) or crop_n_layers < 0:
        raise ValueError(f"{layers_name} must be a non-negative integer, got {crop_n_layers!r}")
    for layer in range(crop_n_layers + 1):
        if layer_points_per_side(points_per_side, crop_n_points_downscale_factor, layer) < 1:
            raise ValueError(
                f"{side_name}={points_per_side} leaves no point in crop layer {layer} with "
                f"crop_n_points_downscale_factor={crop_n_points_downscale_factor}"
            )


def layer_points_per_side(points_per_side: int, downscale_factor: int, layer: int) -> int:
    """Points per side of the grid in crop layer `layer` (Meta: `int(points_per_side / factor ** layer)`)."""
    return int(points_per_side / downscale_factor**layer)


def point_grid(points_per_side: int) -> np.ndarray:
    """`(n * n, 2)` float64 (x, y) in [0, 1], cell centres of an n x n grid, x varying fastest."""
    offset = 1 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    xs, ys = np.meshgrid(side, side, indexing="xy")
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def crop_points(grid: np.ndarray, crop_size: tuple[int, int]) -> torch.Tensor:
    """A `(N, 2)` grid in [0, 1] -> float32 (x, y) pixels of a crop of `crop_size` (H, W), scaled per axis (as Meta:
    float64 product, then float32), so a non-square crop gets a square-spaced grid in its own pixels."""
    return torch.as_tensor(grid * np.array(crop_size, dtype=np.float64)[None, ::-1], dtype=torch.float32)


def crop_boxes(height: int, width: int, n_layers: int, overlap_ratio: float) -> list[tuple[list[int], int]]:
    """(x0, y0, x1, y1) crops with their layer: the whole image, then (2 ** (layer)) ** 2 overlapping crops per
    layer, each overlapping its neighbours by `overlap_ratio` of the short side (scaled down per layer)."""
    crops = [([0, 0, width, height], 0)]
    short_side = min(height, width)
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = int(math.ceil((overlap * (per_side - 1) + width) / per_side))
        crop_h = int(math.ceil((overlap * (per_side - 1) + height) / per_side))
        starts_x = [int((crop_w - overlap) * i) for i in range(per_side)]
        starts_y = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(starts_x, starts_y):
            crops.append(([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)], layer))
    return crops


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Boolean masks `(N, H, W)` -> inclusive pixel boxes `(N, 4)` (x0, y0, x1, y1); zeros for empty masks (Meta's
    AMG convention, where `mask_to_box` gives the whole grid)."""
    return torch.where(masks.flatten(1).any(dim=1)[:, None], mask_to_box(masks), 0)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas `(N,)` of `(N, 4)` (x0, y0, x1, y1) boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, the rule of `torchvision.ops.nms`: visiting boxes `(N, 4)` by decreasing
    score, keep a box unless its IoU with an already kept one exceeds `iou_threshold`. Returns the kept indices
    `(K,)` by decreasing score, on the boxes' device (the greedy pass runs on the CPU)."""
    order = scores.argsort(descending=True, stable=True)
    boxes = boxes[order].float()
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    areas = box_area(boxes)
    iou = intersection / (areas[:, None] + areas[None, :] - intersection)
    overlaps = (iou.cpu().double() > iou_threshold).numpy()  # float32 IoU vs the float64 threshold, as torchvision
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for index in range(len(order)):
        if not suppressed[index]:
            keep.append(index)
            suppressed |= overlaps[index]
    return order[torch.tensor(keep, dtype=torch.long)]


def remove_duplicates(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    crops: torch.Tensor,
    box_nms_thresh: float,
    crop_nms_thresh: float,
    across_crops: bool,
) -> torch.Tensor:
    """Meta's duplicate removal: box NMS by score within each crop (`box_nms_thresh`), then, when the image was
    processed in several crops, box NMS across crops preferring masks of smaller crops (`crop_nms_thresh`).

    `boxes` `(N, 4)` and `crops` `(N, 4)` (each mask's crop) in image pixels, `scores` `(N,)` predicted IoUs.
    Returns the kept indices `(K,)` in Meta's order (crop by crop, by decreasing score; then by crop size)."""
    keep = []
    for crop in dict.fromkeys(tuple(row) for row in crops.tolist()):  # crops in order of first appearance
        members = (crops == torch.tensor(crop, dtype=crops.dtype, device=crops.device)).all(dim=1).nonzero()[:, 0]
        keep.append(members[box_nms(boxes[members], scores[members], box_nms_thresh)])
    keep = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long, device=crops.device)
    if across_crops and len(keep):
        keep = keep[box_nms(boxes[keep], 1 / box_area(crops[keep]), crop_nms_thresh)]
    return keep


def iou_filter(iou_scores: torch.Tensor, pred_iou_thresh: float) -> torch.Tensor:
    """Masks whose predicted IoU `(N,)` exceeds `pred_iou_thresh` (all when it is <= 0), as a boolean `(N,)`."""
    if pred_iou_thresh <= 0:
        return torch.ones_like(iou_scores, dtype=torch.bool)
    return iou_scores > pred_iou_thresh


def select_masks(
    logits: torch.Tensor,
    crop: list[int],
    image_size: tuple[int, int],
    stability_score_thresh: float,
    mask_threshold: float,
    stability_score_offset: float,
) -> dict[str, torch.Tensor]:
    """Meta's per-mask filters after the IoU filter, on mask logits `(N, h, w)` at the size of `crop`
    (x0, y0, x1, y1) of an image of `image_size` (H, W): keep masks whose stability (IoU of the masks thresholded
    at `mask_threshold +- stability_score_offset`) reaches `stability_score_thresh` and whose box does not touch an
    inner crop edge (an image edge is fine).

    Returns `keep` (indices `(K,)` into `logits`), `masks` (boolean `(K, h, w)`, crop pixels), `stability_score`
    `(K,)` and `boxes` `(K, 4)` inclusive (x0, y0, x1, y1) in image pixels, all on the CPU.
    """
    inner = (logits > mask_threshold + stability_score_offset).sum((-1, -2))
    outer = (logits > mask_threshold - stability_score_offset).sum((-1, -2))
    stability = (inner / outer).float().cpu()
    stable = stability >= stability_score_thresh
    if stability_score_thresh <= 0:
        stable = torch.ones_like(stability, dtype=torch.bool)
    keep = stable.nonzero()[:, 0]
    masks = (logits[keep.to(logits.device)] > mask_threshold).cpu()
    x0, y0, _, _ = crop
    boxes = masks_to_boxes(masks) + torch.tensor([x0, y0, x0, y0])
    height, width = image_size
    near_crop = torch.isclose(boxes.float(), torch.tensor(crop, dtype=torch.float)[None], atol=CROP_EDGE_TOLERANCE,
                              rtol=0)  # fmt: skip
    image_box = torch.tensor([0.0, 0.0, width, height])[None]
    near_image = torch.isclose(boxes.float(), image_box, atol=CROP_EDGE_TOLERANCE, rtol=0)
    inside = ~(near_crop & ~near_image).any(dim=1)
    return {"keep": keep[inside], "masks": masks[inside], "stability_score": stability[keep][inside],
            "boxes": boxes[inside]}  # fmt: skip


def uncrop_mask(mask: torch.Tensor | np.ndarray, crop: list[int], image_size: tuple[int, int]) -> np.ndarray:
    """A boolean mask `(h, w)` of `crop` (x0, y0, x1, y1) -> the boolean `(H, W)` mask of the whole image."""
    x0, y0, _, _ = crop
    full = np.zeros(image_size, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    full[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask
    return full


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE of a boolean mask `(H, W)`: run lengths in column-major order, starting with zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """The boolean mask `(H, W)` of an uncompressed COCO RLE (see `mask_to_rle`)."""
    height, width = rle["size"]
    values = np.arange(len(rle["counts"])) % 2 == 1  # runs alternate, zeros first
    flat = np.repeat(values, rle["counts"])
    if flat.size != height * width:
        raise ValueError(f"RLE counts sum to {flat.size}, not {height} x {width}")
    return flat.reshape(width, height).T


def coco_encode_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """Compressed COCO RLE (pycocotools' string form) of an uncompressed RLE: each count from the third on is
    stored as the difference to the count two before it, in 5-bit groups with a continuation bit, offset by 48."""
    counts, chars = rle["counts"], []
    for index, count in enumerate(counts):
        value = count - counts[index - 2] if index > 2 else count
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            chars.append(chr((group | 0x20 if more else group) + 48))
    return {"size": list(rle["size"]), "counts": "".join(chars)}


__all__ = [
    "box_area",
    "box_nms",
    "check_grid_settings",
    "coco_encode_rle",
    "crop_boxes",
    "crop_points",
    "iou_filter",
    "layer_points_per_side",
    "mask_to_rle",
    "masks_to_boxes",
    "point_grid",
    "remove_duplicates",
    "rle_to_mask",
    "select_masks",
    "uncrop_mask",
]
