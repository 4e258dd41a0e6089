"""Hiera converter: parity with Meta's code for every classifier variant, transformers folders, MAE, errors,
atomic output, model card, Hub upload (mocked), download cache (mocked)."""

import gc
import json
import re
from importlib import resources
from pathlib import Path

import pytest
import torch
import transformers
from hiera_helpers import meta_model, pixels, save_meta_checkpoint
from suite_helpers import variants

import hiera_hf.conversion.export as export
import hiera_hf.hub as hub
from hiera_hf import (
    HIERA_PRESETS,
    HieraForImageClassification,
    HieraForPreTraining,
    HieraForVideoClassification,
    HieraModel,
)
from hiera_hf.cli import main
from hiera_hf.conversion import convert_hiera

CLASSIFIERS = [
    "hiera_tiny_224",
    "hiera_small_224",
    "hiera_base_224",
    "hiera_base_plus_224",
    "hiera_large_224",
    "hiera_huge_224",
    "hiera_base_16x224",
    "hiera_base_plus_16x224",
    "hiera_large_16x224",
    "hiera_huge_16x224",
]
# The heaviest variants skip the converter's own verification (it would run Meta's model a second time); the test
# below checks them against Meta either way.
UNVERIFIED = {"hiera_large_224", "hiera_huge_224", "hiera_base_plus_16x224", "hiera_large_16x224", "hiera_huge_16x224"}
TOLERANCE = 1e-4


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@torch.no_grad()
def meta_classifier_outputs(model: torch.nn.Module, x: torch.Tensor):
    """(logits, eval probabilities, stage intermediates) of Meta's classifier in one eval forward. Its logits are
    the head projection's output: train mode returns exactly that (dropout and drop_path are 0)."""
    captured = {}
    handle = model.head.projection.register_forward_hook(lambda m, i, o: captured.setdefault("logits", o))
    probabilities, intermediates = model(x, return_intermediates=True)
    handle.remove()
    return captured["logits"], probabilities, intermediates


@torch.no_grad()
def our_classifier_outputs(model: torch.nn.Module, x: torch.Tensor):
    captured = {}
    handle = model.hiera.register_forward_hook(lambda m, i, o: captured.setdefault("trunk", o))
    logits = model(x).logits
    handle.remove()
    return logits, captured["trunk"].intermediates


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """Meta's hiera_tiny_224 with random weights, as an official `.pth`."""
    path = tmp_path_factory.mktemp("tiny") / "hiera_tiny_224.pth"
    save_meta_checkpoint(meta_model("hiera_tiny_224"), path)
    return path


def test_meta_train_mode_logits_are_the_head_output():
    """The test's shortcut (logits from a hook in eval mode) equals Meta's train-mode output."""
    model = meta_model("hiera_tiny_224")
    x = pixels((224, 224), seed=1)
    logits, probabilities, _ = meta_classifier_outputs(model, x)
    with torch.no_grad():
        train_logits = model.train()(x)
    assert max_abs(train_logits, logits) == 0.0
    assert max_abs(probabilities, train_logits.softmax(-1)) <= 1e-6


@pytest.mark.parametrize("variant", variants(CLASSIFIERS))
def test_classifier_parity_with_meta(variant, tmp_path):
    preset = HIERA_PRESETS[variant]
    reference = meta_model(variant)
    x = pixels(preset.config["image_size"], seed=1)
    logits, probabilities, intermediates = meta_classifier_outputs(reference, x)
    assert logits.abs().max() > 1.0  # a real head, not Meta's ~0 initialisation
    save_meta_checkpoint(reference, tmp_path / "meta.pth")
    del reference
    gc.collect()

    output = tmp_path / "converted"
    verify = variant not in UNVERIFIED
    if variant == "hiera_base_16x224":  # one real command line (the others call the function it runs)
        assert main(["convert", "--checkpoint", str(tmp_path / "meta.pth"), "--variant", variant,
                     "--output", str(output), "--no-progress"]) == 0  # fmt: skip
    else:
        convert_hiera(output, variant, checkpoint=tmp_path / "meta.pth", verify=verify, progress=False)
    (tmp_path / "meta.pth").unlink()

    model_class = HieraForVideoClassification if preset.is_video else HieraForImageClassification
    model = model_class.from_pretrained(output).eval()
    ours, our_intermediates = our_classifier_outputs(model, x)
    del model
    gc.collect()
    errors = {
        "logits": max_abs(ours, logits),
        "probabilities": max_abs(ours.softmax(-1), probabilities),
        **{
            f"stage {i}": max_abs(mine, theirs)
            for i, (mine, theirs) in enumerate(zip(our_intermediates, intermediates), 1)
        },
    }
    print(f"{variant} max abs errors vs Meta: " + ", ".join(f"{name} {error:.1e}" for name, error in errors.items()))
    assert len(our_intermediates) == len(intermediates) == 4
    assert all(error <= TOLERANCE for error in errors.values()), errors

    card = (output / "README.md").read_text()
    if verify:
        figures = dict(re.findall(r"^\| (logits|probabilities|stage \d features) \| ([0-9.e+-]+) \|$", card, re.M))
        assert len(figures) == 6 and all(float(error) <= TOLERANCE for error in figures.values())
    else:
        assert "Not verified" in card


