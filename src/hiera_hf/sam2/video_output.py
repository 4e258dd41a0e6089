"""Writing tracking results: one palette PNG per frame (pixel value = object id, 0 = background) and an overlay video.

Every file is written through `hiera_hf.io_utils.atomic_write`, so an interrupted run never leaves a truncated file
behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch
from PIL import Image

from ..io_utils import atomic_write
from ..visualization import blend_labels, palette
from .video_tracking import Sam2VideoFrameResult


def label_map(result: Sam2VideoFrameResult) -> np.ndarray:
    """`(H, W)` uint8 map of a frame: at each pixel the id of the object with the highest positive logit, else 0."""
    if any(not 1 <= i <= 255 for i in result.object_ids):
        raise ValueError(f"Object ids must be in 1..255 to be written as palette PNGs, got {result.object_ids}")
    ids = torch.tensor([0, *result.object_ids], dtype=torch.uint8)
    logits = result.mask_logits
    background = torch.zeros_like(logits[:1])
    best = torch.cat([background, logits]).argmax(dim=0)  # 0 where no object has a positive logit
    return ids[best.cpu()].numpy()


def write_palette_png(labels: np.ndarray, path: str | os.PathLike) -> None:
    """Save a `(H, W)` uint8 label map as a palette PNG."""
    image = Image.fromarray(labels, mode="P")
    image.putpalette(palette().ravel().tolist())
    atomic_write(path, lambda partial: image.save(partial, format="PNG"))


def write_overlay_video(
    frames: Iterable[np.ndarray], labels: Iterable[np.ndarray], path: str | os.PathLike, fps: float = 24.0
) -> None:
    """Encode RGB frames `(H, W, 3)` with their label maps blended in (50%) as an H.264 (or MPEG-4) video."""
    import av

    def encode(partial: str) -> None:
        with av.open(partial, "w", format="mp4") as container:
            stream = None
            for frame, label in zip(frames, labels):
                height, width = (frame.shape[0] // 2) * 2, (frame.shape[1] // 2) * 2  # yuv420p needs even sizes
                blended = blend_labels(frame, label)[:height, :width]
                if stream is None:
                    stream = _video_stream(container, fps, width, height)
                packets = stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(blended), format="rgb24"))
                container.mux(packets)
            if stream is not None:
                container.mux(stream.encode())

    atomic_write(path, encode)


def _video_stream(container, fps: float, width: int, height: int):
    from fractions import Fraction

    rate = Fraction(fps).limit_denominator(1000)
    try:
        stream = container.add_stream("libx264", rate=rate)
    except Exception:  # FFmpeg builds without libx264
        stream = container.add_stream("mpeg4", rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    return stream


__all__ = ["label_map", "palette", "write_overlay_video", "write_palette_png"]
