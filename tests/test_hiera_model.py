"""HieraModel and heads: transformers conventions, outputs, bad inputs, and the backbone against Meta's code."""

import copy

import pytest
import torch
from hiera_helpers import meta_model, pixels
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoBackbone, AutoConfig

from hiera_hf import HieraBackbone, HieraConfig, HieraForImageClassification, HieraModel
from hiera_hf.conversion import convert_meta_hiera_state_dict

SMALL = {"depths": (1, 1, 2, 1), "embed_dim": 32, "num_heads": (1, 2, 4, 8)}


def small_config(**kwargs) -> HieraConfig:
    return HieraConfig.from_preset("hiera_tiny_224", **{**SMALL, "num_labels": 10, **kwargs})


def small_video_config(**kwargs) -> HieraConfig:
    return HieraConfig.from_preset(
        "hiera_base_16x224", **{**SMALL, "num_labels": 10, "image_size": (4, 64, 64), **kwargs}
    )


def meta_small(video: bool) -> torch.nn.Module:
    """Meta's Hiera with the same architecture as `small_config` / `small_video_config`, random weights."""
    kwargs = {"embed_dim": 32, "num_heads": 1, "stages": (1, 1, 2, 1), "num_classes": 10}
    if video:
        kwargs.update(
            input_size=(4, 64, 64),
            q_stride=(1, 2, 2),
            mask_unit_size=(1, 8, 8),
            patch_kernel=(3, 7, 7),
            patch_stride=(2, 4, 4),
            patch_padding=(1, 3, 3),
            sep_pos_embed=True,
        )
    return meta_model(**kwargs)


@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_backbone_feature_maps_equal_meta_intermediates(video):
    reference = meta_small(video)
    config = (small_video_config if video else small_config)(out_features=["stage1", "stage2", "stage3", "stage4"])
    backbone = HieraBackbone(config).eval()
    state = {k.removeprefix("hiera."): v for k, v in convert_meta_hiera_state_dict(reference.state_dict()).items()}
    backbone.hiera.load_state_dict({k: v for k, v in state.items() if not k.startswith(("norm.", "classifier."))})
    x = pixels(config, 2)
    with torch.no_grad():
        _, intermediates = reference(x, return_intermediates=True)
        maps = backbone(x).feature_maps
    assert len(maps) == 4
    for ours, theirs in zip(maps, intermediates):
        assert ours.shape == theirs.movedim(-1, 1).shape
        torch.testing.assert_close(ours, theirs.movedim(-1, 1), atol=1e-5, rtol=0)


def test_backbone_out_features_and_auto(tmp_path):
    config = small_config(out_features=["stem", "stage2", "stage4"])
    HieraBackbone(config).save_pretrained(tmp_path)
    # transformers 5.23-5.25's AutoBackbone.from_pretrained asks the Hub whether a repo exists before looking at local
    # folders, so it cannot load any local folder; from_config resolves our class and from_pretrained loads it.
    assert isinstance(AutoBackbone.from_config(AutoConfig.from_pretrained(tmp_path)), HieraBackbone)
    backbone = HieraBackbone.from_pretrained(tmp_path)
    maps = backbone(pixels(config)).feature_maps
    assert [tuple(m.shape) for m in maps] == [(1, 32, 56, 56), (1, 64, 28, 28), (1, 256, 7, 7)]
    assert backbone.channels == [32, 64, 256]


@pytest.mark.parametrize("implementation", ["sdpa", "flex_attention"])
def test_attention_implementations_agree_with_eager(implementation):
    config = small_config()
    torch.manual_seed(0)
    # _from_config writes the implementation into the config it is given, hence the copies.
    eager = HieraForImageClassification._from_config(copy.deepcopy(config), attn_implementation="eager").eval()
    other = HieraForImageClassification._from_config(copy.deepcopy(config), attn_implementation=implementation)
    other.eval().load_state_dict(eager.state_dict())
    assert eager.config._attn_implementation == "eager" and other.config._attn_implementation == implementation
    x = pixels(config, 2)
    with torch.no_grad():
        torch.testing.assert_close(other(x).logits, eager(x).logits, atol=1e-5, rtol=1e-5)


def test_default_attention_is_sdpa():
    assert HieraModel(small_config()).config._attn_implementation == "sdpa"


