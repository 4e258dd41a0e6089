"""Prompts on a video as `hiera-hf track` and the app gather them, and how both hand them to a session, so that the
same prompts give the same masks from either: one object's clicks and box on a frame go to the session in one
`add_points` call (the box first), a mask alone in `add_mask`; objects in the order they were first prompted (the
session batches them in that order). Torch-free: any `VideoSessionBase` runtime takes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..image_utils import open_image
from .video_tracking import Sam2VideoFrameResult, VideoSessionBase

# The ways to track from a start frame, as `propagate`'s `reverse` argument.
DIRECTIONS = {"forward": False, "backward": True, "both": "both"}


@dataclass
class VideoPrompt:
    """One object's prompts on one frame, in video pixels: clicks `(x, y, label)` (label 1 foreground, 0
    background) and a box `(x0, y0, x1, y1)`, or a mask `(H, W)` bool alone."""

    clicks: list[tuple[float, float, int]] = field(default_factory=list)
    box: list[float] | None = None
    mask: np.ndarray | None = None


def read_mask(path: str | os.PathLike, obj_id: int) -> np.ndarray:
    """An object's mask prompt `(H, W)` bool from a PNG: its nonzero pixels, or for a label map (a palette PNG such
    as `video_output` writes) the pixels equal to `obj_id`. Read with `image_utils.open_image` (upright, within the
    pixel limit, `ValueError` naming a file that is not an image)."""
    image = open_image(path)
    palette_mode = image.mode == "P"
    values = np.asarray(image.convert("L") if image.mode not in ("P", "L", "1") else image)
    return values == obj_id if palette_mode else values > 0


def read_first_box(path: str | os.PathLike) -> list[float]:
    """The box `[x0, y0, x1, y1]` of the first line of a tracking benchmark's `groundtruth.txt` (LaSOT, GOT-10k,
    OTB: `x,y,w,h` in pixels, separated by commas, tabs or spaces). `ValueError` naming the file for anything else
    (not 4 finite numbers, no area)."""
    try:
        with open(path, encoding="utf-8") as file:
            line = file.readline().strip()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a text file of x,y,w,h boxes") from error
    fields = [field for field in line.replace(",", " ").replace("\t", " ").split(" ") if field]
    try:
        x, y, w, h = (float(field) for field in fields)
    except ValueError:
        raise ValueError(f"The first line of {path} is not x,y,w,h (4 numbers): {line[:80]!r}") from None
    if not all(np.isfinite((x, y, w, h))) or w <= 0 or h <= 0:
        raise ValueError(f"The first box of {path} ({line[:80]}) must be finite with a width and height above 0")
    return [x, y, x + w, y + h]


def apply_prompt(
    session: VideoSessionBase, frame_idx: int, obj_id: int, prompt: VideoPrompt
) -> Sam2VideoFrameResult:
    """Give the session an object's prompts on a frame (replacing its earlier ones there); returns the frame's
    masks."""
    if prompt.mask is not None:
        return session.add_mask(frame_idx, obj_id, prompt.mask)
    points = [click[:2] for click in prompt.clicks] or None
    labels = [click[2] for click in prompt.clicks] or None
    return session.add_points(frame_idx, obj_id, points, labels, box=prompt.box)


def apply_prompts(session: VideoSessionBase, prompts: Mapping[tuple[int, int], VideoPrompt]) -> None:
    """`apply_prompt` for each `(frame_idx, obj_id) -> VideoPrompt`, in the mapping's order."""
    for (frame_idx, obj_id), prompt in prompts.items():
        apply_prompt(session, frame_idx, obj_id, prompt)


def check_direction(direction: str) -> None:
    """`ValueError` unless `direction` is one of `DIRECTIONS`."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")


def _direction(session: VideoSessionBase, start_frame: int, direction: str) -> str:
    """`direction` (checked), but "both" from the first or the last frame: only the way that has frames."""
    check_direction(direction)
    if direction == "both" and start_frame in (0, session.num_frames - 1):
        return "forward" if start_frame == 0 else "backward"
    return direction


def propagate(
    session: VideoSessionBase, start_frame: int, direction: str = "both", max_frames: int | None = None
) -> Iterator[Sam2VideoFrameResult]:
    """`session.propagate` from `start_frame` one of the `DIRECTIONS` (checked at the call); "both" from the first
    or the last frame goes only the way that has frames, so that no frame comes twice."""
    return session.propagate(start_frame, DIRECTIONS[_direction(session, start_frame, direction)], max_frames)


def pass_directions(session: VideoSessionBase, start_frame: int, direction: str = "both") -> tuple[bool, ...]:
    """The passes (`reverse` flags, in order) that `propagate` makes from `start_frame` one of the `DIRECTIONS`."""
    direction = _direction(session, start_frame, direction)
    return (False, True) if direction == "both" else (DIRECTIONS[direction],)


__all__ = [
    "DIRECTIONS",
    "VideoPrompt",
    "apply_prompt",
    "apply_prompts",
    "check_direction",
    "pass_directions",
    "propagate",
    "read_mask",
]
