"""The memory bank's selection (`hiera_hf.sam2.memory_bank.select_memory`) against Meta's
`SAM2Base._prepare_memory_conditioned_features`, over random banks: conditioning frames (capped or not), recent
frames with a temporal stride and holes, object pointers, forward and reverse, eval and training rules.

Meta's method runs unchanged on a stand-in for its model whose memories carry their frame index as their value and
whose temporal encodings carry their position, so the tokens it hands to memory attention say which frames it
chose, in which order and at which temporal position. The token assembly itself is compared with Meta's on real
tensors in `test_sam2_video_modules.py`.
"""

import inspect
import random
from types import SimpleNamespace

import pytest
import sam2.modeling.sam2_base as meta_base
import torch

from hiera_hf.sam2 import Sam2Config, memory_bank
from hiera_hf.sam2.memory_bank import MemoryRules, recent_memory_slots, select_memory

DIM = 4  # memory and pointer width of the stand-in: one token per frame and per pointer


def meta_selection(config: Sam2Config, training: bool, frame_idx, cond, held, num_frames, reverse, monkeypatch):
    """(spatial frames, temporal positions, pointer frames, pointer offsets / normaliser) chosen by Meta's code."""
    num_maskmem = config.num_maskmem

    def output(t):
        return {
            "maskmem_features": torch.full((1, DIM, 1, 1), float(t)),
            "maskmem_pos_enc": [torch.zeros(1, DIM, 1, 1)],
            "obj_ptr": torch.full((1, DIM), float(t)),
        }

    captured = {}

    def memory_attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens):
        captured.update(memory=memory[:, 0, 0], position=memory_pos[:, 0, 0], pointers=num_obj_ptr_tokens)
        return curr[0]

    # The pointers' sine encoding replaced by its argument (offset / normaliser), so that it can be read back.
    monkeypatch.setattr(meta_base, "get_1d_sine_pe", lambda positions, dim: positions[:, None].expand(-1, dim))
    stand_in = SimpleNamespace(
        training=training,
        num_maskmem=num_maskmem,
        hidden_dim=DIM,
        mem_dim=DIM,
        memory_temporal_stride_for_eval=config.memory_temporal_stride_for_eval,
        max_cond_frames_in_attn=config.max_cond_frames_in_attn,
        maskmem_tpos_enc=torch.arange(num_maskmem, dtype=torch.float32)[:, None, None, None].expand(-1, 1, 1, DIM),
        use_obj_ptrs_in_encoder=True,
        max_obj_ptrs_in_encoder=config.max_obj_ptrs_in_encoder,
        only_obj_ptrs_in_the_past_for_eval=config.only_obj_ptrs_in_the_past_for_eval,
        use_signed_tpos_enc_to_obj_ptrs=True,
        add_tpos_enc_to_obj_ptrs=True,
        proj_tpos_enc_in_obj_ptrs=False,
        obj_ptr_tpos_proj=lambda x: x,
        memory_attention=memory_attention,
    )
    meta_base.SAM2Base._prepare_memory_conditioned_features(
        stand_in,
        frame_idx=frame_idx,
        is_init_cond_frame=False,
        current_vision_feats=[torch.zeros(1, 1, DIM)],
        current_vision_pos_embeds=[torch.zeros(1, 1, DIM)],
        feat_sizes=[(1, 1)],
        output_dict={
            "cond_frame_outputs": {t: output(t) for t in cond},
            "non_cond_frame_outputs": {t: output(t) for t in held},
        },
        num_frames=num_frames,
        track_in_reverse=reverse,
    )
    split = len(captured["memory"]) - captured["pointers"]
    spatial = [int(v) for v in captured["memory"][:split]]
    positions = [num_maskmem - 1 - int(v) for v in captured["position"][:split]]
    pointers = [int(v) for v in captured["memory"][split:]]
    return spatial, positions, pointers, captured["position"][split:]


