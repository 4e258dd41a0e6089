"""HieraForPreTraining (MAE): parity with Meta's MaskedAutoencoderHiera, masking, compile, training, bad inputs."""

import gc
import json
import logging
from pathlib import Path

import hiera
import pytest
import torch
import torch.nn.functional as F
import transformers.models.hiera.modeling_hiera as transformers_hiera
from example_helpers import accelerate_two_cpu_processes, run_example
from hiera_helpers import TINY_MAE, meta_model, pixels, tiny_mae_config
from huggingface_hub.errors import StrictDataclassClassValidationError
from suite_helpers import variants
from transformers import AutoModelForPreTraining
from transformers.initialization import no_init_weights

from hiera_hf import HIERA_PRESETS, HieraConfig, HieraForImageClassification, HieraForPreTraining
from hiera_hf.conversion import convert_meta_hiera_state_dict
from hiera_hf.metrics import load_accuracy

MAE_PRESETS = sorted(name for name, preset in HIERA_PRESETS.items() if preset.is_mae)


def test_presets_cover_every_meta_mae_variant():
    meta = {name for name in dir(hiera) if name.startswith("mae_hiera_")}
    assert len(MAE_PRESETS) == 10
    assert set(MAE_PRESETS) == meta


@pytest.mark.parametrize("name", variants(MAE_PRESETS))
def test_parity_with_meta(name, tmp_path):
    """Random weights saved as an official `.pth`, converted, loaded strictly; same input and mask as Meta's."""
    config = HieraConfig.from_preset(name)
    reference = meta_model(name)
    checkpoint = tmp_path / f"{name}.pth"
    torch.save({"model_state": reference.state_dict()}, checkpoint)
    state = torch.load(checkpoint, weights_only=True, mmap=True)["model_state"]
    with no_init_weights():  # every weight comes from the checkpoint
        model = HieraForPreTraining(config)
    model.load_state_dict(convert_meta_hiera_state_dict(state), strict=True, assign=True)
    model.eval()

    batch = 2 if name in ("mae_hiera_tiny_224", "mae_hiera_small_224") else 1
    x = pixels(config, batch)
    torch.manual_seed(1)
    mask = reference.get_random_mask(x, config.mask_ratio)
    with torch.no_grad():
        loss, pred, label, ref_mask = reference(x, mask=mask)
        out = model(x, mask=mask)
    assert torch.equal(out.mask, ref_mask)
    assert out.logits[out.loss_mask].shape == pred.shape
    torch.testing.assert_close(out.loss, loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(out.logits[out.loss_mask], pred, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.labels[out.loss_mask], label, atol=1e-4, rtol=0)
    del reference, model, state
    gc.collect()


def test_noise_gives_meta_and_transformers_masks():
    """`noise` keeps the lowest-noise units exactly as Meta's `get_random_mask` and transformers' `random_masking`."""
    config = HieraConfig.from_preset("mae_hiera_tiny_224")
    torch.manual_seed(0)
    reference = hiera.mae_hiera_tiny_224(pretrained=False)
    x = torch.zeros(4, 3, 224, 224)
    torch.manual_seed(3)
    meta_mask = reference.get_random_mask(x, 0.6)
    torch.manual_seed(3)
    noise = torch.rand(4, config.num_mask_units)
    ours = HieraForPreTraining(tiny_mae_config(image_size=(224, 224), patch_stride=(4, 4)))
    assert torch.equal(ours.random_mask(noise, ours.num_kept_units()), meta_mask)

    embeddings = transformers_hiera.HieraEmbeddings(transformers_hiera.HieraConfig(mask_ratio=0.6), is_mae=True)
    hf_mask, _ = embeddings.patch_embeddings.random_masking(x, noise=noise)
    assert torch.equal(hf_mask, meta_mask)


def test_noise_and_explicit_mask_agree():
    config = tiny_mae_config()
    model = HieraForPreTraining(config).eval()
    x = pixels(config, 3)
    noise = torch.rand(3, config.num_mask_units, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        from_noise = model(x, noise=noise)
        from_mask = model(x, mask=from_noise.mask)
    assert from_noise.mask.sum(dim=1).tolist() == [int(16 * (1 - 0.6))] * 3
    torch.testing.assert_close(from_noise.loss, from_mask.loss, rtol=0, atol=0)
    torch.testing.assert_close(from_noise.logits, from_mask.logits, rtol=0, atol=0)


def test_mask_ratio_per_call_and_default():
    config = tiny_mae_config(mask_ratio=0.5)
    model = HieraForPreTraining(config).eval()
    x = pixels(config, 2)
    with torch.no_grad():
        assert model(x).mask.sum(dim=1).tolist() == [8, 8]
        out = model(x, mask_ratio=0.75)
    assert out.mask.sum(dim=1).tolist() == [4, 4]
    # The loss covers the hidden units' patches only: 12 units of 2x2 decoder tokens per image.
    assert out.loss_mask.sum(dim=1).tolist() == [48, 48]
    assert HieraConfig.from_preset("mae_hiera_base_224").mask_ratio == 0.6
    assert HieraConfig.from_preset("mae_hiera_base_16x224").mask_ratio == 0.9


@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_reconstruct_inverts_the_targets(video):
    """`reconstruct(x, labels)` gives back the input (its time-strided frames for a video)."""
    config = tiny_mae_config(**(_TINY_VIDEO if video else {}))
    model = HieraForPreTraining(config)
    x = pixels(config, 2)
    with torch.no_grad():
        out = model(x)
    expected = x[:, :, :: config.patch_stride[0]] if video else x
    torch.testing.assert_close(model.reconstruct(x, out.labels), expected, atol=1e-5, rtol=0)
    assert out.logits.shape == out.labels.shape
    hidden = model.unpatchify(out.loss_mask[..., None].expand_as(out.logits).float())
    assert hidden.shape == expected.shape and 0 < hidden.mean() < 1


_TINY_VIDEO = {
    "image_size": (4, 64, 64),
    "query_stride": (1, 2, 2),
    "masked_unit_size": (1, 8, 8),
    "patch_size": (3, 3, 3),
    "patch_stride": (2, 2, 2),
    "patch_padding": (1, 1, 1),
    "sep_pos_embed": True,
}


@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_compiles_without_graph_breaks(video):
    config = tiny_mae_config(**(_TINY_VIDEO if video else {}))
    model = HieraForPreTraining(config)
    x = pixels(config, 2)
    noise = torch.rand(2, config.num_mask_units)
    explanation = torch._dynamo.explain(model)(x, noise=noise)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_bad_inputs_raise_clear_errors():
    config = tiny_mae_config()
    model = HieraForPreTraining(config)
    x = pixels(config, 2)
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, 16\)"):
        model(x, mask=torch.ones(2, 15, dtype=torch.bool))
    ragged = torch.zeros(2, 16, dtype=torch.bool)
    ragged[0, :4], ragged[1, :5] = True, True
    with pytest.raises(ValueError, match="same number of units"):
        model(x, mask=ragged)
    with pytest.raises(TypeError, match="bool tensor"):
        model(x, mask=torch.ones(2, 16))
    for ratio in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\)"):
            model(x, mask_ratio=ratio)
    with pytest.raises(ValueError, match="keeps no mask unit"):
        model(x, mask_ratio=0.97)
    with pytest.raises(ValueError, match="not both"):
        model(x, mask=torch.ones(2, 16, dtype=torch.bool), noise=torch.rand(2, 16))
    with pytest.raises(ValueError, match=r"noise must have shape \(batch, 16\)"):
        model(x, noise=torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="batch size"):
        model(x, noise=torch.rand(3, 16))
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(2, 3, 128, 128))
    with pytest.raises(StrictDataclassClassValidationError, match="mask_ratio must be in"):
        HieraConfig.from_preset("mae_hiera_tiny_224", mask_ratio=1.0)
    with pytest.raises(ValueError, match="needs a decoder"):
        HieraForPreTraining(HieraConfig.from_preset("hiera_tiny_224"))


