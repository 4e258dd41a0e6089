"""int8 graphs with ONNX Runtime's own quantization tools: dynamic (int8 weights, activations quantized on the fly)
or static (activation ranges calibrated on real images, QDQ format)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..io_utils import atomic_write
from .processing import preprocess

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class _ImageReader:
    """`onnxruntime.quantization.CalibrationDataReader` over the images of a folder, preprocessed for SAM 2."""

    def __init__(self, folder: Path, size: int, mean, std, limit: int = 16):
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not paths:
            raise ValueError(f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self._inputs = iter(
            [{"pixel_values": preprocess(path, size, mean, std)[0]} for path in paths]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._inputs, None)


@contextlib.contextmanager
def _without_pre_processing_advice() -> Iterator[None]:
    """ONNX Runtime's quantizers log (root logger, every call) advice to run its `quant_pre_process` first. On our
    image encoder it gives nothing (2026-12-02: symbolic shape inference fails on the graph's `If` nodes; without
    it, the int8 encoder is as fast and within 0.005 of the same relative error), so the advice is dropped."""

    def advice(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing before quantization")

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


@_without_pre_processing_advice()
def quantize_graph(source: Path, target: Path, config, calibration: str | os.PathLike | None = None) -> Path:
    """Write an int8 version of the graph `source` to `target`: dynamic quantization of the weights of MatMul /
    Gemm nodes, or, with a `calibration` folder of images (SAM 2 image encoders only), static QDQ quantization with
    activation ranges calibrated on them."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if calibration is None:
        return atomic_write(
            target,
            lambda path: quantize_dynamic(
                str(source), path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
            ),
        )
    if getattr(config, "model_type", None) != "hiera_hf_sam2":
        raise ValueError("static int8 calibration (--calibration) is available for SAM 2 image encoders only")
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    reader = _ImageReader(Path(calibration), config.image_size, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    return atomic_write(
        target,
        lambda path: quantize_static(
            str(source), path, reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm", "Conv"],
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
        ),
    )


__all__ = ["quantize_graph"]
