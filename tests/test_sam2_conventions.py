"""SAM 2 image and video models follow transformers conventions: meta-device construction and `device_map="auto"`
loading, whole-model bfloat16, `torch.compile` without graph breaks, eager and SDPA attention, gradient
checkpointing of every repeated layer, and `_no_split_modules`.

All on a tiny random SAM 2.1 (64x64 inputs); Meta's code is not needed here: each test compares one of our models
with itself under another setting (loading path, dtype, compiler, attention kernel, checkpointing).
"""

import copy
import json

import pytest
import torch
from accelerate import infer_auto_device_map
from accelerate.utils import compute_module_sizes
from sam2_helpers import tiny_config

from hiera_hf.sam2 import Sam2Model
from hiera_hf.sam2.memory_bank import MemorySelection
from hiera_hf.sam2.memory_tokens import assemble_memory
from hiera_hf.sam2.modeling_sam2 import (
    Sam2Attention,
    Sam2HieraBlock,
    Sam2ImageSegmentationOutput,
    Sam2TwoWayAttentionBlock,
)
from hiera_hf.sam2.modeling_sam2_video import Sam2MemoryAttentionLayer, Sam2VideoFrameOutput, Sam2VideoModel

SIZE = 64  # tiny_config's image size


def pixels(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def image_prompts() -> dict:
    """Two images, two prompts each: clicks (one prompt padded with label -10, so the decoder's token mask is on)
    and a box per prompt."""
    return {
        "input_points": torch.tensor([[[[10.0, 20.0], [40.0, 30.0]], [[50.0, 8.0], [0.0, 0.0]]]] * 2),
        "input_labels": torch.tensor([[[1, 0], [1, -10]]] * 2),
        "input_boxes": torch.tensor([[[4.0, 4.0, 40.0, 44.0], [20.0, 10.0, 60.0, 50.0]]] * 2),
    }


def run_image(model: Sam2Model) -> Sam2ImageSegmentationOutput:
    return model(pixel_values=pixels(), **image_prompts())


def run_video(model: Sam2VideoModel) -> list[Sam2VideoFrameOutput]:
    """Two objects through a clicked frame, a memory-conditioned frame (memory attention, pointers) and a
    mask-prompted frame (mask used as output)."""
    vision = model.get_vision_features(pixels(1))
    frame = (vision.fpn_features, vision.position_encoding)
    points, labels = torch.tensor([[[20.0, 30.0]], [[45.0, 12.0]]]), torch.tensor([[1], [1]])
    clicked = model(*frame, input_points=points, input_labels=labels)
    selection = MemorySelection((0,), (0,), (0,), (1,), model.config.max_obj_ptrs_in_encoder - 1)
    memory = assemble_memory(model, selection, clicked.maskmem_features[:, None], clicked.object_pointers[:, None])
    tracked = model(*frame, memory.memory, memory.memory_position_encoding, memory.num_pointer_tokens)
    masks = torch.zeros(2, 1, SIZE, SIZE)
    masks[0, :, 10:40, 20:50] = 1.0
    return [clicked, tracked, model(*frame, input_masks=masks)]


def random_model(cls: type, **kwargs):
    """Random weights of unit-scale activations (initializer_range 0.2 for 32 channels) and random biases and
    LayerNorm shifts (the initialisation zeroes them). The object-score bias is raised so that the tracked objects
    are present (scores about +0.6) and their masks are compared; the empty mask prompt covers absent objects."""
    torch.manual_seed(0)
    model = cls(tiny_config(**{"initializer_range": 0.2, **kwargs})).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim <= 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
        model.mask_decoder.pred_obj_score_head.layers[-1].bias.add_(2.0)
    return model


MODELS = {"image": (Sam2Model, run_image), "video": (Sam2VideoModel, run_video)}


def as_list(outputs) -> list:
    return outputs if isinstance(outputs, list) else [outputs]


@pytest.mark.parametrize("kind", MODELS)
@torch.no_grad()
def test_device_map_auto_loads_like_from_pretrained(kind, tmp_path):
    cls, run = MODELS[kind]
    with torch.device("meta"):  # what device_map / low-memory loading build first
        assert all(p.is_meta for p in cls(tiny_config()).parameters())
    random_model(cls).save_pretrained(tmp_path)
    plain = cls.from_pretrained(tmp_path).eval()
    mapped = cls.from_pretrained(tmp_path, device_map="auto").eval()
    tensors = dict(mapped.named_parameters()) | dict(mapped.named_buffers())
    assert all(tensor.device.type == "cpu" for tensor in tensors.values())
    for expected, actual in zip(as_list(run(plain)), as_list(run(mapped))):
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(actual[key], value, rtol=0, atol=0, msg=key)


def relative_error(low: torch.Tensor, reference: torch.Tensor) -> float:
    return float((low.float() - reference).norm() / reference.norm())


@pytest.mark.parametrize("kind", MODELS)
@torch.no_grad()
def test_bf16_model_close_to_fp32(kind):
    cls, run = MODELS[kind]
    model = random_model(cls)
    reference = as_list(run(model))
    low = as_list(run(copy.deepcopy(model).to(torch.bfloat16)))  # float32 inputs are cast by the model
    keys = ("pred_masks", "iou_scores", "object_score_logits", "object_pointers", "maskmem_features")
    for step, (expected, actual) in enumerate(zip(reference, low)):
        for key in keys:
            if expected.get(key) is None:
                continue
            # bf16 keeps 8 mantissa bits (relative step 0.4%). Through trunk, neck, decoder and memory modules the
            # measured relative errors are 0.2-3%, at most 4.3e-2 for the first video frame's object-score logits
            # (about 0.6: a difference of larger terms). 6e-2 bounds that rounding and still catches a wrong
            # computation (errors of order 1).
            assert relative_error(actual[key], expected[key]) < 6e-2, (step, key)
    assert low[0].iou_scores.dtype == torch.bfloat16


def test_sam2_attention_projects_keys_from_kv_in_dim():
    attention = Sam2Attention(tiny_config(), hidden_size=32, num_heads=2, kv_in_dim=16)
    assert attention.k_proj.in_features == attention.v_proj.in_features == 16
    assert attention.q_proj.in_features == 32
    memory = torch.randn(3, 7, 16)
    assert attention(torch.randn(3, 5, 32), memory, memory)[0].shape == (3, 5, 32)


@torch.no_grad()
def test_compile_fullgraph_image_embeddings_and_prompting():
    """`fullgraph=True` raises on any graph break. The `aot_eager` backend traces through AOT autograd like
    inductor does, without inductor's C++ compilation time."""
    model = random_model(Sam2Model)
    torch._dynamo.reset()
    embed = torch.compile(model.get_image_embeddings, fullgraph=True, backend="aot_eager")
    prompt = torch.compile(model, fullgraph=True, backend="aot_eager")
    embeddings = model.get_image_embeddings(pixels())
    compiled_embeddings = embed(pixels())
    # AOT autograd decomposes some operators (e.g. bicubic interpolation, normalisation) into primitive ones: a
    # different rounding, measured 5e-5 at most on embeddings of magnitude up to 42.
    tolerance = {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(compiled_embeddings.image_embeddings, embeddings.image_embeddings, **tolerance)
    expected = model(**embeddings, **image_prompts())
    actual = prompt(**embeddings, **image_prompts())
    for key in ("pred_masks", "iou_scores", "object_score_logits"):
        torch.testing.assert_close(actual[key], expected[key], **tolerance, msg=key)


def test_flex_attention_is_refused_clearly():
    with pytest.raises(ValueError, match="flex"):
        Sam2Model._from_config(tiny_config(), attn_implementation="flex_attention")


@pytest.mark.parametrize("kind", MODELS)
@torch.no_grad()
def test_eager_and_sdpa_attention_agree(kind):
    cls, run = MODELS[kind]
    torch.manual_seed(0)
    # _from_config writes the implementation into the config it is given, hence the copies.
    eager = cls._from_config(copy.deepcopy(tiny_config()), attn_implementation="eager").eval()
    sdpa = cls._from_config(copy.deepcopy(tiny_config()), attn_implementation="sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    for expected, actual in zip(as_list(run(eager)), as_list(run(sdpa))):
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                # Same math, different summation order: float32 rounding only.
                torch.testing.assert_close(actual[key], value, rtol=1e-5, atol=1e-5, msg=key)


def count_checkpointed_calls(model, layer_types: tuple[type, ...]) -> dict[type, list[int]]:
    """Wrap the checkpoint function of every layer of `layer_types`; returns per type the call count of each."""
    counts = {layer_type: [] for layer_type in layer_types}
    for module in model.modules():
        if isinstance(module, layer_types):
            assert module.gradient_checkpointing
            calls = counts[next(t for t in layer_types if isinstance(module, t))]
            calls.append(0)
            index, checkpoint = len(calls) - 1, module._gradient_checkpointing_func

            def counted(*args, _calls=calls, _index=index, _checkpoint=checkpoint, **kwargs):
                _calls[_index] += 1
                return _checkpoint(*args, **kwargs)

            module._gradient_checkpointing_func = counted
    return counts


def test_gradient_checkpointing_covers_every_layer_and_keeps_gradients():
    model = random_model(Sam2Model, drop_path_rate=0.0).train()
    labels = (torch.rand(2, 2, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.5).float()

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model(pixel_values=pixels(), **image_prompts(), labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.activation_checkpointing_enable()
    counts = count_checkpointed_calls(model, (Sam2HieraBlock, Sam2TwoWayAttentionBlock))
    checkpointed = gradients()
    assert all(counts[t] and all(c == 1 for c in counts[t]) for t in counts), counts
    assert checkpointed.keys() == plain.keys()
    for name, grad in plain.items():
        # Recomputation repeats the same float32 operations; differences are accumulation-order rounding.
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-6, msg=name)

    video = random_model(Sam2VideoModel).train()
    video.activation_checkpointing_enable()
    counts = count_checkpointed_calls(video, (Sam2HieraBlock, Sam2TwoWayAttentionBlock, Sam2MemoryAttentionLayer))
    run_video(video)[1].pred_masks.sum().backward()
    assert all(counts[t] and all(c >= 1 for c in counts[t]) for t in counts), counts
    assert all(p.grad is not None for p in video.memory_attention.parameters())


def test_no_split_modules_exist_and_stay_whole():
    model = random_model(Sam2VideoModel)
    names = set(model._no_split_modules)
    present = {type(module).__name__ for module in model.modules()}
    assert names <= present, names - present  # a misspelt class would silently be split
    # A CPU budget of half the model forces a split (the rest goes to disk); no listed module may be cut.
    budget = compute_module_sizes(model)[""] // 2
    device_map = infer_auto_device_map(model, max_memory={"cpu": budget, "disk": 10**9}, no_split_module_classes=names)
    assert set(device_map.values()) == {"cpu", "disk"}
    whole = [name for name, module in model.named_modules() if type(module).__name__ in names]
    for key in device_map:
        assert not any(key.startswith(f"{name}.") for name in whole), key


def test_position_grid_cache_follows_the_weights():
    """The trunk keeps its resized position embeddings between calls without autograd; any change of the weights,
    including one that leaves no version trace (a fused optimizer step), or of the input size recomputes them."""
    model = random_model(Sam2Model)
    hiera = model.hiera
    with torch.no_grad():
        first = hiera.position_grid(16, 16)
        assert hiera.position_grid(16, 16) is first  # cached
        hiera.position_embeddings.grad = torch.ones_like(hiera.position_embeddings)
        version = hiera.position_embeddings._version
        torch.optim.AdamW([hiera.position_embeddings], lr=0.1, fused=True).step()
        assert hiera.position_embeddings._version == version  # no trace: a version-keyed cache would be stale
        moved = hiera.position_grid(16, 16)
        torch.testing.assert_close(moved, hiera._position_grid(16, 16), rtol=0, atol=0)
        assert not torch.equal(moved, first)
        assert hiera.position_grid(32, 32).shape == (1, 32, 32, hiera.position_embeddings.shape[1])
    # With autograd the grid is rebuilt each call, so the embeddings get gradients.
    model.zero_grad(set_to_none=True)
    model.get_vision_features(pixels(1)).fpn_features[-1].sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in (hiera.position_embeddings, hiera.position_embeddings_window))


# Settings that Sam2Config held until hiera-hf removed them (dead, or never allowed to vary), with the values
# today's converter wrote into every folder.
OLD_LAYOUT_FIELDS = {
    "memory_attention_rope_feat_sizes": [64, 64],
    "use_obj_ptrs_in_encoder": True,
    "non_overlap_masks_for_mem_enc": False,
    "use_mask_input_as_output_without_sam": True,
    "directly_add_no_mem_embed": True,
}


def write_old_layout(model, folder, **changes) -> None:
    """`model` saved, its config.json rewritten with the removed fields, as folders converted before their removal."""
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert not OLD_LAYOUT_FIELDS.keys() & config.keys()
    (folder / "config.json").write_text(json.dumps({**config, **OLD_LAYOUT_FIELDS, **changes}, indent=2))


@pytest.mark.parametrize("kind", MODELS)
@torch.no_grad()
def test_folder_in_the_old_config_layout_loads(kind, tmp_path):
    cls, run = MODELS[kind]
    model = random_model(cls)
    model.save_pretrained(tmp_path / "today")
    write_old_layout(model, tmp_path / "old")
    today = cls.from_pretrained(tmp_path / "today").eval()
    loaded = cls.from_pretrained(tmp_path / "old").eval()
    assert not OLD_LAYOUT_FIELDS.keys() & loaded.config.to_dict().keys()
    assert loaded.config.to_diff_dict() | {"_name_or_path": ""} == today.config.to_diff_dict() | {"_name_or_path": ""}
    for expected, actual in zip(as_list(run(today)), as_list(run(loaded))):
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(actual[key], value, rtol=0, atol=0, msg=key)
    loaded.save_pretrained(tmp_path / "new")  # written again in today's layout
    assert not OLD_LAYOUT_FIELDS.keys() & json.loads((tmp_path / "new" / "config.json").read_text()).keys()


@pytest.mark.parametrize(
    "name", [name for name in OLD_LAYOUT_FIELDS if name != "memory_attention_rope_feat_sizes"]
)
def test_old_folder_with_a_setting_the_model_never_supported_is_refused(name, tmp_path):
    write_old_layout(random_model(Sam2Model), tmp_path, **{name: not OLD_LAYOUT_FIELDS[name]})
    with pytest.raises(ValueError, match=f"{name}={not OLD_LAYOUT_FIELDS[name]} is not supported"):
        Sam2Model.from_pretrained(tmp_path)
