"""SAM 2 / SAM 2.1: configuration, presets, the image and video models and the video tracking session."""

from .configuration_sam2 import Sam2Config
from .modeling_sam2 import (
    Sam2HieraBackbone,
    Sam2ImageEmbeddingsOutput,
    Sam2ImageSegmentationOutput,
    Sam2Model,
    Sam2PreTrainedModel,
    Sam2VisionOutput,
)
from .modeling_sam2_video import Sam2VideoFrameOutput, Sam2VideoModel
from .presets import SAM2_PRESETS, Sam2Preset, get_sam2_preset
from .video_session import Sam2VideoFrameResult, Sam2VideoSession

__all__ = [
    "SAM2_PRESETS",
    "Sam2Config",
    "Sam2HieraBackbone",
    "Sam2ImageEmbeddingsOutput",
    "Sam2ImageSegmentationOutput",
    "Sam2Model",
    "Sam2PreTrainedModel",
    "Sam2Preset",
    "Sam2VideoFrameOutput",
    "Sam2VideoFrameResult",
    "Sam2VideoModel",
    "Sam2VideoSession",
    "Sam2VisionOutput",
    "get_sam2_preset",
]