def test_mae_initialisation_follows_meta():
    model = HieraForPreTraining(tiny_mae_config())
    qkv = model.hiera.encoder.blocks[0].attn.qkv
    bound = (6 / sum(qkv.weight.shape)) ** 0.5  # xavier-uniform
    assert qkv.weight.abs().max() <= bound and qkv.weight.abs().max() > 0.9 * bound
    assert torch.all(qkv.bias == 0) and torch.all(model.decoder_pred.bias == 0)
    assert torch.all(model.hiera.encoder.blocks[0].norm1.bias == 0)
    assert 0 < model.mask_token.std() < 0.05


def test_save_load_auto_and_log_lines(tmp_path, caplog):
    config = tiny_mae_config()
    model = HieraForPreTraining(config).eval()
    model.save_pretrained(tmp_path / "mae")
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path / "mae")
    assert isinstance(loaded, HieraForPreTraining)
    x, noise = pixels(config, 1), torch.rand(1, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, noise=noise).loss, model(x, noise=noise).loss, rtol=0, atol=0)

    classifier = HieraForImageClassification.from_pretrained(tmp_path / "mae", num_labels=3)
    torch.testing.assert_close(
        classifier.hiera.encoder.blocks[0].attn.qkv.weight, model.hiera.encoder.blocks[0].attn.qkv.weight
    )
    classifier.save_pretrained(tmp_path / "classifier")
    with caplog.at_level(logging.WARNING):
        _, info = HieraForPreTraining.from_pretrained(tmp_path / "classifier", output_loading_info=True)
    # The new MAE parts are reported missing and the classifier head unexpected, in the loading info and the log.
    new = {"decoder_embed", "mask_token", "decoder_pos_embed", "decoder_blocks", "decoder_norm", "decoder_pred"}
    new |= {"encoder_norm", "multi_scale_fusion_heads"}
    assert {key.split(".")[0] for key in info["missing_keys"]} == new
    assert {key.rsplit(".", 1)[0] for key in info["unexpected_keys"]} == {"classifier", "hiera.norm"}
    report = "\n".join(r.getMessage() for r in caplog.records if "HieraForPreTraining" in r.getMessage())
    assert "mask_token" in report and "classifier.weight" in report


