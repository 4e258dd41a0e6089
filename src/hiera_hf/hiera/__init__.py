"""Hiera: configuration, presets, models and processors."""

from .configuration_hiera import HieraConfig
from .image_processing_hiera import HieraImageProcessor
from .modeling_hiera import (
    HieraBackbone,
    HieraForImageClassification,
    HieraForVideoClassification,
    HieraModel,
    HieraModelOutput,
    HieraPreTrainedModel,
)
from .modeling_hiera_mae import HieraForPreTraining, HieraForPreTrainingOutput
from .presets import HIERA_PRESETS, get_preset
from .remote_code import add_remote_code, save_for_hub
from .video_processing_hiera import HieraVideoProcessor

__all__ = [
    "HIERA_PRESETS",
    "HieraBackbone",
    "HieraConfig",
    "HieraForImageClassification",
    "HieraForPreTraining",
    "HieraForPreTrainingOutput",
    "HieraForVideoClassification",
    "HieraImageProcessor",
    "HieraModel",
    "HieraModelOutput",
    "HieraPreTrainedModel",
    "HieraVideoProcessor",
    "add_remote_code",
    "get_preset",
    "save_for_hub",
]
