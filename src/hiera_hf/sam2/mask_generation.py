"""Automatic mask generation with SAM 2: [`Sam2AutomaticMaskGenerator`], Meta's `SAM2AutomaticMaskGenerator` with
Meta's record list, options and defaults.

For every crop (the whole image, then `crop_n_layers` layers of overlapping crops) the image is encoded once and
prompted with a regular grid of single foreground clicks, scaled per axis to the crop (so non-square images get a
square-spaced grid in their own pixels). Masks are kept when their predicted IoU exceeds `pred_iou_thresh` and their
stability (IoU of the masks thresholded at `mask_threshold +- stability_score_offset`) reaches
`stability_score_thresh`; masks touching an inner crop edge are dropped; box NMS removes duplicates within a crop,
then across crops (preferring smaller crops). The math lives in `hiera_hf.sam2.amg`. Differences from Meta that keep
the results but save time: whole point batches go through the decoder at once, and only masks that pass the IoU
filter are upsampled to the crop size. `min_mask_region_area` fills holes and removes sprinkles (8-connected, at
most that many low-resolution pixels) in the mask logits, as Meta's predictor does with its CUDA extension (Meta
skips it on CPU).

`pipeline("mask-generation", model=FOLDER)` is transformers' own `MaskGenerationPipeline` (its dict `masks`,
`scores`, optional `bounding_boxes` / `rle_mask`; its argument names and defaults); importing hiera_hf changes
nothing in it. It runs on hiera-hf folders through the hooks it calls on the model (`get_image_embeddings`, then
`forward(image_embeddings=..., input_points=..., input_labels=...)`) and on `Sam2ImageProcessor`
(`generate_crop_boxes`, `post_process_masks`, `filter_masks`, `post_process_for_mask_generation`), with this
module's math, so its masks are this generator's for the same settings. Through that skeleton:
- names: `points_per_crop` is `points_per_side`, `crops_n_layers` is `crop_n_layers`, `crops_nms_thresh` is both
  `box_nms_thresh` and `crop_nms_thresh` (one threshold; Meta's defaults are equal), `max_hole_area` and
  `max_sprinkle_area` are `min_mask_region_area`;
- defaults are transformers' (`pred_iou_thresh=0.88`; Meta's SAM 2 generator uses 0.8);
- holes and sprinkles are found at `mask_threshold` (Meta's generator finds them at 0: the same unless both are set);
- not available (use this generator): `use_m2m`, `multimask_output=False`, `output_mode`, separate NMS
  thresholds, and a `crop_n_points_downscale_factor` that changes the click count between crop layers (refused:
  the pipeline slices one click tensor for all crops); like transformers' pipeline it ignores unknown arguments.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .amg import (
    box_nms,
    check_grid_settings,
    coco_encode_rle,
    crop_boxes,
    crop_points,
    iou_filter,
    layer_points_per_side,
    mask_to_rle,
    masks_to_boxes,
    point_grid,
    remove_duplicates,
    select_masks,
    uncrop_mask,
)
from .modeling_sam2 import Sam2Model
from .processing_sam2 import Sam2ImageProcessor, clean_mask_logits

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
_UPSAMPLE_CHUNK = 32  # masks upsampled to the crop size at once (bounds memory on large images)


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
        if not isinstance(points_per_batch, int) or isinstance(points_per_batch, bool) or points_per_batch < 1:
            raise ValueError(f"points_per_batch must be a positive integer, got {points_per_batch!r}")
        check_grid_settings(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        self.model = model
        size = model.config.image_size
        self.image_processor = image_processor or Sam2ImageProcessor(size={"height": size, "width": size})
        self.grids = [
            point_grid(layer_points_per_side(points_per_side, crop_n_points_downscale_factor, layer))
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
        parts = []
        with tqdm(total=total, desc="Generating masks", unit="batch", disable=not self.progress) as bar:
            for crop, layer in crops:
                parts.extend(self._process_crop(pixels, crop, layer, bar))
        data = {key: torch.cat([p[key] for p in parts]) for key in parts[0] if key != "masks"}
        masks = [mask for p in parts for mask in p["masks"]]
        keep = remove_duplicates(data["boxes"], data["iou_preds"], data["crop_boxes"], self.box_nms_thresh,
                                 self.crop_nms_thresh, across_crops=len(crops) > 1)  # fmt: skip
        return [self._record(data, int(index), masks[index], (height, width)) for index in keep]

    def _record(self, data: dict, index: int, mask: torch.Tensor, image_size: tuple[int, int]) -> dict[str, Any]:
        crop = data["crop_boxes"][index]
        segmentation = uncrop_mask(mask, crop.tolist(), image_size)
        if self.output_mode != "binary_mask":
            segmentation = mask_to_rle(segmentation)
            if self.output_mode == "coco_rle":
                segmentation = coco_encode_rle(segmentation)
        box, crop = data["boxes"][index].float(), crop.float()
        return {
            "segmentation": segmentation,
            "area": int(mask.sum()),
            "bbox": [box[0].item(), box[1].item(), (box[2] - box[0]).item(), (box[3] - box[1]).item()],
            "predicted_iou": data["iou_preds"][index].item(),
            "point_coords": [data["points"][index].tolist()],
            "stability_score": data["stability_score"][index].item(),
            "crop_box": [crop[0].item(), crop[1].item(), (crop[2] - crop[0]).item(), (crop[3] - crop[1]).item()],
        }

    def _process_crop(self, pixels: torch.Tensor, crop: list[int], layer: int, bar: tqdm) -> list[dict]:
        """The masks of one crop that pass the IoU, stability and crop-edge filters, batch by batch, with their
        boxes, clicks and crop in image coordinates (masks in crop pixels)."""
        x0, y0, x1, y1 = crop
        crop_pixels = pixels[:, y0:y1, x0:x1]
        size = tuple(crop_pixels.shape[-2:])
        model = self.model
        pixel_values = self.image_processor(crop_pixels)["pixel_values"]
        embeddings = model.get_image_embeddings(pixel_values.to(model.device, model.dtype))
        points = crop_points(self.grids[layer], size)
        model_points = self.image_processor.scale_coordinates(points[None], [size])[0]
        parts = []
        for start in range(0, len(points), self.points_per_batch):
            batch = slice(start, start + self.points_per_batch)
            part = self._process_batch(embeddings, points[batch], model_points[batch], crop, size, pixels.shape[-2:])
            part["points"] = part["points"] + torch.tensor([x0, y0])
            part["crop_boxes"] = torch.tensor([crop] * len(part["masks"]), dtype=torch.long).reshape(-1, 4)
            parts.append(part)
            bar.update()
        return parts

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
        keep = iou_filter(iou, self.pred_iou_thresh)
        low_res, iou, points = low_res[keep], iou[keep].cpu(), points[keep.cpu()]  # points stay on the CPU
        # Meta's predictor finds holes and sprinkles at its own threshold 0, whatever the generator's mask_threshold.
        low_res = clean_mask_logits(low_res, 0.0, self.min_mask_region_area, self.min_mask_region_area)

        selected = []
        for start in range(0, len(low_res), _UPSAMPLE_CHUNK):
            logits = F.interpolate(low_res[start : start + _UPSAMPLE_CHUNK, None], size, mode="bilinear",
                                   align_corners=False)[:, 0]  # fmt: skip
            chunk = select_masks(logits, crop, image_size, self.stability_score_thresh, self.mask_threshold,
                                 self.stability_score_offset)  # fmt: skip
            chunk["keep"] = chunk["keep"] + start
            selected.append(chunk)
        if not selected:
            empty = torch.zeros(0, dtype=torch.long)
            selected = [{"keep": empty, "masks": torch.zeros(0, *size, dtype=torch.bool),
                         "stability_score": torch.zeros(0), "boxes": empty.reshape(0, 4)}]  # fmt: skip
        keep = torch.cat([chunk["keep"] for chunk in selected])
        return {
            "masks": list(torch.cat([chunk["masks"] for chunk in selected])),
            "boxes": torch.cat([chunk["boxes"] for chunk in selected]),
            "iou_preds": iou[keep],
            "stability_score": torch.cat([chunk["stability_score"] for chunk in selected]),
            "points": points[keep],
        }

__all__ = [
    "Sam2AutomaticMaskGenerator",
    "box_nms",
    "coco_encode_rle",
    "crop_boxes",
    "mask_to_rle",
    "masks_to_boxes",
    "point_grid",
]
