"""Datasets and collators for fine-tuning SAM 2 with the `Trainer`.

Images: `Sam2ImageDataset` reads images with instance-mask PNGs, from a folder (`images/<name>.<ext>` and
`masks/<name>.png`) or from a `datasets` dataset (an image column and an instance-mask column); `Sam2ImageCollator`
batches them and samples one prompt per object from its mask (a click or a noisy box), the inputs of
`Sam2Model.forward(..., labels=)`.

Videos: `DavisVideoDataset` reads a DAVIS-layout folder (`JPEGImages/<video>/<frame>.jpg` and
`Annotations/<video>/<frame>.png`, palette PNGs whose indices are object ids) as clips of `num_frames`
consecutive frames with up to `max_objects` objects visible on the first one (Meta's `RandomUniformSampler`);
`Sam2VideoCollator` batches them and draws the prompt type, the inputs of `Sam2VideoModelForTraining`.

Instance masks hold 0 for the background, 1, 2, ... for the objects and 255 for "void" (ignored: background).
Images and frames are stretched to the square model input and normalised exactly as the model will see them after
fine-tuning: images as `Sam2ImageProcessor` (Meta's image predictor), video frames as `Sam2VideoSession` (Meta's
video predictor); see `processing_sam2`. (Meta's training scripts resize with a third filter, Pillow's bilinear,
which neither predictor uses.) Masks are resized with nearest-neighbour to `mask_size` (the input size by default,
or the low-resolution output size `image_size // 4` for a cheaper loss).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..file_types import IMAGE_EXTENSIONS
from ..image_utils import open_image, to_rgb_array, to_rgb_float
from .loss_sam2 import IGNORE_INDEX
from .processing_sam2 import normalize, resize_image
from .prompt_sampling import sample_box, sample_click
from .prompts import PADDING_LABEL
from .training import PROMPT_TYPES
from .video_tracking import resize_video_frame

VOID_ID = 255


def image_mask_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """`(root/images/<name>.<ext>, root/masks/<name>.png)` for every image of `root/images` (sorted by name); a
    `ValueError` when there is no image or an image has no mask."""
    root = Path(root)
    images = sorted(p for p in (root / "images").glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {root / 'images'}")
    pairs = [(image, root / "masks" / f"{image.stem}.png") for image in images]
    missing = [str(mask) for _, mask in pairs if not mask.is_file()]
    if missing:
        raise ValueError(f"{len(missing)} image(s) have no mask PNG, e.g. {missing[0]}")
    return pairs


def image_tensor(image: Image.Image, image_size: int) -> torch.Tensor:
    """An image as normalised `(3, image_size, image_size)` float32, preprocessed as `Sam2ImageProcessor` (Meta's
    image predictor) does."""
    return normalize(resize_image(torch.from_numpy(to_rgb_float(image)), (image_size, image_size)))


def frame_tensor(image: Image.Image, image_size: int) -> torch.Tensor:
    """A video frame as normalised `(3, image_size, image_size)` float32, preprocessed as `Sam2VideoSession` (Meta's
    video predictor) does."""
    return normalize(torch.from_numpy(resize_video_frame(to_rgb_array(image), (image_size, image_size))))


def instance_ids(mask: Image.Image) -> np.ndarray:
    """Object ids `(H, W)` of an instance-mask image: palette indices or grey levels (RGB maps: one id per
    colour, black being the background)."""
    if mask.mode in ("P", "L", "I", "I;16"):
        return np.asarray(mask).astype(np.int64)
    colours = np.asarray(mask.convert("RGB")).astype(np.int64)
    packed = (colours[..., 0] << 16) | (colours[..., 1] << 8) | colours[..., 2]
    ids = np.unique(packed, return_inverse=True)[1].reshape(packed.shape)  # black, the smallest, gets 0
    return ids if (packed == 0).any() else ids + 1


def object_masks(ids: np.ndarray, objects: Sequence[int], size: int) -> torch.Tensor:
    """Binary masks `(len(objects), size, size)` float32 of the given ids (nearest-neighbour resize)."""
    resized = np.asarray(Image.fromarray(ids.astype(np.int32)).resize((size, size), Image.NEAREST))
    return torch.from_numpy(np.stack([resized == i for i in objects]).astype(np.float32)).reshape(-1, size, size)


def visible_objects(ids: np.ndarray) -> list[int]:
    return [int(i) for i in np.unique(ids) if i not in (0, VOID_ID)]


def choose(objects: list[int], limit: int, train: bool) -> list[int]:
    """Up to `limit` of the objects: a random choice in training, the first ones otherwise."""
    return sorted(random.sample(objects, min(limit, len(objects)))) if train else objects[:limit]


def pad_objects(masks: list[torch.Tensor], dim: int, count: int | None = None) -> torch.Tensor:
    """Stack per-example masks whose object dimension `dim` varies, padding with `IGNORE_INDEX` masks."""
    count = max(m.shape[dim] for m in masks) if count is None else count
    padded = []
    for m in masks:
        shape = list(m.shape)
        shape[dim] = count - m.shape[dim]
        padded.append(torch.cat((m, m.new_full(shape, IGNORE_INDEX)), dim=dim))
    return torch.stack(padded)


class Sam2ImageDataset(Dataset):
    """Images and instance masks -> `{"pixel_values": (3, S, S), "labels": (K, m, m)}` with `K <= max_objects`
    objects (images without objects are skipped).

    Args:
        images, masks: per example, a path or a PIL image (`from_folder` / `from_dataset` build them).
        image_size: the model input side; mask_size: the side of the target masks (default `image_size`).
        max_objects: objects per image (a random subset in training).
    """

    def __init__(
        self,
        images: Sequence,
        masks: Sequence,
        image_size: int,
        mask_size: int | None = None,
        max_objects: int = 8,
        train: bool = True,
    ):
        if len(images) != len(masks) or not len(images):
            raise ValueError(f"Need as many masks as images (at least one), got {len(images)} and {len(masks)}")
        self.images, self.masks = images, masks
        self.image_size, self.mask_size = image_size, mask_size or image_size
        self.max_objects, self.train = max_objects, train

    @classmethod
    def from_folder(cls, root: str | Path, **kwargs) -> Sam2ImageDataset:
        """`root/images/<name>.<jpg|png|...>` with `root/masks/<name>.png`."""
        images, masks = zip(*image_mask_pairs(root))
        return cls(list(images), list(masks), **kwargs)

    @classmethod
    def from_dataset(cls, dataset, image_column: str = "image", mask_column: str = "mask", **kwargs):
        """A `datasets.Dataset` with an image column and an instance-mask image column."""
        for column in (image_column, mask_column):
            if column not in dataset.column_names:
                raise ValueError(f"Column {column!r} is not in the dataset's columns {dataset.column_names}")
        images = _Column(dataset, image_column)
        return cls(images, _Column(dataset, mask_column), **kwargs)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        for offset in range(len(self)):  # an image without objects gives its place to the next one
            position = (index + offset) % len(self)
            ids = instance_ids(_open(self.masks[position]))
            objects = visible_objects(ids)
            if objects:
                objects = choose(objects, self.max_objects, self.train)
                return {
                    "pixel_values": image_tensor(_open(self.images[position]), self.image_size),
                    "labels": object_masks(ids, objects, self.mask_size),
                }
        raise ValueError("No instance mask of the dataset holds an object (ids other than 0 and 255)")


class DavisVideoDataset(Dataset):
    """A DAVIS-layout folder as clips: `{"pixel_values": (T, 3, S, S), "labels": (T, K, m, m)}`, `T` consecutive
    frames (a random start in training, the first frame otherwise) and `K <= max_objects` objects visible on the
    clip's first frame.

    Args:
        root: holds `JPEGImages/<video>/` and `Annotations/<video>/` (every frame annotated, as DAVIS train/val).
        image_size, mask_size: as `Sam2ImageDataset`.
        num_frames: clip length (Meta: 8); `videos`: names to use (default all).
        resolution: a sub-folder of both, as DAVIS 2017's `JPEGImages/480p/<video>/`.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        mask_size: int | None = None,
        num_frames: int = 8,
        max_objects: int = 3,
        videos: Sequence[str] | None = None,
        train: bool = True,
        resolution: str | None = None,
    ):
        root = Path(root)
        annotation_root, image_root = (root / kind / (resolution or "") for kind in ("Annotations", "JPEGImages"))
        names = sorted(p.name for p in annotation_root.glob("*") if p.is_dir()) if videos is None else videos
        self.clips = []
        for name in names:
            annotations = sorted((annotation_root / name).glob("*.png"))
            frames = [image_root / name / f"{p.stem}.jpg" for p in annotations]
            if len(frames) < num_frames or not all(p.is_file() for p in frames):
                raise ValueError(
                    f"Video {name!r} needs at least {num_frames} annotated frames, each with a JPEG in JPEGImages/"
                    f"{name}/ (found {len(annotations)} annotations)"
                )
            self.clips.append((frames, annotations))
        if not self.clips:
            raise ValueError(f"No videos under {annotation_root}")
        self.image_size, self.mask_size = image_size, mask_size or image_size
        self.num_frames, self.max_objects, self.train = num_frames, max_objects, train

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frames, annotations = self.clips[index]
        starts = range(len(frames) - self.num_frames + 1)
        # Training: a random start with some object visible (Meta retries too); evaluation: the first frame.
        for start in random.sample(starts, min(len(starts), 20)) if self.train else [0]:
            objects = visible_objects(instance_ids(_open(annotations[start])))
            if objects:
                break
        else:
            raise ValueError(f"No object on {annotations[start]}, the first frame of a clip")
        picks = range(start, start + self.num_frames)
        ids = [instance_ids(_open(annotations[t])) for t in picks]
        objects = choose(objects, self.max_objects, self.train)
        return {
            "pixel_values": torch.stack([frame_tensor(_open(frames[t]), self.image_size) for t in picks]),
            "labels": torch.stack([object_masks(frame_ids, objects, self.mask_size) for frame_ids in ids]),
        }


