"""hiera-hf: Meta's Hiera and SAM 2 behind the Hugging Face interfaces.

Importing the package registers its configs, models and processors with transformers' Auto classes.
"""

from importlib.util import find_spec as _find_spec

# Without torch only the torch-free ONNX Runtime backend (`hiera_hf.onnx.runtime`) can be imported.
if _find_spec("torch") is not None:
    from .hiera import (
        HIERA_PRESETS,
        HieraBackbone,
        HieraConfig,
        HieraForImageClassification,
        HieraForPreTraining,
        HieraForPreTrainingOutput,
        HieraForVideoClassification,
        HieraImageProcessor,
        HieraModel,
        HieraModelOutput,
        HieraPreTrainedModel,
        HieraVideoProcessor,
        get_preset,
        save_for_hub,
    )
    from .registration import register_auto_classes
    from .sam2 import (
        SAM2_PRESETS,
        Sam2Config,
        Sam2HieraBackbone,
        Sam2ImageProcessor,
        Sam2Model,
        Sam2VideoFrameOutput,
        Sam2VideoFrameResult,
        Sam2VideoModel,
        Sam2VideoSession,
    )

    register_auto_classes()

__version__ = "0.1.0"

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
    "SAM2_PRESETS",
    "Sam2Config",
    "Sam2HieraBackbone",
    "Sam2ImageProcessor",
    "Sam2Model",
    "Sam2VideoFrameOutput",
    "Sam2VideoFrameResult",
    "Sam2VideoModel",
    "Sam2VideoSession",
    "get_preset",
    "save_for_hub",
]
