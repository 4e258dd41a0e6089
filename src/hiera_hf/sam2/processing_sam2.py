"""Image processor for SAM 2 / 2.1: Meta's `SAM2Transforms` preprocessing, prompt scaling and mask post-processing.

Meta converts the image to float in [0, 1] first (`ToTensor`), then stretches it to 1024x1024 with torchvision's
tensor `Resize` (bilinear, antialiased, no aspect-preserving padding) and normalises with the ImageNet mean and std.
Prompts in original-image pixels are scaled per axis (`x / W * 1024`, `y / H * 1024`). Low-resolution mask logits
are upsampled straight to the original size (bilinear, `align_corners=False`). Meta removes small holes and
sprinkles from the 256x256 logits with a CUDA connected-components kernel that is absent on CPU (the step is then
skipped with a warning); here OpenCV labels the components of CPU tensors and tensor operations find them on other
devices (`frame_arithmetic.small_regions`), with the same 8-connectivity and the same logit edits.

SAM 2's pixel preprocessing comes in the two forms Meta has: `resize_image` here (the image predictor's
`SAM2Transforms`: torch resize of the float image) and `video_tracking.resize_video_frame` (the video predictor's
`load_video_frames`: Pillow resize of the 8-bit frame, bicubic; torch-free, shared with the ONNX runtime), each
followed by `normalize`. They differ by up to a few tenths after
normalisation (tests/test_sam2_processing.py measures it against Meta's own functions), far above the parity
tolerance, so the processor and the video session each keep theirs; the training datasets use the one of the
predictor the fine-tuned model will be used with.

The processor also implements the hooks transformers' `MaskGenerationPipeline` calls (`generate_crop_boxes`,
`filter_masks`, `post_process_for_mask_generation`, and `post_process_masks` with transformers' arguments) with
Meta's automatic-mask-generation math from `hiera_hf.sam2.amg`, so `pipeline("mask-generation", model=FOLDER)`
runs transformers' own pipeline on hiera-hf folders (see `hiera_hf.sam2.mask_generation`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
)

from ..image_utils import is_channels_first, open_image, to_rgb_float
from .amg import (
    check_grid_settings,
    crop_boxes,
    crop_points,
    iou_filter,
    layer_points_per_side,
    mask_to_rle,
    point_grid,
    remove_duplicates,
    rle_to_mask,
    select_masks,
    uncrop_mask,
)
from .frame_arithmetic import small_regions
from .prompts import PADDING_LABEL, check_boxes, check_coordinates, check_labels

# transformers' mask-generation pipeline has no progress bar: each processor's bar for the image it works on, opened
# by `generate_crop_boxes`, moved by `filter_masks`, closed by `post_process_for_mask_generation` (kept out of the
# processor's attributes, which `save_pretrained` writes).
_GENERATION_BARS: dict[int, tqdm] = {}

USER_LABELS = (0, 1, PADDING_LABEL)  # background click, foreground click, padding


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Meta's image predictor (`SAM2Transforms`): a float RGB image `(3, H, W)` in [0, 1] stretched to `size`
    `(height, width)` with antialiased bilinear interpolation of the float tensor (torchvision's tensor `Resize`)."""
    return F.interpolate(image[None], size, mode="bilinear", align_corners=False, antialias=True)[0]


def normalize(
    pixels: torch.Tensor, mean: Sequence[float] = IMAGENET_DEFAULT_MEAN, std: Sequence[float] = IMAGENET_DEFAULT_STD
) -> torch.Tensor:
    """`(pixels - mean) / std` per channel of float32 `(3, H, W)` pixels (ImageNet's statistics, as Meta's)."""
    mean = torch.tensor(mean, dtype=torch.float32, device=pixels.device)[:, None, None]
    std = torch.tensor(std, dtype=torch.float32, device=pixels.device)[:, None, None]
    return (pixels - mean) / std


