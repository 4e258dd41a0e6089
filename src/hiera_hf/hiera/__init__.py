"""Hiera: configuration, presets, models and processors (each imported on first use)."""

from .._lazy import lazy_exports

_EXPORTS = {
    "HIERA_PRESETS": ".presets",
    "HieraBackbone": ".modeling_hiera",
    "HieraConfig": ".configuration_hiera",
    "HieraForImageClassification": ".modeling_hiera",
    "HieraForPreTraining": ".modeling_hiera_mae",
    "HieraForPreTrainingOutput": ".modeling_hiera_mae",
    "HieraForVideoClassification": ".modeling_hiera",
    "HieraImageProcessor": ".image_processing_hiera",
    "HieraModel": ".modeling_hiera",
    "HieraModelOutput": ".modeling_hiera",
    "HieraPreTrainedModel": ".modeling_hiera",
    "HieraVideoProcessor": ".video_processing_hiera",
    "add_remote_code": ".remote_code",
    "get_preset": ".presets",
    "save_for_hub": ".remote_code",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