def test_trainer_overfits_a_fixed_batch(tmp_path):
    from transformers import Trainer, TrainingArguments

    config = tiny_mae_config()
    torch.manual_seed(0)
    model = HieraForPreTraining(config)
    # Smooth images (upsampled 8x8 noise): their normalised patches are learnable, unlike white noise.
    x = F.interpolate(pixels(config, 4)[..., :8, :8], size=config.image_size, mode="bilinear")
    noise = torch.rand(4, config.num_mask_units, generator=torch.Generator().manual_seed(0))
    dataset = [{"pixel_values": x[i], "noise": noise[i]} for i in range(4)]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=50,
        learning_rate=3e-3,
        warmup_steps=0,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < 0.5 * losses[0], losses


def _image_folder(path: Path, count: int) -> Path:
    from PIL import Image

    path.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        array = (torch.rand(48, 56, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(array).save(path / f"{i}.png")
    return path


def _example_args(tmp_path: Path, data: Path, steps: int, **extra) -> dict:
    args = {
        "image_folder": str(data),
        "config_overrides": json.dumps({k: v for k, v in TINY_MAE.items()}),
        "output_dir": str(tmp_path / "run"),
        "max_steps": steps,
        "per_device_train_batch_size": 2,
        "logging_steps": 1,
        "learning_rate": 1e-3,
        "seed": 0,
        "reconstruction_steps": 2,
        "report_to": "none",
        "dataloader_num_workers": 0,
        **extra,
    }
    return args


def test_accelerate_two_processes_keep_parameters_identical(tmp_path):
    data = _image_folder(tmp_path / "images", 8)
    args = _example_args(tmp_path, data, 3, save_strategy="no", parameter_checksums=True, use_cpu=True)
    run_example("pretrain_mae.py", args, accelerate_two_cpu_processes())  # two CPU ranks (see example_helpers)
    run = tmp_path / "run"
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["log_history"][0]["epoch"] == 0.5  # 8 images, 2 per rank and step: two ranks took part
    checksums = sorted(run.glob("parameter_checksum_rank*.txt"))
    assert [p.name for p in checksums] == ["parameter_checksum_rank0.txt", "parameter_checksum_rank1.txt"]
    first, second = (p.read_text() for p in checksums)
    assert first == second and first.strip()
    assert sorted(p.name for p in (run / "reconstructions").glob("*")) == ["step_2.png"]


def test_resume_from_checkpoint_continues_the_loss_curve(tmp_path):
    data = _image_folder(tmp_path / "images", 8)
    args = _example_args(tmp_path, data, 6, save_steps=3, reconstruction_steps=100)
    run_example("pretrain_mae.py", args)
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    full = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    # Resume from step 3 in a fresh output folder holding only that checkpoint.
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    (tmp_path / "run" / "checkpoint-3").rename(resumed_dir / "checkpoint-3")
    args = _example_args(tmp_path, data, 6, save_steps=3, reconstruction_steps=100, output_dir=resumed_dir)
    run_example("pretrain_mae.py", {**args, "resume_from_checkpoint": resumed_dir / "checkpoint-3"})
    state = json.loads((resumed_dir / "trainer_state.json").read_text())
    resumed = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(full) == 6 and len(resumed) == 6
    assert resumed[3:] == pytest.approx(full[3:], rel=1e-5, abs=0)


def test_packaged_accuracy_metric_matches_numpy():
    metric = load_accuracy()
    generator = torch.Generator().manual_seed(0)
    predictions, references = (torch.randint(0, 5, (50,), generator=generator).tolist() for _ in range(2))
    expected = sum(p == r for p, r in zip(predictions, references)) / 50
    assert metric.compute(predictions=predictions, references=references)["accuracy"] == pytest.approx(expected)


def test_finetune_example_from_an_mae_checkpoint(tmp_path):
    HieraForPreTraining(tiny_mae_config()).save_pretrained(tmp_path / "mae")
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            _image_folder(tmp_path / split / name, 3)
    args = {
        "model_name_or_path": tmp_path / "mae",
        "image_folder": tmp_path / "train",
        "eval_folder": tmp_path / "val",
        "output_dir": tmp_path / "run",
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "report_to": "none",
        "save_strategy": "no",
    }
    result = run_example("finetune_classification.py", args)
    metrics = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["id2label"] == {"0": "cat", "1": "dog"} and config["num_query_pool"] == 3
    assert "decoder" in result.stdout + result.stderr  # the dropped decoder is reported
