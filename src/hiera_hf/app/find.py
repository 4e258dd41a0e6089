"""The "Find" box of both tabs: objects named by text, found by the app's detector (`sam2.text_prompts`), added to
the image or to a video frame as ordinary objects (named by their phrase, their detection box as the prompt, so that
clicks refine them). A detection matching an object already there (`text_prompts.unmatched`: IoU of its box with the
object's mask box at least `MATCH_IOU`) is not added again."""

from __future__ import annotations

import numpy as np

from ..sam2.text_prompts import TextDetector, mask_boxes, unmatched
from .image import ImageState
from .video import VideoState

NO_DETECTOR = "Start the app with a detector (hiera-hf app --detector ID_OR_DIR) to find objects by name"


def _add(detector: TextDetector | None, frame: np.ndarray, text: str, masks: list[np.ndarray], add) -> list[int]:
    """Detect `text` on `frame` `(H, W, 3)`, keep the detections matching none of `masks` `(H, W)` bool, and
    `add(box, name)` each (returns its object id). Returns the new ids."""
    if detector is None:
        raise ValueError(NO_DETECTOR)
    tracked = mask_boxes(np.stack(masks)) if masks else np.zeros((0, 4), np.float32)
    new = unmatched(detector(frame, text), tracked)
    if not len(new):
        raise ValueError(f"Found nothing new for {text.strip()!r}")
    return [add(box.tolist(), name) for box, name in zip(new.boxes, new.labels)]


def find_in_image(state: ImageState, detector: TextDetector | None, text: str) -> list[int]:
    """Add the objects of `text` found on the open image (see the module docstring); returns their ids."""
    state.size  # noqa: B018 (raises "Open an image first")
    image = state.image
    masks = [mask for mask in map(state.mask, list(state.objects.names)) if mask is not None]
    return _add(detector, image, text, masks, lambda box, name: state.set_box(box, state.add_object(name)))


def find_in_video(video: VideoState, frame_idx: int, detector: TextDetector | None, text: str) -> list[int]:
    """Add the objects of `text` found on a frame of the video, prompted there (see the module docstring); returns
    their ids."""
    frame_idx = video.frame_index(frame_idx)
    labels = video.labels(frame_idx)
    masks = [] if labels is None else [labels == obj_id for obj_id in video.objects.names]
    return _add(
        detector,
        video.frame(frame_idx),
        text,
        masks,
        lambda box, name: video.set_box(frame_idx, box, video.add_object(name)),
    )


__all__ = ["NO_DETECTOR", "find_in_image", "find_in_video"]
