"""SAM 2.1 video building blocks and tracking steps against Meta's `sam2` (random weights, `sam2.1_hiera_t.yaml`).

Meta's model is built by Meta's own classes, its state dict goes through our converter into a saved folder, and
`Sam2VideoModel.from_pretrained` loads it; every comparison then runs both on the same inputs.
"""

import copy

import pytest
import torch
from sam2.build_sam import build_sam2
from sam2.modeling.position_encoding import compute_axial_cis
from sam2.modeling.sam2_utils import get_1d_sine_pe
from sam2_helpers import load_converted, meta_video_predictor, randomize_meta_weights

from hiera_hf.sam2 import Sam2Config, modeling_sam2_video
from hiera_hf.sam2.memory_bank import MemoryRules, MemorySelection, select_memory
from hiera_hf.sam2.memory_tokens import assemble_memory
from hiera_hf.sam2.modeling_sam2_video import Sam2VideoFrameOutput
from hiera_hf.sam2.position_encoding import axial_rope_angles, sine_encoding_1d, sine_position_encoding

MEMORY_DIM, HIDDEN = 64, 256


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    # 256x256 inputs (16x16 embeddings) keep the tracking steps cheap; the modules do not depend on the size.
    meta = meta_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", 256)
    randomize_meta_weights(meta, score_shift=3.0)  # objects both present and absent (asserted below)
    ours, info = load_converted(
        meta, Sam2Config.from_preset("sam2.1_hiera_tiny", image_size=256), tmp_path_factory.mktemp("v")
    )
    assert not any(info.values()), info  # every weight of the checkpoint is used, none is missing
    return meta.eval(), ours.eval()


def _frame_inputs(batch: int, size: int, num_memory_tokens: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, HIDDEN, size, size, generator=generator)
    position = sine_position_encoding(size, size, HIDDEN, torch.device("cpu")).expand(batch, -1, -1, -1)
    memory = torch.randn(batch, num_memory_tokens, MEMORY_DIM, generator=generator)
    memory_pos = torch.randn(batch, num_memory_tokens, MEMORY_DIM, generator=generator)
    return features, position, memory, memory_pos


def _meta_memory_attention(meta, features, position, memory, memory_pos, num_pointer_tokens):
    """Meta's module takes sequence-first tokens and returns `(HW, N, C)`."""
    batch, channels, height, width = features.shape
    output = meta.memory_attention(
        curr=features.flatten(2).permute(2, 0, 1),
        curr_pos=position.flatten(2).permute(2, 0, 1),
        memory=memory.transpose(0, 1),
        memory_pos=memory_pos.transpose(0, 1),
        num_obj_ptr_tokens=num_pointer_tokens,
    )
    return output.permute(1, 2, 0).reshape(batch, channels, height, width)


def test_rope_angles_match_meta():
    for height, width in ((64, 64), (3, 5)):
        meta = compute_axial_cis(dim=HIDDEN, end_x=width, end_y=height, theta=10000.0)
        angles = axial_rope_angles(height, width, HIDDEN, 10000.0, torch.device("cpu"))
        torch.testing.assert_close(angles.cos(), meta.real, rtol=0, atol=1e-6)
        torch.testing.assert_close(angles.sin(), meta.imag, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("batch", "size", "frames", "pointers"),
    [
        (1, 64, 7, 16),  # the full bank: 1 conditioning + 6 previous frames, 16 pointers of 4 tokens
        (2, 16, 7, 16),  # two objects, full bank on a 16x16 map (RoPE angles of a non-default size)
    ],
)
@torch.no_grad()
def test_memory_attention_matches_meta(models, batch, size, frames, pointers):
    meta, ours = models
    num_pointer_tokens = 4 * pointers
    inputs = _frame_inputs(batch, size, frames * size * size + num_pointer_tokens, seed=size)
    expected = _meta_memory_attention(meta, *inputs, num_pointer_tokens)
    actual = ours.memory_attention(*inputs, num_pointer_tokens)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)


@torch.no_grad()
def test_memory_attention_frame_shared_by_objects(models):
    """Features of batch 1 stand for one frame of every object (the video model passes them so): same result as
    Meta's with the features repeated per object, with the first self-attention run once."""
    meta, ours = models
    features, position, memory, memory_pos = _frame_inputs(3, 16, 7 * 16 * 16 + 64, seed=4)
    shared = features[:1]
    expected = _meta_memory_attention(meta, shared.expand(3, -1, -1, -1), position, memory, memory_pos, 64)
    calls = []
    hook = ours.memory_attention.layers[0].self_attn.register_forward_hook(lambda m, a, out: calls.append(out.shape))
    try:
        actual = ours.memory_attention(shared, position[:1], memory, memory_pos, 64)
    finally:
        hook.remove()
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)
    assert calls == [(1, 16 * 16, HIDDEN)]
    with pytest.raises(ValueError, match="give 1 or 3"):
        ours.memory_attention(features[:2], position[:2], memory, memory_pos, 64)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@torch.no_grad()
