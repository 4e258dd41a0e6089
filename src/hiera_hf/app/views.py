"""What the page shows: a frame scaled to its view, with masks, clicks and a box drawn in."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..visualization import palette
from .objects import BACKGROUND, FOREGROUND, numbers

_PALETTE = palette()
_HALF_PALETTE = _PALETTE // 2
# The page is sent views of at most this many pixels a side (SAM 2's input side: a click in the view is as precise
# as the model sees the frame).
VIEW_MAX_SIDE = 1024
# Videos smaller than this (their longer side) are shown scaled up to it: a 256 px video is not a thumbnail.
VIDEO_VIEW_MIN_SIDE = 768
BOX_COLOUR = (255, 212, 0)


def object_colour(obj_id: int) -> tuple[int, int, int]:
    """RGB colour of an object: its palette PNG colour."""
    return tuple(int(c) for c in _PALETTE[obj_id])


class ViewGrid:
    """How a frame of `(height, width)` pixels maps to its view, the frame scaled to at most `VIEW_MAX_SIDE` pixels
    a side, and up to `min_side` pixels on its longer side when smaller (`size` = the view's (height, width)): the frame resized bilinearly, label maps sampled at the nearest
    frame pixel, and positions (pixel centres) between the two."""

    def __init__(self, height: int, width: int, min_side: int = 0):
        scale = min(1.0, VIEW_MAX_SIDE / max(height, width))
        if max(height, width) < min_side:  # a small frame scaled up to be seen and clicked at ease
            scale = min(min_side, VIEW_MAX_SIDE) / max(height, width)
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
        x, y = numbers((x, y), 2, "A position")
        if not self.scaled:
            return x, y
        (height, width), (h, w) = self.frame_size, self.size
        return (x + 0.5) * width / w - 0.5, (y + 0.5) * height / h - 0.5

    def box_from_view(self, box) -> list[float]:
        """A box (x0, y0, x1, y1) in the view -> in the frame."""
        x0, y0, x1, y1 = numbers(box, 4, "A box")
        return [*self.from_view(x0, y0), *self.from_view(x1, y1)]

    def draw(self, view_frame: np.ndarray, labels: np.ndarray | None, clicks=(), box=None) -> np.ndarray:
        """`view_frame` (`frame(rgb)`) with a frame's `labels` `(H, W)`, `clicks` (x, y, label) and `box` (x0, y0,
        x1, y1), in frame pixels, drawn in; see `blend`."""
        clicks = [(*self.to_view(x, y), label) for x, y, label in clicks]
        box = None if box is None else [*self.to_view(*box[:2]), *self.to_view(*box[2:])]
        return blend(view_frame, self.labels(labels), clicks, box)


CLICK_COLOURS = {FOREGROUND: (0, 220, 0), BACKGROUND: (230, 0, 0)}


def blend(rgb: np.ndarray, labels: np.ndarray | None, clicks=(), box=None) -> np.ndarray:
    """The frame `(H, W, 3)` uint8 with each object's pixels of `labels` `(H, W)` blended half with its colour (as
    the overlay video is) and its outline (pixels next to another label) in its full colour, the outline of `box`
    (x0, y0, x1, y1; yellow, as the page draws a box being dragged) and the clicks `(x, y, label)` as discs ringed
    in white (green foreground, red background), sized with the view so that they read at any zoom."""
    out = np.array(rgb, dtype=np.uint8)
    rows = np.flatnonzero(labels.any(axis=1)) if labels is not None else ()
    if len(rows):  # blend inside the labels' bounding box only
        columns = np.flatnonzero(labels.any(axis=0))
        inside = np.s_[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
        part, ids = out[inside], labels[inside]
        padded = np.pad(ids, 1)  # 0 around: the bounding box holds all the labels
        neighbours = (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:])
        edge = (ids > 0) & np.logical_or.reduce([neighbour != ids for neighbour in neighbours])
        tinted = np.where(ids[..., None] > 0, part // 2 + _HALF_PALETTE[ids], part)
        out[inside] = np.where(edge[..., None], _PALETTE[ids], tinted)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        for side in (np.s_[y0 : y0 + 2, x0 : x1 + 1], np.s_[y1 - 1 : y1 + 1, x0 : x1 + 1],
                     np.s_[y0 : y1 + 1, x0 : x0 + 2], np.s_[y0 : y1 + 1, x1 - 1 : x1 + 1]):  # fmt: skip
            out[side] = BOX_COLOUR
    radius = max(3, min(rgb.shape[:2]) // 100)
    for x, y, label in clicks:
        top, left = max(int(y) - radius - 1, 0), max(int(x) - radius - 1, 0)
        window = out[top : int(y) + radius + 2, left : int(x) + radius + 2]  # a view of `out`
        rows, columns = np.ogrid[top : top + window.shape[0], left : left + window.shape[1]]
        distance = np.hypot(rows - y, columns - x)
        window[distance <= radius + 1] = (255, 255, 255)
        window[distance <= radius] = CLICK_COLOURS[FOREGROUND if label == FOREGROUND else BACKGROUND]
    return out


# The timeline under the video view: one cell per frame, `TIMELINE_WIDTH` pixels wide in all (or a pixel per frame
# for longer videos); its upper band says whether the frame has masks (tracked, or prompted), its lower band whether
# it has prompts, and a white bar on top marks the frame shown.
TIMELINE_WIDTH, TIMELINE_HEIGHT = 1024, 24
TIMELINE_COLOURS = {"empty": (64, 64, 64), "tracked": (70, 130, 220), "prompted": BOX_COLOUR, "shown": (255, 255, 255)}
TIMELINE_ROWS = {"masks": slice(3, 15), "prompts": slice(16, TIMELINE_HEIGHT), "shown": slice(0, 3)}


def timeline_cell(num_frames: int) -> int:
    """Width in pixels of a frame's cell of the timeline."""
    return max(1, TIMELINE_WIDTH // max(num_frames, 1))


def timeline(num_frames: int, tracked, prompted, shown: int | None = None) -> np.ndarray:
    """The timeline `(TIMELINE_HEIGHT, num_frames * timeline_cell(num_frames), 3)` uint8 of a video: `tracked` and
    `prompted` frame indices in their colours (`TIMELINE_COLOURS`), the frame `shown` marked."""
    cell = timeline_cell(num_frames)
    strip = np.zeros((TIMELINE_HEIGHT, num_frames * cell, 3), np.uint8)
    for rows, frames, colour in ((TIMELINE_ROWS["masks"], tracked, "tracked"),
                                 (TIMELINE_ROWS["prompts"], prompted, "prompted")):  # fmt: skip
        marked = np.zeros(num_frames, bool)
        marked[[t for t in frames if 0 <= t < num_frames]] = True
        columns = np.repeat(marked, cell)
        strip[rows] = np.where(columns[:, None], TIMELINE_COLOURS[colour], TIMELINE_COLOURS["empty"])
    if cell >= 4:  # a gap between the cells
        strip[:, ::cell] = 0
    if shown is not None and 0 <= shown < num_frames:
        half = max(cell // 2, 1)  # at least 3 pixels wide when cells are thin
        left, right = max(shown * cell + cell // 2 - half, 0), shown * cell + cell // 2 + half + (cell < 4)
        strip[TIMELINE_ROWS["shown"], left:right] = TIMELINE_COLOURS["shown"]
    return strip


def timeline_frame(num_frames: int, x) -> int:
    """The frame under column `x` of the timeline (as the page reports a click), within the video."""
    (x,) = numbers((x,), 1, "A position")
    return min(max(int(x // timeline_cell(num_frames)), 0), num_frames - 1)


__all__ = [
    "BOX_COLOUR", "CLICK_COLOURS", "TIMELINE_COLOURS", "TIMELINE_ROWS", "VIDEO_VIEW_MIN_SIDE", "VIEW_MAX_SIDE",
    "ViewGrid", "blend", "object_colour", "timeline", "timeline_cell", "timeline_frame",
]  # fmt: skip
