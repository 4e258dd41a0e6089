"""A torch-free ONNX Runtime backend for folders written by `hiera-hf export-onnx` (onnxruntime, numpy, pillow).

- `OnnxHieraClassifier`: probabilities of a Hiera classifier.
- `Sam2OnnxImagePredictor`: set an image once, then predict masks from points, a box and/or a mask prompt, with
  the pre- and post-processing of `Sam2ImageProcessor` and the outputs of `Sam2Model`.

Video tracking is `hiera_hf.onnx.video_session.Sam2OnnxVideoSession`.

Usage::

    from hiera_hf.onnx.runtime import Sam2OnnxImagePredictor
    predictor = Sam2OnnxImagePredictor("sam2.1_tiny_onnx")
    predictor.set_image(PIL.Image.open("truck.jpg"))
    masks, scores, logits = predictor.predict(point_coords=[[500, 375]], point_labels=[1])
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..sam2.frame_arithmetic import resize
from ..sam2.prompts import check_box, check_clicks, check_finite, check_mask_logits
from .graphs import GRAPHS, HIERA_GRAPH, INSTALL_HINT
from .processing import build_prompt, preprocess


def require_onnxruntime():
    """The `onnxruntime` module, or an ImportError with the install hint."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from error
    return onnxruntime


def load_session(
    path: str | os.PathLike, providers: list[str] | None = None, expected_inputs=None, memory_arena: bool = True
):
    """An `onnxruntime.InferenceSession` of `path`; a missing, corrupt or truncated file, or one whose inputs are
    not `expected_inputs`, raises a ValueError naming it. `memory_arena=False` returns the memory of each run to the
    system instead of keeping ONNX Runtime's CPU arena at its peak (for graphs with large transient tensors)."""
    ort = require_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (export the model with `hiera-hf export-onnx` first)")
    try:
        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = memory_arena
        session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        raise ValueError(f"{path} is not a readable ONNX model (corrupt or truncated file?): {error}") from error
    names = [node.name for node in session.get_inputs()]
    # The exporter drops inputs a variant does not use (SAM 2.0's memory encoder ignores the object scores).
    if expected_inputs is not None and (not names or not set(names) <= set(expected_inputs)):
        raise ValueError(f"{path} has inputs {names}, expected some of {list(expected_inputs)}: not a hiera-hf export")
    return session


def run_session(session, outputs: list[str] | None, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """`session.run` on the `inputs` the graph has (see `load_session`)."""
    names = {node.name for node in session.get_inputs()}
    return session.run(outputs, {name: value for name, value in inputs.items() if name in names})


def read_json(folder: Path, name: str) -> dict:
    """The JSON object in `folder / name`; a missing file or anything but a JSON object raises, naming the file."""
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {name}: not a folder written by `hiera-hf export-onnx`")
    try:
        values = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(values).__name__}")
    return values


def graph_path(folder: Path, name: str, quantized: bool) -> Path:
    return folder / f"{name}_quantized.onnx" if quantized else folder / f"{name}.onnx"


class OnnxHieraClassifier:
    """A Hiera classifier exported to ONNX: `predict(pixel_values)` -> probabilities `(batch, num_labels)` (the
    graph's logits through a softmax). `pixel_values` are preprocessed as `HieraImageProcessor` does."""

    def __init__(self, folder: str | os.PathLike, providers: list[str] | None = None, quantized: bool = False):
        folder = Path(folder)
        self.config = read_json(folder, "config.json")
        self.session = load_session(graph_path(folder, HIERA_GRAPH, quantized), providers, ("pixel_values",))
        self.id2label = {int(k): v for k, v in self.config.get("id2label", {}).items()}

    def predict(self, pixel_values: np.ndarray) -> np.ndarray:
        """`pixel_values` `(batch, channels, [frames,] height, width)` finite floats, of the exported size."""
        pixel_values = check_finite(pixel_values, "pixel_values").astype(np.float32)
        expected = self.session.get_inputs()[0].shape  # the batch axis is named, the others are sizes
        if pixel_values.ndim != len(expected) or any(
            isinstance(size, int) and size != got for size, got in zip(expected, pixel_values.shape)
        ):
            shape = ", ".join(str(size) if isinstance(size, int) else "batch" for size in expected)
            raise ValueError(f"pixel_values must have shape ({shape}), got {pixel_values.shape}")
        logits = self.session.run(["logits"], {"pixel_values": pixel_values})[0]
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        return shifted / shifted.sum(-1, keepdims=True)


