"""Automatic mask generation with SAM 2 (Meta's `SAM2AutomaticMaskGenerator` semantics) and its pipeline.

For every crop (the whole image, then `crop_n_layers` layers of overlapping crops) the image is encoded once and
prompted with a regular grid of single foreground clicks, scaled per axis to the crop (so non-square images get a
square-spaced grid in their own pixels). Masks are kept when their predicted IoU exceeds `pred_iou_thresh` and their
stability (IoU of the masks thresholded at `mask_threshold +- stability_score_offset`) reaches
`stability_score_thresh`; masks touching an inner crop edge are dropped; box NMS removes duplicates within a crop,
then across crops (preferring smaller crops). Differences from Meta that keep the results but save time: whole
point batches go through the decoder at once, and only masks that pass the IoU filter are upsampled to the crop
size. `min_mask_region_area` fills holes and removes sprinkles (8-connected, at most that many low-resolution
pixels) in the mask logits, as Meta's predictor does with its CUDA extension (Meta skips it on CPU).
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import Pipeline
from transformers.image_utils import load_image

from .modeling_sam2 import Sam2Model
from .processing_sam2 import Sam2ImageProcessor, clean_mask_logits
from .prompts import mask_to_box

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
_UPSAMPLE_CHUNK = 32  # masks upsampled to the crop size at once (bounds memory on large images)


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers: grids, crops, boxes, RLE
# ---------------------------------------------------------------------------------------------------------------


def point_grid(points_per_side: int) -> np.ndarray:
    """`(n * n, 2)` float64 (x, y) in [0, 1], cell centres of an n x n grid, x varying fastest."""
    offset = 1 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    xs, ys = np.meshgrid(side, side, indexing="xy")
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


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
    `(K,)` by decreasing score."""
    order = scores.argsort(descending=True, stable=True)
    boxes = boxes[order].float()
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    areas = box_area(boxes)
    iou = intersection / (areas[:, None] + areas[None, :] - intersection)
    overlaps = (iou.double() > iou_threshold).numpy()  # float32 IoU against the float64 threshold, as torchvision
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for index in range(len(order)):
        if not suppressed[index]:
            keep.append(index)
            suppressed |= overlaps[index]
    return order[torch.tensor(keep, dtype=torch.long)]


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE of a boolean mask `(H, W)`: run lengths in column-major order, starting with zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


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


# ---------------------------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------------------------


