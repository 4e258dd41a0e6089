"""Text prompts: objects found by name with an open-vocabulary detector, then segmented (image) or tracked (video)
by SAM 2. One implementation for the Python API, `hiera-hf segment/track --text` and the app's "Find" box.

- The detector is any transformers `zero-shot-object-detection` pipeline (Grounding DINO, MM Grounding DINO, OWLv2,
  OWL-ViT, OmDet-Turbo), given as the pipeline, a callable with the pipeline's interface, or a model id / local
  folder loaded with `pipeline("zero-shot-object-detection", model=...)` (offline from the Hugging Face cache when
  `HF_HUB_OFFLINE=1`). The pipeline runs each phrase on its own and keeps boxes scoring at least `threshold`
  (transformers' default, 0.1, unless given); Grounding DINO's `text_threshold` plays no part there (each query is
  one phrase).
- Text is a list of phrases separated by periods, Grounding DINO's convention: "a dog. a red mug." -> ["a dog",
  "a red mug"] (blank phrases and repeats are dropped). Each detection is named by its phrase.
- Image: one mask per detection, from SAM 2 with the detection's box as the prompt (`segment_text`).
- Video (`TextTracker`): the detections on a frame become new objects of a `Sam2VideoSession` (box prompts), named by
  their phrase; with `detect_every=N` the detector runs again every N frames of the propagation and adds only the
  detections that match no tracked object. A detection matches an object when the IoU of its box with the box of the
  object's mask on that frame is at least `match_iou` (default `MATCH_IOU` = 0.5, the usual detection-matching
  threshold); among the new detections of a frame, one that matches a better-scoring one is dropped too. Existing
  objects are never renamed or removed. An object predicted absent on a detection frame has no mask box there, so
  a detection of it (e.g. as it comes back from behind an occluder) is added as a new object.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..image_utils import to_rgb_array
from .prompts import check_index
from .video_output import mask_box
from .video_prompts import check_direction, pass_directions
from .video_tracking import Sam2VideoFrameResult, VideoSessionBase

MATCH_IOU = 0.5
MAX_OBJECT_ID = 255  # object ids are palette PNG values
TASK = "zero-shot-object-detection"


def parse_phrases(text: str | Sequence[str]) -> list[str]:
    """The phrases of `text`, separated by periods ("a dog. a cat." -> ["a dog", "a cat"]), or of a list of phrases
    (["a dog", "a cat"]); `ValueError` when none."""
    if not isinstance(text, str) and not (
        isinstance(text, (list, tuple)) and all(isinstance(phrase, str) for phrase in text)
    ):
        raise ValueError(f"The text must be phrases ('a dog. a cat.' or a list of them), got {text!r}")
    pieces = text.split(".") if isinstance(text, str) else text
    phrases = list(dict.fromkeys(" ".join(phrase.split()) for phrase in pieces))
    phrases = [phrase for phrase in phrases if phrase]
    if not phrases:
        raise ValueError(f"The text names no object; give phrases separated by periods ('a dog. a cat.'): {text!r}")
    return phrases


@dataclass
class Detections:
    """Objects found on one image, best score first.

    Attributes:
        boxes: `(N, 4)` float32 boxes (x0, y0, x1, y1) in pixels of the image, inside it, x0 < x1 and y0 < y1.
        scores: `(N,)` float32 detector scores.
        labels: the phrase of each detection.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: Sequence[int]) -> Detections:
        indices = list(indices)
        return Detections(self.boxes[indices].reshape(-1, 4), self.scores[indices], [self.labels[i] for i in indices])


def load_detector(detector: str | os.PathLike | Callable, device=None) -> Callable:
    """A `zero-shot-object-detection` pipeline from a model id or a local folder (a callable is returned as is).
    `ConnectionError` with what to do when an id is neither a folder nor in the Hugging Face cache offline."""
    if callable(detector):
        return detector
    from transformers import pipeline

    name = os.fspath(detector)
    path = Path(name).expanduser()
    if not path.is_dir() and (path.exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1):
        raise FileNotFoundError(f"No such detector folder: {name}")
    if path.is_dir():
        _check_detector_folder(path)
    try:
        return pipeline(TASK, model=str(path) if path.is_dir() else name, device=device)
    except OSError as error:
        if path.is_dir():
            raise ValueError(f"Cannot load a {TASK} model from {name}: {' '.join(str(error).split())}") from error
        raise ConnectionError(
            f"The detector {name} is not a local folder and not in the Hugging Face cache, and could not be "
            f"downloaded (offline?). Download it where there is a network (`hf download {name}` fills the same "
            f"cache) or give a local folder (a saved `pipeline('{TASK}', model=...)`) as --detector DIR"
        ) from error
    except ValueError as error:
        raise ValueError(f"{name} is not a {TASK} model: {' '.join(str(error).split())}") from error


