"""The interactive app's state, as plain Python (no UI code): the shared models, one session per browser tab, an
image being segmented (its embedding cached: the encoder runs once per image, each click runs only the prompt
encoder and mask decoder) and a video being tracked with a `Sam2VideoSession`.

Masks of a video are kept on disk, as the palette PNGs `hiera-hf track` writes (pixel value = object id), in the
tab's own temporary folder; frames are decoded when shown. Nothing grows with the length of the video in memory
but the session's bounded memory bank.

Every method that a person's input reaches raises `ValueError` with a short message for bad input; the UI shows it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..hiera.image_processing_hiera import to_rgb_array
from ..io_utils import atomic_write
from ..sam2 import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2VideoFrameResult, Sam2VideoModel, Sam2VideoSession
from ..sam2.mask_generation import Sam2AutomaticMaskGenerator, coco_encode_rle, mask_to_rle
from ..sam2.video_output import label_map, palette, write_overlay_video, write_palette_png

_PALETTE = palette()
_HALF_PALETTE = _PALETTE // 2
MAX_OBJECT_ID = 255  # object ids are palette PNG values
# The page is sent views of at most this many pixels a side (SAM 2's input side: a click in the view is as precise
# as the model sees the frame); drawing, encoding and showing a 1800x1200 image's view costs a third of its own.
VIEW_MAX_SIDE = 1024
DIRECTIONS = {"forward": False, "backward": True, "both": "both"}
FOREGROUND, BACKGROUND = 1, 0
BOX_COLOUR = (255, 212, 0)


class Models:
    """The models of the app, loaded once and shared by every session: a `Sam2VideoModel` and a `Sam2Model` view
    of the same weights (the image model's modules *are* the video model's), with the image processor.

    `lock` serialises model calls across sessions (one request at a time touches the models).
    """

    def __init__(self, video_model: Sam2VideoModel, processor: Sam2ImageProcessor | None = None):
        if not isinstance(video_model, Sam2VideoModel):
            raise TypeError(f"video_model must be a Sam2VideoModel, got {type(video_model).__name__}")
        self.video = video_model.eval()
        self.image = _image_view(self.video)
        size = self.video.config.image_size
        self.processor = processor or Sam2ImageProcessor(size={"height": size, "width": size})
        self.lock = threading.RLock()

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike, device: str | None = None) -> Models:
        """Load a converted SAM 2 folder (or an official variant name, converted once into the cache) on `device`
        (default: cuda when available, else cpu). A folder of another model, or a damaged one, is refused with
        `ValueError`; a missing one with `FileNotFoundError`."""
        from ..hub import load_pretrained, resolve_model

        folder = resolve_model(name_or_dir)
        needed = "the app needs a SAM 2 folder (hiera-hf convert --variant sam2.1_hiera_tiny ...) or a variant name"
        model = load_pretrained(Sam2VideoModel, folder, (Sam2Config.model_type,), needed)
        model = model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        processor_file = Path(folder) / "preprocessor_config.json"
        processor = Sam2ImageProcessor.from_pretrained(folder) if processor_file.is_file() else None
        return cls(model, processor)

    @property
    def device(self) -> torch.device:
        return next(self.video.parameters()).device


def _image_view(video: Sam2VideoModel) -> Sam2Model:
    """A `Sam2Model` whose modules and parameters are those of `video` (no weights copied or allocated)."""
    with torch.device("meta"):
        image = Sam2Model(video.config)
    for name, _ in list(image.named_children()):
        setattr(image, name, getattr(video, name))
    for name, _ in list(image.named_parameters(recurse=False)):
        setattr(image, name, getattr(video, name))
    return image.eval()


def object_colour(obj_id: int) -> tuple[int, int, int]:
    """RGB colour of an object: its palette PNG colour."""
    return tuple(int(c) for c in _PALETTE[obj_id])


def _inside(x: float, y: float, width: int, height: int) -> tuple[float, float]:
    if isinstance(x, bool) or isinstance(y, bool) or not all(isinstance(v, (int, float, np.number)) for v in (x, y)):
        raise ValueError(f"A click needs numeric (x, y) pixel coordinates, got ({x!r}, {y!r})")
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"The click ({x:g}, {y:g}) is outside the {width}x{height} frame")
    return float(x), float(y)


def _box_numbers(box) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"A box is four numbers x0, y0, x1, y1 (pixels), got {box!r}") from None
    return x0, y0, x1, y1


def _check_box(box, width: int, height: int) -> list[float]:
    """Two opposite corners (x0, y0, x1, y1), in any order, inside the frame -> (left, top, right, bottom)."""
    x0, y0, x1, y1 = _box_numbers(box)
    for x, y in ((x0, y0), (x1, y1)):
        _inside(x, y, width, height)
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


class ViewGrid:
    """How a frame of `(height, width)` pixels maps to its view, the frame scaled to at most `VIEW_MAX_SIDE` pixels
    a side (`size` = the view's (height, width)): the frame resized bilinearly, label maps sampled at the nearest
    frame pixel, and positions (pixel centres) between the two."""

    def __init__(self, height: int, width: int):
        scale = min(1.0, VIEW_MAX_SIDE / max(height, width))
        self.frame_size = (height, width)
        self.size = (max(1, round(height * scale)), max(1, round(width * scale)))
        self._rows = ((np.arange(self.size[0]) + 0.5) * height / self.size[0]).astype(np.intp)[:, None]
        self._columns = ((np.arange(self.size[1]) + 0.5) * width / self.size[1]).astype(np.intp)

    @property
    def scaled(self) -> bool:
        return self.size != self.frame_size

    def frame(self, rgb: np.ndarray) -> np.ndarray:
        """`(H, W, 3)` uint8 frame -> `(h, w, 3)` uint8 view."""
        if not self.scaled:
            return rgb
        return np.asarray(Image.fromarray(rgb).resize(self.size[::-1], Image.Resampling.BILINEAR))

    def labels(self, labels: np.ndarray | None) -> np.ndarray | None:
        """`(H, W)` label map -> `(h, w)` (each view pixel takes the frame pixel under its centre)."""
        return labels if labels is None or not self.scaled else labels[self._rows, self._columns]

    def to_view(self, x: float, y: float) -> tuple[float, float]:
        (height, width), (h, w) = self.frame_size, self.size
        return (x + 0.5) * w / width - 0.5, (y + 0.5) * h / height - 0.5

    def from_view(self, x, y) -> tuple[float, float]:
        """A position in the view (pixels, as the page reports a click) -> the same position in the frame."""
        x, y, _, _ = _box_numbers((x, y, 0, 0))
        if not self.scaled:
            return x, y
        (height, width), (h, w) = self.frame_size, self.size
        return (x + 0.5) * width / w - 0.5, (y + 0.5) * height / h - 0.5

    def box_from_view(self, box) -> list[float]:
        """A box (x0, y0, x1, y1) in the view -> in the frame."""
        x0, y0, x1, y1 = _box_numbers(box)
        return [*self.from_view(x0, y0), *self.from_view(x1, y1)]

    def draw(self, view_frame: np.ndarray, labels: np.ndarray | None, clicks=(), box=None) -> np.ndarray:
        """`view_frame` (`frame(rgb)`) with a frame's `labels` `(H, W)`, `clicks` (x, y, label) and `box` (x0, y0,
        x1, y1), in frame pixels, drawn in; see `blend`."""
        clicks = [(*self.to_view(x, y), label) for x, y, label in clicks]
        box = None if box is None else [*self.to_view(*box[:2]), *self.to_view(*box[2:])]
        return blend(view_frame, self.labels(labels), clicks, box)


def blend(rgb: np.ndarray, labels: np.ndarray | None, clicks=(), box=None) -> np.ndarray:
    """The frame `(H, W, 3)` uint8 with each object's pixels of `labels` `(H, W)` blended half with its colour (as
    the overlay video is), the clicks `(x, y, label)` drawn as small squares (green foreground, red background)
    and the outline of `box` (x0, y0, x1, y1; yellow, as the page draws a box being dragged)."""
    out = np.array(rgb, dtype=np.uint8)
    rows = np.flatnonzero(labels.any(axis=1)) if labels is not None else ()
    if len(rows):  # blend inside the labels' bounding box only (a click's time goes into this at full resolution)
        columns = np.flatnonzero(labels.any(axis=0))
        inside = np.s_[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
        part, ids = out[inside], labels[inside]
        out[inside] = np.where(ids[..., None] > 0, part // 2 + _HALF_PALETTE[ids], part)
    radius = max(2, min(rgb.shape[:2]) // 150)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        for edge in (np.s_[y0 : y0 + 2, x0 : x1 + 1], np.s_[y1 - 1 : y1 + 1, x0 : x1 + 1],
                     np.s_[y0 : y1 + 1, x0 : x0 + 2], np.s_[y0 : y1 + 1, x1 - 1 : x1 + 1]):  # fmt: skip
            out[edge] = BOX_COLOUR
    for x, y, label in clicks:
        x, y = int(x), int(y)
        colour = (0, 220, 0) if label == FOREGROUND else (230, 0, 0)
        out[max(y - radius, 0) : y + radius + 1, max(x - radius, 0) : x + radius + 1] = colour
    return out


def coco_records(labels: np.ndarray, names: dict[int, str], **extra) -> list[dict]:
    """One COCO RLE record per object present in a label map `(H, W)`: `id`, `name`, `segmentation` (compressed
    RLE), `area`, `bbox` (x, y, w, h), and `extra` fields."""
    records = []
    for obj_id in sorted(int(i) for i in np.unique(labels) if i):
        mask = labels == obj_id
        ys, xs = np.nonzero(mask)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        records.append(
            {
                **extra,
                "id": obj_id,
                "name": names.get(obj_id, f"object {obj_id}"),
                "segmentation": coco_encode_rle(mask_to_rle(mask)),
                "area": int(mask.sum()),
                "bbox": bbox,
            }
        )
    return records


def _write_json(records, path: Path) -> Path:
    text = json.dumps(records, indent=1) + "\n"
    atomic_write(path, lambda partial: Path(partial).write_text(text))
    return path


class _Objects:
    """Named objects with ids 1..255 (their palette colours) and the object being prompted."""

    def __init__(self):
        self.names: dict[int, str] = {}
        self.active: int | None = None

    def add(self, name: str | None = None) -> int:
        free = [i for i in range(1, MAX_OBJECT_ID + 1) if i not in self.names]
        if not free:
            raise ValueError(f"At most {MAX_OBJECT_ID} objects; remove one first")
        obj_id = free[0]
        self.names[obj_id] = (name or "").strip() or f"object {obj_id}"
        self.active = obj_id
        return obj_id

    def check(self, obj_id: int | None) -> int:
        """`obj_id`, or the active object (one is created when there is none)."""
        if obj_id is None:
            return self.active if self.active is not None else self.add()
        if obj_id not in self.names:
            raise ValueError(f"There is no object {obj_id}; objects: {sorted(self.names)}")
        return obj_id

    def select(self, obj_id: int) -> None:
        self.active = self.check(obj_id)

    def rename(self, obj_id: int, name: str) -> None:
        name = (name or "").strip()
        if not name:
            raise ValueError("An object's name cannot be empty")
        self.names[self.check(obj_id)] = name

    def remove(self, obj_id: int) -> None:
        del self.names[self.check(obj_id)]
        if self.active == obj_id:
            self.active = max(self.names, default=None)


# ---------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _ImageObject:
    """One object's prompts on the image and its masks: the decoder's candidates `low_res` `(M, h, w)` float32
    logits with their predicted IoU `scores` `(M,)`, which one is shown, and that one at the image's size, `mask`
    `(H, W)` bool (masks of "segment everything" have no `low_res`)."""

    clicks: list[tuple[float, float, int]] = field(default_factory=list)
    box: list[float] | None = None
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
        self.objects = _Objects()
        self._prompts: dict[int, _ImageObject] = {}
        self._embedding: dict[str, torch.Tensor] | None = None
        self.encoder_runs = 0
        self._grid: ViewGrid | None = None
        self._view_frame: np.ndarray | None = None

    def open(self, image) -> None:
        """Open an image: a path, PIL image or `(H, W[, C])` array. Forgets the objects of the previous image."""
        if isinstance(image, (str, os.PathLike)):
            try:
                with Image.open(image) as file:
                    file.load()
                    image = file.convert("RGB")
            except (UnidentifiedImageError, OSError, ValueError) as error:
                raise ValueError(f"{Path(image).name} is not an image that can be read ({error})") from None
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
        self.image, self.objects, self._prompts = rgb, _Objects(), {}
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
        x, y = _inside(x, y, width, height)
        if label not in (FOREGROUND, BACKGROUND):
            raise ValueError(f"A click's label is 1 (foreground) or 0 (background), got {label!r}")
        obj_id = self._object(obj_id)
        self._prompts[obj_id].clicks.append((x, y, int(label)))
        self._decode(obj_id)
        return obj_id

    def set_box(self, box, obj_id: int | None = None) -> int:
        """Give an object a box (x0, y0, x1, y1) in image pixels (kept with its clicks); returns the object id."""
        height, width = self.size
        corners = _check_box(box, width, height)
        obj_id = self._object(obj_id)
        self._prompts[obj_id].box = corners
        self._decode(obj_id)
        return obj_id

    def clear_prompts(self, obj_id: int | None = None) -> None:
        self._prompts[self._object(obj_id)] = _ImageObject()

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
        """The image with the masks and the active object's clicks drawn in, `grid.size` pixels (see `ViewGrid`)."""
        self._require_image()
        active = self._prompts.get(self.objects.active)
        return self.grid.draw(self._view_frame, self.labels(), *((active.clicks, active.box) if active else ()))

    def segment_everything(self, **settings) -> int:
        """Replace the objects by the automatic mask generator's masks (largest first, at most 255); `settings` go
        to `Sam2AutomaticMaskGenerator`. Shows a tqdm progress bar. Returns the number of masks."""
        image = self._require_image()
        generator = Sam2AutomaticMaskGenerator(self.models.image, self.models.processor, **settings)
        with self.models.lock:
            records = generator.generate(image)
        records = sorted(records, key=lambda r: -r["area"])[:MAX_OBJECT_ID]
        self.objects, self._prompts = _Objects(), {}
        for index, record in enumerate(records):
            obj_id = self.objects.add(f"mask {index + 1}")
            score = torch.tensor([record["predicted_iou"]])
            self._prompts[obj_id] = _ImageObject(scores=score, mask=np.asarray(record["segmentation"], dtype=bool))
        return len(records)

    # Export ------------------------------------------------------------------------------------------------------

    def export_palette_png(self, path: str | os.PathLike) -> Path:
        write_palette_png(self.labels(), path)
        return Path(path)

    def export_object_pngs(self, path: str | os.PathLike) -> Path:
        """A zip with one black/white PNG per object (`<id>_<name>.png`)."""
        labels = self.labels()

        def write(partial: str) -> None:
            with zipfile.ZipFile(partial, "w") as archive:
                for obj_id, name in self.objects.names.items():
                    with archive.open(f"{obj_id:03d}_{_safe(name)}.png", "w") as member:
                        Image.fromarray(((labels == obj_id) * 255).astype(np.uint8)).save(member, format="PNG")

        atomic_write(Path(path), write)
        return Path(path)

    def export_coco(self, path: str | os.PathLike) -> Path:
        """COCO RLE JSON: one record per object (see `coco_records`)."""
        return _write_json(coco_records(self.labels(), self.objects.names), Path(path))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "object"


