"""SAM 2 video tracking session on PyTorch: `video_tracking.VideoSessionBase` (frames, prompts, memory banks, the
order of the work, as Meta's `SAM2VideoPredictor` of sam2 1.1.0) with the steps of a stateless `Sam2VideoModel`
(`track_step`, `encode_memory`) and the memory tokens of `memory_tokens.gather_memory`.

Like Meta's, spatial memories are kept in bfloat16, object pointers and masks in float32, and `non_overlap_masks`
applies to the returned masks only, not to what enters the memory. `fill_hole_area` is applied on CPU too (Meta
needs its CUDA extension and skips it with a warning): background regions (8-connected, logits <= 0) of at most
that many low-resolution pixels get logit 0.1, as Meta intends (`frame_arithmetic.fill_holes`, on the device).
"""

from __future__ import annotations

import numpy as np
import torch

from ..lora import base_model
from .frame_arithmetic import PREVIOUS_MASK_CLAMP, fill_holes, mask_prompt, resize
from .memory_bank import MemorySelection, StoredMemory
from .memory_tokens import MemoryTokens, gather_memory
from .modeling_sam2_video import Sam2VideoFrameOutput, Sam2VideoModel
from .processing_sam2 import normalize
from .video_tracking import ObjectTrack, Sam2VideoFrameResult, VideoSessionBase


