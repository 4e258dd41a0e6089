"""The one place that registers hiera-hf's classes with transformers' Auto classes."""

from __future__ import annotations

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskGeneration,
    AutoModelForPreTraining,
    AutoModelForVideoClassification,
    AutoVideoProcessor,
)
from transformers.utils import is_torchvision_available

_done = False


def register_auto_classes() -> None:
    """Register configs and models (idempotent). Our `HieraConfig` shares its class name with transformers'
    built-in one, and the Auto model mappings are keyed by that name, hence `exist_ok=True`; the built-in
    `hiera` model type keeps loading transformers' own classes. No pipeline task is touched: transformers' own
    `MaskGenerationPipeline` runs on our SAM 2 folders through `Sam2Model`'s and `Sam2ImageProcessor`'s hooks."""
    global _done
    if _done:
        return
    from .hiera import (
        HieraBackbone,
        HieraConfig,
        HieraForImageClassification,
        HieraForPreTraining,
        HieraForVideoClassification,
        HieraImageProcessor,
        HieraModel,
        HieraVideoProcessor,
    )

    AutoConfig.register(HieraConfig.model_type, HieraConfig, exist_ok=True)
    AutoModel.register(HieraConfig, HieraModel, exist_ok=True)
    AutoModelForImageClassification.register(HieraConfig, HieraForImageClassification, exist_ok=True)
    AutoModelForVideoClassification.register(HieraConfig, HieraForVideoClassification, exist_ok=True)
    AutoBackbone.register(HieraConfig, HieraBackbone, exist_ok=True)
    AutoModelForPreTraining.register(HieraConfig, HieraForPreTraining, exist_ok=True)
    # One exact (Pillow) image processor serves both backend names. Registering both also matters: the mapping
    # inherits the BitImageProcessor entries of transformers' `hiera` through the shared class name.
    processors = {"torchvision": HieraImageProcessor, "pil": HieraImageProcessor}
    AutoImageProcessor.register(HieraConfig, image_processor_classes=processors, exist_ok=True)
    if is_torchvision_available():  # transformers' video processors need torchvision; without it, images only
        AutoVideoProcessor.register(HieraConfig, HieraVideoProcessor, exist_ok=True)
    # SAM 2: our `Sam2Config` also shares its class name with a built-in one (model type `sam2`), same remedy.
    from .sam2 import Sam2Config, Sam2HieraBackbone, Sam2ImageProcessor, Sam2Model

    AutoConfig.register(Sam2Config.model_type, Sam2Config, exist_ok=True)
    AutoModel.register(Sam2Config, Sam2Model, exist_ok=True)
    AutoModelForMaskGeneration.register(Sam2Config, Sam2Model, exist_ok=True)
    AutoBackbone.register(Sam2Config, Sam2HieraBackbone, exist_ok=True)
    processors = {"torchvision": Sam2ImageProcessor, "pil": Sam2ImageProcessor}
    AutoImageProcessor.register(Sam2Config, image_processor_classes=processors, exist_ok=True)
    _done = True
