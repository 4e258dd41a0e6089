"""Lazy access to video frames: a video file (PyAV), a folder of JPEG/PNG frames, or frames in memory.

Every source is a sequence of RGB `uint8` frames `(H, W, 3)`, all of one size (checked when the source is opened);
frames are decoded only when asked for, so a long video never has to fit in memory. Frame `i` of a file is the
frame with the `i`-th smallest presentation time (the `i`-th its decoder yields). Frames read from image files
are turned upright by their EXIF orientation (`image_utils.open_image`).
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .file_types import FRAME_EXTENSIONS
from .image_utils import check_image_size, open_image, to_rgb_array, upright, upright_size

# Decoded frames a video file keeps to read backwards without decoding again from the keyframe for every frame.
DEFAULT_CACHE_BYTES = 256 * 2**20


class VideoDecodeError(ValueError):
    """A video that stops decoding before its last frame (a truncated or corrupt file, a damaged frame image):
    the first `readable` frames could be decoded."""

    def __init__(self, message: str, readable: int):
        super().__init__(message)
        self.readable = readable


def check_same_size(sizes: Sequence[tuple[int, int]], names: Sequence[str]) -> None:
    """`ValueError` naming the first frames whose (height, width) differ: a video has one frame size."""
    for size, name in zip(sizes, names):
        if size != sizes[0]:
            raise ValueError(
                f"The frames of a video must all have one size: {names[0]} is {sizes[0][1]}x{sizes[0][0]} but {name} "
                f"is {size[1]}x{size[0]} (width x height); resize them to one size first"
            )


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
        if not hasattr(frames, "ndim"):
            sizes = [upright(f).size[::-1] if isinstance(f, Image.Image) else to_rgb_array(f).shape[:2] for f in frames]
            check_same_size([tuple(size) for size in sizes], [f"frame {i}" for i in range(len(frames))])

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
        check_same_size([upright_size(path)[::-1] for path in paths], [path.name for path in paths])

    def __len__(self) -> int:
        return len(self._paths)

    def _load(self, index: int) -> np.ndarray:
        try:
            return to_rgb_array(open_image(self._paths[index]))
        except ValueError as error:  # a damaged frame file: the frames before it were readable
            raise VideoDecodeError(f"Frame {index} of {len(self)}: {error}", index) from None


class PyAVFrames(VideoFrames):
    """A video file decoded with PyAV. Reading forward is a single decoding pass. Reading an earlier frame seeks
    to the keyframe before it and decodes forward, keeping the decoded frames just before the one asked for (at
    most `cache_bytes` of them, as decoded YUV), so reading backwards costs about one decode per frame rather than
    one pass from the keyframe per frame. A file that stops decoding early raises `VideoDecodeError`."""

    def __init__(self, path: str | os.PathLike, cache_bytes: int = DEFAULT_CACHE_BYTES):
        try:
            import av
        except ImportError as error:
            raise ImportError("Reading video files needs PyAV: pip install 'hiera-hf[video]' (or av)") from error
        self._path = Path(path)
        self._errors = av.FFmpegError
        try:
            self._container = av.open(str(path))
        except av.FFmpegError as error:
            raise ValueError(f"Cannot read the video {path}: {_reason(error)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise ValueError(f"Cannot read the video {path}: it has no video stream")
        self._stream = stream = self._container.streams.video[0]
        try:  # the pixel limit of images holds for frames (a PNG bomb opens as a one-frame video)
            check_image_size(stream.codec_context.width, stream.codec_context.height, f"Each frame of {path}")
        except ValueError:
            self._container.close()
            raise
        self.fps = float(stream.average_rate) if stream.average_rate else None
        try:
            packets = [(packet.pts, packet.is_keyframe) for packet in self._container.demux(stream) if packet.size]
        except av.FFmpegError as error:
            self._container.close()
            raise ValueError(f"Cannot read the video {path}: {_reason(error)}") from None
        self._length = stream.frames or len(packets)
        times = sorted(pts for pts, _ in packets if pts is not None)
        # Seeking needs every packet's time; without them, every restart is from frame 0.
        self._times = times if len(times) == len(packets) else None
        self._index = {pts: i for i, pts in enumerate(times)} if self._times else {}
        keyframes = {self._index[pts] for pts, key in packets if key} if self._times else set()
        self._keyframes = sorted(keyframes | {0})
        self._cache_bytes = cache_bytes
        self._cache_frames: int | None = None  # from the size of the first decoded frame
        self._cache: dict[int, object] = {}  # frame index -> av.VideoFrame
        self._decoder: Iterator | None = None
        self._next = 0  # index of the next frame the decoder yields
        self._valid_from = 0  # frames before the keyframe decoding restarted at may be broken

    def __len__(self) -> int:
        return self._length

    def _load(self, index: int) -> np.ndarray:
        frame = self._cache.get(index)
        if frame is None:
            backwards = self._decoder is None or index < self._next
            if backwards:
                self._restart(index)
            frame = self._decode_upto(index, keep_earlier=backwards)
        return frame.to_ndarray(format="rgb24")

    def _restart(self, index: int) -> None:
        """Position the decoder at the last keyframe at or before frame `index`."""
        keyframe = self._keyframes[bisect.bisect_right(self._keyframes, index) - 1]
        if keyframe == 0:
            self._container.seek(0)
        else:
            self._container.seek(self._times[keyframe], stream=self._stream, backward=True, any_frame=False)
        self._cache.clear()
        self._decoder, self._next, self._valid_from = self._container.decode(self._stream), keyframe, keyframe

    def _decode_upto(self, index: int, keep_earlier: bool):
        """Decode forward to frame `index` and cache it, with the frames before it that fit in the cache when
        `keep_earlier` (after a restart: the frames a backward reader asks for next)."""
        try:
            for frame in self._decoder:
                position = self._index.get(frame.pts, self._next) if self._times else self._next
                self._next = position + 1
                if position < self._valid_from:
                    continue
                if self._cache_frames is None:
                    size = sum(plane.buffer_size for plane in frame.planes)
                    self._cache_frames = max(1, self._cache_bytes // max(size, 1))
                keep_from = index - self._cache_frames + 1 if keep_earlier else index
                if position >= keep_from:
                    self._cache[position] = frame
                if position == index:
                    self._cache = {i: f for i, f in self._cache.items() if keep_from <= i <= index}
                    return frame
                if position > index:
                    self._decoder = None
                    raise VideoDecodeError(
                        f"Frame {index} of the video {self._path} could not be decoded (the decoder went from frame "
                        f"{index - 1} to {position})",
                        self._readable(),
                    )
        except self._errors as error:
            self._decoder = None
            raise VideoDecodeError(
                f"The video {self._path} is damaged: only its first {self._readable()} of {self._length} frames "
                f"could be decoded ({_reason(error)})",
                self._readable(),
            ) from None
        self._decoder = None
        raise VideoDecodeError(
            f"The video {self._path} ended after {self._readable()} of its {self._length} frames, before frame "
            f"{index} (the file is truncated or its frame count is wrong)",
            self._readable(),
        )

    def _readable(self) -> int:
        return min(self._next, self._length)

    def close(self) -> None:
        self._cache.clear()
        self._container.close()


def _reason(error: Exception) -> str:
    """FFmpeg's message without its errno prefix (`[Errno 1094995529] Invalid data ...: 'x.mp4'`)."""
    return getattr(error, "strerror", None) or str(error)


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


__all__ = [
    "DEFAULT_CACHE_BYTES",
    "FolderFrames",
    "InMemoryFrames",
    "PyAVFrames",
    "VideoDecodeError",
    "VideoFrames",
    "check_same_size",
    "open_video",
]
