"""The conventions transformers' own model tests (ModelTesterMixin, ConfigTester) check, on every hiera-hf model
class: meta-device construction and `device_map="auto"` loading (also of a large variant), save/load, missing and
mismatched keys reported, every weight initialised by `_init_weights`, hidden states and attentions (by argument and
by config, on the autograd graph), input embeddings, forward signature, unknown keywords refused, `return_dict`.

Written for hiera-hf (transformers' test files are not in its wheel); each check mirrors the intent of the
transformers test of a similar name. Tiny random models; nothing here needs Meta's code.
"""

import inspect
import json
import math
from dataclasses import dataclass, field

import pytest
import torch
from accelerate import init_empty_weights
from hiera_helpers import pixels, tiny_mae_config
from safetensors.torch import load_file, save_file
from sam2_helpers import tiny_config as tiny_sam2_config
from torch import nn

from hiera_hf import (
    HieraBackbone,
    HieraConfig,
    HieraForImageClassification,
    HieraForPreTraining,
    HieraForVideoClassification,
    HieraModel,
    Sam2Config,
    Sam2HieraBackbone,
    Sam2Model,
    Sam2VideoModel,
)

TINY_HIERA = {"embed_dim": 16, "num_heads": (1, 1, 2, 2), "depths": (1, 1, 2, 1), "num_labels": 3}
ALL_STAGES = {"out_features": ["stem", "stage1", "stage2", "stage3", "stage4"]}


@dataclass
class Case:
    """One model class with a tiny config, its inputs, and where its outputs keep hidden states and attentions."""

    model_class: type
    config: object
    inputs: callable  # model -> forward keyword arguments
    hidden_states: str | None = "hidden_states"  # output field, None where the forward has no such option
    attentions: tuple[str, ...] = ("attentions",)
    num_hidden_states: int = 0  # expected lengths: embeddings + one per block; one per attention
    num_attentions: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.model_class.__name__


def hiera_inputs(model) -> dict:
    return {"pixel_values": pixels(model.config, 2)}


def mae_inputs(model) -> dict:
    noise = torch.rand(2, model.config.num_mask_units, generator=torch.Generator().manual_seed(1))
    return {"pixel_values": pixels(model.config, 2), "noise": noise}