class Sam2VideoSession(VideoSessionBase):
    """Track objects through a video with a `Sam2VideoModel` (see `video_tracking.VideoSessionBase` for the
    prompts, propagation and memory API).

    Args:
        model: the video model (eval mode is set), or a `peft.PeftModel` of one (see `hiera_hf.lora`).
        source: a video file (PyAV), a folder of JPEG/PNG frames, a list of PIL images / `(H, W, 3)` arrays, a
            `(T, H, W, 3)` array, a `VideoFrames`; or `None` for an open stream fed with `push_frame`.
        offload_memory_to_cpu: keep the memory bank (spatial memories and mask logits) on the CPU when the model
            is on an accelerator, moving what a frame attends to onto the device for it (Meta's
            `offload_state_to_cpu`). Object pointers and scores, a few KB per frame, stay on the device. The
            copies to the host make each frame wait for the device once it is done.
        dtype: compute dtype: `torch.float32`, or `torch.bfloat16` / `torch.float16` run under autocast on the
            model's device (CPU autocast runs both; float16 pays on GPUs); default the model's parameters'. Spatial
            memories are stored in bfloat16 whatever the dtype, as Meta's predictor stores them. Over float32
            weights autocast casts every weight again on each frame; a model loaded in the low precision
            (`from_pretrained(..., dtype=torch.bfloat16)`) skips that for the same accuracy (benchmarks/README).
        read_ahead: read the next frame in a thread while the device works (default: when the model is not on the
            CPU); see `VideoSessionBase`.
        fill_hole_area, non_overlap_masks, max_conditioning_frames, add_all_frames_to_correct_as_cond, progress,
            strategy: see `VideoSessionBase`.

    On an accelerator a tracked frame never waits for the device (unless the memory is offloaded, or a strategy
    reads scores back: SAMURAI waits once per frame): frames and memories go over in non-blocking
    copies, holes are filled on the device, and nothing is read back, so the host prepares the next step while the
    device computes (tests/test_device_placement.py counts the waits on a fake CUDA device).

    Masks and scores of the results are torch tensors on the model's device (`.cpu()` before `.numpy()`). Frames
    always live on the CPU (as with Meta's `offload_video_to_cpu=True`, without holding the decoded video), so there
    is no such option here; on the device are the model, the features of the frame being processed and of prompted
    frames until propagation encodes their memories, and the memory bank unless `offload_memory_to_cpu`.
    """

    def __init__(
        self,
        model: Sam2VideoModel,
        source=None,
        *,
        offload_memory_to_cpu: bool = False,
        dtype: torch.dtype | None = None,
        fill_hole_area: int | None = None,
        non_overlap_masks: bool | None = None,
        max_conditioning_frames: int | None = None,
        add_all_frames_to_correct_as_cond: bool = False,
        read_ahead: bool | None = None,
        progress: bool = True,
        strategy="sam2",
    ):
        model = base_model(model)  # a model with LoRA adapters tracks with its adapters
        if not isinstance(model, Sam2VideoModel):
            raise TypeError(f"model must be a Sam2VideoModel, got {type(model).__name__}")
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.dtype = dtype or next(model.parameters()).dtype
        if self.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {self.dtype}")
        self.storage_device = torch.device("cpu") if offload_memory_to_cpu else self.device
        self._array_kind = torch.empty(0, device=self.device)
        super().__init__(
            model.config,
            source,
            fill_hole_area=fill_hole_area,
            non_overlap_masks=non_overlap_masks,
            max_conditioning_frames=max_conditioning_frames,
            add_all_frames_to_correct_as_cond=add_all_frames_to_correct_as_cond,
            read_ahead=self.device.type != "cpu" if read_ahead is None else read_ahead,
            progress=progress,
            strategy=strategy,
        )

    def _no_grad(self):
        return torch.inference_mode()

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    # The model's steps -------------------------------------------------------------------------------------------

    def _encode_frame(self, frame_idx: int) -> tuple:
        """(FPN features, position encoding) of a frame, batch 1, preprocessed as Meta's video loader does."""
        # Copies from the host are non-blocking: the data is staged at once, and the host does not wait for the
        # device's queue, so a frame is read and prepared while the device still works on the previous one.
        pixels = normalize(torch.from_numpy(self._frame_pixels(frame_idx)))[None].to(self.device, non_blocking=True)
        with self._autocast():
            vision = self.model.get_vision_features(pixels)
        return tuple(vision.fpn_features), vision.position_encoding

    def _predict(
        self,
        features: tuple,
        tracks: list[ObjectTrack],
        selections: list[MemorySelection] | None,
        points: tuple[np.ndarray, np.ndarray] | None = None,
        mask: np.ndarray | None = None,
        previous_masks: torch.Tensor | None = None,
        encode_memory: bool = False,
        choice=None,
    ) -> list[StoredMemory]:
        fpn, position = features
        prompts: dict = {"run_memory_encoder": encode_memory, "candidate_choice": choice}
        if selections is not None:
            tokens = self._memory_tokens(tracks, selections)
            prompts.update(
                memory=tokens.memory,
                memory_position_encoding=tokens.memory_position_encoding,
                num_pointer_tokens=tokens.num_pointer_tokens,
            )
        if mask is not None:
            prompts["input_masks"] = mask_prompt(self._to_device(torch.from_numpy(mask)), self.image_size)
        if points is not None:
            coords, labels = (torch.from_numpy(array)[None].to(self.device, non_blocking=True) for array in points)
            prompts.update(input_points=coords, input_labels=labels)
            if previous_masks is not None:
                previous = self._to_device(previous_masks[None])
                prompts["prompt_masks"] = previous.clamp(-PREVIOUS_MASK_CLAMP, PREVIOUS_MASK_CLAMP)
        with self._autocast():
            output = self.model.track_step(fpn, position, **prompts)
        masks = fill_holes(output.pred_masks.float(), self._hole_area)
        return [self._store(output, masks, index) for index in range(len(tracks))]

    def _memory_tokens(self, tracks: list[ObjectTrack], selections: list[MemorySelection]) -> MemoryTokens:
        """The memory tokens of objects whose selections share one layout, as one batch."""
        return gather_memory(self.model, [t.memory for t in tracks], selections, self.device, self.dtype)

    def _store(self, output: Sam2VideoFrameOutput, masks: torch.Tensor, index: int) -> StoredMemory:
        """Object `index` of a model output as kept by the session, with its mask from `masks` `(N, 1, h, w)` (the
        output's, holes filled)."""
        maskmem = output.maskmem_features
        return StoredMemory(
            pred_masks=masks[index].to(self.storage_device),
            pointer=output.object_pointers[index].float(),
            object_score=output.object_score_logits[index].float(),
            maskmem=None if maskmem is None else maskmem[index].to(torch.bfloat16).to(self.storage_device),
        )

    def _encode_memories(self, features: tuple, outputs: list[StoredMemory]) -> list[torch.Tensor]:
        fpn, _ = features
        size = self.image_size
        masks = resize(self._to_device(torch.stack([o.pred_masks for o in outputs])), (size, size))
        scores = torch.stack([o.object_score for o in outputs]).to(self.device)
        with self._autocast():
            embedding = fpn[-1].expand(len(outputs), -1, -1, -1)
            maskmem = self.model.encode_memory(embedding, masks, scores, from_points=True)
        return [features.to(torch.bfloat16).to(self.storage_device) for features in maskmem]

    def _to_device(self, array: torch.Tensor) -> torch.Tensor:
        return array.to(self.device, non_blocking=True)


__all__ = ["Sam2VideoFrameResult", "Sam2VideoSession"]
