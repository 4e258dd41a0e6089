"""Export of Hiera and SAM 2 / 2.1 to ONNX (the torch side; the runtime in `hiera_hf.onnx.runtime` needs no torch).

A Hiera classifier or backbone becomes one graph, `model.onnx`, with a dynamic batch. A SAM 2 folder becomes the
graphs of its stateless steps (input names and shapes: `GRAPHS` and the docstrings of the wrappers below):

- `image_encoder.onnx`: pixels -> FPN features (the two high-resolution levels and the image embedding), the
  embedding plus `no_mem_embed` (what an image prompt is decoded against), the sine position encoding.
- `mask_decoder.onnx` / `mask_decoder_multimask.onnx`: prompt encoder + mask decoder (+ object pointers for a
  video model) with one or three output masks; points, objects and images dynamic.
- `memory_attention.onnx`: the memory bank (a variable number of memory frames and object pointers, with their
  temporal positions) assembled and attended to -> memory-conditioned features. Its cross-attention takes the
  queries in `CROSS_ATTENTION_QUERY_CHUNKS` chunks (ONNX Runtime materialises the attention weights).
- `memory_encoder.onnx`: image features + full-resolution mask logits -> memory features and their encoding.
- `mask_prompt.onnx`: a mask prompt on a video frame taken as the output (`Sam2VideoModel`'s mask-as-output step):
  low-resolution logits, object score and pointer.

The folder follows optimum's layout: the ONNX files beside `config.json`, `preprocessor_config.json` and a
`README.md` model card with an ONNX section. It is written into a hidden folder beside the target and renamed
into place, so a failed export leaves nothing behind. `--int8` adds `*_quantized.onnx` graphs made with ONNX
Runtime's quantization tools (dynamic, or static when calibration images are given).

Exporters (torch 2.14): the TorchScript-based `torch.onnx.export(..., dynamo=False)` for most graphs (the dynamo
exporter fails on the trunk with a dynamic batch); the dynamo exporter for memory attention, where tracing bakes the
example's count of memory keys into the split between rotated frame tokens and pointer tokens (a silent wrong
result for other counts), and for the mask prompt (the TorchScript exporter has no antialiased resize).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from ..io_utils import atomic_write, check_replaceable, staged_folder
from ..progress import library_output
from ..sam2 import modeling_sam2_video
from ..sam2.memory_tokens import memory_tokens
from ..sam2.position_encoding import sine_position_encoding
from ..sam2.prompts import PADDING_LABEL
from .graphs import GRAPHS, HIERA_GRAPH, INSTALL_HINT
from .runtime import require_onnxruntime

DEFAULT_OPSET = 18
MIN_OPSET = 18  # LayerNormalization (17) and the dynamo exporter's operators (18); older opsets are refused
MAX_OPSET = 20  # the newest the TorchScript exporter of torch 2.14 writes (`ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET`)
# What `export_onnx` writes: `overwrite` replaces a folder holding only these.
_EXPORT_FILES = re.compile(r"(config\.json|preprocessor_config\.json|README\.md|[a-z_]+(_quantized)?\.onnx)")
DYNAMO_GRAPHS = {"memory_attention", "mask_prompt"}  # symbolic token counts; the antialiased resize
HIERA_TYPE, SAM2_TYPE = "hiera_hf", "hiera_hf_sam2"
# Query chunks of the exported memory cross-attention: ONNX Runtime materialises its weights (at 1024 px, 4096
# queries x up to 7 x 4096 + 64 memory tokens per object), a quarter of them at a time (benchmarks/README).
CROSS_ATTENTION_QUERY_CHUNKS = 4



# ---------------------------------------------------------------------------------------------------------------
# Exportable wrappers: plain tensors in, plain tensors out
# ---------------------------------------------------------------------------------------------------------------


class _ModelWrapper(nn.Module):
    """An exportable module over `model` (a submodule, so its weights become the graph's). It takes the model's
    mode: the exporter restores the wrapper's mode afterwards, which would otherwise put the model in training."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)


class HieraExport(_ModelWrapper):
    """A Hiera classifier (-> `logits` `(B, num_labels)`) or backbone (-> one `(B, C, ...)` map per out feature)."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.is_backbone = hasattr(model, "out_features")
        # The encoder runs windowed blocks in cache-sized groups of mask units, a Python loop over a count that
        # depends on the batch: tracing would bake the example's batch in. One group, whatever the batch.
        for module in model.modules():
            if hasattr(module, "unit_group_tokens"):
                module.unit_group_tokens = sys.maxsize

    def output_names(self) -> tuple[str, ...]:
        if self.is_backbone:
            return tuple(f"feature_map_{name}" for name in self.model.out_features)
        return ("logits",)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(pixel_values)
        return tuple(outputs.feature_maps) if self.is_backbone else (outputs.logits,)


class ImageEncoderExport(_ModelWrapper):
    """`pixel_values` `(B, 3, S, S)` -> high-resolution features `(B, C/8, 4h, 4w)`, `(B, C/4, 2h, 2w)`, vision
    features `(B, C, h, w)` (the raw image embedding, for memory attention and the memory encoder), image embeddings
    `(B, C, h, w)` (plus `no_mem_embed`, for prompts without memory), position encoding `(1, C, h, w)`."""

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        vision = self.model.get_vision_features(pixel_values)
        high_res_0, high_res_1, features = vision.fpn_features
        embeddings = features + self.model.no_mem_embed.reshape(1, -1, 1, 1)
        return high_res_0, high_res_1, features, embeddings, vision.position_encoding


class MaskDecoderExport(_ModelWrapper):
    """Prompt encoder and mask decoder for `N` prompts on `B` images (`N` a multiple of `B`; a video passes one
    memory-conditioned embedding per object).

    Inputs: `image_embeddings` `(B, C, h, w)`, `high_res_features_0/1` `(B, ...)` (batch 1 for one shared frame),
    `point_coords` `(N, K, 2)` in model-input pixels and `point_labels` `(N, K)` int64 already in Meta's form (box
    corners first with labels 2 and 3, clicks, the appended "not a point" (0, 0) with label -1, padding -10),
    `mask_input` `(N, 1, 4h, 4w)` low-resolution logits used where `has_mask_input` `(N,)` is 1; for a video model
    `object_score_threshold` `()`, the object-score logit at or below which a pointer is the "no object" one (0 in
    SAM 2; a tracking strategy may move it, see `tracking_strategies`).
    Outputs: mask logits `(N, M, 4h, 4w)`, IoU scores `(N, M)`, object-score logits `(N, 1)`, and for a video model
    the object pointer of every output token `(N, T, C)` (T = M with multimask output, else 1)."""

    def __init__(self, model: nn.Module, multimask: bool):
        super().__init__(model)
        self.multimask = multimask
        self.has_pointers = hasattr(model, "obj_ptr_proj")

    def forward(
        self,
        image_embeddings: torch.Tensor,
        high_res_features_0: torch.Tensor,
        high_res_features_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        object_score_threshold: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        prompt_encoder = self.model.prompt_encoder
        sparse = prompt_encoder.embed_points(point_coords, point_labels)
        has_mask = has_mask_input.to(sparse.dtype).reshape(-1, 1, 1, 1)
        no_mask = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = has_mask * prompt_encoder.embed_masks(mask_input) + (1 - has_mask) * no_mask
        masks, iou_scores, tokens, scores = self.model.mask_decoder(
            image_embeddings,
            prompt_encoder.dense_positional_embedding(),
            sparse,
            dense,
            (high_res_features_0, high_res_features_1),
            self.multimask,
            sparse_mask=point_labels != PADDING_LABEL,
        )
        if not self.has_pointers:
            return masks, iou_scores, scores
        num_tokens = tokens.shape[1]
        pointers = self.model.object_pointer(
            tokens.flatten(0, 1), scores.repeat_interleave(num_tokens, dim=0), object_score_threshold
        )
        return masks, iou_scores, scores, pointers.unflatten(0, (-1, num_tokens))


class MemoryAttentionExport(_ModelWrapper):
    """Memory token assembly (`memory_tokens.memory_tokens`) and memory attention in one graph.

    Inputs: `vision_features` `(1 or N, C, h, w)` and `vision_position_encoding` `(1, C, h, w)` of the frame;
    `memory_features` `(N, F, memory_dim, h, w)` of `F` selected frames in attention order with
    `memory_temporal_positions` `(F,)` int64; `object_pointers` `(N, P, C)` with `pointer_frame_offsets` `(P,)`
    int64 and `max_pointer_offset` `()` int64 (see `memory_bank.MemorySelection`).
    Output: memory-conditioned features `(N, C, h, w)`."""

    def forward(
        self,
        vision_features: torch.Tensor,
        vision_position_encoding: torch.Tensor,
        memory_features: torch.Tensor,
        memory_temporal_positions: torch.Tensor,
        object_pointers: torch.Tensor,
        pointer_frame_offsets: torch.Tensor,
        max_pointer_offset: torch.Tensor,
    ) -> torch.Tensor:
        # Normalised here and passed with a normaliser of 1 (the same float32 division): the pointer encoding
        # checks a Python-int normaliser, which a graph input cannot be.
        offsets = pointer_frame_offsets.float() / max_pointer_offset
        tokens = memory_tokens(self.model, memory_features, memory_temporal_positions, object_pointers, offsets, 1)
        return self.model.memory_attention(
            vision_features,
            vision_position_encoding,
            tokens.memory,
            tokens.memory_position_encoding,
            tokens.num_pointer_tokens,
        )


class MaskPromptExport(_ModelWrapper):
    """A mask prompt on a video frame, taken as the output (what `Sam2VideoModel.track_step` does with
    `input_masks`): `vision_features` `(N, C, h, w)` (the raw image embedding) with `high_res_features_0/1`
    `(N, ...)` and `input_masks` `(N, 1, S, S)` (1 inside, 0 outside) -> low-resolution logits `(N, 1, 4h, 4w)`,
    object-score logits `(N, 1)` and object pointers `(N, C)`."""

    def forward(
        self,
        vision_features: torch.Tensor,
        high_res_features_0: torch.Tensor,
        high_res_features_1: torch.Tensor,
        input_masks: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heads = self.model.mask_as_output(vision_features, (high_res_features_0, high_res_features_1), input_masks)
        return heads.pred_masks, heads.object_score_logits, heads.object_pointers


class MemoryEncoderExport(_ModelWrapper):
    """`Sam2VideoModel.encode_memory`: `vision_features` `(1 or N, C, h, w)`, full-resolution `mask_logits`
    `(N, 1, S, S)`, `object_score_logits` `(N, 1)`, `from_points` `(N,)` bool -> memory features
    `(N, memory_dim, h, w)` and their sine position encoding `(1, memory_dim, h, w)`."""

    def forward(
        self,
        vision_features: torch.Tensor,
        mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        from_points: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.encode_memory(vision_features, mask_logits, object_score_logits, from_points)
        position = sine_position_encoding(*features.shape[-2:], features.shape[1], features.device)
        return features, position.to(features.dtype)


def _real_rotary(hidden_states: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """`apply_rotary` in real arithmetic (ONNX has no complex numbers): `rotation` `(L, D // 2, 2)` holds the
    cosines and sines of the angles."""
    pairs = hidden_states.float().unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    cos, sin = rotation[..., 0], rotation[..., 1]
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return rotated.flatten(-2).to(hidden_states.dtype)


@contextlib.contextmanager
def _exportable_memory_attention(model: nn.Module) -> Iterator[None]:
    """While exporting, memory attention rotates with `_real_rotary` and (cos, sin) pairs instead of complex
    numbers, and its cross-attention takes the queries in `CROSS_ATTENTION_QUERY_CHUNKS` chunks (ONNX Runtime
    materialises the attention weights); restored afterwards."""
    attention = model.memory_attention

    def rope(height: int, width: int, device: torch.device) -> torch.Tensor:
        angles = modeling_sam2_video.axial_rope_angles(height, width, attention.head_dim, attention.rope_theta, device)
        return torch.stack((angles.cos(), angles.sin()), dim=-1)

    original = modeling_sam2_video.apply_rotary
    modeling_sam2_video.apply_rotary = _real_rotary
    attention.rope = rope
    cross = [layer.cross_attn_image for layer in attention.layers]
    chunks = [module.query_chunks for module in cross]
    for module in cross:
        module.query_chunks = CROSS_ATTENTION_QUERY_CHUNKS
    try:
        yield
    finally:
        modeling_sam2_video.apply_rotary = original
        del attention.rope
        for module, count in zip(cross, chunks):
            module.query_chunks = count


# ---------------------------------------------------------------------------------------------------------------
# Example inputs
# ---------------------------------------------------------------------------------------------------------------


def _sam2_examples(config, video: bool) -> dict[str, tuple[torch.Tensor, ...]]:
    """Example inputs of every SAM 2 graph (of a video model with `video`), with sizes that are not 1 where the axis
    is dynamic."""
    size, hidden, memory_dim = config.image_size, config.fpn_hidden_size, config.memory_encoder_hidden_size
    grid = config.image_embedding_size
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    objects, frames, pointers = 2, 2, 3
    high_res = (randn(1, hidden // 8, 4 * grid, 4 * grid), randn(1, hidden // 4, 2 * grid, 2 * grid))
    points = torch.rand(objects, 3, 2, generator=generator) * size
    labels = torch.tensor([[1, 0, -1], [1, PADDING_LABEL, -1]])
    decoder = (
        randn(objects, hidden, grid, grid), *high_res, points, labels, randn(objects, 1, 4 * grid, 4 * grid),
        torch.tensor([0.0, 1.0]),
    )
    if video:  # the object pointers' threshold
        decoder += (torch.tensor(0.0),)
    return {
        "image_encoder": (randn(2, 3, size, size),),
        "mask_decoder": decoder,
        "mask_decoder_multimask": decoder,
        "memory_attention": (
            randn(1, hidden, grid, grid),
            sine_position_encoding(grid, grid, hidden, torch.device("cpu")),
            randn(objects, frames, memory_dim, grid, grid),
            torch.tensor([0, config.num_maskmem - 1]),
            randn(objects, pointers, hidden),
            torch.tensor([-1, 1, 2]),
            torch.tensor(config.max_obj_ptrs_in_encoder - 1),
        ),
        "mask_prompt": (
            randn(objects, hidden, grid, grid),
            *(features.expand(objects, -1, -1, -1) for features in high_res),
            (torch.rand(objects, 1, size, size, generator=generator) > 0.5).float(),
        ),
        "memory_encoder": (
            randn(1, hidden, grid, grid),
            randn(objects, 1, size, size),
            torch.tensor([[1.0], [-1.0]]),
            torch.tensor([True, False]),
        ),
    }


# ---------------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------------


def _require_onnx():
    """`onnx` (and onnxruntime, which the export checks with), or the install hint."""
    require_onnxruntime()
    try:
        import onnx
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from error
    return onnx


def _export_graph(
    module: nn.Module, inputs: tuple, path: Path, input_names, output_names, dynamic_axes, opset: int, dynamo: bool
):
    """Export one graph atomically and check it with the ONNX checker. `dynamo` picks torch's dynamo exporter
    (symbolic shapes: sizes computed from several dynamic axes stay dynamic, which tracing can bake in), else the
    TorchScript one."""
    onnx = _require_onnx()
    names = (*input_names, *output_names)
    axes = {name: axes for name, axes in dynamic_axes.items() if name in names}

    def write(temporary: str) -> None:
        with warnings.catch_warnings():
            # Tracing warns on every Python-level check of a shape it records as a constant; they are expected.
            warnings.simplefilter("ignore")
            if dynamo:
                dims: dict[str, torch.export.Dim] = {}
                shapes = {
                    name: {axis: dims.setdefault(dim, torch.export.Dim(dim)) for axis, dim in axes[name].items()}
                    if name in axes else None
                    for name in input_names
                }
                program = torch.onnx.export(
                    module, inputs, input_names=list(input_names), output_names=list(output_names),
                    dynamic_shapes=shapes, opset_version=opset, dynamo=True, verbose=False,
                )
                program.save(temporary)
            else:
                torch.onnx.export(
                    module, inputs, temporary, input_names=list(input_names), output_names=list(output_names),
                    dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True,
                )
        onnx.checker.check_model(temporary)

    try:
        atomic_write(path, write)
    except torch.onnx.errors.OnnxExporterError as error:  # its text goes on with the whole graph: the first line
        raise ValueError(f"Cannot export {path.name} with opset {opset}: {str(error).strip().splitlines()[0]}") from None


def _read_config(folder: Path) -> dict:
    """The `config.json` of a Hiera or SAM 2 folder (its weights are checked by our classes' `from_pretrained`)."""
    config = folder / "config.json"
    try:
        values = json.loads(config.read_text())
        model_type = values.get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{folder} is not a Hiera or SAM 2 folder: cannot read {config} ({error})") from error
    if model_type not in (HIERA_TYPE, SAM2_TYPE):
        raise ValueError(
            f"{folder} is not a hiera-hf Hiera or SAM 2 folder (config.json has model_type={model_type!r}, expected "
            f"{HIERA_TYPE!r} or {SAM2_TYPE!r}; convert Meta's checkpoints with `hiera-hf convert` first)"
        )
    return values


def _load_hiera(folder: Path, config: dict) -> tuple[nn.Module, tuple[int, ...]]:
    from .. import HieraBackbone, HieraForImageClassification, HieraForVideoClassification

    classes = {
        "HieraForImageClassification": HieraForImageClassification,
        "HieraForVideoClassification": HieraForVideoClassification,
        "HieraBackbone": HieraBackbone,
    }
    architectures = config.get("architectures") or []
    names = [name for name in architectures if name in classes]
    if not names:
        raise ValueError(
            f"{folder} holds a {', '.join(map(str, architectures)) or 'Hiera model'}; the ONNX export covers Hiera "
            f"classifiers and backbones ({', '.join(classes)})"
        )
    model = classes[names[0]].from_pretrained(folder).eval()
    return model, (2, model.config.num_channels, *model.config.image_size)


def _load_sam2(folder: Path) -> nn.Module:
    """The video model when the folder holds its weights (every converted official checkpoint), else the image
    model (then only the image graphs are exported)."""
    from ..sam2 import Sam2Model, Sam2VideoModel

    model, info = Sam2VideoModel.from_pretrained(folder, output_loading_info=True)
    if info["missing_keys"]:
        model = Sam2Model.from_pretrained(folder)
    if not model.config.use_high_res_features:
        raise ValueError("The ONNX export needs use_high_res_features=True (every official SAM 2 model)")
    return model.eval()


def _model_card(source: Path, graphs: Sequence[str], opset: int, quantized: Sequence[str]) -> str:
    card = (source / "README.md").read_text() if (source / "README.md").is_file() else ""
    lines = [
        "",
        "## ONNX",
        "",
        f"Exported with `hiera-hf export-onnx` (opset {opset}, float32); run it with `hiera_hf.onnx.runtime` "
        "(onnxruntime, numpy and pillow only) or any ONNX Runtime.",
        "",
        "| file | inputs | outputs |",
        "|---|---|---|",
    ]
    for name in graphs:
        inputs, outputs, _ = GRAPHS.get(name, (("pixel_values",), ("see the graph",), {}))
        lines.append(f"| `{name}.onnx` | {', '.join(inputs)} | {', '.join(outputs)} |")
    for name in quantized:
        lines.append(f"| `{name}_quantized.onnx` | int8 weights (ONNX Runtime quantization) of `{name}.onnx` | |")
    return card.rstrip() + "\n" + "\n".join(lines) + "\n"


def sam2_graph_names(model: nn.Module) -> list[str]:
    """The graphs of a SAM 2 model: the image graphs, plus the video graphs for a `Sam2VideoModel`."""
    names = ["image_encoder", "mask_decoder", "mask_decoder_multimask"]
    video = ["memory_attention", "memory_encoder", "mask_prompt"]
    return names + video if hasattr(model, "memory_attention") else names


def export_sam2_graphs(model: nn.Module, folder: Path, names: Sequence[str], opset: int = DEFAULT_OPSET) -> None:
    """Write the graphs `names` (see `sam2_graph_names`) of the SAM 2 `model` into `folder` as `NAME.onnx`."""
    video = hasattr(model, "memory_attention")
    unknown = set(names) - set(sam2_graph_names(model))
    if unknown:
        raise ValueError(f"Unknown graphs {sorted(unknown)} for a {type(model).__name__}")
    modules = {
        "image_encoder": lambda: ImageEncoderExport(model),
        "mask_decoder": lambda: MaskDecoderExport(model, multimask=False),
        "mask_decoder_multimask": lambda: MaskDecoderExport(model, multimask=True),
        "memory_attention": lambda: MemoryAttentionExport(model),
        "memory_encoder": lambda: MemoryEncoderExport(model),
        "mask_prompt": lambda: MaskPromptExport(model),
    }
    examples = _sam2_examples(model.config, video)
    with torch.no_grad(), _exportable_memory_attention(model) if video else contextlib.nullcontext():
        for name in names:
            inputs, outputs, axes = GRAPHS[name]
            if name.startswith("mask_decoder") and not video:
                inputs, outputs = inputs[:-1], outputs[:-1]  # no object pointers without the video model
            path = folder / f"{name}.onnx"
            _export_graph(modules[name](), examples[name], path, inputs, outputs, axes, opset, name in DYNAMO_GRAPHS)


def export_onnx(
    model: str | os.PathLike,
    output: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    int8: bool = False,
    calibration: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Export the Hiera or SAM 2 folder (or official variant name) `model` to the ONNX folder `output`.

    `opset` must be within `MIN_OPSET`..`MAX_OPSET`. `int8` adds `*_quantized.onnx` graphs (the image encoder, or
    Hiera's `model`): dynamic quantization, or static quantization calibrated on the images of the folder
    `calibration` (SAM 2 only; read and checked before anything is exported). `output` must be missing or empty,
    or with `overwrite` a folder an earlier export wrote; it appears complete or not at all. Returns its path.
    """
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"opset must be an int in {MIN_OPSET}..{MAX_OPSET} (LayerNormalization and the dynamo exporter need "
            f"{MIN_OPSET}; torch's TorchScript exporter writes up to {MAX_OPSET}), got {opset}"
        )
    if calibration is not None and not int8:
        raise ValueError("calibration images are used by --int8 only")
    if calibration is not None and not Path(calibration).is_dir():
        raise ValueError(f"calibration must be a folder of images, got {calibration}")
    target = Path(output)
    empty = target.is_dir() and not target.is_symlink() and not any(target.iterdir())
    check_replaceable(target, overwrite or empty, is_onnx_export)
    _require_onnx()
    from ..hub import resolve_model

    source = Path(resolve_model(model, progress=progress))
    source_config = _read_config(source)
    model_type = source_config["model_type"]
    reader = None
    if calibration is not None:
        from .quantize import calibration_reader

        reader = calibration_reader(Path(calibration), source_config)
    with library_output(bars=progress):  # transformers' loading bar
        loaded = _load_hiera(source, source_config) if model_type == HIERA_TYPE else _load_sam2(source)
    if model_type == HIERA_TYPE:
        hiera, shape = loaded
        wrapper = HieraExport(hiera)
        axes = {"pixel_values": {0: "batch"}, **{name: {0: "batch"} for name in wrapper.output_names()}}
        config, example = hiera.config, (torch.randn(shape),)

        def write_graphs(staging: Path) -> None:
            with torch.no_grad():
                path = staging / f"{HIERA_GRAPH}.onnx"
                _export_graph(wrapper, example, path, ("pixel_values",), wrapper.output_names(), axes, opset, False)

        names = [HIERA_GRAPH]
    else:
        sam = loaded
        config, names = sam.config, sam2_graph_names(sam)

        def write_graphs(staging: Path) -> None:
            export_sam2_graphs(sam, staging, names, opset)

    quantized = [names[0]] if int8 else []

    def fill(staging: Path) -> None:
        write_graphs(staging)
        for name in quantized:
            from .quantize import quantize_graph

            quantize_graph(staging / f"{name}.onnx", staging / f"{name}_quantized.onnx", reader)
        config.save_pretrained(staging)
        processor = source / "preprocessor_config.json"
        if processor.is_file():
            atomic_write(staging / processor.name, lambda path: shutil.copyfile(processor, path))
        elif model_type == SAM2_TYPE:
            from ..sam2 import Sam2ImageProcessor

            size = config.image_size
            Sam2ImageProcessor(size={"height": size, "width": size}).save_pretrained(staging)
        card = _model_card(source, names, opset, quantized)
        atomic_write(staging / "README.md", lambda path: Path(path).write_text(card))

    with staged_folder(target, overwrite or empty, is_onnx_export) as staging:
        fill(staging)
    return target


def is_onnx_export(folder: Path) -> bool:
    """Whether `folder` holds only files `export_onnx` writes (so that `overwrite` loses nothing else)."""
    return all(entry.is_file() and _EXPORT_FILES.fullmatch(entry.name) for entry in folder.iterdir())


__all__ = ["DEFAULT_OPSET", "GRAPHS", "MAX_OPSET", "MIN_OPSET", "export_onnx", "is_onnx_export"]