def test_model_card_and_preprocessor(tiny_checkpoint, tmp_path):
    output = tmp_path / "out"
    convert_hiera(output, "hiera_tiny_224", checkpoint=tiny_checkpoint, checkpoint_name="mae_in1k_ft_in1k",
                  progress=False)  # fmt: skip
    assert sorted(p.name for p in output.iterdir()) == [
        "README.md", "config.json", "configuration_hiera.py", "image_processing_hiera.py", "image_utils.py",
        "model.safetensors", "model_folder.py", "modeling_hiera.py", "modeling_hiera_mae.py", "preprocessor_config.json",
        "presets.py",
    ]  # fmt: skip
    # Remote code (loading it without hiera-hf is tested in test_hiera_auto.py)
    config = json.loads((output / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_hiera.HieraForImageClassification"
    card = (output / "README.md").read_text()
    front_matter = card.split("---")[1]
    assert "license: cc-by-nc-4.0" in front_matter
    assert "library_name: hiera-hf" in front_matter
    assert "pipeline_tag: image-classification" in front_matter
    assert "- hiera" in front_matter and "- imagenet-1k" in front_matter
    assert "`hiera_tiny_224`" in card and "`mae_in1k_ft_in1k`" in card
    assert "https://dl.fbaipublicfiles.com/hiera/hiera_tiny_224.pth" in card
    assert "Meta's hiera.hiera_tiny_224" in card and "| logits |" in card
    assert "HieraForImageClassification.from_pretrained" in card
    processor = json.loads((output / "preprocessor_config.json").read_text())
    assert processor["auto_map"] == {"AutoImageProcessor": "image_processing_hiera.HieraImageProcessor"}
    assert processor["size"] == {"shortest_edge": 256} and processor["crop_size"] == {"height": 224, "width": 224}
    assert processor["image_mean"] == [0.485, 0.456, 0.406] and processor["image_std"] == [0.229, 0.224, 0.225]
    # The template ships with the package.
    assert (resources.files("hiera_hf") / "model_cards" / "hiera.md").is_file()


def test_mae_checkpoint(tmp_path):
    """An MAE model converts with its decoder and matches Meta's predictions; its trunk-only use in a classifier
    says clearly that the head is new."""
    reference = meta_model("mae_hiera_tiny_224")
    save_meta_checkpoint(reference, tmp_path / "mae.pth")
    convert_hiera(tmp_path / "mae", "mae_hiera_tiny_224", checkpoint=tmp_path / "mae.pth", progress=False)
    model = HieraForPreTraining.from_pretrained(tmp_path / "mae").eval()
    x = pixels((224, 224), seed=1)
    torch.manual_seed(3)
    mask = reference.get_random_mask(x, 0.6)
    with torch.no_grad():
        loss, pred, _, _ = reference(x, mask=mask)
        ours = model(x, mask=mask)
    assert max_abs(ours.logits[ours.loss_mask], pred) <= TOLERANCE
    assert abs(ours.loss.item() - loss.item()) <= TOLERANCE
    assert "predictions (hidden patches)" in (tmp_path / "mae" / "README.md").read_text()

    convert_hiera(tmp_path / "cls", "hiera_tiny_224", checkpoint=tmp_path / "mae.pth", progress=False)
    card = (tmp_path / "cls" / "README.md").read_text()
    assert "NEWLY INITIALISED" in card and "classifier.weight" in card
    classifier = HieraForImageClassification.from_pretrained(tmp_path / "cls")
    torch.testing.assert_close(
        classifier.hiera.encoder.blocks[0].attn.qkv.weight, model.hiera.encoder.blocks[0].attn.qkv.weight
    )


@pytest.mark.parametrize("architecture", ["HieraForImageClassification", "HieraForPreTraining", "HieraModel"])
def test_from_transformers_parity(architecture, tmp_path):
    torch.manual_seed(0)
    kwargs = {"embed_dim": 16, "depths": (1, 1, 2, 1), "num_heads": (1, 1, 2, 2), "image_size": (64, 64)}
    if architecture == "HieraForPreTraining":
        kwargs.update(decoder_hidden_size=32, decoder_depth=1, decoder_num_heads=2, num_query_pool=2)
    config = transformers.HieraConfig(**kwargs, num_labels=7)
    reference = getattr(transformers, architecture)(config).eval()
    if architecture == "HieraForImageClassification":
        torch.nn.init.normal_(reference.classifier.weight, std=1.0)
    reference.save_pretrained(tmp_path / "hf")
    assert main(["convert", "--from-transformers", str(tmp_path / "hf"), "--output", str(tmp_path / "out"),
                 "--no-progress"]) == 0  # fmt: skip
    x = pixels((64, 64), seed=1)
    with torch.no_grad():
        if architecture == "HieraForImageClassification":
            model = HieraForImageClassification.from_pretrained(tmp_path / "out").eval()
            theirs = reference(x).logits
            assert theirs.abs().max() > 1.0
            assert max_abs(model(x).logits, theirs) <= TOLERANCE
        elif architecture == "HieraForPreTraining":
            model = HieraForPreTraining.from_pretrained(tmp_path / "out").eval()
            noise = torch.rand(1, 4, generator=torch.Generator().manual_seed(1))
            assert max_abs(model(x, noise=noise).logits, reference(x, noise=noise).logits) <= TOLERANCE
        else:
            theirs = reference(x, output_hidden_states=True)
            ours = HieraModel.from_pretrained(tmp_path / "out").eval()(x)
            assert max_abs(ours.pooler_output, theirs.pooler_output) <= TOLERANCE
            for mine, stage in zip(ours.intermediates, theirs.reshaped_hidden_states[1:]):
                assert max_abs(mine, stage) <= TOLERANCE
    assert "transformers' " + architecture in (tmp_path / "out" / "README.md").read_text()


def test_from_transformers_rejects_differing_attention_schedule(tmp_path):
    config = transformers.HieraConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                                      masked_unit_attention=(False, True, False, False), image_size=(64, 64))  # fmt: skip
    transformers.HieraModel(config).save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="masked_unit_attention"):
        convert_hiera(tmp_path / "out", from_transformers=tmp_path / "hf", progress=False)
    assert not (tmp_path / "out").exists()


