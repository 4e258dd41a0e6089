"""A video being tracked: a `Sam2VideoSession` with the app's objects and prompts. Masks are kept on disk, as the
palette PNGs `hiera-hf track` writes (pixel value = object id), in the tab's own folder; frames are decoded when
shown. Nothing grows with the length of the video in memory but the session's bounded memory bank."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..sam2 import Sam2VideoSession
from ..sam2.prompts import check_index
from ..sam2.tracking_strategies import strategy_settings
from ..sam2.video_output import LabelMapFolder
from ..sam2.video_prompts import PromptLog, VideoPrompt, check_direction
from .models import Models
from .objects import FOREGROUND, Objects, check_click, check_corners
from .views import VIDEO_VIEW_MIN_SIDE, ViewGrid, timeline, timeline_frame

PLAYBACK_MAX_FPS = 30.0  # playback never draws faster than this (nor than the video's rate)
PLAYBACK_DEFAULT_FPS = 24.0  # when the video does not say its rate (a frame folder)


class VideoState:
    """One video being tracked through a `Sam2VideoSession` (with `add_all_frames_to_correct_as_cond`, so that
    a correction click survives tracking again; prompts on frames not tracked yet behave the same either way).
    Every click, box, tracking and removal goes through a `video_prompts.PromptLog`, whose steps `hiera-hf track
    --prompts` replays into the same masks; the masks go to `folder/masks/00000.png ...` as `hiera-hf track` writes
    them."""

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
        self.log = PromptLog(self.session, LabelMapFolder(self.masks), models.lock)
        height, width = self.session.video_height, self.session.video_width
        self.grid = ViewGrid(height, width, VIDEO_VIEW_MIN_SIDE)  # the frames' views, small videos scaled up
        self.objects = Objects()

    @property
    def num_frames(self) -> int:
        return self.session.num_frames

    @property
    def prompts(self) -> dict[tuple[int, int], VideoPrompt]:
        """(frame, object) -> its prompts there."""
        return self.log.prompts

    def frame_index(self, frame_idx) -> int:
        """`frame_idx` checked against the video: an integer, or an integral float as the page's slider sends it;
        `ValueError` for a fraction, NaN, infinity or a frame out of range."""
        return self.session._check_frame(check_index(frame_idx, "Frame index"))

    def nearest_frame(self, frame_idx) -> int:
        """An integral frame number (as `frame_index` takes it) brought within the video: the last frame past the end,
        the first below 0."""
        return min(max(check_index(frame_idx, "Frame index", -math.inf), 0), self.num_frames - 1)

    def frame(self, frame_idx: int) -> np.ndarray:
        """The RGB frame `(H, W, 3)` uint8."""
        return self.session.frame(self.frame_index(frame_idx))

    def labels(self, frame_idx: int) -> np.ndarray | None:
        """The frame's label map `(H, W)` uint8 (`None` before any mask was computed on it)."""
        return self.log.labels.read(self.frame_index(frame_idx))

    def view(self, frame_idx: int) -> np.ndarray:
        """The frame with its masks, every object's clicks on it and the active object's box drawn in, `grid.size`
        pixels."""
        frame_idx = self.frame_index(frame_idx)
        box = self.prompts.get((frame_idx, self.objects.active), VideoPrompt()).box
        clicks = [click for (t, _), prompt in self.prompts.items() if t == frame_idx for click in prompt.clicks]
        return self.grid.draw(self.grid.frame(self.frame(frame_idx)), self.labels(frame_idx), clicks, box)

    def add_object(self, name: str | None = None) -> int:
        return self.objects.add(name)

    def click(self, frame_idx: int, x: float, y: float, label: int = FOREGROUND, obj_id: int | None = None) -> int:
        """Add a click (video pixels) for an object on a frame; the frame's masks are computed at once (a
        correction when the object was tracked there). Returns the object id."""
        frame_idx = self.frame_index(frame_idx)
        click = check_click(x, y, label, self.session.video_width, self.session.video_height)
        obj_id = self.objects.check(obj_id)
        self.log.click(frame_idx, obj_id, click)
        return obj_id

    def set_box(self, frame_idx: int, box, obj_id: int | None = None) -> int:
        """Give an object a box (x0, y0, x1, y1) on a frame (its clicks there are kept); returns the object id."""
        frame_idx = self.frame_index(frame_idx)
        corners = check_corners(box, self.session.video_width, self.session.video_height)
        obj_id = self.objects.check(obj_id)
        self.log.box(frame_idx, obj_id, corners)
        return obj_id

    def undo(self, frame_idx: int, obj_id: int | None = None) -> int:
        """Take back the last click or box of an object (default: the active one) on a frame; returns the object id."""
        frame_idx = self.frame_index(frame_idx)
        obj_id = self.objects.check(obj_id)
        self.log.undo(frame_idx, obj_id)
        return obj_id

    def clear_prompts(self, obj_id: int | None = None) -> int:
        """Forget an object's prompts on every frame, and its masks, keeping the object (its id and name); returns the
        object id."""
        obj_id = self.objects.check(obj_id)
        if not any(o == obj_id for _, o in self.prompts):
            raise ValueError(f"Object {obj_id} has no clicks or box to clear")
        self.log.remove(obj_id)
        return obj_id

    def remove_object(self, obj_id: int) -> None:
        """Forget an object (prompts and memory); its pixels are cleared from the masks computed so far."""
        self.objects.check(obj_id)
        self.log.remove(obj_id)
        self.objects.remove(obj_id)

    def track(
        self,
        start_frame: int | None = None,
        direction: str = "both",
        max_frames: int | None = None,
        strategy: str | None = None,
    ) -> Iterator[int]:
        """Propagate the objects (`direction` "forward", "backward" or "both", see `video_prompts.propagate`) from
        `start_frame` (default: the earliest prompted frame) over at most `max_frames` frames each way, with the
        tracking `strategy` (a name of `tracking_strategies.STRATEGY_NAMES` with its defaults; default: the one
        tracked with last, at first SAM 2's); yields each frame index once its masks are written. The arguments are
        checked before the first frame."""
        check_direction(direction)
        if strategy is not None and strategy_settings(strategy) != self.session.strategy.settings:
            self.log.strategy(strategy)
        if not self.prompts:
            raise ValueError("Nothing to track: click on an object first")
        if start_frame is None:
            start_frame = min(frame_idx for frame_idx, _ in self.prompts)
        start_frame = self.frame_index(start_frame)
        if max_frames is not None:
            max_frames = check_index(max_frames, "max_frames", 1)
        return self.log.track(start_frame, direction, max_frames)

    def tracked_frames(self) -> list[int]:
        return self.log.labels.frames()

    def timeline(self, shown: int | None = None) -> np.ndarray:
        """The video's timeline (`views.timeline`): which frames have masks, which prompts, and the frame `shown`."""
        return timeline(self.num_frames, self.tracked_frames(), {t for t, _ in self.prompts}, shown)

    def timeline_frame(self, x) -> int:
        """The frame under column `x` of `timeline()`."""
        return timeline_frame(self.num_frames, x)

    @property
    def playback_fps(self) -> float:
        """The rate of `playback`: the video's, at most `PLAYBACK_MAX_FPS`."""
        fps = self.session.fps
        return min(fps if fps and math.isfinite(fps) and fps > 0 else PLAYBACK_DEFAULT_FPS, PLAYBACK_MAX_FPS)

    def playback(self, start_frame: int = 0) -> list[int]:
        """The frames a playback from `start_frame` shows, in order: the frames with masks from `start_frame` on, or
        all of them when `start_frame` is at or past the last (play again from the start). Their views are drawn from
        the label maps on disk (`view`): the model is not run. `ValueError` when no frame has masks yet."""
        tracked = self.tracked_frames()
        if not tracked:
            raise ValueError("Nothing to play: track the objects first")
        later = [t for t in tracked if t >= self.nearest_frame(start_frame)]
        return later if len(later) > 1 else tracked

    def close(self) -> None:
        self.session.close()


__all__ = ["VideoState"]
