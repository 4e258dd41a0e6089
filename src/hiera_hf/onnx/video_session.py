"""SAM 2 video tracking on ONNX Runtime, torch-free (onnxruntime, numpy, Pillow; PyAV for video files).

`Sam2OnnxVideoSession` is `hiera_hf.sam2.video_tracking.VideoSessionBase` (the frames, prompts, memory banks and
order of work of `Sam2VideoSession`, with the same memory selection of `hiera_hf.sam2.memory_bank`) over the graphs
of an `export-onnx` folder of a video model: `image_encoder`, `mask_decoder(_multimask)`, `memory_attention`,
`memory_encoder` and `mask_prompt`. What a step does between the networks is `hiera_hf.sam2.frame_arithmetic`'s,
the same functions the PyTorch session runs (the best of the multimask outputs by predicted IoU, "no object" masks
at -1024, small holes filled, bilinear resizes, the frame's result), here on numpy arrays; spatial memories are
rounded to bfloat16 (kept as 16-bit words: half the memory, as in PyTorch). Results hold numpy arrays.

Usage::

    from hiera_hf.onnx.video_session import Sam2OnnxVideoSession
    with Sam2OnnxVideoSession("sam2.1_tiny_onnx", "clip.mp4") as session:
        session.add_points(0, obj_id=1, points=[[210, 350]], labels=[1])
        for result in session.propagate():
            masks = result.masks  # (objects, height, width) bool
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..sam2.frame_arithmetic import (
    PREVIOUS_MASK_CLAMP,
    best_candidates,
    fill_absent,
    fill_holes,
    mask_prompt,
    resize,
    take_candidates,
)
from ..sam2.memory_bank import MemorySelection, StoredMemory, selected_memories
from ..sam2.prompts import NOT_A_POINT_LABEL, wants_multimask
from ..sam2.tracking_strategies import CandidateChoice
from ..sam2.video_tracking import ObjectTrack, VideoSessionBase
from .graphs import GRAPHS
from .processing import build_prompt
from .runtime import graph_path, load_session, read_json, run_session

VIDEO_GRAPHS = ("mask_decoder", "mask_decoder_multimask", "memory_attention", "memory_encoder", "mask_prompt")
CONFIG_FIELDS = (
    "image_size", "fill_hole_area", "non_overlap_masks", "num_maskmem", "memory_temporal_stride_for_eval",
    "max_cond_frames_in_attn", "max_obj_ptrs_in_encoder", "only_obj_ptrs_in_the_past_for_eval",
    "multimask_output_in_sam", "multimask_output_for_tracking", "multimask_min_pt_num", "multimask_max_pt_num",
    "pred_obj_scores",
)  # fmt: skip


class FrameFeatures(NamedTuple):
    """The image encoder's outputs for one frame, batch 1 (the graph's output names)."""

    high_res_features_0: np.ndarray
    high_res_features_1: np.ndarray
    vision_features: np.ndarray
    image_embeddings: np.ndarray
    vision_position_encoding: np.ndarray


class _Config:
    """The fields of an export's `config.json` the session reads, as attributes (a missing one raises)."""

    def __init__(self, fields: dict, folder: Path):
        missing = [name for name in CONFIG_FIELDS if name not in fields]
        if fields.get("model_type") != "hiera_hf_sam2" or missing:
            raise ValueError(
                f"{folder} is not an export of a SAM 2 video model (model_type={fields.get('model_type')!r}"
                + (f", config.json lacks {missing}" if missing else "")
                + ")"
            )
        self.__dict__.update({name: fields[name] for name in CONFIG_FIELDS})