def _state(tiny_checkpoint) -> dict:
    return dict(torch.load(tiny_checkpoint, weights_only=True)["model_state"])


@pytest.mark.parametrize(
    "case, error, message",
    [
        ("missing_file", FileNotFoundError, "Checkpoint file not found"),
        ("corrupt", ValueError, "not a readable PyTorch checkpoint"),
        ("no_model_state", ValueError, "expected a dict with a 'model_state' entry, found \\['model'\\]"),
        ("unknown_key", ValueError, "Unknown keys in Hiera checkpoint: extra.weight"),
        ("missing_key", ValueError, "1 missing keys: hiera.encoder.blocks.3.attn.qkv.weight"),
        ("wrong_shape", ValueError, re.escape("classifier.weight: checkpoint (10, 768) vs model (1000, 768)")),
        ("unknown_variant", ValueError, "Unknown Hiera variant 'hiera_tiny'.*hiera_base_16x224"),
        ("unknown_checkpoint_name", ValueError, "no checkpoint 'in22k'.*mae_in1k_ft_in1k, mae_in1k"),
    ],
)
def test_bad_inputs_fail_clearly_and_write_nothing(case, error, message, tiny_checkpoint, tmp_path):
    path, variant, name = tmp_path / "bad.pth", "hiera_tiny_224", None
    if case == "corrupt":
        path.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    elif case == "no_model_state":
        torch.save({"model": _state(tiny_checkpoint)}, path)
    elif case in ("unknown_key", "missing_key", "wrong_shape"):
        state = _state(tiny_checkpoint)
        if case == "unknown_key":
            state["extra.weight"] = torch.zeros(1)
        elif case == "missing_key":
            del state["blocks.3.attn.qkv.weight"]
        else:
            state["head.projection.weight"] = torch.zeros(10, 768)
        torch.save({"model_state": state}, path)
    elif case != "missing_file":
        path = tiny_checkpoint
        variant = "hiera_tiny" if case == "unknown_variant" else variant
        name = "in22k" if case == "unknown_checkpoint_name" else None
    output = tmp_path / "out"
    with pytest.raises(error, match=message):
        convert_hiera(output, variant, checkpoint=path, checkpoint_name=name, progress=False)
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["convert", "--checkpoint", str(tmp_path / "nope.pth"), "--variant", "hiera_tiny_224",
                 "--output", str(tmp_path / "out")]) == 1  # fmt: skip
    assert "hiera-hf convert: error: Checkpoint file not found" in capsys.readouterr().err
    assert main(["convert", "--output", str(tmp_path / "out")]) == 1
    assert "--variant NAME is required" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_failed_verification_writes_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    def corrupted(state_dict):
        state = dict(real(state_dict))
        state["hiera.encoder.blocks.2.mlp.fc2.bias"] = state["hiera.encoder.blocks.2.mlp.fc2.bias"] + 1e-2
        return state

    real = export.convert_meta_hiera_state_dict
    monkeypatch.setattr(export, "convert_meta_hiera_state_dict", corrupted)
    with pytest.raises(
        ValueError, match="differs from Meta.s hiera.hiera_tiny_224.* beyond 0.0001: .*stage 2 features"
    ):
        convert_hiera(tmp_path / "out", "hiera_tiny_224", checkpoint=tiny_checkpoint, progress=False)
    assert list(tmp_path.iterdir()) == []
    # --no-verify skips the comparison (and says so in the card)
    assert main(["convert", "--checkpoint", str(tiny_checkpoint), "--variant", "hiera_tiny_224",
                 "--output", str(tmp_path / "out"), "--no-verify", "--no-progress"]) == 0  # fmt: skip
    assert "Not verified" in (tmp_path / "out" / "README.md").read_text()


