"""SAM 2 / SAM 2.1: configuration, presets, the image model and its processor (automatic mask generation lives in
`mask_generation`, imported on demand)."""

from .configuration_sam2 import Sam2Config
from .modeling_sam2 import (
    Sam2HieraBackbone,
    Sam2ImageEmbeddingsOutput,
    Sam2ImageSegmentationOutput,
    Sam2Model,
    Sam2PreTrainedModel,
    Sam2VisionOutput,
)
from .presets import SAM2_PRESETS, Sam2Preset, get_sam2_preset
from .processing_sam2 import Sam2ImageProcessor

__all__ = [
    "SAM2_PRESETS",
    "Sam2Config",
    "Sam2HieraBackbone",
    "Sam2ImageEmbeddingsOutput",
    "Sam2ImageProcessor",
    "Sam2ImageSegmentationOutput",
    "Sam2Model",
    "Sam2PreTrainedModel",
    "Sam2Preset",
    "Sam2VisionOutput",
    "get_sam2_preset",
]