def test_memory_attention_query_chunks(models, monkeypatch, implementation):
    """Cross-attention taken in 3 query chunks (uneven: 256 queries) gives Meta's result, and it does attend in 3
    calls per layer (the ONNX export uses this so that ONNX Runtime holds a part of the attention weights)."""
    meta, ours = models
    inputs = _frame_inputs(2, 16, 7 * 16 * 16 + 64, seed=5)
    expected = _meta_memory_attention(meta, *inputs, 64)
    module = copy.deepcopy(ours.memory_attention)
    config = copy.copy(module.layers[0].self_attn.config)
    config._attn_implementation = implementation
    for layer in module.layers:
        layer.self_attn.config = layer.cross_attn_image.config = config
        layer.cross_attn_image.query_chunks = 3
    queries = []
    # eager: our function (looked up at call time); sdpa: transformers' wrapper around torch's kernel
    owner, name = (modeling_sam2_video, "eager_attention_forward") if implementation == "eager" else (
        torch.nn.functional, "scaled_dot_product_attention")
    attention = getattr(owner, name)

    def counting(*args, **kwargs):
        query = args[1] if implementation == "eager" else args[0]
        queries.append(query.shape[2])
        return attention(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    actual = module(*inputs, 64)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)
    # per layer: the self-attention (256 queries at once), then the cross-attention in 3 chunks
    assert queries == [256, 86, 86, 84] * len(module.layers), queries


@torch.no_grad()
def test_memory_attention_bf16(models):
    meta, ours = models
    pointer_tokens = 64
    inputs = _frame_inputs(2, 16, 7 * 16 * 16 + pointer_tokens, seed=3)
    expected = _meta_memory_attention(meta, *inputs, pointer_tokens)
    module = copy.deepcopy(ours.memory_attention).to(torch.bfloat16)
    actual = module(*(x.to(torch.bfloat16) for x in inputs), pointer_tokens)
    assert actual.dtype == torch.bfloat16
    error = (actual.float() - expected).abs()
    # bf16 keeps 8 bits of mantissa (relative step 2**-8 = 0.004) over 4 layers of ~unit-scale activations: measured
    # against Meta in float32, max error 0.062 and mean 0.0046 at 64x64 with a full bank, 0.056 / 0.0046 here.
    assert error.mean() < 0.01, error.mean()
    assert error.max() < 0.15, error.max()


@pytest.mark.parametrize("from_points", [False, True])
@torch.no_grad()
def test_encode_memory_matches_meta(models, from_points):
    meta, ours = models
    meta.binarize_mask_from_pts_for_mem_enc = True  # as `build_sam2_video_predictor` sets it
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(2, HIDDEN, 64, 64, generator=generator)
    mask_logits = 8 * torch.randn(2, 1, 64, 64, generator=generator)
    mask_logits = torch.nn.functional.interpolate(mask_logits, size=(1024, 1024), mode="bilinear")
    object_scores = torch.tensor([[2.0], [-3.0]])  # one object present, one absent (gets no_obj_embed_spatial)
    expected, expected_pos = meta._encode_new_memory(
        current_vision_feats=[features.flatten(2).permute(2, 0, 1)],
        feat_sizes=[(64, 64)],
        pred_masks_high_res=mask_logits,
        object_score_logits=object_scores,
        is_mask_from_pts=from_points,
    )
    actual = ours.encode_memory(features, mask_logits, object_scores, from_points=from_points)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)
    ours_pos = sine_position_encoding(64, 64, MEMORY_DIM, torch.device("cpu"))
    torch.testing.assert_close(ours_pos.expand_as(expected_pos[0]), expected_pos[0], rtol=0, atol=1e-5)