def test_existing_output_needs_overwrite(tiny_checkpoint, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        convert_hiera(output, "hiera_tiny_224", checkpoint=tiny_checkpoint, verify=False, progress=False)
    assert (output / "keep.txt").read_text() == "mine"
    with pytest.raises(FileExistsError, match="not a folder hiera-hf wrote .it holds keep.txt"):  # not a model
        convert_hiera(output, "hiera_tiny_224", checkpoint=tiny_checkpoint, verify=False, overwrite=True, progress=False)
    (output / "keep.txt").unlink()
    for _ in range(2):  # an empty folder, then the model folder written the first time
        convert_hiera(output, "hiera_tiny_224", checkpoint=tiny_checkpoint, verify=False, overwrite=True, progress=False)
        assert (output / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_push_to_hub_uploads_the_written_folder(tiny_checkpoint, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(export, "create_repo", lambda repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(
        export, "upload_folder", lambda **kw: calls.append(("upload", kw["repo_id"], kw["folder_path"]))
    )
    assert main(["convert", "--checkpoint", str(tiny_checkpoint), "--variant", "hiera_tiny_224", "--output",
                 str(tmp_path / "out"), "--no-verify", "--push-to-hub", "me/hiera-tiny", "--no-progress"]) == 0  # fmt: skip
    assert calls == [
        ("create", "me/hiera-tiny", {"exist_ok": True}),
        ("upload", "me/hiera-tiny", str(tmp_path / "out")),
    ]


def test_download_cache_and_resolve_model(tiny_checkpoint, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HIERA_HF_CACHE", str(tmp_path / "cache"))
    downloads = no_network
    drop_in = re.escape(str(tmp_path / "cache" / "checkpoints" / "hiera_tiny_224.pth"))
    with pytest.raises(ConnectionError, match=f"copy it to {drop_in} .*Or pass --checkpoint FILE") as error:
        convert_hiera(tmp_path / "out", "hiera_tiny_224", progress=False)
    assert "--model" not in str(error.value)  # convert has no --model
    with pytest.raises(ConnectionError, match=f"copy it to {drop_in} .*Or pass --model DIR") as error:
        hub.resolve_model("hiera_tiny_224")
    assert "--checkpoint" not in str(error.value)  # classify, segment, track have no --checkpoint
    assert downloads == ["https://dl.fbaipublicfiles.com/hiera/hiera_tiny_224.pth"] * 2
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache" / "checkpoints").exists()  # no partial download, nor the folder made for it

    def from_disk(url, dst, progress=True):
        downloads.append(url)
        Path(dst).write_bytes(tiny_checkpoint.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", from_disk)
    folder = hub.resolve_model("hiera_tiny_224")
    assert folder == tmp_path / "cache" / "models" / "hiera_tiny_224.mae_in1k_ft_in1k"
    assert (folder / "model.safetensors").is_file() and "| logits |" in (folder / "README.md").read_text()
    assert hub.resolve_model("hiera_tiny_224") == folder  # reused, no second download
    assert len(downloads) == 3
    assert hub.resolve_model(str(tmp_path)) == tmp_path  # a folder is returned as is
    with pytest.raises(ValueError, match="neither an existing folder nor a known Hiera variant"):
        hub.resolve_model("hiera_nano")