# ---------------------------------------------------------------------------------------------------------------
# Videos
# ---------------------------------------------------------------------------------------------------------------


class VideoState:
    """One video being tracked through a `Sam2VideoSession` (with `add_all_frames_to_correct_as_cond`, so that
    a correction click survives tracking again; prompts on frames not tracked yet behave the same either way).
    Masks go to `folder/masks/00000.png ...` as `hiera-hf track` writes them; prompts are applied as `hiera-hf
    track` applies its `--point`/`--box` flags (all clicks of an object on a frame, after its box, in one
    `add_points` call; objects are batched in the order they were first prompted)."""

    def __init__(self, models: Models, source, folder: str | os.PathLike):
        try:
            # corrections stick (they become conditioning frames): re-tracking from a corrected frame keeps it
            self.session = Sam2VideoSession(
                models.video, source, progress=False, add_all_frames_to_correct_as_cond=True
            )
        except (FileNotFoundError, TypeError, ValueError, IndexError) as error:
            raise ValueError(f"Cannot open the video: {error}") from None
        self.models = models
        self.folder = Path(folder)
        self.masks = self.folder / "masks"
        self.masks.mkdir(parents=True, exist_ok=True)
        self.grid = ViewGrid(self.session.video_height, self.session.video_width)  # the frames' views
        self.objects = _Objects()
        self.prompts: dict[tuple[int, int], dict] = {}  # (frame, object) -> {"clicks": [...], "box": [...]}

    @property
    def num_frames(self) -> int:
        return self.session.num_frames

    def _check_frame(self, frame_idx) -> int:
        if isinstance(frame_idx, float) and frame_idx.is_integer():
            frame_idx = int(frame_idx)
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise ValueError(f"A frame index is a whole number, got {frame_idx!r}")
        if not 0 <= frame_idx < self.num_frames:
            raise ValueError(f"Frame {frame_idx} does not exist: the video has frames 0 to {self.num_frames - 1}")
        return int(frame_idx)

    def frame(self, frame_idx: int) -> np.ndarray:
        return self.session.frame(self._check_frame(frame_idx))

    def labels(self, frame_idx: int) -> np.ndarray | None:
        """The frame's label map `(H, W)` uint8 (`None` before any mask was computed on it)."""
        path = self.masks / f"{self._check_frame(frame_idx):05d}.png"
        return np.asarray(Image.open(path)) if path.is_file() else None

    def view(self, frame_idx: int) -> np.ndarray:
        """The frame with its masks and the active object's clicks on it drawn in, `grid.size` pixels."""
        frame_idx = self._check_frame(frame_idx)
        prompt = self.prompts.get((frame_idx, self.objects.active), {})
        view_frame = self.grid.frame(self.frame(frame_idx))
        return self.grid.draw(view_frame, self.labels(frame_idx), prompt.get("clicks", ()), prompt.get("box"))

    def add_object(self, name: str | None = None) -> int:
        return self.objects.add(name)

    def click(self, frame_idx: int, x: float, y: float, label: int = FOREGROUND, obj_id: int | None = None) -> int:
        """Add a click (video pixels) for an object on a frame; the frame's masks are computed at once (a
        correction when the object was tracked there). Returns the object id."""
        frame_idx = self._check_frame(frame_idx)
        x, y = _inside(x, y, self.session.video_width, self.session.video_height)
        if label not in (FOREGROUND, BACKGROUND):
            raise ValueError(f"A click's label is 1 (foreground) or 0 (background), got {label!r}")
        obj_id = self.objects.check(obj_id)
        self.prompts.setdefault((frame_idx, obj_id), {}).setdefault("clicks", []).append((x, y, int(label)))
        self._apply(frame_idx, obj_id)
        return obj_id

    def set_box(self, frame_idx: int, box, obj_id: int | None = None) -> int:
        """Give an object a box (x0, y0, x1, y1) on a frame (its clicks there are kept); returns the object id."""
        frame_idx = self._check_frame(frame_idx)
        corners = _check_box(box, self.session.video_width, self.session.video_height)
        obj_id = self.objects.check(obj_id)
        self.prompts.setdefault((frame_idx, obj_id), {})["box"] = corners
        self._apply(frame_idx, obj_id)
        return obj_id

    def _apply(self, frame_idx: int, obj_id: int) -> None:
        prompt = self.prompts[frame_idx, obj_id]
        clicks = prompt.get("clicks")
        points = None if clicks is None else [c[:2] for c in clicks]
        labels = None if clicks is None else [c[2] for c in clicks]
        with self.models.lock:
            result = self.session.add_points(frame_idx, obj_id, points, labels, box=prompt.get("box"))
        self._write(result)

    def _write(self, result: Sam2VideoFrameResult) -> None:
        write_palette_png(label_map(result), self.masks / f"{result.frame_idx:05d}.png")

    def remove_object(self, obj_id: int) -> None:
        """Forget an object (prompts and memory); its pixels are cleared from the masks computed so far."""
        self.objects.check(obj_id)
        if obj_id in self.session.object_ids:
            self.session.remove_object(obj_id)
        self.objects.remove(obj_id)
        self.prompts = {key: value for key, value in self.prompts.items() if key[1] != obj_id}
        for path in self.masks.glob("*.png"):
            labels = np.asarray(Image.open(path))
            if (labels == obj_id).any():
                write_palette_png(np.where(labels == obj_id, 0, labels).astype(np.uint8), path)

    def track(
        self, start_frame: int | None = None, direction: str = "both", max_frames: int | None = None
    ) -> Iterator[int]:
        """Propagate the objects (`direction` "forward", "backward" or "both") from `start_frame` (default: the
        earliest prompted frame) over at most `max_frames` frames each way; yields each frame index once its masks
        are written. The arguments are checked before the first frame (errors raised at the call)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        if not self.session.object_ids:
            raise ValueError("Nothing to track: click on an object first")
        if start_frame is not None:
            start_frame = self._check_frame(start_frame)
        if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
            raise ValueError(f"max_frames must be a positive whole number, got {max_frames!r}")
        with self.models.lock:
            results = self.session.propagate(start_frame, DIRECTIONS[direction], max_frames)
        return self._track(results)

    def _track(self, results: Iterator[Sam2VideoFrameResult]) -> Iterator[int]:
        while True:
            with self.models.lock:
                result = next(results, None)
            if result is None:
                return
            self._write(result)
            yield result.frame_idx

    def tracked_frames(self) -> list[int]:
        return sorted(int(p.stem) for p in self.masks.glob("*.png"))

    # Export ------------------------------------------------------------------------------------------------------

    def export_masks_zip(self, path: str | os.PathLike) -> Path:
        """A zip of the palette PNGs `masks/00000.png ...` (the files `hiera-hf track` writes)."""

        def write(partial: str) -> None:
            with zipfile.ZipFile(partial, "w") as archive:
                for frame_idx in self.tracked_frames():
                    name = f"{frame_idx:05d}.png"
                    archive.write(self.masks / name, f"masks/{name}")

        atomic_write(Path(path), write)
        return Path(path)

    def export_overlay_video(self, path: str | os.PathLike) -> Path:
        """The frames with masks computed, their masks blended in, as `hiera-hf track`'s `overlay.mp4`."""
        order = self.tracked_frames()
        if not order:
            raise ValueError("No masks yet: click on an object and track first")
        frames = (self.frame(t) for t in order)
        labels = (self.labels(t) for t in order)
        write_overlay_video(frames, labels, path, self.session.fps or 24.0)
        return Path(path)

    def export_coco(self, path: str | os.PathLike) -> Path:
        """COCO RLE JSON: one record per object and frame (`frame_idx` field) for every frame with masks."""
        records = []
        for frame_idx in self.tracked_frames():
            records += coco_records(self.labels(frame_idx), self.objects.names, frame_idx=frame_idx)
        return _write_json(records, Path(path))

    def close(self) -> None:
        self.session.close()


