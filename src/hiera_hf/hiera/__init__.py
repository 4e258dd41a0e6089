"""Hiera: configuration, presets, models and processors."""

from .configuration_hiera import HieraConfig
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

__all__ = [
    "HIERA_PRESETS",
    "HieraBackbone",
    "HieraConfig",
    "HieraForImageClassification",
    "HieraForPreTraining",
    "HieraForPreTrainingOutput",
    "HieraForVideoClassification",
    "HieraModel",
    "HieraModelOutput",
    "HieraPreTrainedModel",
    "get_preset",
]