class Sam2OnnxImagePredictor:
    """SAM 2 image segmentation on ONNX Runtime: `set_image` encodes an image once, `predict` decodes prompts.

    `folder` is an `export-onnx` output; `quantized=True` uses `image_encoder_quantized.onnx` (`--int8`).
    """

    def __init__(self, folder: str | os.PathLike, providers: list[str] | None = None, quantized: bool = False):
        folder = Path(folder)
        self.config = read_json(folder, "config.json")
        if self.config.get("model_type") != "hiera_hf_sam2":
            raise ValueError(f"{folder} is not a SAM 2 export (model_type={self.config.get('model_type')!r})")
        processor = read_json(folder, "preprocessor_config.json")
        self.image_size = int(self.config["image_size"])
        self.mean, self.std = processor["image_mean"], processor["image_std"]
        self.encoder = load_session(
            graph_path(folder, "image_encoder", quantized), providers, GRAPHS["image_encoder"][0]
        )
        self.decoders = {
            multimask: load_session(folder / f"{name}.onnx", providers, GRAPHS[name][0])
            for multimask, name in ((False, "mask_decoder"), (True, "mask_decoder_multimask"))
        }
        self._features: dict[str, np.ndarray] | None = None
        self.original_size: tuple[int, int] | None = None

    def encode(self, image) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
        """The encoder's outputs (by name, batch 1) for one image and its original (height, width)."""
        pixel_values, original_size = preprocess(image, self.image_size, self.mean, self.std)
        names = [output.name for output in self.encoder.get_outputs()]
        outputs = self.encoder.run(names, {"pixel_values": pixel_values})
        return dict(zip(names, outputs)), original_size

    def set_image(self, image) -> None:
        """Encode `image` for `predict`: an image file's path or a PIL image (turned upright by its EXIF
        orientation, as `image_utils.open_image` reads files), or an `(H, W[, C])` array, uint8 / uint16 / float in
        [0, 1]."""
        self._features, self.original_size = self.encode(image)

    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt on the image of `set_image`.

        Args:
            point_coords: `(n, 2)` clicks (x, y) in original-image pixels, with `point_labels` `(n,)` (1 foreground,
                0 background).
            box: `(4,)` (x0, y0, x1, y1) in original-image pixels.
            mask_input: `(1, 256, 256)` low-resolution logits (a previous `low_res_logits` output).
            Prompts are checked as everywhere (`hiera_hf.sam2.prompts`): finite, inside the image, boxes with
            x0 < x1 and y0 < y1, labels 0 or 1, one label per point; a bad one raises a `ValueError` naming it.
            multimask_output: three masks, or one (with the stability fallback of the config).
            return_logits: return upsampled logits instead of boolean masks.
        Returns:
            masks `(M, H, W)` (bool, or float32 logits), IoU scores `(M,)`, low-resolution logits `(M, 256, 256)`.
        """
        if self._features is None:
            raise ValueError("Call set_image before predict")
        height, width = self.original_size
        points, labels = check_clicks(point_coords, point_labels, width, height, ("point_coords", "point_labels"))
        corners = None if box is None else check_box(box, width, height)
        if not len(points) and corners is None and mask_input is None:
            raise ValueError("Give point_coords (+ point_labels), box or mask_input")
        features = self._features
        low_res = features["high_res_features_0"].shape[-1]  # the decoder's mask size (4x the embedding grid)
        if mask_input is None:
            mask, has_mask = np.zeros((1, 1, low_res, low_res), np.float32), np.zeros(1, np.float32)
        else:
            mask, has_mask = check_mask_logits(mask_input, low_res)[None, None], np.ones(1, np.float32)
        coords, labels = build_prompt(
            points if len(points) else None, labels, corners, (self.image_size / width, self.image_size / height)
        )
        outputs = run_session(
            self.decoders[bool(multimask_output)],
            ["masks", "iou_scores"],
            {
                "image_embeddings": features["image_embeddings"],
                "high_res_features_0": features["high_res_features_0"],
                "high_res_features_1": features["high_res_features_1"],
                "point_coords": coords,
                "point_labels": labels,
                "mask_input": mask,
                "has_mask_input": has_mask,
                "object_score_threshold": np.asarray(0.0, np.float32),  # a video export's pointers (unused here)
            },
        )
        logits, iou_scores = outputs[0][0], outputs[1][0]
        upscaled = resize(logits, (height, width))
        return (upscaled if return_logits else upscaled > 0.0), iou_scores, logits


__all__ = [
    "OnnxHieraClassifier",
    "Sam2OnnxImagePredictor",
    "graph_path",
    "load_session",
    "read_json",
    "require_onnxruntime",
    "run_session",
]
