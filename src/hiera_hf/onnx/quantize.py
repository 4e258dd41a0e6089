"""int8 graphs with ONNX Runtime's own quantization tools: dynamic (int8 weights, activations quantized on the fly)
or static (activation ranges calibrated on real images, QDQ format)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..file_types import IMAGE_EXTENSIONS
from ..io_utils import atomic_write
from .processing import preprocess


class _ImageReader:
    """`onnxruntime.quantization.CalibrationDataReader` over preprocessed images (`pixel_values` arrays)."""

    def __init__(self, pixel_values: list[np.ndarray]):
        self._inputs = iter([{"pixel_values": values} for values in pixel_values])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._inputs, None)


def calibration_reader(folder: Path, config: dict, limit: int = 16) -> _ImageReader:
    """The calibration data of static int8 quantization: the first `limit` images of `folder`, each read
    (`image_utils.open_image`) and preprocessed for the SAM 2 model of `config` (its `config.json` values) right
    away, so that a bad folder is refused before anything is exported."""
    if config.get("model_type") != "hiera_hf_sam2":
        raise ValueError("static int8 calibration (--calibration) is available for SAM 2 image encoders only")
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)[:limit]
    if not paths:
        raise ValueError(f"calibration folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    size = int(config.get("image_size", 1024))
    return _ImageReader([preprocess(path, size, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)[0] for path in paths])


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
def quantize_graph(source: Path, target: Path, calibration: _ImageReader | None = None) -> Path:
    """Write an int8 version of the graph `source` to `target`: dynamic quantization of the weights of MatMul /
    Gemm nodes, or, with `calibration` images (`calibration_reader`), static QDQ quantization with activation
    ranges calibrated on them."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if calibration is None:
        return atomic_write(
            target,
            lambda path: quantize_dynamic(
                str(source), path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
            ),
        )
    return atomic_write(
        target,
        lambda path: quantize_static(
            str(source), path, calibration, quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm", "Conv"],
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
        ),
    )


__all__ = ["calibration_reader", "quantize_graph"]
