"""SAM 2 / SAM 2.1: configuration, presets, the image and video models, the image processor and the video
tracking session (automatic mask generation lives in `mask_generation`, imported on demand)."""

from .configuration_sam2 import Sam2Config
from .modeling_sam2 import (
    Sam2Base,
    Sam2HieraBackbone,
    Sam2ImageEmbeddingsOutput,
    Sam2ImageSegmentationOutput,
    Sam2Model,
    Sam2PreTrainedModel,
    Sam2VisionOutput,
)
from .modeling_sam2_video import Sam2VideoFrameOutput, Sam2VideoModel
from .presets import SAM2_PRESETS, Sam2Preset, get_sam2_preset
from .processing_sam2 import Sam2ImageProcessor
from .video_session import Sam2VideoFrameResult, Sam2VideoSession

__all__ = [
    "SAM2_PRESETS",
    "Sam2Base",
    "Sam2Config",
    "Sam2HieraBackbone",
    "Sam2ImageEmbeddingsOutput",
    "Sam2ImageProcessor",
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