def test_hidden_states_and_attentions():
    config = small_config()
    model = HieraModel._from_config(config, attn_implementation="eager").eval()
    out = model(pixels(config, 2), output_hidden_states=True, output_attentions=True)
    blocks = sum(config.depths)
    assert len(out.hidden_states) == blocks + 1 and len(out.attentions) == blocks
    assert out.hidden_states[0].shape == (2, 56, 56, 32)
    assert out.hidden_states[-1].shape == (2, 7, 7, 256)
    # First block: mask-unit attention over 8x8 units of a 56x56 grid -> 49 windows per image.
    assert out.attentions[0].shape == (2 * 49, 1, 64, 64)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2 * 49, 1, 64))
    assert out.last_hidden_state.shape == (2, 49, 256) and out.pooler_output.shape == (2, 256)
    torch.testing.assert_close(out.last_hidden_state, out.intermediates[-1].flatten(1, 2))


def test_classifier_loss_and_video_classifier():
    config = small_video_config()
    from hiera_hf import HieraForVideoClassification

    model = HieraForVideoClassification(config)
    out = model(pixels(config, 2), labels=torch.tensor([1, 2]))
    assert out.logits.shape == (2, 10)
    expected = torch.nn.functional.cross_entropy(out.logits, torch.tensor([1, 2]))
    torch.testing.assert_close(out.loss, expected)


def test_gradient_checkpointing_gives_same_gradients():
    config = small_config(drop_path_rate=0.0)
    torch.manual_seed(0)
    model = HieraForImageClassification(config).train()
    x, labels = pixels(config, 2), torch.tensor([3, 4])

    def grads():
        model.zero_grad()
        model(x, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    checkpointed = grads()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_compile_has_no_graph_breaks():
    config = small_config()
    model = HieraForImageClassification(config).eval()
    explanation = torch._dynamo.explain(model)(pixels(config))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_interpolate_pos_encoding():
    config = small_config()
    model = HieraModel(config).eval()
    larger = torch.randn(1, 3, 288, 256)
    with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
        model(larger)
    out = model(larger, interpolate_pos_encoding=True)
    assert out.intermediates[0].shape == (1, 72, 64, 32) and out.intermediates[-1].shape == (1, 9, 8, 256)
    # At the native size interpolation is the identity.
    x = pixels(config)
    torch.testing.assert_close(model(x, interpolate_pos_encoding=True).pooler_output, model(x).pooler_output)


def test_bf16_forward_close_to_fp32():
    config = small_config()
    model = HieraModel(config).eval()
    x = pixels(config)
    with torch.no_grad():
        reference = model(x).intermediates[-1]
        low = model.to(torch.bfloat16)(x.to(torch.bfloat16)).intermediates[-1]
    assert low.dtype == torch.bfloat16
    # bf16 keeps 8 mantissa bits; through 5 random-weight blocks the relative error measured 1.25e-2 (1.6e-2 for
    # Hiera-B's 24 blocks), so 2e-2 bounds rounding while still catching a wrong computation (errors of order 1).
    relative = (low.float() - reference).norm() / reference.norm()
    assert relative < 2e-2


def test_device_map_auto(tmp_path):
    HieraForImageClassification(small_config()).save_pretrained(tmp_path)
    model = HieraForImageClassification.from_pretrained(tmp_path, device_map="auto")
    assert model(pixels(model.config)).logits.shape == (1, 10)


@pytest.mark.parametrize(
    ("shape", "dtype", "error", "match"),
    [
        ((2, 1, 224, 224), torch.float32, ValueError, "1 channels"),
        ((3, 224, 224), torch.float32, ValueError, "4-D"),
        ((2, 3, 224, 200), torch.float32, ValueError, "multiple of"),
        ((2, 3, 224, 224), torch.uint8, TypeError, "floating-point"),
    ],
)
def test_bad_pixel_values(shape, dtype, error, match):
    model = HieraModel(small_config())
    with pytest.raises(error, match=match):
        model(torch.zeros(shape, dtype=dtype))


def test_video_model_rejects_images():
    with pytest.raises(ValueError, match="5-D"):
        HieraModel(small_video_config())(torch.zeros(1, 3, 64, 64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"query_stride": (2, 2, 2)}, "query_stride"),
        ({"num_heads": (1, 2)}, "one entry per stage"),
        ({"num_query_pool": 4}, "num_query_pool"),
        ({"image_size": (200, 224)}, "multiple of"),
        ({"num_heads": (1, 2, 4, 5)}, "divisible"),
        ({"mask_ratio": 1.5}, "mask_ratio"),
        ({"decoder_depth": 2}, "set together"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(StrictDataclassClassValidationError, match=match):
        HieraConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown Hiera variant 'hiera_gigantic_224'.*hiera_base_224"):
        HieraConfig.from_preset("hiera_gigantic_224")


def test_config_round_trip(tmp_path):
    config = small_video_config()
    config.save_pretrained(tmp_path)
    loaded = HieraConfig.from_pretrained(tmp_path)
    assert loaded.image_size == (4, 64, 64) and loaded.sep_pos_embed and loaded.stage_dims == [32, 64, 128, 256]
