"""An image being segmented: the image encoder runs once per image and each click runs only the prompt encoder and
the mask decoder on the cached embedding."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..image_utils import open_image, to_rgb_array
from ..sam2.amg import layer_points_per_side
from ..sam2.mask_generation import Sam2AutomaticMaskGenerator
from ..sam2.prompts import check_finite, check_index
from .models import Models
from .objects import FOREGROUND, MAX_OBJECT_ID, Objects, check_click, check_corners
from .views import ViewGrid

# What one "segment everything" may ask of the model that every tab shares: the knobs of
# `Sam2AutomaticMaskGenerator` a client may set, each with its lowest and highest value (whole numbers where the
# bounds are ints), the switches (booleans), and the most clicks over all crop layers (a 64 x 64 grid).
EVERYTHING_LIMITS: dict[str, tuple[float, float]] = {
    "points_per_side": (1, 64),
    "points_per_batch": (1, 256),
    "crop_n_layers": (0, 2),
    "crop_n_points_downscale_factor": (1, 4),
    "min_mask_region_area": (0, 1_000_000),
    "pred_iou_thresh": (0.0, 1.0),
    "stability_score_thresh": (0.0, 1.0),
    "stability_score_offset": (0.0, 10.0),
    "mask_threshold": (-10.0, 10.0),
    "box_nms_thresh": (0.0, 1.0),
    "crop_nms_thresh": (0.0, 1.0),
    "crop_overlap_ratio": (0.0, 0.9),
}
EVERYTHING_SWITCHES = ("progress", "use_m2m", "multimask_output")
MAX_EVERYTHING_CLICKS = 64 * 64


def check_everything_settings(settings: dict) -> dict:
    """The settings of a "segment everything" checked against `EVERYTHING_LIMITS` (numbers as the page sends
    them: 32.0 is 32); `ValueError` naming the first one out of bounds, unknown, NaN or infinite."""
    checked = {}
    for name, value in settings.items():
        if name in EVERYTHING_SWITCHES and isinstance(value, (bool, np.bool_)):
            checked[name] = bool(value)
            continue
        if name not in EVERYTHING_LIMITS:
            known = ", ".join([*EVERYTHING_LIMITS, *EVERYTHING_SWITCHES])
            raise ValueError(f"Segment everything has no setting {name!r} of that kind; settings: {known}")
        low, high = EVERYTHING_LIMITS[name]
        if isinstance(low, int):
            checked[name] = check_index(value, name, low, high)
        else:
            number = float(check_finite(value, name)) if np.ndim(value) == 0 else None
            if number is None or not low <= number <= high:
                raise ValueError(f"{name} must be a number in {low}..{high}, got {value!r}")
            checked[name] = number
    side, layers = checked.get("points_per_side", 32), checked.get("crop_n_layers", 0)
    factor = checked.get("crop_n_points_downscale_factor", 1)
    clicks = sum(4**layer * layer_points_per_side(side, factor, layer) ** 2 for layer in range(layers + 1))
    if clicks > MAX_EVERYTHING_CLICKS:
        raise ValueError(
            f"Segment everything would click {clicks:,} times over its {layers + 1} crop layer(s); the app allows "
            f"at most {MAX_EVERYTHING_CLICKS:,}: fewer points per side or crop layers, or a larger downscale factor"
        )
    return checked


@dataclass
class _ImageObject:
    """One object's prompts on the image and its masks: the decoder's candidates `low_res` `(M, h, w)` float32
    logits with their predicted IoU `scores` `(M,)`, which one is shown, and that one at the image's size, `mask`
    `(H, W)` bool (masks of "segment everything" have no `low_res`)."""

    clicks: list[tuple[float, float, int]] = field(default_factory=list)
    box: list[float] | None = None
    earlier: list[tuple[list, list[float] | None]] = field(default_factory=list)  # (clicks, box) before each change
    low_res: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    selected: int = 0
    mask: np.ndarray | None = None


class ImageState:
    """One image being segmented. `open` runs the image encoder once; `click`, `set_box` run only the prompt
    encoder and the mask decoder on the cached embedding (`encoder_runs` counts the encoder calls)."""

    def __init__(self, models: Models):
        self.models = models
        self.image: np.ndarray | None = None
        self.objects = Objects()
        self._prompts: dict[int, _ImageObject] = {}
        self._embedding: dict[str, torch.Tensor] | None = None
        self.encoder_runs = 0
        self._grid: ViewGrid | None = None
        self._view_frame: np.ndarray | None = None

    def open(self, image) -> None:
        """Open an image: a path, PIL image or `(H, W[, C])` array. Forgets the objects of the previous image."""
        if isinstance(image, (str, os.PathLike)):  # upright and within the pixel limit
            try:
                image = open_image(image).convert("RGB")
            except ValueError as error:  # the file named as the user knows it, not by the server's path
                raise ValueError(str(error).replace(str(Path(image)), Path(image).name)) from None
        try:
            rgb = to_rgb_array(image)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Not an image: {error}") from None
        if rgb.shape[0] < 2 or rgb.shape[1] < 2:
            raise ValueError(f"The image is too small ({rgb.shape[1]}x{rgb.shape[0]})")
        models = self.models
        pixels = models.processor(rgb)["pixel_values"].to(models.device, next(models.image.parameters()).dtype)
        with models.lock, torch.inference_mode():
            embedded = models.image.get_image_embeddings(pixels)
        self.encoder_runs += 1
        self._embedding = {
            "image_embeddings": embedded.image_embeddings,
            "high_res_features": embedded.high_res_features,
        }
        self.image, self.objects, self._prompts = rgb, Objects(), {}
        self._grid = ViewGrid(*rgb.shape[:2])
        self._view_frame = self._grid.frame(rgb)  # resized once per image

    def _require_image(self) -> np.ndarray:
        if self.image is None:
            raise ValueError("Open an image first")
        return self.image

    @property
    def grid(self) -> ViewGrid:
        """How the image maps to its view (positions the page reports are in the view)."""
        self._require_image()
        return self._grid

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return tuple(self._require_image().shape[:2])

    def add_object(self, name: str | None = None) -> int:
        self._require_image()
        obj_id = self.objects.add(name)
        self._prompts[obj_id] = _ImageObject()
        return obj_id

    def remove_object(self, obj_id: int) -> None:
        self.objects.remove(obj_id)
        del self._prompts[obj_id]

    def click(self, x: float, y: float, label: int = FOREGROUND, obj_id: int | None = None) -> int:
        """Add a click (x, y) in image pixels (label 1 foreground, 0 background) to an object (default: the active
        one, created if there is none) and decode its masks again. Returns the object id."""
        height, width = self.size
        click = check_click(x, y, label, width, height)
        obj_id = self._object(obj_id)
        prompt = self._prompts[obj_id]
        prompt.earlier.append((list(prompt.clicks), prompt.box))
        prompt.clicks = [*prompt.clicks, click]
        self._decode(obj_id)
        return obj_id

    def set_box(self, box, obj_id: int | None = None) -> int:
        """Give an object a box (x0, y0, x1, y1) in image pixels (kept with its clicks); returns the object id."""
        height, width = self.size
        corners = check_corners(box, width, height)
        obj_id = self._object(obj_id)
        prompt = self._prompts[obj_id]
        prompt.earlier.append((list(prompt.clicks), prompt.box))
        prompt.box = corners
        self._decode(obj_id)
        return obj_id

    def undo(self, obj_id: int | None = None) -> int:
        """Take back the last click or box of an object (default: the active one); returns the object id."""
        obj_id = self._object(obj_id)
        prompt = self._prompts[obj_id]
        if not prompt.earlier:
            raise ValueError(f"Object {obj_id} has no click or box to take back")
        prompt.clicks, prompt.box = prompt.earlier.pop()
        if prompt.clicks or prompt.box is not None:
            self._decode(obj_id)
        else:
            self._prompts[obj_id] = _ImageObject()
        return obj_id

    def clear_prompts(self, obj_id: int | None = None) -> int:
        """Forget an object's clicks, box and mask (the object stays); returns the object id."""
        obj_id = self._object(obj_id)
        self._prompts[obj_id] = _ImageObject()
        return obj_id

    def _object(self, obj_id: int | None) -> int:
        self._require_image()
        created = obj_id is None and self.objects.active is None
        obj_id = self.objects.check(obj_id)
        if created:
            self._prompts[obj_id] = _ImageObject()
        return obj_id

    def _decode(self, obj_id: int) -> None:
        """Prompt encoder + mask decoder on the cached embedding: the object's candidate masks; the best one (by
        predicted IoU) is shown."""
        prompt, models = self._prompts[obj_id], self.models
        given = {}
        if prompt.clicks:
            given["input_points"] = [[[c[:2] for c in prompt.clicks]]]
            given["input_labels"] = [[[c[2] for c in prompt.clicks]]]
        if prompt.box is not None:
            given["input_boxes"] = [[prompt.box]]
        inputs = {k: v.to(models.device) for k, v in models.processor.prepare_prompts([self.size], **given).items()}
        with models.lock, torch.inference_mode():
            output = models.image(**self._embedding, **inputs, multimask_output=True)
        prompt.low_res, prompt.scores = output.pred_masks[0, 0].float().cpu(), output.iou_scores[0, 0].float().cpu()
        self._show(prompt, int(prompt.scores.argmax()))

    def _show(self, prompt: _ImageObject, index: int) -> None:
        prompt.selected = index
        masks = self.models.processor.post_process_masks(prompt.low_res[None, None, index : index + 1], [self.size])
        prompt.mask = masks[0][0, 0].numpy()

    def candidates(self, obj_id: int | None = None) -> list[tuple[np.ndarray, float]]:
        """The object's candidate masks `(H, W)` bool with their predicted IoU (empty without prompts)."""
        prompt = self._prompts[self._object(obj_id)]
        if prompt.low_res is None:
            return [] if prompt.mask is None else [(prompt.mask, float(prompt.scores[0]))]
        masks = self.models.processor.post_process_masks(prompt.low_res[None, None], [self.size])[0][0]
        return [(m.numpy(), float(s)) for m, s in zip(masks, prompt.scores)]

    def scores(self, obj_id: int | None = None) -> list[float]:
        """The predicted IoU of the object's candidate masks (empty without prompts); `candidates` without the
        masks."""
        scores = self._prompts[self._object(obj_id)].scores
        return [] if scores is None else [float(score) for score in scores]

    def select_candidate(self, index: int, obj_id: int | None = None) -> None:
        """Show candidate `index` (0..M-1) of the object."""
        prompt = self._prompts[self._object(obj_id)]
        count = 0 if prompt.low_res is None else len(prompt.low_res)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
            raise ValueError(f"Candidate {index!r} does not exist; the object has {count} candidate mask(s)")
        self._show(prompt, int(index))

    def selected(self, obj_id: int | None = None) -> int:
        return self._prompts[self._object(obj_id)].selected

    def mask(self, obj_id: int | None = None) -> np.ndarray | None:
        """The object's shown mask `(H, W)` bool (`None` without prompts)."""
        return self._prompts[self._object(obj_id)].mask

    def labels(self) -> np.ndarray:
        """`(H, W)` uint8 label map: each pixel holds the id of the last object (by id) whose mask covers it."""
        labels = np.zeros(self.size, dtype=np.uint8)
        for obj_id in sorted(self._prompts):
            mask = self._prompts[obj_id].mask
            if mask is not None:
                labels[mask] = obj_id
        return labels

    def view(self) -> np.ndarray:
        """The image with the masks, every object's clicks and the active object's box drawn in, `grid.size` pixels
        (see `ViewGrid`)."""
        self._require_image()
        active = self._prompts.get(self.objects.active)
        clicks = [click for prompt in self._prompts.values() for click in prompt.clicks]
        return self.grid.draw(self._view_frame, self.labels(), clicks, active.box if active else None)

    def segment_everything(self, replace: bool = False, **settings) -> int:
        """Add the automatic mask generator's masks as new objects (largest first, as many as there are free ids),
        or with `replace` let them replace the objects; when it finds none, the objects are left as they are.
        `settings` go to `Sam2AutomaticMaskGenerator`, within the app's bounds (`check_everything_settings`). Shows a
        tqdm progress bar. Returns the number of masks added."""
        image = self._require_image()
        settings = check_everything_settings(settings)
        side = settings.get("points_per_side", 32)  # batches small enough for the bar to move: 8 or more
        settings.setdefault("points_per_batch", max(1, min(64, math.ceil(side * side / 8))))
        generator = Sam2AutomaticMaskGenerator(self.models.image, self.models.processor, **settings)
        with self.models.lock:
            records = generator.generate(image)
        if not records:
            return 0
        if replace:
            self.objects, self._prompts = Objects(), {}
        free = MAX_OBJECT_ID - len(self.objects.names)
        for index, record in enumerate(sorted(records, key=lambda r: -r["area"])[:free]):
            obj_id = self.objects.add(f"mask {index + 1}")
            score = torch.tensor([record["predicted_iou"]])
            self._prompts[obj_id] = _ImageObject(scores=score, mask=np.asarray(record["segmentation"], dtype=bool))
        return min(len(records), free)


__all__ = [
    "EVERYTHING_LIMITS",
    "EVERYTHING_SWITCHES",
    "MAX_EVERYTHING_CLICKS",
    "ImageState",
    "check_everything_settings",
]