class Sam2AutomaticMaskGenerator:
    """Segment everything in an image with a grid of clicks (Meta's `SAM2AutomaticMaskGenerator` semantics; the
    parameters and their defaults are Meta's, see the module docstring). `generate(image)` returns one record per
    mask: `segmentation` (boolean `(H, W)` array, or an RLE dict for the RLE output modes), `area` (pixels), `bbox`
    (x, y, w, h), `predicted_iou`, `point_coords` ([[x, y]] of the click), `stability_score`, `crop_box` (x, y, w,
    h), ordered as Meta's generator orders them."""

    def __init__(
        self,
        model: Sam2Model,
        image_processor: Sam2ImageProcessor | None = None,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        progress: bool = True,
    ):
        if not isinstance(model, Sam2Model):
            raise TypeError(f"model must be a hiera_hf Sam2Model, got {type(model).__name__}")
        for name, value in (
            ("points_per_side", points_per_side),
            ("points_per_batch", points_per_batch),
            ("crop_n_points_downscale_factor", crop_n_points_downscale_factor),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(crop_n_layers, int) or crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be a non-negative integer, got {crop_n_layers!r}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        for layer in range(crop_n_layers + 1):
            if int(points_per_side / crop_n_points_downscale_factor**layer) < 1:
                raise ValueError(
                    f"points_per_side={points_per_side} leaves no point in crop layer {layer} with "
                    f"crop_n_points_downscale_factor={crop_n_points_downscale_factor}"
                )
        self.model = model
        size = model.config.image_size
        self.image_processor = image_processor or Sam2ImageProcessor(size={"height": size, "width": size})
        self.grids = [
            point_grid(int(points_per_side / crop_n_points_downscale_factor**layer))
            for layer in range(crop_n_layers + 1)
        ]
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.mask_threshold = mask_threshold
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = use_m2m
        self.multimask_output = multimask_output
        self.progress = progress

    @torch.no_grad()
    def generate(self, image) -> list[dict[str, Any]]:
        """All masks of one image (any input `Sam2ImageProcessor` accepts). See the class docstring."""
        pixels = self.image_processor.process_image(image)
        height, width = pixels.shape[-2:]
        crops = crop_boxes(height, width, self.crop_n_layers, self.crop_overlap_ratio)
        total = sum(math.ceil(len(self.grids[layer]) / self.points_per_batch) for _, layer in crops)
        results = []
        with tqdm(total=total, desc="Generating masks", unit="batch", disable=not self.progress) as bar:
            for crop, layer in crops:
                results.append(self._process_crop(pixels, crop, layer, bar))
        data = {key: torch.cat([r[key] for r in results]) for key in results[0] if key != "masks"}
        masks = [mask for r in results for mask in r["masks"]]
        if len(crops) > 1 and len(masks):
            scores = 1 / box_area(data["crop_boxes"])  # prefer masks from smaller crops
            keep = box_nms(data["boxes"], scores, self.crop_nms_thresh)
            data = {key: value[keep] for key, value in data.items()}
            masks = [masks[i] for i in keep.tolist()]
        return [self._record(data, index, mask, (height, width)) for index, mask in enumerate(masks)]

    def _record(self, data: dict, index: int, mask: tuple, image_size: tuple[int, int]) -> dict[str, Any]:
        crop_mask, (x0, y0) = mask
        full = np.zeros(image_size, dtype=bool)
        full[y0 : y0 + crop_mask.shape[0], x0 : x0 + crop_mask.shape[1]] = crop_mask.numpy()
        segmentation = full
        if self.output_mode != "binary_mask":
            segmentation = mask_to_rle(full)
            if self.output_mode == "coco_rle":
                segmentation = coco_encode_rle(segmentation)
        box, crop = data["boxes"][index].float(), data["crop_boxes"][index].float()
        return {
            "segmentation": segmentation,
            "area": int(crop_mask.sum()),
            "bbox": [box[0].item(), box[1].item(), (box[2] - box[0]).item(), (box[3] - box[1]).item()],
            "predicted_iou": data["iou_preds"][index].item(),
            "point_coords": [data["points"][index].tolist()],
            "stability_score": data["stability_score"][index].item(),
            "crop_box": [crop[0].item(), crop[1].item(), (crop[2] - crop[0]).item(), (crop[3] - crop[1]).item()],
        }

    def _process_crop(self, pixels: torch.Tensor, crop: list[int], layer: int, bar: tqdm) -> dict:
        """Masks of one crop after the IoU, stability, crop-edge and NMS filters, in image coordinates."""
        x0, y0, x1, y1 = crop
        crop_pixels = pixels[:, y0:y1, x0:x1]
        size = tuple(crop_pixels.shape[-2:])
        model = self.model
        pixel_values = self.image_processor(crop_pixels)["pixel_values"]
        embeddings = model.get_image_embeddings(pixel_values.to(model.device, model.dtype))
        # Like Meta: grid in float64 crop pixels, then float32, then scaled to the model input.
        points = torch.as_tensor(self.grids[layer] * np.array(size)[None, ::-1], dtype=torch.float32)
        model_points = self.image_processor.scale_coordinates(points[None], [size])[0]
        parts = []
        for start in range(0, len(points), self.points_per_batch):
            batch = slice(start, start + self.points_per_batch)
            parts.append(
                self._process_batch(embeddings, points[batch], model_points[batch], crop, size, pixels.shape[-2:])
            )
            bar.update()
        data = {key: torch.cat([p[key] for p in parts]) for key in parts[0] if key != "masks"}
        masks = [mask for p in parts for mask in p["masks"]]
        keep = box_nms(data["boxes"], data["iou_preds"], self.box_nms_thresh)
        data = {key: value[keep] for key, value in data.items()}
        offset = torch.tensor([x0, y0])
        data["boxes"] = data["boxes"] + offset.repeat(2)
        data["points"] = data["points"] + offset
        data["crop_boxes"] = torch.tensor([crop] * len(keep), dtype=torch.long).reshape(-1, 4)
        return {**data, "masks": [(masks[i], (x0, y0)) for i in keep.tolist()]}

    def _process_batch(
        self,
        embeddings,
        points: torch.Tensor,
        model_points: torch.Tensor,
        crop: list[int],
        size: tuple[int, int],
        image_size: tuple[int, int],
    ) -> dict:
        """Decode one batch of clicks; returns the surviving masks (boolean, crop size) and their data."""
        model, device = self.model, self.model.device
        num = len(points)
        labels = torch.ones(1, num, 1, dtype=torch.long, device=device)
        out = model(**embeddings, input_points=model_points[None, :, None].to(device), input_labels=labels,
                    multimask_output=self.multimask_output)  # fmt: skip
        per_point = out.pred_masks.shape[2]
        low_res = out.pred_masks[0].flatten(0, 1).float()
        iou = out.iou_scores[0].flatten().float()
        points = points.repeat_interleave(per_point, dim=0)
        if self.use_m2m:
            # One refinement step: each mask (clamped like Meta's returned logits) prompts again with its click.
            refined = model(
                **embeddings,
                input_points=model_points.repeat_interleave(per_point, dim=0)[None, :, None].to(device),
                input_labels=labels.repeat_interleave(per_point, dim=1),
                input_masks=low_res.clamp(-32.0, 32.0)[None, :, None].to(model.dtype),
                multimask_output=False,
            )
            low_res, iou = refined.pred_masks[0, :, 0].float(), refined.iou_scores[0, :, 0].float()
        keep = iou > self.pred_iou_thresh
        if self.pred_iou_thresh <= 0:
            keep = torch.ones_like(iou, dtype=torch.bool)
        low_res, iou, points = low_res[keep], iou[keep].cpu(), points[keep]
        low_res = clean_mask_logits(low_res, self.mask_threshold, self.min_mask_region_area, self.min_mask_region_area)

        masks, stability = [], []
        for start in range(0, len(low_res), _UPSAMPLE_CHUNK):
            logits = F.interpolate(low_res[start : start + _UPSAMPLE_CHUNK, None], size, mode="bilinear",
                                   align_corners=False)[:, 0]  # fmt: skip
            inner = (logits > self.mask_threshold + self.stability_score_offset).sum((-1, -2))
            outer = (logits > self.mask_threshold - self.stability_score_offset).sum((-1, -2))
            stability.append((inner / outer).float().cpu())
            masks.append((logits > self.mask_threshold).cpu())
        masks = torch.cat(masks) if masks else torch.zeros(0, *size, dtype=torch.bool)
        stability = torch.cat(stability) if stability else torch.zeros(0)
        keep = stability >= self.stability_score_thresh
        if self.stability_score_thresh <= 0:
            keep = torch.ones_like(stability, dtype=torch.bool)
        masks, stability, iou, points = masks[keep], stability[keep], iou[keep], points[keep]
        boxes = masks_to_boxes(masks)

        # Drop masks touching an inner crop edge (not an image edge).
        x0, y0, _, _ = crop
        height, width = image_size
        absolute = (boxes + torch.tensor([x0, y0, x0, y0])).float()
        near_crop = torch.isclose(absolute, torch.tensor(crop, dtype=torch.float)[None], atol=20.0, rtol=0)
        near_image = torch.isclose(absolute, torch.tensor([0.0, 0.0, width, height])[None], atol=20.0, rtol=0)
        keep = ~(near_crop & ~near_image).any(dim=1)
        return {
            "masks": list(masks[keep]),
            "boxes": boxes[keep],
            "iou_preds": iou[keep],
            "stability_score": stability[keep],
            "points": points[keep],
        }


# ---------------------------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------------------------


class Sam2MaskGenerationPipeline(Pipeline):
    """`pipeline("mask-generation", model=FOLDER)` for hiera_hf SAM 2 folders: runs [`Sam2AutomaticMaskGenerator`]
    with the call's (or the pipeline's) keyword arguments and returns its list of mask records per image. For any
    other model (e.g. transformers' own SAM checkpoints) it builds transformers' `MaskGenerationPipeline`."""

    _load_processor = False
    _load_image_processor = None  # load when the folder has one; transformers' SAM folders always do
    _load_feature_extractor = False
    _load_tokenizer = False

    def __new__(cls, *args, **kwargs):
        model = kwargs.get("model", args[0] if args else None)
        if not isinstance(model, Sam2Model):
            from transformers.pipelines.mask_generation import MaskGenerationPipeline

            return MaskGenerationPipeline(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, model: Sam2Model, image_processor: Sam2ImageProcessor | None = None, **kwargs):
        if not isinstance(image_processor, Sam2ImageProcessor):
            size = model.config.image_size
            image_processor = Sam2ImageProcessor(size={"height": size, "width": size})
        super().__init__(model=model, image_processor=image_processor, **kwargs)

    def _sanitize_parameters(self, **kwargs) -> tuple[dict, dict, dict]:
        return {}, kwargs, {}

    def preprocess(self, image) -> dict:
        return {"image": load_image(image) if isinstance(image, str) else image}

    def _forward(self, inputs: dict, **settings) -> dict:
        generator = Sam2AutomaticMaskGenerator(self.model, self.image_processor, **settings)
        return {"records": generator.generate(inputs["image"])}

    def postprocess(self, outputs: dict) -> list[dict[str, Any]]:
        return outputs["records"]


__all__ = [
    "Sam2AutomaticMaskGenerator",
    "Sam2MaskGenerationPipeline",
    "coco_encode_rle",
    "crop_boxes",
    "mask_to_rle",
    "masks_to_boxes",
    "point_grid",
]
