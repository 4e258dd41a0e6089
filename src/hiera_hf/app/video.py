"""A video being tracked: a `Sam2VideoSession` with the app's objects and prompts. Masks are kept on disk, as the
palette PNGs `hiera-hf track` writes (pixel value = object id), in the tab's own folder; frames are decoded when
shown. Nothing grows with the length of the video in memory but the session's bounded memory bank."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..sam2 import Sam2VideoFrameResult, Sam2VideoSession
from ..sam2.prompts import check_index
from ..sam2.video_output import label_map, read_label_map, write_palette_png
from ..sam2.video_prompts import VideoPrompt, apply_prompt, check_direction, propagate
from .models import Models
from .objects import FOREGROUND, Objects, check_click, check_corners
from .views import ViewGrid


class VideoState:
    """One video being tracked through a `Sam2VideoSession` (with `add_all_frames_to_correct_as_cond`, so that
    a correction click survives tracking again; prompts on frames not tracked yet behave the same either way).
    Masks go to `folder/masks/00000.png ...` as `hiera-hf track` writes them; prompts are kept and applied as
    `hiera-hf track` applies its flags (`sam2.video_prompts`)."""

    def __init__(self, models: Models, source, folder: str | os.PathLike):
        try:
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
        self.objects = Objects()
        self.prompts: dict[tuple[int, int], VideoPrompt] = {}  # (frame, object) -> its prompts there

    @property
    def num_frames(self) -> int:
        return self.session.num_frames

    def frame_index(self, frame_idx) -> int:
        """`frame_idx` checked against the video: an integer, or an integral float as the page's slider sends it;
        `ValueError` for a fraction, NaN, infinity or a frame out of range."""
        return self.session._check_frame(check_index(frame_idx, "Frame index"))

    def frame(self, frame_idx: int) -> np.ndarray:
        """The RGB frame `(H, W, 3)` uint8."""
        return self.session.frame(self.frame_index(frame_idx))

    def labels(self, frame_idx: int) -> np.ndarray | None:
        """The frame's label map `(H, W)` uint8 (`None` before any mask was computed on it)."""
        path = self.masks / f"{self.frame_index(frame_idx):05d}.png"
        return read_label_map(path) if path.is_file() else None

    def view(self, frame_idx: int) -> np.ndarray:
        """The frame with its masks and the active object's clicks on it drawn in, `grid.size` pixels."""
        frame_idx = self.frame_index(frame_idx)
        prompt = self.prompts.get((frame_idx, self.objects.active), VideoPrompt())
        view_frame = self.grid.frame(self.frame(frame_idx))
        return self.grid.draw(view_frame, self.labels(frame_idx), prompt.clicks, prompt.box)

    def add_object(self, name: str | None = None) -> int:
        return self.objects.add(name)

    def click(self, frame_idx: int, x: float, y: float, label: int = FOREGROUND, obj_id: int | None = None) -> int:
        """Add a click (video pixels) for an object on a frame; the frame's masks are computed at once (a
        correction when the object was tracked there). Returns the object id."""
        frame_idx = self.frame_index(frame_idx)
        click = check_click(x, y, label, self.session.video_width, self.session.video_height)
        obj_id = self.objects.check(obj_id)
        self.prompts.setdefault((frame_idx, obj_id), VideoPrompt()).clicks.append(click)
        self._apply(frame_idx, obj_id)
        return obj_id

    def set_box(self, frame_idx: int, box, obj_id: int | None = None) -> int:
        """Give an object a box (x0, y0, x1, y1) on a frame (its clicks there are kept); returns the object id."""
        frame_idx = self.frame_index(frame_idx)
        corners = check_corners(box, self.session.video_width, self.session.video_height)
        obj_id = self.objects.check(obj_id)
        self.prompts.setdefault((frame_idx, obj_id), VideoPrompt()).box = corners
        self._apply(frame_idx, obj_id)
        return obj_id

    def _apply(self, frame_idx: int, obj_id: int) -> None:
        with self.models.lock:
            result = apply_prompt(self.session, frame_idx, obj_id, self.prompts[frame_idx, obj_id])
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
            labels = read_label_map(path)
            if (labels == obj_id).any():
                write_palette_png(np.where(labels == obj_id, 0, labels).astype(np.uint8), path)

    def track(
        self, start_frame: int | None = None, direction: str = "both", max_frames: int | None = None
    ) -> Iterator[int]:
        """Propagate the objects (`direction` "forward", "backward" or "both", see `video_prompts.propagate`) from
        `start_frame` (default: the earliest prompted frame) over at most `max_frames` frames each way; yields each
        frame index once its masks are written. The arguments are checked before the first frame."""
        check_direction(direction)
        if not self.session.object_ids:
            raise ValueError("Nothing to track: click on an object first")
        if start_frame is None:
            start_frame = min(frame_idx for frame_idx, _ in self.prompts)
        start_frame = self.frame_index(start_frame)
        if max_frames is not None:
            max_frames = check_index(max_frames, "max_frames", 1)
        with self.models.lock:
            results = propagate(self.session, start_frame, direction, max_frames)
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

    def close(self) -> None:
        self.session.close()


__all__ = ["VideoState"]