@torch.no_grad()
def test_prepare_memory_matches_meta(models, monkeypatch):
    """Meta assembles the bank inside `_prepare_memory_conditioned_features`; capture what it hands to memory
    attention and compare with ours given the same frames and pointers in the same order."""
    meta, ours = models
    batch, size, frame_idx, num_frames = 2, 16, 8, 20
    generator = torch.Generator().manual_seed(11)

    def frame_output():
        features = torch.randn(batch, MEMORY_DIM, size, size, generator=generator)
        return {
            "maskmem_features": features,
            "maskmem_pos_enc": [meta.memory_encoder.position_encoding(features)],
            "obj_ptr": torch.randn(batch, HIDDEN, generator=generator),
        }

    output_dict = {
        "cond_frame_outputs": {0: frame_output()},
        "non_cond_frame_outputs": {t: frame_output() for t in range(1, frame_idx)},
    }
    captured = {}

    def capture(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens):
        captured.update(memory=memory, memory_pos=memory_pos, num_pointer_tokens=num_obj_ptr_tokens)
        return curr[0]

    monkeypatch.setattr(meta.memory_attention, "forward", capture)
    current = torch.randn(size * size, batch, HIDDEN, generator=generator)
    meta._prepare_memory_conditioned_features(
        frame_idx=frame_idx,
        is_init_cond_frame=False,
        current_vision_feats=[current],
        current_vision_pos_embeds=[current],
        feat_sizes=[(size, size)],
        output_dict=output_dict,
        num_frames=num_frames,
    )

    # Meta's order: conditioning frame (t_pos 0), then frames 2..7 (t_pos 1..6); pointers of the conditioning frame,
    # then of frames 7, 6, ..., 1.
    held = output_dict["non_cond_frame_outputs"].keys()
    selection = select_memory(frame_idx, [0], held, held, MemoryRules.from_config(ours.config), num_frames=num_frames)
    assert selection.spatial_frames == (0, *range(2, frame_idx)) and selection.temporal_positions == tuple(range(7))
    assert selection.pointer_frames == (0, *range(frame_idx - 1, 0, -1)) and selection.max_pointer_offset == 15
    outputs = {0: output_dict["cond_frame_outputs"][0], **output_dict["non_cond_frame_outputs"]}
    tokens = assemble_memory(
        ours,
        selection,
        torch.stack([outputs[t]["maskmem_features"] for t in selection.spatial_frames], dim=1),
        torch.stack([outputs[t]["obj_ptr"] for t in selection.pointer_frames], dim=1),
    )
    assert tokens.num_pointer_tokens == captured["num_pointer_tokens"] == 4 * len(selection.pointer_frames)
    torch.testing.assert_close(tokens.memory, captured["memory"].transpose(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(
        tokens.memory_position_encoding, captured["memory_pos"].transpose(0, 1), rtol=0, atol=1e-6
    )


@torch.no_grad()
def test_pointer_position_encoding_exact(models):
    meta, ours = models
    offsets = torch.tensor([8, 1, 2, 3, -4, 15, 0])
    torch.testing.assert_close(
        sine_encoding_1d(offsets / 15, HIDDEN), get_1d_sine_pe(offsets / 15, HIDDEN), rtol=0, atol=0
    )
    expected = meta.obj_ptr_tpos_proj(get_1d_sine_pe(offsets / 15, dim=HIDDEN))
    torch.testing.assert_close(ours.pointer_position_encoding(offsets, 15), expected, rtol=0, atol=0)


def test_sam2_0_checkpoint_loads(tmp_path):
    """SAM 2 (not 2.1) has no `no_obj_embed_spatial` and no `obj_ptr_tpos_proj`: our video model must use exactly
    the weights of Meta's checkpoint."""
    meta = build_sam2("configs/sam2/sam2_hiera_t.yaml", ckpt_path=None, device="cpu")
    ours, info = load_converted(meta, Sam2Config.from_preset("sam2_hiera_tiny"), tmp_path)
    assert not any(info.values()), info
    assert ours.no_obj_embed_spatial is None and ours.obj_ptr_tpos_proj is None
    assert not ours.pointer_position_encoding(torch.tensor([1, 2, -3]), 15).count_nonzero()  # no temporal encoding


@torch.no_grad()
def test_bad_inputs_raise(models):
    _, ours = models
    memories = torch.zeros(1, 2, MEMORY_DIM, 4, 4)
    two_frames = MemorySelection((0, 1), (0, 1), (0, 1), (1, 2), 15)
    with pytest.raises(ValueError, match="temporal_positions"):
        assemble_memory(ours, MemorySelection((0, 1), (0, 7), (), (), 15), memories)
    with pytest.raises(ValueError, match="spatial_memories"):
        assemble_memory(ours, two_frames, torch.zeros(1, 2, 32, 4, 4), torch.zeros(1, 2, HIDDEN))
    with pytest.raises(ValueError, match=r"object_pointers must be \(1, 2, 256\)"):
        assemble_memory(ours, two_frames, memories, torch.zeros(1, 3, HIDDEN))
    with pytest.raises(ValueError, match="2 pointers"):
        assemble_memory(ours, two_frames, memories)
    features, position, memory, memory_pos = _frame_inputs(1, 4, 2 * 16 + 3, seed=0)
    with pytest.raises(ValueError, match="whole number"):
        ours.memory_attention(features, position, memory, memory_pos, 0)
    with pytest.raises(ValueError, match="num_pointer_tokens"):
        ours.memory_attention(features, position, memory, memory_pos, 100)
    fpn = (torch.zeros(1, 32, 64, 64), torch.zeros(1, 64, 32, 32), torch.zeros(1, HIDDEN, 16, 16))
    position = sine_position_encoding(16, 16, HIDDEN, torch.device("cpu"))
    points, labels = torch.zeros(2, 1, 2), torch.ones(2, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="not both"):
        ours(fpn, position, input_points=points, input_labels=labels, input_masks=torch.ones(2, 1, 256, 256))
    with pytest.raises(ValueError, match="same first dimension"):
        memory = torch.zeros(3, 16 + 4, MEMORY_DIM)
        ours(fpn, position, memory, memory, 4, input_points=points, input_labels=labels)
    with pytest.raises(ValueError, match="together"):
        ours(fpn, position, memory=torch.zeros(2, 16, MEMORY_DIM))
    with pytest.raises(ValueError, match="input_masks"):
        ours(fpn, position, input_masks=torch.ones(2, 1, 64, 64))
    memory = torch.zeros(2, 16 + 4, MEMORY_DIM)
    with pytest.raises(ValueError, match="memory is not read"):
        ours.track_step(fpn, position, memory, memory, 4, input_masks=torch.ones(2, 1, 256, 256))
    with pytest.raises(ValueError, match="not both"):
        ours.track_step(fpn, position, memory, memory, 4, conditioned_features=torch.zeros(2, HIDDEN, 16, 16))
    with pytest.raises(ValueError, match="does not return attentions"):
        ours.track_step(fpn, position, input_points=points, input_labels=labels, output_attentions=True)
    # Keyword arguments are never dropped: a typo is refused by name.
    with pytest.raises(TypeError, match="input_point"):
        ours.track_step(fpn, position, input_point=points, input_labels=labels)
    with pytest.raises(TypeError, match="input_point"):
        ours(fpn, position, input_point=points, input_labels=labels)
    with pytest.raises(ValueError, match="from_points"):
        ours.encode_memory(torch.zeros(2, HIDDEN, 4, 4), torch.zeros(2, 1, 64, 64), torch.ones(2, 1), torch.ones(3))


def _meta_frame(fpn_features, position, num_objects):
    """Meta's per-frame inputs: sequence-first features of every level, their position encodings and sizes."""
    features = [f.expand(num_objects, -1, -1, -1).flatten(2).permute(2, 0, 1) for f in fpn_features]
    positions = [position.expand(num_objects, -1, -1, -1).flatten(2).permute(2, 0, 1)] * len(features)
    return {
        "current_vision_feats": features,
        "current_vision_pos_embeds": positions,
        "feat_sizes": [tuple(f.shape[-2:]) for f in fpn_features],
    }


def _assert_step_matches(ours_out, meta_out):
    torch.testing.assert_close(ours_out.pred_masks, meta_out["pred_masks"], rtol=0, atol=1e-4)
    torch.testing.assert_close(ours_out.object_pointers, meta_out["obj_ptr"], rtol=0, atol=1e-4)
    torch.testing.assert_close(ours_out.object_score_logits, meta_out["object_score_logits"], rtol=0, atol=1e-4)
    torch.testing.assert_close(ours_out.maskmem_features, meta_out["maskmem_features"], rtol=0, atol=1e-4)
    if ours_out.high_res_masks is not None:  # the full output of `track_step` (not a slice of it)
        torch.testing.assert_close(ours_out.high_res_masks, meta_out["pred_masks_high_res"], rtol=0, atol=1e-4)
        expected_pos = meta_out["maskmem_pos_enc"][-1]
        torch.testing.assert_close(ours_out.maskmem_position_encoding.expand_as(expected_pos), expected_pos)


@torch.no_grad()
def test_tracking_steps_match_meta(models):
    """Two objects through a clicked conditioning frame, a memory-conditioned frame and a mask-prompted frame,
    against Meta's `track_step` (which Meta's video predictor calls once per object)."""
    meta, ours = models
    num_objects, num_frames = 2, 10
    generator = torch.Generator().manual_seed(5)
    # One frame's features as `get_vision_features` gives them (256 input: 64, 32 and 16 pixel maps).
    fpn = tuple(torch.randn(1, c, s, s, generator=generator) for c, s in ((32, 64), (64, 32), (256, 16)))
    position = sine_position_encoding(16, 16, HIDDEN, torch.device("cpu"))
    frame = _meta_frame(fpn, position, num_objects)
    empty_bank = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}

    # Frame 0: one click per object (positive, negative) -> multimask output, best mask chosen by IoU.
    points, labels = torch.tensor([[[50.0, 100.0]], [[200.0, 25.0]]]), torch.tensor([[1], [0]])
    expected = meta.track_step(
        frame_idx=0,
        is_init_cond_frame=True,
        point_inputs={"point_coords": points, "point_labels": labels.int()},
        mask_inputs=None,
        output_dict=empty_bank,
        num_frames=num_frames,
        **frame,
    )
    clicked = ours(fpn, position, input_points=points, input_labels=labels)
    _assert_step_matches(clicked, expected)
    assert clicked.iou_scores.shape == (num_objects, 3)
    scores = clicked.object_score_logits.flatten()
    assert scores[0] < 0 < scores[1]  # one object absent (mask -1024, no_obj_ptr, no_obj_embed_spatial), one present
    assert (clicked.pred_masks[0] == -1024).all() and (clicked.pred_masks[1] != -1024).any()

    # Frame 1: tracked from the memory of frame 0 (its spatial memory and its pointer).
    expected = meta.track_step(
        frame_idx=1,
        is_init_cond_frame=False,
        point_inputs=None,
        mask_inputs=None,
        output_dict={"cond_frame_outputs": {0: expected}, "non_cond_frame_outputs": {}},
        num_frames=num_frames,
        **frame,
    )
    selection = select_memory(1, [0], (), (), MemoryRules.from_config(ours.config), num_frames=num_frames)
    assert (selection.spatial_frames, selection.pointer_frames, selection.pointer_offsets) == ((0,), (0,), (1,))
    tokens = assemble_memory(ours, selection, clicked.maskmem_features[:, None], clicked.object_pointers[:, None])
    tracked = ours.track_step(
        fpn,
        position,
        memory=tokens.memory,
        memory_position_encoding=tokens.memory_position_encoding,
        num_pointer_tokens=tokens.num_pointer_tokens,
    )
    _assert_step_matches(tracked, expected)
    assert (tracked.object_score_logits > 0).any()

    # Frame 2: mask prompts (the second one empty: object absent) are taken as the output.
    masks = torch.zeros(num_objects, 1, 256, 256, dtype=torch.bool)
    masks[0, :, 50:150, 25:100] = True
    expected = meta.track_step(
        frame_idx=2,
        is_init_cond_frame=True,
        point_inputs=None,
        mask_inputs=masks,
        output_dict=empty_bank,
        num_frames=num_frames,
        **frame,
    )
    _assert_step_matches(ours(fpn, position, input_masks=masks), expected)

    # Frame 3: different numbers of clicks (2 and 3; padding label -10) in one batch equal Meta's per-object calls.
    points = torch.tensor([[[30.0, 40.0], [120.0, 90.0], [0.0, 0.0]], [[200.0, 25.0], [60.0, 180.0], [90.0, 90.0]]])
    labels = torch.tensor([[1, 0, -10], [1, 1, 0]])
    batched = ours(fpn, position, input_points=points, input_labels=labels)
    for index, count in enumerate((2, 3)):
        expected = meta.track_step(
            frame_idx=3,
            is_init_cond_frame=True,
            point_inputs={
                "point_coords": points[index, None, :count],
                "point_labels": labels[index, None, :count].int(),
            },
            mask_inputs=None,
            output_dict=empty_bank,
            num_frames=num_frames,
            **_meta_frame(fpn, position, 1),
        )
        compared = ("pred_masks", "object_pointers", "object_score_logits", "maskmem_features")
        single = Sam2VideoFrameOutput(**{k: batched[k][index, None] for k in compared})
        _assert_step_matches(single, expected)


def test_video_model_is_not_an_image_model(models):
    """The video model shares the image modules (`Sam2Base`) but is not a `Sam2Model` (whose `forward` prompts
    images): code that needs the image model refuses it at once, by name."""
    from hiera_hf.sam2 import Sam2Base, Sam2Model
    from hiera_hf.sam2.mask_generation import Sam2AutomaticMaskGenerator

    _, ours = models
    assert isinstance(ours, Sam2Base) and not isinstance(ours, Sam2Model)
    assert not issubclass(Sam2Model, type(ours))
    with pytest.raises(TypeError, match="Sam2Model, got Sam2VideoModel"):
        Sam2AutomaticMaskGenerator(ours)
