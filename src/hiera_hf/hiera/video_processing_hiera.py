"""Video processor for Hiera: Meta's Kinetics evaluation preprocessing (its inference notebook).

Meta takes 16 frames at a temporal stride of 4 (one clip of 64 frames), scales them to [0, 1], resizes the
clip with `F.interpolate(clip, size=(16, 224, 224), mode="trilinear")` (no crop: the example videos are
square) and normalises with mean (0.45, 0.45, 0.45) and std (0.225, 0.225, 0.255), as written by Meta.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_base import BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.processing_utils import VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from ..video_io import VideoFrames, open_video


class HieraVideoProcessorKwargs(VideosKwargs, total=False):
    """Frame sampling options of [`HieraVideoProcessor`].

    frame_stride (`int`): temporal stride between sampled frames.
    start_frame (`int`): index of the first sampled frame.
    """

    frame_stride: int | None
    start_frame: int | None


class HieraVideoProcessor(BaseVideoProcessor):
    r"""
    Hiera's video preprocessing. Each video gives one clip of `num_frames` (16) frames taken every
    `frame_stride` (4) frames from `start_frame` (0). **Short videos:** indices past the last frame repeat the
    last frame (a 40-frame video gives frames 0, 4, ..., 36, 39, 39, 39, 39, 39). The clip is scaled to [0, 1],
    resized with trilinear interpolation to `(num_frames, size["height"], size["width"])` (with
    `do_sample_frames=False` every frame is kept and the time axis is interpolated to `num_frames` too) and
    normalised with Meta's Kinetics mean/std.

    A video is a path to a video file (decoded lazily with PyAV) or to a folder of JPEG/PNG frames, a
    [`~hiera_hf.video_io.VideoFrames`], a list of frames (PIL images or `(H, W[, C])` arrays), or a
    `(T, H, W, C)` numpy array or torch tensor; `uint8` in [0, 255] or float in [0, 1]. A batch is a list of
    videos or a `(B, T, H, W, C)` array.

    Returns `pixel_values` of shape `(batch, 3, num_frames, height, width)`, the layout of
    [`HieraForVideoClassification`].
    """

    valid_kwargs = HieraVideoProcessorKwargs
    model_input_names = ["pixel_values"]
    size = {"height": 224, "width": 224}
    resample = PILImageResampling.BILINEAR  # linear along every axis: Meta's trilinear interpolation
    do_resize = True
    do_center_crop = False
    do_rescale = True
    do_normalize = True
    image_mean = (0.45, 0.45, 0.45)
    image_std = (0.225, 0.225, 0.255)
    do_sample_frames = True
    num_frames = 16
    frame_stride = 4
    start_frame = 0

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        frame_stride: int | None = None,
        start_frame: int | None = None,
        fps: float | None = None,
        **kwargs,
    ) -> np.ndarray:
        """Indices `start_frame + frame_stride * [0, num_frames)`, clamped to the last frame."""
        if fps is not None:
            raise ValueError("HieraVideoProcessor samples frames by stride; use frame_stride instead of fps")
        num_frames = self.num_frames if num_frames is None else num_frames
        frame_stride = self.frame_stride if frame_stride is None else frame_stride
        start_frame = self.start_frame if start_frame is None else start_frame
        if num_frames < 1 or frame_stride < 1 or start_frame < 0:
            raise ValueError(
                f"Need num_frames >= 1, frame_stride >= 1 and start_frame >= 0, got {num_frames}, {frame_stride}, "
                f"{start_frame}"
            )
        total = metadata.total_num_frames
        if start_frame >= total:
            raise ValueError(f"start_frame={start_frame} is past the end of a video of {total} frames")
        return np.minimum(start_frame + frame_stride * np.arange(num_frames), total - 1)

    @staticmethod
    def _split_batch(videos) -> list:
        """A single video or a batch -> list of video sources."""
        if isinstance(videos, (str, os.PathLike, VideoFrames)):
            return [videos]
        ndim = getattr(videos, "ndim", None)
        if ndim is not None:
            if ndim not in (4, 5):
                raise ValueError(
                    f"Video arrays must be (T, H, W, C) or batched (B, T, H, W, C), got shape {tuple(videos.shape)}"
                )
            return [videos] if ndim == 4 else list(videos)
        if isinstance(videos, (list, tuple)) and videos:
            first = videos[0]
            is_batch = isinstance(first, (str, os.PathLike, VideoFrames, list, tuple)) or (
                getattr(first, "ndim", None) == 4
            )
            return list(videos) if is_batch else [videos]
        raise TypeError(
            f"Unsupported videos {type(videos).__name__}; expected a path, a list of frames, a (T, H, W, C) "
            "array/tensor, or a list of those"
        )

    def _decode_and_sample_videos(self, videos, video_metadata=None, do_sample_frames=None, sample_indices_fn=None):
        """Reads the sampled frames of every video as `uint8` tensors `(T, 3, H, W)`."""
        clips, metadata = [], []
        for source in self._split_batch(videos):
            frames = open_video(source)
            try:
                meta = VideoMetadata(total_num_frames=len(frames), fps=frames.fps, video_backend="hiera_hf")
                indices = sample_indices_fn(metadata=meta) if sample_indices_fn else np.arange(len(frames))
                meta.frames_indices = [int(i) for i in indices]
                clips.append(torch.from_numpy(frames.read(indices)).permute(0, 3, 1, 2))
            finally:
                if frames is not source:
                    frames.close()
            metadata.append(meta)
        return clips, metadata

    def _prepare_input_videos(self, videos: list[torch.Tensor], device=None, **kwargs) -> list[torch.Tensor]:
        """Clips are already RGB `(T, 3, H, W)` (see `_decode_and_sample_videos`); only the device changes."""
        return [video.to(device) for video in videos] if device is not None else videos

    def _preprocess(
        self,
        videos: list[torch.Tensor],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | int,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: tuple[float, ...],
        image_std: tuple[float, ...],
        num_frames: int,
        do_center_crop: bool | None = None,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        if do_center_crop:
            raise ValueError("Meta's video recipe resizes without cropping; do_center_crop is not supported")
        if do_resize and not (size.height and size.width):
            raise ValueError(f"size must have 'height' and 'width', got {dict(size)}")
        if do_resize and resample != PILImageResampling.BILINEAR:
            raise ValueError(f"Only (tri)linear resizing is supported (resample=BILINEAR), got {resample!r}")
        clips = []
        for video in videos:
            clip = video.permute(1, 0, 2, 3)[None].float()  # (1, 3, T, H, W)
            if do_rescale:
                clip = clip * rescale_factor
            if do_resize:
                clip = F.interpolate(clip, size=(num_frames, size.height, size.width), mode="trilinear")
            if do_normalize:
                mean = torch.tensor(image_mean, device=clip.device).view(1, -1, 1, 1, 1)
                std = torch.tensor(image_std, device=clip.device).view(1, -1, 1, 1, 1)
                clip = (clip - mean) / std
            clips.append(clip[0])
        return BatchFeature(data={"pixel_values": clips}, tensor_type=return_tensors)


__all__ = ["HieraVideoProcessor"]
