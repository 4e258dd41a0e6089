"""Lazy access to video frames: a video file (PyAV), a folder of JPEG/PNG frames, or frames in memory.

Every source is a sequence of RGB `uint8` frames `(H, W, 3)`; frames are decoded only when asked for, so a
long video never has to fit in memory. Frame `i` of a file is the `i`-th frame its decoder yields.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .image_utils import to_rgb_array

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


class VideoFrames(Sequence):
    """A video as a lazy sequence of RGB `uint8` frames `(H, W, 3)`. Use `len()`, indexing (negative indices
    too), iteration, and `read(indices)` for a stacked `(N, H, W, 3)` array. `fps` is `None` when unknown."""

    fps: float | None = None

    def _load(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, index: int) -> np.ndarray:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"Frame indices must be integers, got {type(index).__name__}")
        length = len(self)
        if not -length <= index < length:
            raise IndexError(f"Frame index {index} is out of range for a video of {length} frames")
        return self._load(int(index) % length)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` stacked as `(N, H, W, 3)` (read in increasing order, returned in the order asked)."""
        order = sorted(set(int(i) for i in indices))
        frames = {i: self[i] for i in order}
        return np.stack([frames[int(i)] for i in indices])

    def close(self) -> None:
        """Releases the underlying file, if any."""

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InMemoryFrames(VideoFrames):
    """Frames already in memory: a list of PIL images / arrays `(H, W[, C])`, or one array or tensor
    `(T, H, W, C)`; `uint8` or float in [0, 1], converted to RGB `uint8` when read."""

    def __init__(self, frames, fps: float | None = None):
        if not hasattr(frames, "__len__") or len(frames) == 0:
            raise ValueError("A video needs at least one frame")
        if hasattr(frames, "ndim") and frames.ndim != 4:
            raise ValueError(f"A video array must be (T, H, W, C), got shape {tuple(frames.shape)}")
        self._frames = frames
        self.fps = fps

    def __len__(self) -> int:
        return len(self._frames)

    def _load(self, index: int) -> np.ndarray:
        return to_rgb_array(self._frames[index])


class FolderFrames(VideoFrames):
    """A folder of JPEG/PNG frames, ordered by the number in their names (`00012.jpg`, `frame_12.png`) or by
    name when some have no number."""

    def __init__(self, folder: str | os.PathLike, fps: float | None = None):
        folder = Path(folder)
        paths = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and p.is_file()]
        if not paths:
            raise ValueError(f"No {'/'.join(FRAME_EXTENSIONS)} frames found in {folder}")
        numbers = [re.findall(r"\d+", p.stem) for p in paths]
        if all(numbers):
            paths = [p for _, p in sorted(zip((int(n[-1]) for n in numbers), paths))]
        else:
            paths.sort()
        self._paths = paths
        self.fps = fps

    def __len__(self) -> int:
        return len(self._paths)

    def _load(self, index: int) -> np.ndarray:
        with Image.open(self._paths[index]) as image:
            return to_rgb_array(image)


class PyAVFrames(VideoFrames):
    """A video file decoded with PyAV. Reading forward is a single decoding pass; reading an earlier frame
    restarts decoding from the beginning. Only the frame being returned is kept."""

    def __init__(self, path: str | os.PathLike):
        try:
            import av
        except ImportError as error:
            raise ImportError("Reading video files needs PyAV: pip install 'hiera-hf[video]' (or av)") from error
        self._container = av.open(str(path))
        if not self._container.streams.video:
            self._container.close()
            raise ValueError(f"{path} has no video stream")
        stream = self._container.streams.video[0]
        self.fps = float(stream.average_rate) if stream.average_rate else None
        self._length = stream.frames or sum(1 for packet in self._container.demux(stream) if packet.size)
        self._decoder: Iterator | None = None
        self._next = 0

    def __len__(self) -> int:
        return self._length

    def _load(self, index: int) -> np.ndarray:
        if self._decoder is None or index < self._next:
            self._container.seek(0)
            self._decoder, self._next = self._container.decode(video=0), 0
        for frame in self._decoder:
            self._next += 1
            if self._next - 1 == index:
                return frame.to_ndarray(format="rgb24")
        raise IndexError(f"The video ended after {self._next} frames, before frame {index}")

    def close(self) -> None:
        self._container.close()


def open_video(source, fps: float | None = None) -> VideoFrames:
    """Lazy frames of `source`: a `VideoFrames`, a path to a video file or to a folder of JPEG/PNG frames, a
    list of frames (PIL images or arrays), or one array / tensor `(T, H, W, C)`. `fps` is recorded for
    in-memory and folder sources (files carry their own)."""
    if isinstance(source, VideoFrames):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return FolderFrames(path, fps=fps)
        if not path.is_file():
            raise FileNotFoundError(f"No video file or frame folder at {path}")
        return PyAVFrames(path)
    if isinstance(source, (list, tuple)) or hasattr(source, "ndim"):
        return InMemoryFrames(source, fps=fps)
    raise TypeError(
        f"Unsupported video source {type(source).__name__}; expected a path (video file or frame folder), a list "
        "of frames, or a (T, H, W, C) array or tensor"
    )


__all__ = ["FolderFrames", "InMemoryFrames", "PyAVFrames", "VideoFrames", "open_video"]
