"""SAM 2 video tracking session: lazy frames, per-object prompts and a bounded store of memories around a stateless
`Sam2VideoModel`. Which stored memories a frame attends to and their tokens come from `memory_bank`; each frame's
step is `Sam2VideoModel.track_step`.

It reproduces Meta's `SAM2VideoPredictor` (the per-object version of sam2 1.1.0) frame by frame:

- prompts (clicks, a box, a mask) on a frame give an output right away; their memories are encoded when
  propagation starts, with the masks of all objects of the frame in one batch (Meta's "consolidation");
- a prompt on a frame the object was tracked on is a correction: the frame is predicted from the object's memory
  with the clicks and its previous mask logits (clamped to +-32);
- propagation runs every tracked object of a frame through memory attention, the mask decoder and the memory
  encoder as one batch (objects whose memories differ in layout, e.g. prompted on different frames, form separate
  batches); frames prompted for an object return the stored prompt output for that object;
- spatial memories are kept in bfloat16 like Meta's, object pointers and masks in float32.

Differences from Meta, by design:

- Memory is bounded. Per object the session keeps the conditioning (prompted) frames, and, around the last frame
  processed and the start frame of the last propagation, the spatial memories and low-resolution masks of the
  `num_maskmem` nearest frames and the pointers of the `max_obj_ptrs_in_encoder - 1` nearest ones. A propagation
  that starts far from both (e.g. again from the middle of an already tracked video) therefore begins from the
  conditioning frames, where Meta would reuse outputs it stored from an earlier pass; so does a correction click
  on such a frame (no previous mask is fed back).
- `fill_hole_area` is applied on CPU too (Meta needs its CUDA extension and skips it with a warning): background
  regions (8-connected, logits <= 0) of at most that many low-resolution pixels get logit 0.1, as Meta intends.
- An open stream (`source=None`, frames given with `push_frame`) has no known length: object-pointer distances are
  normalised by `max_obj_ptrs_in_encoder - 1` (Meta uses `min(num_frames, max_obj_ptrs_in_encoder) - 1`).
- Unknown object ids raise instead of being created (Meta creates one on `clear_all_prompts_in_frame`).

Like Meta, `non_overlap_masks` applies to the returned masks only, not to what enters the memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..image_utils import to_rgb_array
from ..video_io import VideoFrames, open_video
from .memory_bank import MemoryRules, MemorySelection, MemoryTokens, ObjectMemory, StoredMemory, gather_memory
from .modeling_sam2_video import NO_OBJECT_SCORE, Sam2VideoFrameOutput, Sam2VideoModel
from .processing_sam2 import clean_mask_logits, normalize, resize_video_frame
from .prompts import check_box, check_clicks, check_mask

PREVIOUS_MASK_CLAMP = 32.0  # previous mask logits fed back with correction clicks are clamped to +-32 (Meta)
HOLE_LOGIT = 0.1  # logit given to filled holes (Meta)


@dataclass
class Sam2VideoFrameResult:
    """The masks of all objects on one frame.

    Attributes:
        frame_idx: index of the frame in the video.
        object_ids: the objects, in the order of the first dimension below.
        mask_logits: `(num_objects, height, width)` float32 logits at the video's resolution (`-1024` for objects
            predicted absent or without output on this frame), on the model's device (`.cpu()` before `.numpy()`).
        object_score_logits: `(num_objects,)` logits that each object is visible (`-1024` without output).
    """

    frame_idx: int
    object_ids: list[int]
    mask_logits: torch.Tensor
    object_score_logits: torch.Tensor

    @property
    def masks(self) -> torch.Tensor:
        """`(num_objects, height, width)` bool masks (`mask_logits > 0`)."""
        return self.mask_logits > 0


@dataclass
class _TrackedSpan:
    """Frames `first..last` (inclusive) were tracked by one propagation pass in one direction."""

    first: int
    last: int
    reverse: bool


@dataclass
class _ObjectState:
    """One object's prompts, tracked spans and memory bank."""

    obj_id: int
    points: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # frame -> (K, 2), (K,)
    mask_frames: set[int] = field(default_factory=set)
    memory: ObjectMemory = field(default_factory=ObjectMemory)
    pending: dict[int, tuple[bool, StoredMemory]] = field(default_factory=dict)  # prompted, memory not yet encoded
    tracked: list[_TrackedSpan] = field(default_factory=list)

    def tracked_reverse(self, frame_idx: int) -> bool | None:
        """Direction of the latest pass that tracked `frame_idx` (`None` if none did)."""
        for span in reversed(self.tracked):
            if span.first <= frame_idx <= span.last:
                return span.reverse
        return None

    def mark_tracked(self, frame_idx: int, reverse: bool) -> None:
        last = self.tracked[-1] if self.tracked else None
        if last is not None and last.reverse == reverse and frame_idx in (last.first - 1, last.last + 1):
            last.first, last.last = min(last.first, frame_idx), max(last.last, frame_idx)
        else:
            self.tracked.append(_TrackedSpan(frame_idx, frame_idx, reverse))

    def untrack(self, frame_idx: int) -> None:
        spans = []
        for span in self.tracked:
            if span.first <= frame_idx <= span.last:
                if span.first < frame_idx:
                    spans.append(_TrackedSpan(span.first, frame_idx - 1, span.reverse))
                if frame_idx < span.last:
                    spans.append(_TrackedSpan(frame_idx + 1, span.last, span.reverse))
            else:
                spans.append(span)
        self.tracked = spans

    def previous_output(self, frame_idx: int, is_conditioning: bool) -> StoredMemory | None:
        """The object's latest output on a frame (Meta's lookup: prompt output, conditioning, tracked)."""
        pending = self.pending.get(frame_idx)
        if pending is not None and pending[0] == is_conditioning:
            return pending[1]
        return self.memory.get(frame_idx)