def _nested(value, name: str) -> list[list]:
    """Per-image lists of per-prompt entries, from nested lists or an array/tensor `(batch, num_prompts, ...)`."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (list, tuple)) and all(isinstance(p, (list, tuple)) for p in v) for v in value
    ):
        raise ValueError(f"{name} must be nested as [image][prompt][...] (one list per image, one per prompt)")
    return [list(v) for v in value]


def _as_array(entry, name: str, shape: tuple, dtype, allow_empty: bool = False) -> np.ndarray:
    """One prompt's entry as an array of `shape` (None = any length >= 1, or 0 with `allow_empty`), raising a clear
    error otherwise."""
    if allow_empty and len(entry) == 0:
        return np.zeros((0, *shape[1:]), dtype=dtype)
    try:
        array = np.asarray(entry, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: every prompt must be a regular array of numbers ({error})") from None
    if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)) or not array.size:
        text = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: every prompt must have shape {text}, got {array.shape}")
    return array


DEVICE_REGION_MAX_AREA = 256  # `frame_arithmetic.small_regions` takes up to max_area - 1 rounds on a device


def _small_regions_opencv(region: torch.Tensor, max_area: float) -> torch.Tensor:
    """`frame_arithmetic.small_regions` of `region` `(N, H, W)` with OpenCV's connected components (on the host,
    and fast for any area)."""
    import cv2

    small = np.zeros(region.shape, dtype=bool)
    for index, mask in enumerate(region.cpu().numpy()):
        _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        is_small = stats[:, cv2.CC_STAT_AREA] <= max_area
        is_small[0] = False  # label 0: pixels outside `region`
        small[index] = is_small[labels]
    return torch.from_numpy(small).to(region.device)


def clean_mask_logits(
    logits: torch.Tensor,
    mask_threshold: float = 0.0,
    max_hole_area: float = 0.0,
    max_sprinkle_area: float = 0.0,
    hole_logit: float | None = None,
) -> torch.Tensor:
    """Fill small holes and remove small sprinkles in mask logits `(..., H, W)` (Meta's `postprocess_masks` math).

    Components are 8-connected and found on the input masks: a background component (logit <= threshold) of at
    most `max_hole_area` pixels gets the logit `hole_logit` (default `threshold + 10`; Meta's video predictor uses
    0.1), a foreground component (logit > threshold) of at most `max_sprinkle_area` pixels gets `threshold - 10`.
    An area of 0 disables that step. CPU tensors go through OpenCV; others stay on their device
    (`frame_arithmetic.small_regions`, whose rounds grow with the area) unless an area exceeds
    `DEVICE_REGION_MAX_AREA`.
    """
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return logits
    flat = logits.reshape(-1, *logits.shape[-2:])
    on_host = flat.device.type == "cpu" or max(max_hole_area, max_sprinkle_area) > DEVICE_REGION_MAX_AREA
    find = _small_regions_opencv if on_host else small_regions
    foreground = flat > mask_threshold
    cleaned = flat
    if max_hole_area > 0:
        holes = find(~foreground, max_hole_area)
        cleaned = torch.where(holes, mask_threshold + 10.0 if hole_logit is None else hole_logit, cleaned)
    if max_sprinkle_area > 0:
        cleaned = torch.where(find(foreground, max_sprinkle_area), mask_threshold - 10.0, cleaned)
    return cleaned.reshape(logits.shape)


class HieraHfSam2ImageProcessor(BaseImageProcessor):
    r"""
    hiera-hf's SAM 2 image processor, also exported as `Sam2ImageProcessor` (the name used in this package's docs).
    Its class name differs from transformers' own `Sam2ImageProcessor` on purpose: transformers resolves a folder's
    `image_processor_type` among *registered* classes by name first, so a registered class of the same name would
    take over transformers' own SAM 2 folders after `import hiera_hf`.

    SAM 2's image preprocessing (Meta's `SAM2Transforms`): convert to float in [0, 1], stretch to `size` (1024x1024)
    with antialiased bilinear interpolation, normalise with the ImageNet mean and std.

    Inputs: one image or a list of images: PIL images (any mode), numpy arrays `(H, W)` / `(H, W, C)` or torch
    tensors `(H, W)` / `(C, H, W)`, C in {1, 3, 4}, `uint8`, `uint16` or float in [0, 1] (see [`to_rgb_float`]).
    Optional prompts in original-image pixels (see [`~Sam2ImageProcessor.prepare_prompts`]).

    Returns `pixel_values` `(batch, 3, height, width)`, `original_sizes` `(batch, 2)` as (H, W), and the scaled
    prompts `input_points` `(batch, num_prompts, num_points, 2)`, `input_labels` `(batch, num_prompts, num_points)`,
    `input_boxes` `(batch, num_prompts, 4)` when given.
    """

    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 1024, "width": 1024}
    resample = PILImageResampling.BILINEAR  # on the float tensor, antialiased (torchvision's tensor Resize)
    do_resize = True
    do_normalize = True
    model_input_names = ["pixel_values"]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._set_attributes(**kwargs)

    def to_dict(self) -> dict:
        # transformers owns the class name `Sam2ImageProcessor`; without the type AutoImageProcessor resolves the
        # folder's config (our model type) to this class instead.
        output = super().to_dict()
        output.pop("image_processor_type", None)
        return output

    def _prepare_images_structure(self, images, expected_ndims: int = 3) -> list:
        if isinstance(images, (list, tuple)):
            return list(images)
        if getattr(images, "ndim", None) == 4:
            return list(images)
        return [images]

    def process_image(self, image, input_data_format: str | ChannelDimension | None = None, **kwargs) -> torch.Tensor:
        """One input image -> float32 RGB `(3, H, W)` in [0, 1]. Arrays are read channels-last and tensors
        channels-first unless `input_data_format` says otherwise; a path is read with `image_utils.open_image`."""
        if isinstance(image, (str, os.PathLike)):
            image = open_image(image)
        return torch.from_numpy(to_rgb_float(image, channels_first=is_channels_first(image, input_data_format)))

    def _preprocess(
        self,
        images: list[torch.Tensor],
        size: SizeDict,
        do_resize: bool = True,
        do_normalize: bool = True,
        image_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        image_std: Sequence[float] = IMAGENET_DEFAULT_STD,
        **kwargs,
    ) -> BatchFeature:
        if not images:
            raise ValueError("Give at least one image")
        pixel_values = []
        for image in images:
            if do_resize:
                image = resize_image(image, (size.height, size.width))
            pixel_values.append(normalize(image, image_mean, image_std) if do_normalize else image)
        original_sizes = torch.tensor([tuple(image.shape[-2:]) for image in images])
        return BatchFeature({"pixel_values": torch.stack(pixel_values), "original_sizes": original_sizes})

    def preprocess(
        self,
        images,
        input_points=None,
        input_labels=None,
        input_boxes=None,
        **kwargs,
    ) -> BatchFeature:
        """Preprocess images (and scale their prompts, see `prepare_prompts`)."""
        kwargs.pop("return_tensors", None)  # always torch tensors
        features = super().preprocess(images, **kwargs)
        if input_points is not None or input_labels is not None or input_boxes is not None:
            features.update(self.prepare_prompts(features["original_sizes"], input_points, input_labels, input_boxes))
        return features

    def prepare_prompts(
        self,
        original_sizes: torch.Tensor | Sequence[Sequence[int]],
        input_points=None,
        input_labels=None,
        input_boxes=None,
    ) -> dict[str, torch.Tensor]:
        """Check prompts given in original-image pixels, scale them to the model input and pad ragged ones.

        `input_points` `[image][prompt][point] = (x, y)` with `input_labels` `[image][prompt][point]` (1 foreground,
        0 background); `input_boxes` `[image][prompt] = (x0, y0, x1, y1)`. Nested lists or arrays/tensors of shape
        `(batch, num_prompts, num_points, 2)`, `(batch, num_prompts, num_points)`, `(batch, num_prompts, 4)`.
        Prompts with fewer points are padded with label -10 (ignored by the model; with boxes a prompt may have no
        points at all); images with fewer prompts are padded with whole prompts of -10 points (and zero boxes),
        whose outputs are to be dropped. Coordinates must be finite and within `[0, W] x [0, H]` of their image,
        boxes have x0 < x1 and y0 < y1, labels are exactly 0, 1 or -10 (see `sam2.prompts`).
        Returns tensors `input_points` (float32), `input_labels` (int64), `input_boxes` (float32), as given.
        """
        sizes = [tuple(int(v) for v in size) for size in torch.as_tensor(original_sizes).reshape(-1, 2).tolist()]
        if (input_points is None) != (input_labels is None):
            raise ValueError("input_points and input_labels must be given together (one label per point)")
        if input_points is None and input_boxes is None:
            raise ValueError("Give input_points with input_labels, input_boxes, or both")
        given = {}
        if input_points is not None:
            points = _nested(input_points, "input_points")
            labels = _nested(input_labels, "input_labels")
            boxed = input_boxes is not None  # a prompt with a box may have no clicks
            given["input_points"] = [
                [_as_array(p, "input_points", (None, 2), np.float32, boxed) for p in v] for v in points
            ]
            given["input_labels"] = [
                [_as_array(p, "input_labels", (None,), np.float64, boxed) for p in v] for v in labels
            ]
        if input_boxes is not None:
            boxes = _nested(input_boxes, "input_boxes")
            given["input_boxes"] = [[_as_array(b, "input_boxes", (4,), np.float32) for b in v] for v in boxes]
        for name, value in given.items():
            if len(value) != len(sizes):
                raise ValueError(
                    f"{name} holds prompts for {len(value)} image(s), but there are {len(sizes)} image(s)"
                )
        counts = {name: [len(v) for v in value] for name, value in given.items()}
        if len({tuple(c) for c in counts.values()}) > 1:
            raise ValueError(f"Every prompt input must have the same number of prompts per image, got {counts}")
        if min(next(iter(counts.values()))) < 1:
            raise ValueError("Every image needs at least one prompt")
        if "input_points" in given:
            for image_points, image_labels in zip(given["input_points"], given["input_labels"]):
                for p, lab in zip(image_points, image_labels):
                    if lab.shape[0] != p.shape[0]:
                        raise ValueError(f"Each point needs one label: {p.shape[0]} points but {lab.shape[0]} labels")
                    check_labels(lab, "input_labels", allowed=USER_LABELS)

        num_prompts = max(next(iter(counts.values())))
        outputs = {}
        if "input_points" in given:
            num_points = max(1, max(p.shape[0] for v in given["input_points"] for p in v))
            points = torch.zeros(len(sizes), num_prompts, num_points, 2)
            labels = torch.full((len(sizes), num_prompts, num_points), PADDING_LABEL, dtype=torch.long)
            for i, (image_points, image_labels) in enumerate(zip(given["input_points"], given["input_labels"])):
                for j, (p, lab) in enumerate(zip(image_points, image_labels)):
                    points[i, j, : len(p)] = torch.from_numpy(p)
                    labels[i, j, : len(p)] = torch.from_numpy(lab.astype(np.int64))
            for i, (height, width) in enumerate(sizes):
                check_coordinates(points[i][labels[i] != PADDING_LABEL], width, height, f"input_points of image {i}")
            outputs["input_points"] = self.scale_coordinates(points, sizes)
            outputs["input_labels"] = labels
        if "input_boxes" in given:
            boxes = torch.zeros(len(sizes), num_prompts, 4)
            valid = torch.zeros(len(sizes), num_prompts, 2, dtype=torch.bool)
            for i, image_boxes in enumerate(given["input_boxes"]):
                for j, box in enumerate(image_boxes):
                    boxes[i, j], valid[i, j] = torch.from_numpy(box), True
            for i, (height, width) in enumerate(sizes):
                check_boxes(boxes[i][valid[i, :, 0]], width, height, f"input_boxes of image {i}")
            outputs["input_boxes"] = self.scale_coordinates(boxes.reshape(*boxes.shape[:2], 2, 2), sizes).flatten(-2)
        return outputs

    def scale_coordinates(self, coords: torch.Tensor, sizes: list[tuple[int, int]]) -> torch.Tensor:
        """(x, y) pixels of each original image `(batch, ..., 2)` -> model-input pixels, per axis as Meta's
        `transform_coords`: `x / W * width`, `y / H * height`."""
        scaled = coords.clone().float()
        for i, (height, width) in enumerate(sizes):
            scaled[i, ..., 0] = scaled[i, ..., 0] / width * self.size.width
            scaled[i, ..., 1] = scaled[i, ..., 1] / height * self.size.height
        return scaled

    def post_process_masks(
        self,
        masks: torch.Tensor | Sequence[torch.Tensor],
        original_sizes: torch.Tensor | Sequence[Sequence[int]],
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        binarize: bool = True,
        reshaped_input_sizes: torch.Tensor | Sequence[Sequence[int]] | None = None,
    ) -> list[torch.Tensor]:
        """Low-resolution mask logits -> masks at each image's original size.

        Args:
            masks: `(batch, num_prompts, num_masks, 256, 256)` logits (the model's `pred_masks`), or a list with one
                `(num_prompts, num_masks, 256, 256)` tensor per image.
            original_sizes: `(batch, 2)` as (H, W), the processor's `original_sizes`.
            mask_threshold: logit threshold between background and foreground.
            max_hole_area, max_sprinkle_area: fill background / remove foreground 8-connected components of at most
                this many low-resolution pixels first (see [`clean_mask_logits`]); 0 disables.
            binarize: return boolean masks (`logits > mask_threshold`) instead of upsampled logits.
            reshaped_input_sizes: transformers' SAM argument (the resized image inside the padded input). SAM 2
                stretches the whole image to the input, so it may only be None or the input size of every image.

        Returns:
            A list with one `(num_prompts, num_masks, H, W)` tensor per image.
        """
        sizes = [tuple(int(v) for v in size) for size in torch.as_tensor(original_sizes).reshape(-1, 2).tolist()]
        if reshaped_input_sizes is not None:
            reshaped = torch.as_tensor(reshaped_input_sizes).reshape(-1, 2).tolist()
            if any(tuple(size) != (self.size.height, self.size.width) for size in reshaped):
                raise ValueError(
                    f"reshaped_input_sizes must be the model input size {(self.size.height, self.size.width)} for "
                    f"every image (SAM 2 does not pad), got {reshaped}"
                )
        if len(masks) != len(sizes):
            raise ValueError(f"Got masks for {len(masks)} image(s) but {len(sizes)} original size(s)")
        results = []
        for image_masks, size in zip(masks, sizes):
            if image_masks.ndim != 4:
                raise ValueError(
                    f"Masks must be (num_prompts, num_masks, h, w) per image, got {tuple(image_masks.shape)}"
                )
            logits = clean_mask_logits(image_masks.float(), mask_threshold, max_hole_area, max_sprinkle_area)
            logits = F.interpolate(logits, size, mode="bilinear", align_corners=False)
            results.append(logits > mask_threshold if binarize else logits)
        return results

    # -----------------------------------------------------------------------------------------------------------
    # Hooks of transformers' `MaskGenerationPipeline` (Meta's automatic mask generation, math in `sam2.amg`)
    # -----------------------------------------------------------------------------------------------------------

    def generate_crop_boxes(
        self,
        image,
        target_size: int,
        crop_n_layers: int = 0,
        overlap_ratio: float = 512 / 1500,
        points_per_crop: int = 32,
        crop_n_points_downscale_factor: int = 1,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """The crops and click grids of automatic mask generation (Meta's `generate_crop_boxes` and point grids).

        Args:
            image: one image (any input this processor accepts).
            target_size: the model input side (`size["height"]`, which transformers' pipeline passes).
            crop_n_layers: layers of overlapping crops after the whole image (layer i has (2 ** i) ** 2 crops).
            overlap_ratio: overlap of neighbouring crops in layer 1, as a fraction of the short image side.
            points_per_crop: clicks per side of the grid (Meta's `points_per_side`).
            crop_n_points_downscale_factor: layer i has `points_per_crop / factor ** i` clicks per side. Since
                transformers' pipeline slices one click tensor for all crops, a factor that changes the click count
                between layers is refused; `Sam2AutomaticMaskGenerator` runs it.
            device: where the returned tensors go (default CPU).

        Returns:
            `crop_boxes` `(num_crops, 4)` float (x0, y0, x1, y1) in image pixels, the whole image first;
            `points` `(1, num_points, num_crops, 2)` float32 clicks in model-input pixels (Meta's grid in each
            crop's pixels, scaled per axis); `cropped_images`, one float `(3, h, w)` tensor in [0, 1] per crop (for
            this processor); `labels` `(1, num_points, num_crops)` int64 ones (foreground clicks).
        """
        if (target_size, target_size) != (self.size.height, self.size.width):
            raise ValueError(
                f"target_size must be the model input side {self.size.height} (size {dict(self.size)}), got "
                f"{target_size!r}"
            )
        names = ("points_per_crop", "crops_n_layers")  # the pipeline's names
        check_grid_settings(points_per_crop, crop_n_layers, crop_n_points_downscale_factor, names)
        counts = {layer_points_per_side(points_per_crop, crop_n_points_downscale_factor, layer) for layer in
                  range(crop_n_layers + 1)}  # fmt: skip
        if len(counts) > 1:
            raise ValueError(
                f"crop_n_points_downscale_factor={crop_n_points_downscale_factor} gives the crop layers different "
                f"numbers of clicks, which transformers' MaskGenerationPipeline cannot batch; use "
                f"hiera_hf.sam2.mask_generation.Sam2AutomaticMaskGenerator for it"
            )
        grid = point_grid(counts.pop())
        pixels = self.process_image(image)
        crops = [crop for crop, _ in crop_boxes(*pixels.shape[-2:], crop_n_layers, overlap_ratio)]
        cropped_images = [pixels[:, y0:y1, x0:x1] for x0, y0, x1, y1 in crops]
        sizes = [tuple(crop.shape[-2:]) for crop in cropped_images]
        points = torch.stack([crop_points(grid, size) for size in sizes])  # (num_crops, num_points, 2)
        points = self.scale_coordinates(points, sizes).permute(1, 0, 2)[None]
        labels = torch.ones(points.shape[:-1], dtype=torch.long)
        boxes = torch.tensor(crops, dtype=torch.float)
        self._close_generation_bar()
        from transformers.utils.logging import is_progress_bar_enabled

        _GENERATION_BARS[id(self)] = tqdm(
            total=points.shape[1] * points.shape[2], desc="Generating masks", unit="click", leave=False,
            disable=not is_progress_bar_enabled(),
        )  # fmt: skip
        return boxes.to(device), points.to(device), cropped_images, labels.to(device)

    def _close_generation_bar(self) -> None:
        bar = _GENERATION_BARS.pop(id(self), None)
        if bar is not None:
            bar.close()

    def filter_masks(
        self,
        masks: torch.Tensor,
        iou_scores: torch.Tensor,
        original_size: Sequence[int],
        cropped_box_image: torch.Tensor | Sequence[float],
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        mask_threshold: float = 0.0,
        stability_score_offset: float = 1.0,
    ) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
        """Meta's per-batch filters of automatic mask generation (see `hiera_hf.sam2.amg`): predicted IoU above
        `pred_iou_thresh`, stability at least `stability_score_thresh`, box away from inner crop edges.

        Args:
            masks: mask logits `(num_prompts, num_masks, h, w)` of one crop at the crop size (`post_process_masks`
                with `binarize=False`).
            iou_scores: `(num_prompts, num_masks)` predicted IoUs.
            original_size: (H, W) of the whole image.
            cropped_box_image: the crop (x0, y0, x1, y1) in image pixels.

        Returns:
            The kept masks as uncompressed RLE of the whole image, their scores `(K,)`, and `(K, 8)` boxes: each
            mask's inclusive box then its crop, both (x0, y0, x1, y1) in image pixels (the crop lets
            `post_process_for_mask_generation` remove duplicates within each crop first, as Meta does).
        """
        crop = [int(v) for v in torch.as_tensor(cropped_box_image).tolist()]
        image_size = tuple(int(v) for v in original_size)
        if id(self) in _GENERATION_BARS:
            _GENERATION_BARS[id(self)].update(masks.shape[0])
        logits, scores = masks.flatten(0, 1), iou_scores.flatten().float().cpu()
        if logits.shape[0] != scores.shape[0]:
            raise ValueError(f"masks {tuple(masks.shape)} and iou_scores {tuple(iou_scores.shape)} do not match")
        passed = iou_filter(scores, pred_iou_thresh).nonzero()[:, 0]
        selected = select_masks(logits[passed.to(logits.device)].float(), crop, image_size, stability_score_thresh,
                                mask_threshold, stability_score_offset)  # fmt: skip
        rles = [mask_to_rle(uncrop_mask(mask, crop, image_size)) for mask in selected["masks"]]
        crops = torch.tensor([crop], dtype=selected["boxes"].dtype).expand(len(rles), 4)
        return rles, scores[passed[selected["keep"]]], torch.cat([selected["boxes"], crops], dim=1)

    def post_process_for_mask_generation(
        self,
        all_masks: list[dict],
        all_scores: torch.Tensor,
        all_boxes: torch.Tensor,
        crops_nms_thresh: float = 0.7,
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[dict], torch.Tensor]:
        """Meta's duplicate removal over all masks of one image (`hiera_hf.sam2.amg.remove_duplicates`): box NMS by
        predicted IoU within each crop, then across crops preferring smaller crops, both with `crops_nms_thresh`
        (Meta's `box_nms_thresh` and `crop_nms_thresh`, equal by default). The across-crops step runs when the kept
        masks come from several crops; from one crop it would keep them all (same threshold), as in Meta's run.

        Args:
            all_masks: uncompressed RLEs from `filter_masks`.
            all_scores: `(N,)` predicted IoUs.
            all_boxes: `(N, 8)` mask boxes and crops from `filter_masks`.

        Returns:
            `masks`, boolean `(H, W)` tensors; `scores` `(K,)`; `rle_masks`, their uncompressed RLEs; `boxes`
            `(K, 4)` inclusive (x0, y0, x1, y1) in image pixels.
        """
        if all_boxes.ndim != 2 or all_boxes.shape[1] != 8 or not len(all_masks) == len(all_boxes) == len(all_scores):
            raise ValueError(
                f"Expected N RLE masks, (N,) scores and (N, 8) boxes from filter_masks, got {len(all_masks)}, "
                f"{tuple(all_scores.shape)} and {tuple(all_boxes.shape)}"
            )
        self._close_generation_bar()
        boxes, crops = all_boxes[:, :4], all_boxes[:, 4:]
        across_crops = len({tuple(crop) for crop in crops.tolist()}) > 1
        keep = remove_duplicates(boxes, all_scores, crops, crops_nms_thresh, crops_nms_thresh, across_crops)
        rles = [all_masks[i] for i in keep.tolist()]
        masks = [torch.from_numpy(rle_to_mask(rle)) for rle in rles]
        return masks, all_scores[keep], rles, boxes[keep]


Sam2ImageProcessor = HieraHfSam2ImageProcessor

__all__ = [
    "HieraHfSam2ImageProcessor",
    "Sam2ImageProcessor",
    "clean_mask_logits",
    "normalize",
    "resize_image",
]
