"""The memory bank as tokens: the selected spatial memories and object pointers of `N` objects laid out as the keys
and values memory attention reads (the assembly half of Meta's `_prepare_memory_conditioned_features`; which frames
are selected is `memory_bank`'s).

- `assemble_memory`: a `MemorySelection` and its memories -> `MemoryTokens` (checked).
- `memory_tokens`: the tensor arithmetic alone, with the selection as tensors (traced by the ONNX export).
- `gather_memory`: the tokens of objects stored in `ObjectMemory` banks, as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .memory_bank import MemorySelection, ObjectMemory, selected_memories
from .position_encoding import sine_position_encoding

if TYPE_CHECKING:
    from .modeling_sam2_video import Sam2VideoModel


@dataclass
class MemoryTokens:
    """The memory bank of `N` objects as memory attention reads it; pass the fields to `Sam2VideoModel.track_step`
    under the same names (`memory`, `memory_position_encoding`, `num_pointer_tokens`).

    Attributes:
        memory: `(N, M, memory_dim)` the spatial memories (`H * W` tokens per frame), then the pointer tokens.
        memory_position_encoding: `(N, M, memory_dim)` spatial sine plus learned temporal encoding, then the
            pointers' temporal encoding.
        num_pointer_tokens: how many tokens at the end are object pointers (4 per 256-d pointer with 64-d memory).
    """

    memory: torch.Tensor
    memory_position_encoding: torch.Tensor
    num_pointer_tokens: int


def assemble_memory(
    model: Sam2VideoModel,
    selection: MemorySelection,
    spatial_memories: torch.Tensor,
    object_pointers: torch.Tensor | None = None,
) -> MemoryTokens:
    """Lay out the selected memories as tokens (the assembly half of Meta's
    `_prepare_memory_conditioned_features`).

    Args:
        model: gives the temporal encodings (`memory_temporal_encoding`, `pointer_position_encoding`).
        selection: what the frame attends to (`select_memory`), same for every object of the batch.
        spatial_memories: `(N, F, memory_dim, H, W)` the memories of `selection.spatial_frames`, in that order.
        object_pointers: `(N, P, hidden)` the pointers of `selection.pointer_frames`, in that order (`None` when it
            selects none).
    """
    config = model.config
    if spatial_memories.ndim != 5 or spatial_memories.shape[2] != config.memory_encoder_hidden_size:
        raise ValueError(
            f"spatial_memories must be (num_objects, frames, {config.memory_encoder_hidden_size}, H, W), got "
            f"{tuple(spatial_memories.shape)}"
        )
    batch, frames, memory_dim, height, width = spatial_memories.shape
    positions = selection.temporal_positions
    if len(positions) != frames or not all(0 <= p < config.num_maskmem for p in positions):
        raise ValueError(
            f"the selection's temporal_positions must be {frames} ints in [0, {config.num_maskmem}) (one per "
            f"spatial memory), got {list(positions)}"
        )
    num_pointers = len(selection.pointer_offsets)
    if (object_pointers is None) != (num_pointers == 0):
        raise ValueError(
            f"object_pointers must hold the selection's {num_pointers} pointers"
            + ("" if object_pointers is None else f", got {tuple(object_pointers.shape)}")
        )
    hidden = config.fpn_hidden_size
    if object_pointers is not None and tuple(object_pointers.shape) != (batch, num_pointers, hidden):
        raise ValueError(
            f"object_pointers must be ({batch}, {num_pointers}, {hidden}) for the selection, got "
            f"{tuple(object_pointers.shape)}"
        )
    # Host-to-device copies that do not wait for the device (safe in this direction: the data is staged at once).
    device = spatial_memories.device
    return memory_tokens(
        model,
        spatial_memories,
        torch.tensor(positions, dtype=torch.long).to(device, non_blocking=True),
        object_pointers,
        torch.tensor(selection.pointer_offsets, dtype=torch.long).to(device, non_blocking=True),
        selection.max_pointer_offset,
    )


def memory_tokens(
    model: Sam2VideoModel,
    spatial_memories: torch.Tensor,
    temporal_positions: torch.Tensor,
    object_pointers: torch.Tensor | None,
    pointer_offsets: torch.Tensor | None,
    max_pointer_offset: int,
) -> MemoryTokens:
    """The tensor arithmetic of `assemble_memory`, with the selection's `temporal_positions` `(F,)` and
    `pointer_offsets` `(P,)` as tensors and no check of their values: the ONNX export traces it with them as graph
    inputs (`hiera_hf.onnx.export.MemoryAttentionExport`). Shapes as in `assemble_memory`."""
    batch, frames, memory_dim, height, width = spatial_memories.shape
    spatial = sine_position_encoding(height, width, memory_dim, spatial_memories.device)
    spatial = spatial.flatten(2).transpose(1, 2).to(spatial_memories.dtype)  # (1, H*W, memory_dim)
    temporal = model.memory_temporal_encoding(temporal_positions)
    memory = spatial_memories.permute(0, 1, 3, 4, 2).reshape(batch, frames * height * width, memory_dim)
    memory_pos = (spatial + temporal[:, None]).reshape(1, -1, memory_dim).expand(batch, -1, -1)
    if object_pointers is None:
        return MemoryTokens(memory, memory_pos, 0)
    num_pointers = object_pointers.shape[1]
    splits = model.config.fpn_hidden_size // memory_dim  # each pointer becomes `splits` memory-sized tokens
    pointer_tokens = object_pointers.reshape(batch, num_pointers * splits, memory_dim)
    pointer_pos = model.pointer_position_encoding(pointer_offsets, max_pointer_offset)
    pointer_pos = pointer_pos.repeat_interleave(splits, dim=0)
    memory = torch.cat((memory, pointer_tokens.to(memory.dtype)), dim=1)
    memory_pos = torch.cat((memory_pos, pointer_pos.to(memory_pos.dtype).expand(batch, -1, -1)), dim=1)
    return MemoryTokens(memory, memory_pos, num_pointers * splits)


def gather_memory(
    model: Sam2VideoModel,
    banks: Sequence[ObjectMemory],
    selections: Sequence[MemorySelection],
    device: torch.device,
    dtype: torch.dtype,
) -> MemoryTokens:
    """The memory tokens of several objects as one batch: each object's selected memories stacked from its bank
    (spatial memories in `dtype`), then `assemble_memory`. The selections must share one `layout`."""
    spatial, pointers = selected_memories(banks, selections)
    spatial = torch.stack([torch.stack(memories) for memories in spatial]).to(device, dtype, non_blocking=True)
    pointers = torch.stack([torch.stack(p) for p in pointers]).to(device) if selections[0].pointer_frames else None
    return assemble_memory(model, selections[0], spatial, pointers)


__all__ = ["MemoryTokens", "assemble_memory", "gather_memory", "memory_tokens"]