@pytest.mark.parametrize("seed", range(6))
def test_selection_matches_meta(seed, monkeypatch):
    rng = random.Random(seed)
    checked = {"capped": 0, "stride": 0, "reverse": 0, "training": 0, "holes": 0}
    for _ in range(40):
        config = Sam2Config.from_preset(
            "sam2.1_hiera_tiny",
            num_maskmem=rng.choice([2, 3, 7]),
            memory_temporal_stride_for_eval=rng.choice([1, 2, 5]),
            max_cond_frames_in_attn=rng.choice([-1, 2, 3]),
            max_obj_ptrs_in_encoder=rng.choice([1, 4, 16]),
            only_obj_ptrs_in_the_past_for_eval=rng.random() < 0.5,
        )
        training, reverse = rng.random() < 0.3, rng.random() < 0.5
        num_frames = rng.randint(2, 40)
        frames = list(range(num_frames))
        cond = rng.sample(frames, rng.randint(1, min(5, num_frames)))
        frame_idx = rng.choice(frames)
        # Recent memories held with holes (frames never tracked or already dropped).
        held = [t for t in frames if t not in cond and rng.random() < 0.8]
        expected = meta_selection(config, training, frame_idx, cond, held, num_frames, reverse, monkeypatch)

        rules = MemoryRules.from_config(config, training=training)
        selection = select_memory(frame_idx, cond, set(held), set(held), rules, reverse, num_frames)
        assert list(selection.spatial_frames) == expected[0]
        assert list(selection.temporal_positions) == expected[1]
        assert list(selection.pointer_frames) == expected[2]
        offsets = torch.tensor(selection.pointer_offsets, dtype=torch.float32) / selection.max_pointer_offset
        if num_frames > 1 and config.max_obj_ptrs_in_encoder > 1:  # Meta divides by 0 otherwise
            torch.testing.assert_close(offsets, expected[3], rtol=0, atol=1e-6)
        checked["capped"] += config.max_cond_frames_in_attn != -1 and len(cond) > config.max_cond_frames_in_attn
        checked["stride"] += config.memory_temporal_stride_for_eval > 1 and not training
        checked["reverse"] += reverse
        checked["training"] += training
        checked["holes"] += len(held) < num_frames - len(cond)
    assert all(checked.values()), checked


def test_stride_arithmetic_example():
    """The module docstring's example: stride 5, frame 23, 7 memories."""
    rules = MemoryRules(num_maskmem=7, temporal_stride=5)
    assert recent_memory_slots(23, rules) == [(1, 0), (2, 5), (3, 10), (4, 15), (5, 20), (6, 22)]
    assert recent_memory_slots(3, rules, reverse=True) == [(1, 25), (2, 20), (3, 15), (4, 10), (5, 5), (6, 4)]
    assert recent_memory_slots(23, MemoryRules(num_maskmem=7)) == [(p, 23 - (7 - p)) for p in range(1, 7)]


def test_stream_selection_and_bad_rules():
    """An open stream has no length: pointers reach `max_pointers - 1` frames back and are normalised by it."""
    rules = MemoryRules(num_maskmem=3, max_pointers=4)
    selection = select_memory(10, [0], set(range(1, 10)), set(range(1, 10)), rules)
    assert selection.spatial_frames == (0, 8, 9) and selection.temporal_positions == (0, 1, 2)
    assert selection.pointer_frames == (0, 9, 8, 7) and selection.pointer_offsets == (10, 1, 2, 3)
    assert selection.max_pointer_offset == 3
    assert selection.layout == ((0, 1, 2), (10, 1, 2, 3), 3)
    with pytest.raises(ValueError, match="conditioning frame"):
        select_memory(3, [], {1, 2}, {1, 2}, rules)
    with pytest.raises(ValueError, match="max_conditioning_frames"):
        MemoryRules(num_maskmem=7, max_conditioning_frames=1)
    with pytest.raises(ValueError, match="temporal_stride"):
        MemoryRules(num_maskmem=7, temporal_stride=0)


def test_selection_is_free_of_torch():
    """The selection is pure Python on frame indices, so that a session on another runtime can reuse it."""
    for function in (
        memory_bank.select_memory,
        memory_bank.select_conditioning_frames,
        memory_bank.recent_memory_slots,
        memory_bank.MemoryRules.from_config,
    ):
        assert "torch" not in inspect.getsource(function), function.__name__
