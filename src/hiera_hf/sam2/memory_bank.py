"""SAM 2's memory bank: which earlier frames a frame attends to, and the tokens memory attention reads from them.

The data flow of tracking is module -> memory bank -> session: `Sam2VideoModel.track_step` produces each frame's
spatial memory and object pointer; this module decides which of them the next frame attends to and lays them out
as tokens; the session (`video_session`) or the clip trainer (`training`) stores them and calls both. Storage
stays with the caller: the selection only asks which frames it still holds.

- Selection, pure Python on frame indices:
  `MemoryRules` (the config's numbers, for inference or training) and `select_memory`, which returns a
  `MemorySelection`.
- Storage of one object's bank: `ObjectMemory` (conditioning and recent frames, each a `StoredMemory`), bounded
  by `prune`; the session keeps one per object (the clip trainer, which keeps whole clips, needs none).
  `selected_memories` picks out what the selections of objects batched together read from their banks.
- Token assembly (torch) is `memory_tokens`'s: this module imports no array library, so the PyTorch session, the
  clip trainer and the ONNX Runtime session share it.

The selection is Meta's (`SAM2Base._prepare_memory_conditioned_features`), for a frame `t` tracked forward:

1. Conditioning (prompted) frames, all of them or, with `max_conditioning_frames`, the closest one before `t`,
   the closest one at or after `t` and then the nearest others (`select_conditioning_frames`). They come first,
   all at temporal position 0.
2. `num_maskmem - 1` slots for recent non-conditioning frames, at temporal positions `p = 1 .. num_maskmem - 1`;
   slot `p` looks `d = num_maskmem - p` steps back, so the last slot (`d = 1`) is the previous frame `t - 1`,
   always. The other slots sit on a grid of every `r`-th frame (`r` = `memory_temporal_stride_for_eval`; 1 in
   training): the grid frame nearest to `t` that is at least two frames back is `r * floor((t - 2) / r)`, and
   slot `d` goes `d - 2` grid steps further. With `r = 1` this is simply `t - d`. With `r = 5`, `t = 23` and
   7 memories: `t - 1 = 22`, then 20, 15, 10, 5, 0. A slot whose frame is not held (before the video start, not
   tracked, or dropped) stays empty; an unselected conditioning frame that falls on a slot fills it.
3. Object pointers: those of the selected conditioning frames (in eval with `only_obj_ptrs_in_the_past_for_eval`,
   only those not ahead of `t`), then of the `min(num_frames, max_obj_ptrs_in_encoder) - 1` frames just before
   `t`, nearest first, each at its frame distance (its "offset"; negative for a conditioning frame ahead).

Tracked in reverse, "before" means "after": the previous frame is `t + 1`, the grid frame is
`r * ceil((t + 2) / r)` and the slots go up from it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .configuration_sam2 import Sam2Config


@dataclass(frozen=True)
class MemoryRules:
    """The numbers that decide the selection.

    Attributes:
        num_maskmem: spatial memories per frame, the conditioning slot included (Meta's `num_maskmem`, 7).
        temporal_stride: every how many frames the recent memories beyond the previous frame are taken (Meta's
            `memory_temporal_stride_for_eval`; 1 in training).
        max_conditioning_frames: at most this many conditioning frames, the closest (Meta's
            `max_cond_frames_in_attn`); -1 for all.
        max_pointers: object pointers per frame, conditioning frames not counted beyond it (Meta's
            `max_obj_ptrs_in_encoder`, 16): the pointers of the `max_pointers - 1` nearest recent frames.
        only_past_pointers: leave out the pointers of conditioning frames ahead of the current frame (Meta's
            `only_obj_ptrs_in_the_past_for_eval`, in eval only).
    """

    num_maskmem: int
    temporal_stride: int = 1
    max_conditioning_frames: int = -1
    max_pointers: int = 16
    only_past_pointers: bool = False

    def __post_init__(self):
        for name in ("num_maskmem", "temporal_stride", "max_pointers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        limit = self.max_conditioning_frames
        if isinstance(limit, bool) or not isinstance(limit, int) or (limit != -1 and limit < 2):
            raise ValueError(f"max_conditioning_frames must be -1 (all) or at least 2, got {limit!r}")

    @property
    def memory_reach(self) -> int:
        """Frames farther than this from the current frame never give it a spatial memory."""
        return self.temporal_stride * self.num_maskmem

    @property
    def pointer_reach(self) -> int:
        """Frames farther than this from the current frame never give it a pointer (as recent frames)."""
        return self.max_pointers - 1

    @classmethod
    def from_config(
        cls, config: Sam2Config, training: bool = False, max_conditioning_frames: int | None = None
    ) -> MemoryRules:
        """The rules of a `Sam2Config`, as Meta applies them in training (`training=True`: temporal stride 1, every
        conditioning pointer) or in eval; `max_conditioning_frames` overrides `max_cond_frames_in_attn`."""
        return cls(
            num_maskmem=config.num_maskmem,
            temporal_stride=1 if training else config.memory_temporal_stride_for_eval,
            max_conditioning_frames=(
                config.max_cond_frames_in_attn if max_conditioning_frames is None else max_conditioning_frames
            ),
            max_pointers=config.max_obj_ptrs_in_encoder,
            only_past_pointers=not training and config.only_obj_ptrs_in_the_past_for_eval,
        )


@dataclass(frozen=True)
class MemorySelection:
    """What one frame attends to, in attention order.

    Attributes:
        spatial_frames: frames whose spatial memories are read: the selected conditioning frames, then the recent
            frames from the farthest slot to the previous frame.
        temporal_positions: per spatial frame, its temporal position in `[0, num_maskmem)`: 0 for a conditioning
            frame, `num_maskmem - d` for the recent slot `d` steps back (`num_maskmem - 1`: the previous frame).
        pointer_frames: frames whose object pointers are read: conditioning frames, then recent frames, nearest
            first.
        pointer_offsets: per pointer, how many frames before the current one it was made, in the tracking
            direction (negative for a conditioning frame ahead).
        max_pointer_offset: the normaliser of the offsets, Meta's `min(num_frames, max_obj_ptrs_in_encoder) - 1`
            (at least 1).
    """

    spatial_frames: tuple[int, ...]
    temporal_positions: tuple[int, ...]
    pointer_frames: tuple[int, ...]
    pointer_offsets: tuple[int, ...]
    max_pointer_offset: int

    @property
    def layout(self) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """What the tokens' position encodings depend on: objects with the same layout can share one batch."""
        return self.temporal_positions, self.pointer_offsets, self.max_pointer_offset


def select_conditioning_frames(
    frame_idx: int, conditioning_frames: Sequence[int], max_conditioning_frames: int
) -> tuple[list[int], list[int]]:
    """(selected, unselected) conditioning frames: all of them (in the given order) when `max_conditioning_frames`
    is -1 or not exceeded; otherwise the closest one before `frame_idx`, the closest one at or after it, then the
    nearest others up to `max_conditioning_frames` (Meta's `select_closest_cond_frames`)."""
    frames = list(conditioning_frames)
    if max_conditioning_frames == -1 or len(frames) <= max_conditioning_frames:
        return frames, []
    before = max((t for t in frames if t < frame_idx), default=None)
    after = min((t for t in frames if t >= frame_idx), default=None)
    selected = [t for t in (before, after) if t is not None]
    nearest = sorted((t for t in frames if t not in selected), key=lambda t: abs(t - frame_idx))
    selected += nearest[: max_conditioning_frames - len(selected)]
    return selected, [t for t in frames if t not in selected]


def recent_memory_slots(frame_idx: int, rules: MemoryRules, reverse: bool = False) -> list[tuple[int, int]]:
    """(temporal position, frame) of the `num_maskmem - 1` recent-memory slots of `frame_idx`, farthest first (see
    the module docstring); frames may lie outside the video (those slots stay empty)."""
    stride, sign = rules.temporal_stride, -1 if reverse else 1
    # The grid frame nearest to `frame_idx` that is at least 2 frames back: floor((t - 2) / r) * r forward,
    # ceil((t + 2) / r) * r in reverse (written with floor division of the negated value).
    grid = (frame_idx - 2) // stride * stride if not reverse else -(-(frame_idx + 2) // stride) * stride
    slots = []
    for position in range(1, rules.num_maskmem):
        steps_back = rules.num_maskmem - position
        if steps_back == 1:  # the previous frame, whatever the stride
            frame = frame_idx - sign
        else:  # `steps_back - 2` grid steps beyond the grid frame
            frame = grid - sign * (steps_back - 2) * stride
        slots.append((position, frame))
    return slots


def select_memory(
    frame_idx: int,
    conditioning_frames: Sequence[int],
    memory_frames: Collection[int],
    pointer_frames: Collection[int],
    rules: MemoryRules,
    reverse: bool = False,
    num_frames: int | None = None,
    recent_frames: Sequence[int] | None = None,
) -> MemorySelection:
    """What `frame_idx` attends to (see the module docstring).

    Args:
        frame_idx: the frame being tracked.
        conditioning_frames: the object's conditioning (prompted) frames with an encoded memory, in storage order.
        memory_frames: other frames whose spatial memory the caller still holds.
        pointer_frames: other frames whose object pointer the caller still holds.
        rules: the numbers (`MemoryRules.from_config`).
        reverse: tracking backwards in time.
        num_frames: length of the video (`None` for an open stream: pointers are normalised by
            `max_pointers - 1` and never stop at the end).
        recent_frames: a tracking strategy's recent memory frames instead of the slots (oldest first, ending with
            the previous frame): the last `num_maskmem - 1` of them take temporal positions up to `num_maskmem - 1`
            by rank; those not held stay empty.
    """
    if not conditioning_frames:
        raise ValueError("A frame with memory needs at least one conditioning frame (a prompt with encoded memory)")
    selected, unselected = select_conditioning_frames(frame_idx, conditioning_frames, rules.max_conditioning_frames)
    # An unselected conditioning frame counts as an ordinary memory (spatial and pointer) of the frame it is.
    unselected = set(unselected)

    spatial = [(0, t) for t in selected]
    if recent_frames is None:
        slots = recent_memory_slots(frame_idx, rules, reverse)
    else:
        ranked = list(recent_frames)[-(rules.num_maskmem - 1) :]
        slots = [(rules.num_maskmem - len(ranked) + rank, t) for rank, t in enumerate(ranked)]
    for position, frame in slots:
        if frame in memory_frames or frame in unselected:
            spatial.append((position, frame))

    sign = -1 if reverse else 1
    pointers = [
        ((frame_idx - t) * sign, t)
        for t in selected
        if not rules.only_past_pointers or (t >= frame_idx if reverse else t <= frame_idx)
    ]
    limit = rules.max_pointers if num_frames is None else min(num_frames, rules.max_pointers)
    for offset in range(1, limit):
        frame = frame_idx - sign * offset
        if frame < 0 or (num_frames is not None and frame >= num_frames):
            break
        if frame in pointer_frames or frame in unselected:
            pointers.append((offset, frame))
    return MemorySelection(
        spatial_frames=tuple(t for _, t in spatial),
        temporal_positions=tuple(p for p, _ in spatial),
        pointer_frames=tuple(t for _, t in pointers),
        pointer_offsets=tuple(o for o, _ in pointers),
        max_pointer_offset=max(limit - 1, 1),
    )


def selected_memories(
    banks: Sequence[ObjectMemory], selections: Sequence[MemorySelection]
) -> tuple[list[list[Any]], list[list[Any]]]:
    """For objects batched together (their selections must share one `layout`): per object, the stored spatial
    memories and the object pointers its selection reads, in attention order (arrays of the caller's runtime)."""
    if len({selection.layout for selection in selections}) != 1:
        raise ValueError("Objects batched together must have selections of the same layout")
    spatial = [[bank.get(t).maskmem for t in sel.spatial_frames] for bank, sel in zip(banks, selections)]
    pointers = [[bank.get(t).pointer for t in sel.pointer_frames] for bank, sel in zip(banks, selections)]
    return spatial, pointers


# ---------------------------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class StoredMemory:
    """What one object keeps of one frame (arrays of any runtime; the PyTorch session stores tensors).

    Attributes:
        pred_masks: `(1, 4h, 4w)` low-resolution mask logits (after hole filling); `None` once out of reach.
        pointer: `(hidden,)` the object pointer.
        object_score: `(1,)` the object-score logit.
        maskmem: `(memory_dim, h, w)` the spatial memory; `None` until encoded or once out of reach.
    """

    pred_masks: Any
    pointer: Any
    object_score: Any
    maskmem: Any = None


@dataclass
class ObjectMemory:
    """One object's memory bank: its conditioning (prompted) frames, kept for good, and the recent
    (non-conditioning) frames a later frame may still attend to."""

    conditioning: dict[int, StoredMemory] = field(default_factory=dict)
    recent: dict[int, StoredMemory] = field(default_factory=dict)

    def get(self, frame_idx: int) -> StoredMemory | None:
        """The stored frame, conditioning first (`None` if not held)."""
        return self.conditioning.get(frame_idx, self.recent.get(frame_idx))

    @property
    def memory_frames(self) -> set[int]:
        """The recent frames whose spatial memory is held."""
        return {t for t, stored in self.recent.items() if stored.maskmem is not None}

    def select(
        self,
        frame_idx: int,
        rules: MemoryRules,
        reverse: bool = False,
        num_frames: int | None = None,
        recent_frames: Sequence[int] | None = None,
    ) -> MemorySelection:
        """`select_memory` over what this bank holds."""
        return select_memory(
            frame_idx,
            list(self.conditioning),
            self.memory_frames,
            self.recent.keys(),
            rules,
            reverse,
            num_frames,
            recent_frames,
        )

    def prune(self, anchors: Sequence[int], rules: MemoryRules, keep: Collection[int] = ()) -> None:
        """Forget what no frame near the `anchors` (e.g. the last frame tracked and the start of the last
        propagation) can attend to: recent frames beyond `pointer_reach` go, beyond `memory_reach` they keep only
        their pointer; frames in `keep` (a tracking strategy's) stay whole."""
        for t in list(self.recent):
            if t in keep:
                continue
            distance = min(abs(t - anchor) for anchor in anchors)
            if distance > rules.pointer_reach:
                del self.recent[t]
            elif distance > rules.memory_reach:
                self.recent[t].maskmem = self.recent[t].pred_masks = None


__all__ = [
    "MemoryRules",
    "MemorySelection",
    "ObjectMemory",
    "StoredMemory",
    "recent_memory_slots",
    "select_conditioning_frames",
    "select_memory",
    "selected_memories",
]