def _check_detector_folder(folder: Path) -> None:
    """`ValueError` unless `folder` holds a config of a model type transformers' zero-shot detection pipeline takes
    (checked before loading: another model would be built with random weights first)."""
    import json

    from transformers.models.auto.modeling_auto import MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES as TYPES

    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        raise ValueError(f"{folder} is not a model folder (no readable config.json)") from None
    if model_type not in TYPES:
        raise ValueError(
            f"{folder} holds a {model_type!r} model, not a {TASK} one (model types: {', '.join(TYPES)})"
        )


class TextDetector:
    """Find objects by name: `TextDetector(detector)(image, "a dog. a cat.")` -> `Detections`.

    Args:
        detector: a `zero-shot-object-detection` pipeline, a callable with its interface (`detector(image,
            candidate_labels=[...], **kwargs)` -> `[{"score", "label", "box": {"xmin", "ymin", "xmax", "ymax"}}]`),
            or a model id / folder for `load_detector`.
        threshold: the lowest score kept (default: the detector's own, 0.1 for transformers' pipeline).
        device: where a detector loaded here runs (default: the pipeline's choice).
    """

    def __init__(self, detector: str | os.PathLike | Callable, threshold: float | None = None, device=None):
        if threshold is not None and not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.detector = load_detector(detector, device)
        self.threshold = threshold

    def __call__(self, image, text: str | Sequence[str]) -> Detections:
        """Detections of the phrases `text` (see `parse_phrases`) on an RGB image (PIL or `(H, W, 3)` uint8), boxes
        clipped to the image (empty ones dropped), best score first."""
        phrases = parse_phrases(text)
        rgb = to_rgb_array(image)
        height, width = rgb.shape[:2]
        kwargs = {} if self.threshold is None else {"threshold": self.threshold}
        found = self.detector(Image.fromarray(rgb), candidate_labels=phrases, **kwargs)
        boxes, scores, labels = [], [], []
        for item in sorted(found, key=lambda item: -item["score"]):
            box = item["box"]
            x0, x1 = np.clip([box["xmin"], box["xmax"]], 0, width)
            y0, y1 = np.clip([box["ymin"], box["ymax"]], 0, height)
            if x0 < x1 and y0 < y1:
                boxes.append((x0, y0, x1, y1))
                scores.append(item["score"])
                labels.append(item["label"])
        return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), labels)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU `(N, M)` of boxes `a` `(N, 4)` and `b` `(M, 4)` (x0, y0, x1, y1); 0 where a box has no area."""
    a, b = np.asarray(a, np.float64).reshape(-1, 1, 4), np.asarray(b, np.float64).reshape(1, -1, 4)
    width = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(0)
    height = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(0)
    inter = width * height
    area = lambda box: (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def mask_boxes(masks) -> np.ndarray:
    """`(N, 4)` boxes (x0, y0, x1, y1) around `(N, H, W)` bool masks (numpy or torch); zeros for an empty mask."""
    masks = masks.cpu().numpy() if hasattr(masks, "cpu") else np.asarray(masks)
    boxes = [mask_box(mask) for mask in masks]
    return np.array([(x, y, x + w, y + h) for x, y, w, h in boxes], np.float32).reshape(-1, 4)


def unmatched(detections: Detections, tracked_boxes: np.ndarray, match_iou: float = MATCH_IOU) -> Detections:
    """The detections (best first) whose box has an IoU below `match_iou` with every box of `tracked_boxes`
    `(M, 4)` and with every detection kept before it."""
    kept: list[int] = []
    for index, box in enumerate(detections.boxes):
        others = np.concatenate([np.asarray(tracked_boxes, np.float32).reshape(-1, 4), detections.boxes[kept]])
        if not (box_iou(box, others) >= match_iou).any():
            kept.append(index)
    return detections.take(kept)


def segment_detections(model, processor, image, detections: Detections, **post_process):
    """SAM 2's masks of the detections on an image, one per detection with its box as the prompt: `(N, H, W)` bool
    masks (torch, CPU) and `(N,)` predicted IoUs. `model` is a `Sam2Model`, `processor` its `Sam2ImageProcessor`;
    `post_process` goes to `processor.post_process_masks` (`mask_threshold`, `max_hole_area`, `max_sprinkle_area`)."""
    import torch

    rgb = to_rgb_array(image)
    if not len(detections):
        return torch.zeros((0, *rgb.shape[:2]), dtype=torch.bool), torch.zeros(0)
    inputs = processor(rgb, input_boxes=[detections.boxes.tolist()])
    device = next(model.parameters()).device
    with torch.inference_mode():
        model_inputs = {k: v.to(device) for k, v in inputs.items() if k != "original_sizes"}
        outputs = model(**model_inputs, multimask_output=False)
    masks = processor.post_process_masks(outputs.pred_masks.cpu(), inputs["original_sizes"], **post_process)[0]
    return masks[:, 0].bool(), outputs.iou_scores[0, :, 0].float().cpu()


def segment_text(
    model, processor, image, detector: TextDetector, text: str | Sequence[str], **post_process
) -> list[dict]:
    """Find the objects named by `text` on `image` and segment each: records (best detection first) with `id` (1,
    2, ...), `name` (the phrase), `score` (the detector's), `box` (the detection's x0, y0, x1, y1), `predicted_iou`
    (SAM 2's), `area` (pixels), `bbox` (x, y, w, h of the mask) and `segmentation` (`(H, W)` bool numpy mask), as
    `Sam2AutomaticMaskGenerator` gives them with `output_mode="binary_mask"`. `post_process`: see
    `segment_detections`."""
    detections = detector(image, text)
    masks, ious = segment_detections(model, processor, image, detections, **post_process)
    records = []
    for index, (mask, label, score, box, iou) in enumerate(
        zip(masks.numpy(), detections.labels, detections.scores, detections.boxes, ious.tolist())
    ):
        records.append(
            {
                "id": index + 1,
                "name": label,
                "score": float(score),
                "box": [float(v) for v in box],
                "predicted_iou": iou,
                "area": int(mask.sum()),
                "bbox": mask_box(mask),
                "segmentation": mask,
            }
        )
    return records


class TextTracker:
    """Objects named by text, tracked through a video by a `Sam2VideoSession` (or any `VideoSessionBase`).

    Args:
        session: the session; objects it already holds are kept (and detections matching them are not added).
        detector: a `TextDetector`.
        text: the phrases (see `parse_phrases`).
        detect_every: with `propagate`, run the detector again every this many frames (counted from the start frame,
            in the direction tracked) and add the detections that match no tracked object; `None`: on the start
            frame only (`detect`, called by the user).
        match_iou: the IoU (detection box with an object's mask box) from which a detection is the same object.

    `names` maps each object this tracker added to its phrase.
    """

    def __init__(
        self,
        session: VideoSessionBase,
        detector: TextDetector,
        text: str | Sequence[str],
        detect_every: int | None = None,
        match_iou: float = MATCH_IOU,
    ):
        if detect_every is not None:
            detect_every = check_index(detect_every, "detect_every", 1)
        if not 0 < match_iou <= 1:
            raise ValueError(f"match_iou must be in (0, 1], got {match_iou}")
        self.session, self.detector, self.detect_every, self.match_iou = session, detector, detect_every, match_iou
        self.phrases = parse_phrases(text)
        self.names: dict[int, str] = {}

    def detect(self, frame_idx: int, result: Sam2VideoFrameResult | None = None) -> Sam2VideoFrameResult | None:
        """Run the detector on a frame and add each detection matching no object of `result` (the frame's masks,
        when objects are tracked there) as a new object with its box as the prompt, named by its phrase (ids: the
        smallest free ones). Returns the frame's masks with the new objects, or `None` when none was added."""
        detections = self.detector(self.session.frame(frame_idx), self.phrases)
        tracked = np.zeros((0, 4), np.float32) if result is None else mask_boxes(result.masks)
        added, new = None, unmatched(detections, tracked, self.match_iou)
        for box, label in zip(new.boxes, new.labels):
            free = [i for i in range(1, MAX_OBJECT_ID + 1) if i not in self.session.object_ids]
            if not free:
                message = f"At most {MAX_OBJECT_ID} objects: {label!r} on frame {frame_idx} is not added"
                warnings.warn(message, stacklevel=2)
                break
            added = self.session.add_box(frame_idx, free[0], box.tolist())
            self.names[free[0]] = label
        return added

    def propagate(
        self, start_frame: int = 0, direction: str = "forward", max_frames: int | None = None
    ) -> Iterator[Sam2VideoFrameResult]:
        """`video_prompts.propagate` from `start_frame`, re-detecting every `detect_every` frames: a frame where
        objects were added is yielded with them, and tracking goes on from the next frame with every object. For
        videos (not open streams)."""
        check_direction(direction)
        if self.session.num_frames is None:
            raise ValueError("TextTracker.propagate tracks videos; on a stream, call detect and session.propagate")
        passes = pass_directions(self.session, start_frame, direction)
        return (result for reverse in passes for result in self._pass(start_frame, reverse, max_frames))

    def _pass(self, start: int, reverse: bool, max_frames: int | None) -> Iterator[Sam2VideoFrameResult]:
        step, frame, done = (-1 if reverse else 1), start, 0
        while True:
            results = self.session.propagate(frame, reverse, None if max_frames is None else max_frames - done)
            for result in results:
                done += 1
                distance = abs(result.frame_idx - start)
                if self.detect_every and distance and distance % self.detect_every == 0:
                    added = self.detect(result.frame_idx, result)
                    if added is not None:
                        results.close()
                        yield added
                        frame = result.frame_idx + step
                        break
                yield result
            else:
                return
            if not 0 <= frame < self.session.num_frames or done == max_frames:
                return


__all__ = [
    "MATCH_IOU",
    "Detections",
    "TextDetector",
    "TextTracker",
    "box_iou",
    "load_detector",
    "mask_boxes",
    "parse_phrases",
    "segment_detections",
    "segment_text",
    "unmatched",
]
