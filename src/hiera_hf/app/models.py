"""The models of the app, loaded once and shared by every tab."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from ..sam2 import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2VideoModel


class Models:
    """A `Sam2VideoModel` and a `Sam2Model` view of the same weights (the image model's modules *are* the video
    model's), with the image processor.

    `lock` serialises model calls across sessions (one request at a time touches the models).
    """

    def __init__(self, video_model: Sam2VideoModel, processor: Sam2ImageProcessor | None = None):
        if not isinstance(video_model, Sam2VideoModel):
            raise TypeError(f"video_model must be a Sam2VideoModel, got {type(video_model).__name__}")
        self.video = video_model.eval()
        self.image = _image_view(self.video)
        size = self.video.config.image_size
        self.processor = processor or Sam2ImageProcessor(size={"height": size, "width": size})
        self.lock = threading.RLock()
        self.detector = None  # the `sam2.text_prompts.TextDetector` of the "Find" boxes (`ui.build_app`'s detector)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike, device: str | None = None) -> Models:
        """Load a converted SAM 2 folder (or an official variant name, converted once into the cache) on `device`
        (default: cuda when available, else cpu). A folder of another model, or a damaged one, is refused with
        `ValueError`; a missing one with `FileNotFoundError`."""
        from ..hub import load_pretrained, resolve_model

        folder = resolve_model(name_or_dir)
        needed = "the app needs a SAM 2 folder (hiera-hf convert --variant sam2.1_hiera_tiny ...) or a variant name"
        model = load_pretrained(Sam2VideoModel, folder, (Sam2Config.model_type,), needed)
        model = model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        processor_file = Path(folder) / "preprocessor_config.json"
        processor = Sam2ImageProcessor.from_pretrained(folder) if processor_file.is_file() else None
        return cls(model, processor)

    @property
    def device(self) -> torch.device:
        return next(self.video.parameters()).device


def _image_view(video: Sam2VideoModel) -> Sam2Model:
    """A `Sam2Model` whose modules and parameters are those of `video` (no weights copied or allocated)."""
    with torch.device("meta"):
        image = Sam2Model(video.config)
    for name, _ in list(image.named_children()):
        setattr(image, name, getattr(video, name))
    for name, _ in list(image.named_parameters(recurse=False)):
        setattr(image, name, getattr(video, name))
    return image.eval()


__all__ = ["Models"]