class _PromptDraw:
    """Draws one prompt type per batch from `prompt_probabilities` with its own seeded generator, so that every
    process of a distributed run draws the same sequence (and uses the same weights at every step)."""

    def __init__(self, prompt_probabilities: dict[str, float], seed: int):
        unknown = set(prompt_probabilities) - set(PROMPT_TYPES)
        if unknown or not prompt_probabilities or min(prompt_probabilities.values()) < 0:
            raise ValueError(
                f"prompt_probabilities must weigh prompt types among {PROMPT_TYPES}, got {prompt_probabilities}"
            )
        self.types, self.weights = list(prompt_probabilities), list(prompt_probabilities.values())
        self.random = random.Random(seed)

    def draw(self) -> str:
        return self.random.choices(self.types, self.weights)[0]


class Sam2ImageCollator(_PromptDraw):
    """Batches `Sam2ImageDataset` examples for `Sam2Model`: objects padded to the largest count (`IGNORE_INDEX`
    labels, padding clicks), and per batch one prompt type: a click inside each object (with 3 output masks) or a
    noisy box (one mask), as Meta's image training (half and half by default)."""

    def __init__(self, image_size: int, prompt_probabilities: dict[str, float] | None = None, seed: int = 0):
        super().__init__(prompt_probabilities or {"point": 0.5, "box": 0.5}, seed)
        if "mask" in self.types:
            raise ValueError("Image prompts are clicks or boxes ('point', 'box')")
        self.image_size = image_size

    def __call__(self, examples: list[dict]) -> dict:
        labels = pad_objects([e["labels"] for e in examples], dim=0)
        batch, num = labels.shape[:2]
        truth = labels.flatten(0, 1) > 0
        kind = self.draw()
        sample = sample_click if kind == "point" else sample_box
        points, point_labels = sample(truth, image_size=self.image_size)
        inputs = {"pixel_values": torch.stack([e["pixel_values"] for e in examples]), "labels": labels}
        if kind == "point":
            padding = (labels.flatten(0, 1) == IGNORE_INDEX).flatten(1).all(dim=1)
            point_labels = point_labels.masked_fill(padding[:, None], PADDING_LABEL)
            inputs |= {
                "input_points": points.unflatten(0, (batch, num)),
                "input_labels": point_labels.unflatten(0, (batch, num)),
            }
        else:
            inputs["input_boxes"] = points.reshape(batch, num, 4)
        inputs["multimask_output"] = kind == "point"
        return inputs