def to_bfloat16_bits(array: np.ndarray) -> np.ndarray:
    """float32 -> the upper 16 bits of its bfloat16 rounding (round to nearest, ties to even, as torch's
    `.to(torch.bfloat16)`), as uint16."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 words -> float32 (exact)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


class Sam2OnnxVideoSession(VideoSessionBase):
    """Track objects through a video on ONNX Runtime, with the API of `Sam2VideoSession` (see
    `hiera_hf.sam2.video_tracking.VideoSessionBase`: `add_points`, `add_box`, `add_mask`, `propagate`,
    `clear_frame_prompts`, `remove_object`, `push_frame`, ...).

    Args:
        folder: an `export-onnx` folder of a SAM 2 video model.
        source: see `VideoSessionBase`.
        providers: ONNX Runtime execution providers (default CPU).
        quantized: use the int8 image encoder (`image_encoder_quantized.onnx`, from `--int8`).
        memory_arena: keep ONNX Runtime's CPU memory arenas (its default: fastest). Each graph's arena stays at its
            peak, and a frame's transients are large (the image encoder's activations; memory attention's frame x
            memory attention weights, a quarter of them at a time): `False` returns them after each run, for a lower
            peak memory at more time per frame (figures in benchmarks/README).
        fill_hole_area, non_overlap_masks, max_conditioning_frames, add_all_frames_to_correct_as_cond, progress,
            strategy: see `VideoSessionBase`.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        source=None,
        *,
        providers: list[str] | None = None,
        quantized: bool = False,
        memory_arena: bool = True,
        fill_hole_area: int | None = None,
        non_overlap_masks: bool | None = None,
        max_conditioning_frames: int | None = None,
        add_all_frames_to_correct_as_cond: bool = False,
        progress: bool = True,
        strategy="sam2",
    ):
        folder = Path(folder)
        self.config = _Config(read_json(folder, "config.json"), folder)
        processor = read_json(folder, "preprocessor_config.json")
        self.mean = np.asarray(processor["image_mean"], dtype=np.float32)[:, None, None]
        self.std = np.asarray(processor["image_std"], dtype=np.float32)[:, None, None]
        absent = [name for name in VIDEO_GRAPHS if not (folder / f"{name}.onnx").is_file()]
        if absent:
            raise ValueError(
                f"{folder} has no {', '.join(f'{name}.onnx' for name in absent)}: export a SAM 2 video model folder "
                "(every converted official checkpoint) with `hiera-hf export-onnx`"
            )
        self.encoder = load_session(
            graph_path(folder, "image_encoder", quantized), providers, GRAPHS["image_encoder"][0], memory_arena
        )
        self.graphs = {
            name: load_session(folder / f"{name}.onnx", providers, GRAPHS[name][0], memory_arena)
            for name in VIDEO_GRAPHS
        }
        self._array_kind = np.empty(0, np.float32)
        super().__init__(
            self.config,
            source,
            fill_hole_area=fill_hole_area,
            non_overlap_masks=non_overlap_masks,
            max_conditioning_frames=max_conditioning_frames,
            add_all_frames_to_correct_as_cond=add_all_frames_to_correct_as_cond,
            progress=progress,
            strategy=strategy,
        )

    def set_strategy(self, strategy) -> None:
        """See `VideoSessionBase.set_strategy`; a strategy that moves the object-presence threshold needs an export
        whose decoder takes it (`object_score_threshold`, since tracking strategies)."""
        previous = getattr(self, "strategy", None)
        super().set_strategy(strategy)
        decoder_inputs = {node.name for node in self.graphs["mask_decoder"].get_inputs()}
        if self.strategy.presence_threshold != 0.0 and "object_score_threshold" not in decoder_inputs:
            name, self.strategy = self.strategy.name, previous
            raise ValueError(
                "This export predates tracking strategies (its mask decoder has no object_score_threshold input): "
                f"export the model again with `hiera-hf export-onnx` to track with {name!r}"
            )

    def _run(self, graph: str, **inputs: np.ndarray) -> list[np.ndarray]:
        return run_session(self.graphs[graph], None, inputs)

    # The model's steps -------------------------------------------------------------------------------------------

    def _encode_frame(self, frame_idx: int) -> FrameFeatures:
        pixels = ((self._frame_pixels(frame_idx) - self.mean) / self.std)[None]
        return FrameFeatures(*self.encoder.run(list(FrameFeatures._fields), {"pixel_values": pixels}))

    def _predict(
        self,
        features: FrameFeatures,
        tracks: list[ObjectTrack],
        selections: list[MemorySelection] | None,
        points: tuple[np.ndarray, np.ndarray] | None = None,
        mask: np.ndarray | None = None,
        previous_masks: np.ndarray | None = None,
        encode_memory: bool = False,
        choice: CandidateChoice | None = None,
    ) -> list[StoredMemory]:
        count = len(tracks)
        if mask is not None:
            masks, scores, pointers = self._mask_prompt(features, mask)
        else:
            masks, scores, pointers = self._decode(features, tracks, selections, points, previous_masks, choice)
        maskmem = [None] * count
        if encode_memory:
            maskmem = self._memory(features, resize(masks, (self.image_size,) * 2), scores, points is not None)
        masks = fill_holes(masks, self._hole_area)
        return [
            StoredMemory(
                pred_masks=masks[index],
                pointer=pointers[index],
                object_score=scores[index],
                maskmem=maskmem[index],
            )
            for index in range(count)
        ]

    def _mask_prompt(self, features: FrameFeatures, mask: np.ndarray) -> tuple[np.ndarray, ...]:
        """A mask `(H, W)` at the video's size, taken as the output (see `frame_arithmetic.mask_prompt`)."""
        return tuple(
            self._run(
                "mask_prompt",
                vision_features=features.vision_features,
                high_res_features_0=features.high_res_features_0,
                high_res_features_1=features.high_res_features_1,
                input_masks=mask_prompt(mask, self.image_size),
            )
        )

    def _decode(
        self,
        features: FrameFeatures,
        tracks: list[ObjectTrack],
        selections: list[MemorySelection] | None,
        points: tuple[np.ndarray, np.ndarray] | None,
        previous_masks: np.ndarray | None,
        choice: CandidateChoice | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Memory attention (with `selections`) and the mask decoder: the best mask `(N, 1, 4h, 4w)` of each
        object (by predicted IoU, or the strategy's `choice`), its object-score logit `(N, 1)` and pointer `(N, C)`
        (Meta's `_forward_sam_heads`)."""
        count = len(tracks)
        embeddings = features.image_embeddings  # the embedding plus `no_mem_embed`: a frame without memory
        if selections is not None:
            embeddings = self._attend(features, tracks, selections)
        # Meta's prompt (of one object with clicks, or of every tracked object): the clicks in model pixels, box
        # corners first, or one "not a point" without clicks; then the padding point `build_prompt` appends.
        clicks = points if points is not None else (np.zeros((1, 2), np.float32), np.full(1, NOT_A_POINT_LABEL))
        coords, labels = build_prompt(*clicks, None, (1.0, 1.0))
        coords, labels = np.repeat(coords, count, axis=0), np.repeat(labels, count, axis=0)
        num_points = 0 if points is None else len(points[0])
        low_res = features.high_res_features_0.shape[-1]
        mask_input = np.zeros((count, 1, low_res, low_res), np.float32)
        if previous_masks is not None:
            mask_input = np.clip(previous_masks, -PREVIOUS_MASK_CLAMP, PREVIOUS_MASK_CLAMP)[None]
        multimask = wants_multimask(self.config, num_points, selections is not None)
        threshold = 0.0 if choice is None else choice.presence_threshold
        masks, iou_scores, scores, pointers = self._run(
            "mask_decoder_multimask" if multimask else "mask_decoder",
            image_embeddings=embeddings,
            high_res_features_0=features.high_res_features_0,
            high_res_features_1=features.high_res_features_1,
            point_coords=coords,
            point_labels=labels,
            mask_input=mask_input,
            has_mask_input=np.full(count, float(previous_masks is not None), np.float32),
            object_score_threshold=np.asarray(threshold, np.float32),
        )
        if self.config.pred_obj_scores:
            masks = fill_absent(masks, scores, threshold)
        if choice is None:
            best = best_candidates(iou_scores, multimask)
        else:
            best = choice(iou_scores, masks, scores, multimask)
        return take_candidates(masks, best)[:, None], scores, take_candidates(pointers, best)

    def _attend(
        self, features: FrameFeatures, tracks: list[ObjectTrack], selections: list[MemorySelection]
    ) -> np.ndarray:
        """The frame's embedding conditioned on the selected memories of the objects `(N, C, h, w)` (the selections
        share one layout)."""
        spatial, pointers = selected_memories([track.memory for track in tracks], selections)
        spatial = np.stack([np.stack(memories) for memories in spatial])
        selection = selections[0]
        if selection.pointer_frames:
            pointers = np.stack([np.stack(pointer) for pointer in pointers])
        else:  # no pointer: an empty (N, 0, C) input
            pointers = np.zeros((len(tracks), 0, features.vision_features.shape[1]), np.float32)
        (conditioned,) = self._run(
            "memory_attention",
            vision_features=features.vision_features,
            vision_position_encoding=features.vision_position_encoding,
            memory_features=from_bfloat16_bits(spatial),
            memory_temporal_positions=np.asarray(selection.temporal_positions, np.int64),
            object_pointers=pointers,
            pointer_frame_offsets=np.asarray(selection.pointer_offsets, np.int64),
            max_pointer_offset=np.asarray(selection.max_pointer_offset, np.int64),
        )
        return conditioned

    def _memory(self, features: FrameFeatures, high_res_masks: np.ndarray, scores: np.ndarray, from_points: bool):
        """Spatial memories (bfloat16 words) of full-resolution masks `(N, 1, S, S)` on the frame."""
        (maskmem, _) = self._run(
            "memory_encoder",
            vision_features=features.vision_features,
            mask_logits=high_res_masks,
            object_score_logits=scores,
            from_points=np.full(high_res_masks.shape[0], from_points),
        )
        return list(to_bfloat16_bits(maskmem))

    def _encode_memories(self, features: FrameFeatures, outputs: list[StoredMemory]) -> list:
        masks = resize(np.stack([output.pred_masks for output in outputs]), (self.image_size,) * 2)
        scores = np.stack([output.object_score for output in outputs])
        return self._memory(features, masks, scores, True)


__all__ = ["Sam2OnnxVideoSession", "from_bfloat16_bits", "to_bfloat16_bits"]