def apply_non_overlap(mask_logits: torch.Tensor) -> torch.Tensor:
    """Keep each pixel only for the object with the highest logit; the others are capped at -10 (Meta's
    `_apply_non_overlapping_constraints`). `mask_logits` `(N, ...)`."""
    if mask_logits.shape[0] < 2:
        return mask_logits
    winner = mask_logits.argmax(dim=0, keepdim=True)
    objects = torch.arange(mask_logits.shape[0], device=mask_logits.device).reshape(-1, *[1] * (mask_logits.ndim - 1))
    return torch.where(winner == objects, mask_logits, mask_logits.clamp(max=-10.0))


class Sam2VideoSession:
    """Track objects through a video with a `Sam2VideoModel`.

    Args:
        model: the video model (eval mode is set).
        source: a video file (PyAV), a folder of JPEG/PNG frames, a list of PIL images / `(H, W, 3)` arrays, a
            `(T, H, W, 3)` array, a `VideoFrames`; or `None` for an open stream fed with `push_frame`.
        offload_memory_to_cpu: keep the memory bank (spatial memories and mask logits) on the CPU when the model
            is on an accelerator, moving what a frame attends to onto the device for it (Meta's
            `offload_state_to_cpu`). Object pointers and scores, a few KB per frame, stay on the device.
        dtype: compute dtype: `torch.float32`, or `torch.bfloat16` / `torch.float16` run under autocast on the
            model's device (CPU autocast runs both; float16 pays on GPUs); default the model's parameters'. Spatial
            memories are stored in bfloat16 whatever the dtype, as Meta's predictor stores them.
        fill_hole_area: fill background holes of at most this many low-resolution pixels (default: the config's).
        non_overlap_masks: make the returned masks disjoint (default: the config's).
        max_conditioning_frames: attend to at most this many prompted frames per object, the closest ones (Meta's
            `max_cond_frames_in_attn`, at least 2; default: the config's, -1 = all).
        add_all_frames_to_correct_as_cond: keep corrected frames as conditioning frames. Meta's default (False)
            keeps them as ordinary memories that the next propagation through them overwrites (facebookresearch/sam2
            #719, #731); set True to make corrections stick.
        progress: show a progress bar while propagating.

    Frames are decoded when needed and only the frame being processed is kept (with the image features of
    frames that have prompts not yet propagated). Results are yielded, never stored. Frames therefore always live
    on the CPU (as with Meta's `offload_video_to_cpu=True`, without holding the decoded video), so there is no
    such option here; on the device are the model, the features of the frame being processed and of prompted
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
        progress: bool = True,
    ):
        if not isinstance(model, Sam2VideoModel):
            raise TypeError(f"model must be a Sam2VideoModel, got {type(model).__name__}")
        config = model.config
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.dtype = dtype or next(model.parameters()).dtype
        if self.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {self.dtype}")
        self.storage_device = torch.device("cpu") if offload_memory_to_cpu else self.device
        self.fill_hole_area = config.fill_hole_area if fill_hole_area is None else int(fill_hole_area)
        self.non_overlap_masks = config.non_overlap_masks if non_overlap_masks is None else bool(non_overlap_masks)
        if max_conditioning_frames is not None:
            max_conditioning_frames = int(max_conditioning_frames)
        self.memory_rules = MemoryRules.from_config(config, max_conditioning_frames=max_conditioning_frames)
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.progress = progress

        self._video: VideoFrames | None = None
        self._held: dict[int, np.ndarray] = {}  # stream frames not yet tracked, and the last one pushed
        self._pushed = 0
        self.video_height: int | None = None
        self.video_width: int | None = None
        if source is not None:
            self._video = _open(source)
            self.video_height, self.video_width = self._video[0].shape[:2]
        self._objects: dict[int, _ObjectState] = {}
        self._features: dict[int, tuple[tuple[torch.Tensor, ...], torch.Tensor]] = {}
        self._anchor: int | None = None  # start frame of the last propagation
        self._tracked_upto: int | None = None  # last frame tracked in a stream

    # Frames ----------------------------------------------------------------------------------------------------

    @property
    def num_frames(self) -> int | None:
        """Number of frames of the video; `None` for a stream."""
        return None if self._video is None else len(self._video)

    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    def push_frame(self, frame) -> int:
        """Append a frame (PIL image or `(H, W, 3)` array) to an open stream; returns its index."""
        if self._video is not None:
            raise ValueError("push_frame is for sessions opened on a stream (source=None)")
        array = to_rgb_array(frame)
        if self.video_height is None:
            self.video_height, self.video_width = array.shape[:2]
        elif array.shape[:2] != (self.video_height, self.video_width):
            raise ValueError(
                f"Stream frames must all be {self.video_height}x{self.video_width}, got {array.shape[0]}x"
                f"{array.shape[1]}"
            )
        if self._tracked_upto is not None:  # tracked frames are dropped once a newer one arrives
            self._held = {t: held for t, held in self._held.items() if t > self._tracked_upto}
        index = self._pushed
        self._held[index] = array
        self._pushed += 1
        return index

    def _check_frame(self, frame_idx: int) -> int:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise TypeError(f"Frame indices must be integers, got {type(frame_idx).__name__}")
        frame_idx = int(frame_idx)
        if self._video is not None:
            if not 0 <= frame_idx < len(self._video):
                raise ValueError(f"Frame index {frame_idx} is out of range for a video of {len(self._video)} frames")
        elif not 0 <= frame_idx < self._pushed:
            raise ValueError(f"Frame {frame_idx} has not been pushed yet ({self._pushed} frames pushed so far)")
        elif frame_idx not in self._held:
            raise ValueError(
                f"Frame {frame_idx} of the stream is no longer held; prompt frames not yet tracked or the last one "
                f"pushed ({self._pushed - 1})"
            )
        return frame_idx

    @property
    def fps(self) -> float | None:
        """Frame rate of the video when known."""
        return None if self._video is None else self._video.fps

    def frame(self, frame_idx: int) -> np.ndarray:
        """The RGB `uint8` frame `(H, W, 3)` (decoded again from a file or folder)."""
        frame_idx = self._check_frame(frame_idx)
        return self._held[frame_idx] if self._video is None else self._video[frame_idx]

    def _pixels(self, frame_idx: int) -> torch.Tensor:
        """Model input `(1, 3, S, S)` of a frame, preprocessed as Meta's video loader does (`resize_video_frame`)."""
        size = self.model.config.image_size
        return normalize(resize_video_frame(self.frame(frame_idx), (size, size)))[None].to(self.device)

    def _frame_features(self, frame_idx: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """FPN features (batch 1) and position encoding of a frame, computed once and cached while needed."""
        if frame_idx not in self._features:
            with self._autocast():
                vision = self.model.get_vision_features(self._pixels(frame_idx))
            keep = {t for state in self._objects.values() for t in state.pending}
            self._features = {t: v for t, v in self._features.items() if t in keep}
            self._features[frame_idx] = (tuple(vision.fpn_features), vision.position_encoding)
        return self._features[frame_idx]

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    # Prompts -----------------------------------------------------------------------------------------------------

    def _object(self, obj_id: int, create: bool = False) -> _ObjectState:
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
            raise TypeError(f"Object ids must be integers, got {type(obj_id).__name__}")
        obj_id = int(obj_id)
        if obj_id not in self._objects:
            if not create:
                raise ValueError(f"Unknown object id {obj_id}; objects: {self.object_ids}")
            self._objects[obj_id] = _ObjectState(obj_id)
        return self._objects[obj_id]

    @torch.inference_mode()
    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: Sequence | torch.Tensor | np.ndarray | None,
        labels: Sequence | torch.Tensor | np.ndarray | None,
        clear_old: bool = True,
        box: Sequence[float] | torch.Tensor | np.ndarray | None = None,
    ) -> Sam2VideoFrameResult:
        """Clicks `(K, 2)` as (x, y) in video pixels with labels `(K,)` (1 foreground, 0 background) for an object
        on a frame, added to its earlier clicks there unless `clear_old`; `box` (x0, y0, x1, y1) goes first (it
        needs `clear_old`). Coordinates must lie within the frame and boxes have x0 < x1, y0 < y1 (see
        `sam2.prompts`). Returns the masks of all objects on the frame."""
        frame_idx = self._check_frame(frame_idx)
        if points is None and box is None:
            raise ValueError("Give clicks (points and labels), a box, or both")
        coords, point_labels = check_clicks(points, labels, self.video_width, self.video_height)
        if box is not None:
            if not clear_old:
                raise ValueError("A box must come before any click: use clear_old=True with box")
            corners = check_box(box, self.video_width, self.video_height)
            coords = torch.cat([corners.reshape(2, 2), coords])
            point_labels = torch.cat([torch.tensor([2, 3]), point_labels])
        scale = torch.tensor([self.video_width, self.video_height], dtype=torch.float32)
        coords = coords / scale * self.model.config.image_size
        state = self._object(obj_id, create=True)
        if not clear_old and frame_idx in state.points:
            old_coords, old_labels = state.points[frame_idx]
            coords, point_labels = torch.cat([old_coords, coords]), torch.cat([old_labels, point_labels])
        state.points[frame_idx] = (coords, point_labels)
        state.mask_frames.discard(frame_idx)
        return self._prompt(state, frame_idx, points=(coords, point_labels))

    def add_box(
        self,
        frame_idx: int,
        obj_id: int,
        box: Sequence[float] | torch.Tensor | np.ndarray,
        points: Sequence | torch.Tensor | np.ndarray | None = None,
        labels: Sequence | torch.Tensor | np.ndarray | None = None,
    ) -> Sam2VideoFrameResult:
        """A box (x0, y0, x1, y1) in video pixels, optionally with clicks, replacing the object's prompts on the
        frame (see `add_points`)."""
        return self.add_points(frame_idx, obj_id, points, labels, clear_old=True, box=box)

    @torch.inference_mode()
    def add_mask(self, frame_idx: int, obj_id: int, mask) -> Sam2VideoFrameResult:
        """A mask `(H, W)` at the frame's size (bool, or > 0.5 inside) for an object on a frame, replacing its prompts there; resized to
        the model input with antialiased bilinear interpolation and thresholded at 0.5 like Meta's."""
        frame_idx = self._check_frame(frame_idx)
        mask = check_mask(mask, self.video_width, self.video_height)
        size = self.model.config.image_size
        mask = mask[None, None].to(self.device)
        if mask.shape[-2:] != (size, size):
            mask = F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            mask = (mask >= 0.5).float()
        state = self._object(obj_id, create=True)
        state.points.pop(frame_idx, None)
        state.mask_frames.add(frame_idx)
        return self._prompt(state, frame_idx, mask=mask)

    def _prompt(
        self,
        state: _ObjectState,
        frame_idx: int,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> Sam2VideoFrameResult:
        """Predict one object on a prompted frame (memory encoding deferred to propagation)."""
        reverse = state.tracked_reverse(frame_idx)
        is_conditioning = reverse is None or self.add_all_frames_to_correct_as_cond
        fpn, position = self._frame_features(frame_idx)
        memory, prompt_masks = None, None
        if reverse is not None and mask is None:  # a correction: memory of the object, previous mask
            if state.memory.conditioning:
                memory = self._memory_tokens([state], [self._selection(state, frame_idx, reverse)])
            previous = state.previous_output(frame_idx, is_conditioning)
            if previous is not None and previous.pred_masks is not None:
                prompt_masks = (
                    previous.pred_masks[None].to(self.device).clamp(-PREVIOUS_MASK_CLAMP, PREVIOUS_MASK_CLAMP)
                )
        inputs = {"input_masks": mask}
        if points is not None:
            coords, labels = points
            inputs = {"input_points": coords[None].to(self.device), "input_labels": labels[None].to(self.device)}
        output = self._step(fpn, position, memory, prompt_masks=prompt_masks, run_memory_encoder=False, **inputs)
        state.pending[frame_idx] = (is_conditioning, self._store(output, 0))
        return self._prompt_result(frame_idx, is_conditioning)

    def _step(
        self,
        fpn: tuple[torch.Tensor, ...],
        position: torch.Tensor,
        memory: MemoryTokens | None,
        **prompts: torch.Tensor | bool | None,
    ) -> Sam2VideoFrameOutput:
        """`track_step` on a frame's features with the memory tokens of its objects (`None` without memory)."""
        if memory is not None:
            prompts.update(
                memory=memory.memory,
                memory_position_encoding=memory.memory_position_encoding,
                num_pointer_tokens=memory.num_pointer_tokens,
            )
        with self._autocast():
            return self.model.track_step(fpn, position, **prompts)

    def _store(self, output: Sam2VideoFrameOutput, index: int) -> StoredMemory:
        """Object `index` of a model output as kept by the session (holes filled in the mask)."""
        masks = output.pred_masks[index : index + 1].float()
        masks = clean_mask_logits(masks, max_hole_area=self.fill_hole_area, hole_logit=HOLE_LOGIT)[0]
        maskmem = output.maskmem_features
        return StoredMemory(
            pred_masks=masks.to(self.storage_device),
            pointer=output.object_pointers[index].float(),
            object_score=output.object_score_logits[index].float(),
            maskmem=None if maskmem is None else maskmem[index].to(torch.bfloat16).to(self.storage_device),
        )

    def _prompt_result(self, frame_idx: int, is_conditioning: bool) -> Sam2VideoFrameResult:
        outputs = [state.previous_output(frame_idx, is_conditioning) for state in self._objects.values()]
        return self._result(frame_idx, outputs)

    def _result(self, frame_idx: int, outputs: list[StoredMemory | None]) -> Sam2VideoFrameResult:
        """Masks of all objects at the video's resolution (`NO_OBJECT_SCORE` where an object has no output)."""
        size = (self.video_height, self.video_width)
        low_res = self.model.config.image_size // 4
        masks = torch.full((len(outputs), 1, low_res, low_res), NO_OBJECT_SCORE, device=self.device)
        scores = torch.full((len(outputs),), NO_OBJECT_SCORE, device=self.device)
        for index, output in enumerate(outputs):
            if output is not None and output.pred_masks is not None:
                masks[index] = output.pred_masks.to(self.device)
                scores[index] = output.object_score.to(self.device)
        masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        if self.non_overlap_masks:
            masks = apply_non_overlap(masks)
        return Sam2VideoFrameResult(frame_idx, self.object_ids, masks[:, 0], scores)

    def clear_frame_prompts(self, frame_idx: int, obj_id: int) -> Sam2VideoFrameResult:
        """Remove an object's prompts on a frame; a prompted frame's output becomes an ordinary memory."""
        frame_idx = self._check_frame(frame_idx)
        state = self._object(obj_id)
        state.points.pop(frame_idx, None)
        state.mask_frames.discard(frame_idx)
        state.pending.pop(frame_idx, None)
        output = state.memory.conditioning.pop(frame_idx, None)
        if output is not None:
            state.memory.recent[frame_idx] = output
            state.untrack(frame_idx)
        is_conditioning = any(s.pending.get(frame_idx, (False,))[0] for s in self._objects.values())
        return self._prompt_result(frame_idx, is_conditioning)

    def remove_object(self, obj_id: int) -> None:
        """Forget an object: its prompts, memories and id."""
        self._object(obj_id)
        del self._objects[int(obj_id)]

    def reset(self) -> None:
        """Forget all objects, prompts and memories (the video stays open)."""
        self._objects.clear()
        self._features.clear()
        self._anchor = None

    def close(self) -> None:
        """Release the video file."""
        if self._video is not None:
            self._video.close()

    def __enter__(self) -> Sam2VideoSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Memory bank -------------------------------------------------------------------------------------------------

    def _consolidate(self) -> None:
        """Encode the memories of prompted frames (all objects of a frame in one batch) and move them into the
        bank, as Meta does before propagating."""
        if not self._objects:
            raise ValueError("Add prompts (add_points, add_box or add_mask) before propagating")
        frames = sorted({t for state in self._objects.values() for t in state.pending})
        for frame_idx in frames:
            owners = [s for s in self._objects.values() if frame_idx in s.pending]
            outputs = [s.pending[frame_idx][1] for s in owners]
            fpn, _ = self._frame_features(frame_idx)
            size = self.model.config.image_size
            masks = torch.stack([o.pred_masks for o in outputs]).to(self.device)
            masks = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)
            scores = torch.stack([o.object_score for o in outputs]).to(self.device)
            with self._autocast():
                embedding = fpn[-1].expand(len(outputs), -1, -1, -1)
                maskmem = self.model.encode_memory(embedding, masks, scores, from_points=True)
            for state, output, features in zip(owners, outputs, maskmem):
                is_conditioning, _ = state.pending.pop(frame_idx)
                output.maskmem = features.to(torch.bfloat16).to(self.storage_device)
                bank = state.memory
                (bank.conditioning if is_conditioning else bank.recent)[frame_idx] = output
        for state in self._objects.values():
            if not state.memory.conditioning:
                raise ValueError(f"Object {state.obj_id} has no prompt on any frame; add one or remove the object")
            for frame_idx in state.memory.conditioning:
                state.memory.recent.pop(frame_idx, None)

    def _selection(self, state: _ObjectState, frame_idx: int, reverse: bool) -> MemorySelection:
        """What an object attends to on a frame, from the memories the session still holds."""
        return state.memory.select(frame_idx, self.memory_rules, reverse=reverse, num_frames=self.num_frames)

    def _memory_tokens(self, states: list[_ObjectState], selections: list[MemorySelection]) -> MemoryTokens:
        """The memory tokens of objects whose selections share one layout, as one batch."""
        return gather_memory(self.model, [s.memory for s in states], selections, self.device, self.dtype)

    def _prune(self, frame_idx: int) -> None:
        """Drop what no later frame can attend to: keep memories near the current frame and the last start."""
        anchors = [frame_idx] + ([self._anchor] if self._anchor is not None else [])
        for state in self._objects.values():
            state.memory.prune(anchors, self.memory_rules)

    def memory_footprint(self) -> tuple[int, int]:
        """(number of tensors, bytes) held by the session's memory bank, prompts and caches."""
        tensors = [t for features, position in self._features.values() for t in (*features, position)]
        for state in self._objects.values():
            tensors += [t for pair in state.points.values() for t in pair]
            bank = state.memory
            outputs = [*bank.conditioning.values(), *bank.recent.values(), *(o for _, o in state.pending.values())]
            for output in outputs:
                tensors += [t for t in vars(output).values() if isinstance(t, torch.Tensor)]
        held = sum(a.nbytes for a in self._held.values())
        return len(tensors) + len(self._held), sum(t.numel() * t.element_size() for t in tensors) + held

    # Propagation -------------------------------------------------------------------------------------------------

    def propagate(
        self, start_frame: int | None = None, reverse: bool | str = False, max_frames: int | None = None
    ) -> Iterator[Sam2VideoFrameResult]:
        """Track all objects from `start_frame` (default: the earliest prompted frame), forward, backward
        (`reverse=True`) or forward then backward (`"both"`; the start frame comes once per direction), over at
        most `max_frames` frames per direction. Returns a generator of one `Sam2VideoFrameResult` per frame; the
        arguments are checked and the prompts' memories encoded right away.

        On a stream, tracks the pushed frames not tracked yet, forward only."""
        if reverse not in (False, True, "both"):
            raise ValueError(f"reverse must be False, True or 'both', got {reverse!r}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        if self._video is None and reverse is not False:
            raise ValueError("A stream can only be tracked forward")
        with torch.inference_mode():
            self._consolidate()
        if self._video is not None:
            first_prompt = min(t for state in self._objects.values() for t in state.memory.conditioning)
            start_frame = first_prompt if start_frame is None else self._check_frame(start_frame)
        elif start_frame is not None:
            raise ValueError("A stream is tracked from the first frame not tracked yet; do not give start_frame")
        elif self._tracked_upto is not None:
            start_frame = self._tracked_upto + 1
        else:
            start_frame = min(t for state in self._objects.values() for t in state.memory.conditioning)
            for t in [t for t in self._held if t < start_frame]:
                del self._held[t]
        directions = (False, True) if reverse == "both" else (bool(reverse),)
        return (result for backward in directions for result in self._pass(start_frame, backward, max_frames))

    def _pass(self, start: int, reverse: bool, max_frames: int | None) -> Iterator[Sam2VideoFrameResult]:
        if reverse:  # like Meta, a reverse pass from frame 0 tracks nothing
            end = 0 if max_frames is None else max(start - max_frames + 1, 0)
            order = range(start, end - 1, -1) if start > 0 else range(0)
        else:
            last = (self._pushed if self._video is None else len(self._video)) - 1
            end = last if max_frames is None else min(start + max_frames - 1, last)
            order = range(start, end + 1)
        self._anchor = start
        for frame_idx in tqdm(order, desc="tracking", disable=not self.progress, leave=False):
            with torch.inference_mode():
                result = self._track_frame(frame_idx, reverse)
            if self._video is None:
                self._tracked_upto = frame_idx
                if frame_idx != self._pushed - 1:
                    del self._held[frame_idx]
            yield result

    def _track_frame(self, frame_idx: int, reverse: bool) -> Sam2VideoFrameResult:
        states = list(self._objects.values())
        outputs: list[StoredMemory | None] = [state.memory.conditioning.get(frame_idx) for state in states]
        groups: dict[tuple, list[int]] = {}  # objects whose memories share a layout run as one batch
        selections = {}
        for index, state in enumerate(states):
            if outputs[index] is None:
                selections[index] = self._selection(state, frame_idx, reverse)
                groups.setdefault(selections[index].layout, []).append(index)
        if groups:
            fpn, position = self._frame_features(frame_idx)
        for indices in groups.values():
            memory = self._memory_tokens([states[i] for i in indices], [selections[i] for i in indices])
            output = self._step(fpn, position, memory)
            for row, index in enumerate(indices):
                outputs[index] = states[index].memory.recent[frame_idx] = self._store(output, row)
        for state in states:
            state.mark_tracked(frame_idx, reverse)
        self._prune(frame_idx)
        return self._result(frame_idx, outputs)


def _open(source) -> VideoFrames:
    """`open_video` with PyAV's errors for unreadable files turned into `ValueError`."""
    try:
        video = open_video(source)
    except (FileNotFoundError, TypeError, ValueError):
        raise
    except Exception as error:  # PyAV raises its own error types for files it cannot decode
        raise ValueError(f"Cannot read the video {os.fspath(source)!r}: {error}") from error
    if len(video) == 0:
        video.close()
        raise ValueError(f"The video {source!r} has no frames")
    return video


__all__ = ["Sam2VideoFrameResult", "Sam2VideoSession", "apply_non_overlap"]