class Sam2VideoCollator(_PromptDraw):
    """Batches `DavisVideoDataset` clips for `Sam2VideoModelForTraining`: objects padded to `max_objects`
    (`IGNORE_INDEX` masklets; a fixed count keeps evaluation outputs the same shape) and one prompt type per batch
    (Meta's recipe: the mask half of the time, else a click or a box)."""

    def __init__(self, max_objects: int = 3, prompt_probabilities: dict[str, float] | None = None, seed: int = 0):
        super().__init__(prompt_probabilities or {"mask": 0.5, "point": 0.25, "box": 0.25}, seed)
        self.max_objects = max_objects

    def __call__(self, examples: list[dict]) -> dict:
        return {
            "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": pad_objects([e["labels"] for e in examples], dim=1, count=self.max_objects),
            "prompt_type": self.draw(),
        }


class _Column:
    """Lazy access to one column of a `datasets.Dataset` (decodes one row at a time)."""

    def __init__(self, dataset, column: str):
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index][self.column]


def _open(item) -> Image.Image:
    return item if isinstance(item, Image.Image) else open_image(item)


__all__ = [
    "DavisVideoDataset",
    "Sam2ImageCollator",
    "Sam2ImageDataset",
    "Sam2VideoCollator",
    "frame_tensor",
    "image_mask_pairs",
    "image_tensor",
    "instance_ids",
    "object_masks",
]