# ---------------------------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------------------------


class AppSession:
    """What one browser tab holds: an image, a video and a temporary folder for masks and exports."""

    def __init__(self, models: Models):
        self.models = models
        self.folder = Path(tempfile.mkdtemp(prefix="hiera-hf-app-"))
        self.image = ImageState(models)
        self.video: VideoState | None = None

    def open_video(self, source) -> VideoState:
        """Open a video file or frame folder (decoded lazily); replaces the previous video."""
        video = VideoState(self.models, source, tempfile.mkdtemp(prefix="video-", dir=self.folder))
        self.close_video()
        self.video = video
        return video

    def require_video(self) -> VideoState:
        if self.video is None:
            raise ValueError("Open a video first")
        return self.video

    def export_path(self, name: str) -> Path:
        folder = self.folder / "exports"
        folder.mkdir(exist_ok=True)
        return folder / name

    def export_image(self) -> list[Path]:
        """The image's `masks.png` (palette), `objects.zip` (one PNG per object), `masks_coco.json` (COCO RLE)."""
        state = self.image
        return [
            state.export_palette_png(self.export_path("masks.png")),
            state.export_object_pngs(self.export_path("objects.zip")),
            state.export_coco(self.export_path("masks_coco.json")),
        ]

    def export_video(self) -> list[Path]:
        """The video's `masks.zip` (palette PNGs as `hiera-hf track` writes), `overlay.mp4`, `masks_coco.json`."""
        video = self.require_video()
        return [
            video.export_masks_zip(self.export_path("masks.zip")),
            video.export_overlay_video(self.export_path("overlay.mp4")),
            video.export_coco(self.export_path("masks_coco.json")),
        ]

    def close_video(self) -> None:
        if self.video is not None:
            self.video.close()
            shutil.rmtree(self.video.folder, ignore_errors=True)
            self.video = None

    def close(self) -> None:
        """Free everything the tab held (video file, masks, exports)."""
        self.close_video()
        shutil.rmtree(self.folder, ignore_errors=True)


class Sessions:
    """The sessions of the open tabs, by id; `close(id)` when a tab is closed or reloaded."""

    def __init__(self, models: Models):
        self.models = models
        self._sessions: dict[str, AppSession] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str) -> AppSession:
        with self._lock:
            if session_id not in self._sessions:
                self._sessions[session_id] = AppSession(self.models)
            return self._sessions[session_id]

    def close(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is not None:
            session.close()

    def __len__(self) -> int:
        return len(self._sessions)

    def ids(self) -> list[str]:
        return list(self._sessions)


__all__ = [
    "VIEW_MAX_SIDE",
    "AppSession",
    "ImageState",
    "Models",
    "Sessions",
    "VideoState",
    "ViewGrid",
    "blend",
    "coco_records",
    "object_colour",
]