def sam2_pixels(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def sam2_inputs(model) -> dict:
    return {
        "pixel_values": sam2_pixels(),
        "input_points": torch.tensor([[[[10.0, 20.0], [40.0, 30.0]]], [[[50.0, 8.0], [0.0, 0.0]]]]),
        "input_labels": torch.tensor([[[1, 0]], [[1, -10]]]),
    }


def video_inputs(model) -> dict:
    with torch.no_grad():
        vision = model.get_vision_features(sam2_pixels(1))
    return {
        "fpn_features": vision.fpn_features,
        "vision_position_encoding": vision.position_encoding,
        "input_points": torch.tensor([[[20.0, 30.0]], [[45.0, 12.0]]]),
        "input_labels": torch.tensor([[1], [1]]),
    }


def backbone_inputs(model) -> dict:
    return {"pixel_values": sam2_pixels()}


HIERA_BLOCKS, SAM2_BLOCKS = sum(TINY_HIERA["depths"]), sum(tiny_sam2_config().depths)


def hiera_case(model_class: type, config: HieraConfig, inputs=hiera_inputs) -> Case:
    return Case(
        model_class,
        config,
        inputs,
        num_hidden_states=HIERA_BLOCKS + 1,
        num_attentions={"attentions": HIERA_BLOCKS},
    )


CASES = [
    hiera_case(HieraModel, HieraConfig.from_preset("hiera_tiny_224", **TINY_HIERA, image_size=(64, 64))),
    hiera_case(HieraForImageClassification, HieraConfig.from_preset("hiera_tiny_224", **TINY_HIERA, image_size=(64, 64))),
    hiera_case(
        HieraForVideoClassification,
        HieraConfig.from_preset("hiera_base_16x224", **TINY_HIERA, image_size=(4, 64, 64)),
    ),
    hiera_case(
        HieraBackbone, HieraConfig.from_preset("hiera_tiny_224", **TINY_HIERA, image_size=(64, 64), **ALL_STAGES)
    ),
    hiera_case(HieraForPreTraining, tiny_mae_config(depths=TINY_HIERA["depths"], num_labels=3), mae_inputs),
    Case(
        Sam2Model,
        tiny_sam2_config(),
        sam2_inputs,
        hidden_states="vision_hidden_states",
        attentions=("vision_attentions", "mask_decoder_attentions"),
        num_hidden_states=SAM2_BLOCKS + 1,
        # Three attentions per two-way layer (token self-attention, token-to-image, image-to-token) plus the final.
        num_attentions={"vision_attentions": SAM2_BLOCKS, "mask_decoder_attentions": 3 * 2 + 1},
    ),
    Case(
        Sam2HieraBackbone,
        tiny_sam2_config(**ALL_STAGES),
        backbone_inputs,
        num_hidden_states=SAM2_BLOCKS + 1,
        num_attentions={"attentions": SAM2_BLOCKS},
    ),
    # One tracking step: no hidden-state or attention outputs to offer.
    Case(
        Sam2VideoModel,
        tiny_sam2_config(),
        video_inputs,
        hidden_states=None,
        attentions=(),
    ),
]
WITH_OUTPUTS = [case for case in CASES if case.hidden_states is not None]
BACKBONES = [case for case in CASES if case.model_class in (HieraBackbone, Sam2HieraBackbone)]


def build(case: Case, attn_implementation: str = "eager", seed: int = 0, **config_changes) -> nn.Module:
    torch.manual_seed(seed)
    config = case.config.__class__.from_dict({**case.config.to_dict(), **config_changes})
    return case.model_class._from_config(config, attn_implementation=attn_implementation)


def first_output(outputs) -> torch.Tensor:
    """transformers' tests differentiate `outputs[0]`; a backbone's first output is the tuple of feature maps."""
    first = outputs[0]
    return first[-1] if isinstance(first, tuple) else first


def assert_same_outputs(a, b, atol: float = 1e-5) -> None:
    torch.testing.assert_close(first_output(a), first_output(b), atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Configs (transformers' ConfigTester)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_class", [HieraConfig, Sam2Config])
def test_config_round_trips_and_common_kwargs(config_class, tmp_path):
    default = config_class()  # builds without arguments
    common = {
        "return_dict": False,
        "output_hidden_states": True,
        "output_attentions": True,
        "id2label": {0: "a", 1: "b"},
        "label2id": {"a": 0, "b": 1},
        "problem_type": "single_label_classification",
    }
    config = config_class(**common)
    for name, value in common.items():
        assert getattr(config, name) == value, name
    assert json.loads(config.to_json_string())["output_hidden_states"] is True
    config.to_json_file(tmp_path / "config.json")
    assert config_class.from_json_file(tmp_path / "config.json").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "folder")
    assert config_class.from_pretrained(tmp_path / "folder").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "repo" / "sub")
    assert config_class.from_pretrained(tmp_path / "repo", subfolder="sub").to_dict() == config.to_dict()
    assert config_class.from_dict(default.to_dict()).to_dict() == default.to_dict()
    assert config_class(num_labels=5).num_labels == 5


# ---------------------------------------------------------------------------------------------------------------
# Construction and loading (conventions 1 and 2)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_can_be_initialized_on_meta(case):
    with torch.device("meta"):
        model = case.model_class(case.config)
    assert all(p.is_meta for p in model.parameters())
    with init_empty_weights():
        model = case.model_class(case.config)
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("case", CASES, ids=str)
def test_can_init_all_missing_weights(case):
    """Every parameter and persistent buffer is set by `_init_weights` (none left as allocated)."""
    with torch.device("meta"):
        model = case.model_class(case.config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.is_floating_point():
                tensor.fill_(math.nan)
    for item in (*model.modules(), *model.parameters(), *model.buffers()):
        if hasattr(item, "_is_hf_initialized"):
            del item._is_hf_initialized
    model.initialize_weights()
    persistent = dict(model.state_dict(keep_vars=True))
    left = [name for name, tensor in persistent.items() if tensor.is_floating_point() and tensor.isnan().any()]
    assert not left, f"not initialised by _init_weights: {left}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_save_load_and_device_map_auto(case, tmp_path):
    model = build(case).eval()
    model.save_pretrained(tmp_path)
    inputs = case.inputs(model)
    with torch.no_grad():
        expected = model(**inputs)
    for kwargs in ({}, {"device_map": "auto"}):
        loaded, info = case.model_class.from_pretrained(
            tmp_path, output_loading_info=True, attn_implementation="eager", **kwargs
        )
        assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        assert not any(p.is_meta for p in (*loaded.parameters(), *loaded.buffers()))
        with torch.no_grad():
            assert_same_outputs(loaded.eval()(**inputs), expected, atol=0)
    # No tied weights: every parameter has its own storage after loading.
    pointers = [p.data_ptr() for p in loaded.parameters()]
    assert len(pointers) == len(set(pointers))


@pytest.mark.parametrize(
    ("model_class", "config"),
    [
        (HieraForImageClassification, HieraConfig.from_preset("hiera_large_224")),
        (Sam2Model, Sam2Config.from_preset("sam2.1_hiera_large")),
    ],
    ids=["hiera_large_224", "sam2.1_hiera_large"],
)
def test_large_variant_from_pretrained_with_device_map_auto(model_class, config, tmp_path):
    """A large official architecture, built on the meta device and written with random weights (no real
    initialisation: cheap), loads with `device_map="auto"` with every weight in place."""
    with torch.device("meta"):
        model = model_class(config)
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, tensor in model.state_dict().items():
        state[name] = torch.empty(tensor.shape, dtype=tensor.dtype).normal_(0.0, 0.02, generator=generator)
    config.save_pretrained(tmp_path)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    del model
    loaded, info = model_class.from_pretrained(tmp_path, device_map="auto", output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    assert all(tensor.device.type == "cpu" for tensor in (*loaded.parameters(), *loaded.buffers()))
    loaded_state = loaded.state_dict()
    assert set(loaded_state) == set(state)
    assert all(torch.equal(loaded_state[name], value) for name, value in state.items())


@pytest.mark.parametrize("case", CASES, ids=str)
def test_missing_keys_are_reported(case, tmp_path):
    build(case).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    dropped = sorted(state)[len(state) // 2]
    del state[dropped]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    _, info = case.model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert dropped in info["missing_keys"]


def test_pretraining_from_an_encoder_folder_reports_the_decoder_missing(tmp_path):
    config = tiny_mae_config(depths=TINY_HIERA["depths"])
    HieraModel(config, add_pooling_layer=False).save_pretrained(tmp_path)
    model, info = HieraForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    new = {name for name, _ in model.named_parameters() if not name.startswith("hiera.")}
    assert new and new <= set(info["missing_keys"])
    assert not any(key.startswith("hiera.") for key in info["missing_keys"])


def test_mismatched_head_is_reinitialised(tmp_path):
    case = CASES[1]  # HieraForImageClassification
    build(case).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        HieraForImageClassification.from_pretrained(tmp_path, num_labels=5)
    model, info = HieraForImageClassification.from_pretrained(
        tmp_path, num_labels=5, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert {key for key, *_ in info["mismatched_keys"]} == {"classifier.weight", "classifier.bias"}
    assert model.classifier.weight.shape == (5, model.config.hidden_size)
    # Meta's head initialisation (bias 0.02 * head_init_scale), not leftover memory.
    torch.testing.assert_close(model.classifier.bias, torch.full((5,), 0.02 * model.config.head_init_scale))


# ---------------------------------------------------------------------------------------------------------------
# Outputs (conventions 3, 4 and 6)
# ---------------------------------------------------------------------------------------------------------------


def check_outputs(case: Case, outputs, hidden: bool, attentions: bool) -> None:
    states = getattr(outputs, case.hidden_states)
    assert (states is not None) == hidden, case.hidden_states
    if hidden:
        assert len(states) == case.num_hidden_states
    for name in case.attentions:
        weights = getattr(outputs, name)
        assert (weights is not None) == attentions, name
        if attentions:
            assert len(weights) == case.num_attentions[name], name
            torch.testing.assert_close(weights[0].sum(-1), torch.ones(weights[0].shape[:-1]))


@pytest.mark.parametrize("case", WITH_OUTPUTS, ids=str)
def test_hidden_states_and_attentions_by_argument_and_by_config(case):
    model = build(case).eval()
    inputs = case.inputs(model)
    with torch.no_grad():
        check_outputs(case, model(**inputs), hidden=False, attentions=False)
        check_outputs(case, model(**inputs, output_hidden_states=True), hidden=True, attentions=False)
        check_outputs(case, model(**inputs, output_attentions=True), hidden=False, attentions=True)
        configured = build(case, output_hidden_states=True, output_attentions=True).eval()
        check_outputs(case, configured(**inputs), hidden=True, attentions=True)
        # An explicit argument wins over the config.
        check_outputs(case, configured(**inputs, output_hidden_states=False), hidden=False, attentions=True)
        outputs = configured(**inputs, output_attentions=False)
        check_outputs(case, outputs, hidden=True, attentions=False)
        # Hidden states and attentions do not change the result.
        assert_same_outputs(outputs, model(**inputs), atol=0)


@pytest.mark.parametrize("case", BACKBONES, ids=str)
def test_backbones_honour_the_config_output_flags(case):
    model = build(case, output_hidden_states=True, output_attentions=True).eval()
    with torch.no_grad():
        outputs = model(**case.inputs(model))
    assert len(outputs.hidden_states) == case.num_hidden_states
    assert len(outputs.attentions) == case.num_attentions["attentions"]


@pytest.mark.parametrize("case", WITH_OUTPUTS, ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_retain_grad_hidden_states_attentions(case, training):
    """Returned hidden states and attention weights are the tensors the forward continues from: a gradient
    reaches them (feature attribution, probing)."""
    model = build(case, output_hidden_states=True, output_attentions=True).train(training)
    outputs = model(**case.inputs(model))
    retained = [getattr(outputs, case.hidden_states)[0], *(getattr(outputs, name)[0] for name in case.attentions)]
    for tensor in retained:
        tensor.retain_grad()
    first_output(outputs).flatten()[0].backward()
    for name, tensor in zip((case.hidden_states, *case.attentions), retained):
        assert tensor.grad is not None, name


@pytest.mark.parametrize("case", WITH_OUTPUTS, ids=str)
def test_attentions_need_eager_attention(case):
    model = build(case, attn_implementation="sdpa").eval()
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        model(**case.inputs(model), output_attentions=True)


def test_sam2_hidden_states_need_pixel_values():
    model = build(CASES[5]).eval()
    embedded = model.get_image_embeddings(sam2_pixels())
    prompts = {key: value for key, value in sam2_inputs(model).items() if key != "pixel_values"}
    with pytest.raises(ValueError, match="output_hidden_states=True needs pixel_values"):
        model(**embedded, **prompts, output_hidden_states=True)
    outputs = model(**embedded, **prompts, output_attentions=True)
    assert outputs.vision_attentions is None and len(outputs.mask_decoder_attentions) == 7


# ---------------------------------------------------------------------------------------------------------------
# Signature, keywords, embeddings (conventions 5 and item 6)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_get_input_embeddings(case):
    model = build(case)
    assert isinstance(model.get_input_embeddings(), nn.Module)
    output_embeddings = model.get_output_embeddings()
    assert output_embeddings is None or isinstance(output_embeddings, nn.Linear)


@pytest.mark.parametrize("case", WITH_OUTPUTS, ids=str)
def test_forward_signature_starts_with_the_main_input(case):
    parameters = list(inspect.signature(case.model_class.forward).parameters)
    assert parameters[:2] == ["self", case.model_class.main_input_name]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_unknown_keyword_is_refused_by_name(case):
    model = build(case).eval()
    with pytest.raises(TypeError, match="unexpected keyword argument 'output_hidden_state'"):
        model(**case.inputs(model), output_hidden_state=True)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_return_dict_false_gives_the_same_tuple(case):
    model = build(case).eval()
    inputs = case.inputs(model)
    with torch.no_grad():
        as_dict, as_tuple = model(**inputs), model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict.to_tuple())
    assert_same_outputs(as_tuple, as_dict, atol=0)
