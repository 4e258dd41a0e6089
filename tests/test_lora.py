"""LoRA with PEFT (`hiera_hf.lora`): Hiera classifiers and SAM 2 (image and video training) train adapters only,
the adapters round-trip through `save_pretrained` / `PeftModel.from_pretrained` onto a fresh model loaded from the
same folder (same outputs), an adapted video model tracks in `Sam2VideoSession` as its merged model does, the merged
model exports with `export-onnx`, and the fine-tuning examples take `--lora_r`."""

from pathlib import Path

import numpy as np
import pytest
import torch
from example_helpers import run_example
from hiera_helpers import TINY_MAE
from peft import PeftModel
from sam2_helpers import TINY, tiny_config

from hiera_hf import HieraConfig, HieraForImageClassification, Sam2Model, Sam2VideoSession
from hiera_hf.cli import main
from hiera_hf.lora import ADAPTER_FOLDER, add_lora
from hiera_hf.sam2.training import Sam2VideoModelForTraining

pytestmark = pytest.mark.slow  # training steps, an ONNX export and a fine-tuning example


def _train(model, batches, steps: int = 3) -> None:
    """A few Adam steps on `model(**batch).loss`."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(steps):
        optimizer.zero_grad()
        model(**batches[step % len(batches)]).loss.backward()
        optimizer.step()
    model.eval()


def _round_trip(base_folder: Path, model_class, adapted, tmp_path: Path):
    """The adapters of `adapted` saved and loaded onto a fresh `model_class` from `base_folder`."""
    adapted.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    return PeftModel.from_pretrained(model_class.from_pretrained(base_folder), tmp_path / "adapter").eval()


def _frozen_and_trained(adapted, before: dict) -> None:
    """Only adapters (and heads saved in full) changed; the base weights are untouched."""
    changed = {
        name for name, value in adapted.named_parameters() if name in before and not torch.equal(value, before[name])
    }
    assert changed and all("lora_" in name or "modules_to_save" in name for name in changed), changed


def test_hiera_classifier_adapters_round_trip(tmp_path):
    config = HieraConfig.from_preset(
        "hiera_tiny_224", **{k: v for k, v in TINY_MAE.items() if not k.startswith("decoder")}, num_labels=3
    )
    torch.manual_seed(0)
    HieraForImageClassification(config).save_pretrained(tmp_path / "base")
    adapted = add_lora(HieraForImageClassification.from_pretrained(tmp_path / "base"), r=4)
    before = {name: value.detach().clone() for name, value in adapted.named_parameters()}
    generator = torch.Generator().manual_seed(1)
    batches = [
        {"pixel_values": torch.randn(4, 3, 64, 64, generator=generator), "labels": torch.tensor([0, 1, 2, 1])}
        for _ in range(2)
    ]
    _train(adapted, batches)
    _frozen_and_trained(adapted, before)
    assert any("classifier" in name for name, p in adapted.named_parameters() if p.requires_grad)
    pixels = batches[0]["pixel_values"]
    with torch.no_grad():
        expected = adapted(pixel_values=pixels).logits
        reloaded = _round_trip(tmp_path / "base", HieraForImageClassification, adapted, tmp_path)
        assert torch.equal(reloaded(pixel_values=pixels).logits, expected)
        merged = reloaded.merge_and_unload()
        assert type(merged) is HieraForImageClassification
        torch.testing.assert_close(merged(pixel_values=pixels).logits, expected, rtol=0, atol=1e-5)


def test_sam2_image_adapters_round_trip(tmp_path):
    torch.manual_seed(0)
    Sam2Model(tiny_config()).save_pretrained(tmp_path / "base")
    adapted = add_lora(Sam2Model.from_pretrained(tmp_path / "base"), r=4)
    targets = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name, _ in adapted.named_parameters() if "lora_A" in name}
    assert targets == {"qkv", "q_proj", "v_proj"}
    before = {name: value.detach().clone() for name, value in adapted.named_parameters()}
    generator = torch.Generator().manual_seed(1)
    labels = (torch.rand(2, 1, 64, 64, generator=generator) > 0.5).long()
    batch = {
        "pixel_values": torch.randn(2, 3, 64, 64, generator=generator),
        "input_points": torch.tensor([[[[20.0, 30.0]]], [[[40.0, 10.0]]]]),
        "input_labels": torch.ones(2, 1, 1, dtype=torch.long),
        "labels": labels,
    }
    _train(adapted, [batch])
    _frozen_and_trained(adapted, before)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        expected = adapted(**inputs).pred_masks
        reloaded = _round_trip(tmp_path / "base", Sam2Model, adapted, tmp_path)
        # same weights (state dicts equal); the logits agree to float rounding (measured 3e-11 of 2e-4)
        torch.testing.assert_close(reloaded(**inputs).pred_masks, expected, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(reloaded.merge_and_unload()(**inputs).pred_masks, expected, rtol=0, atol=1e-4)


def test_sam2_video_adapters_train_track_and_export(tmp_path):
    torch.manual_seed(0)
    Sam2VideoModelForTraining(tiny_config()).save_pretrained(tmp_path / "base")
    adapted = add_lora(Sam2VideoModelForTraining.from_pretrained(tmp_path / "base"), r=4)
    adapted_modules = {name for name, _ in adapted.named_modules() if name.endswith("lora_A")}
    assert any("memory_attention" in name for name in adapted_modules)  # memory attention is adapted too
    before = {name: value.detach().clone() for name, value in adapted.named_parameters()}
    generator = torch.Generator().manual_seed(2)
    labels = torch.zeros(1, 3, 1, 64, 64, dtype=torch.long)
    labels[:, :, :, 16:40, 20:44] = 1
    batch = {"pixel_values": torch.randn(1, 3, 3, 64, 64, generator=generator), "labels": labels}
    _train(adapted, [batch], steps=2)
    _frozen_and_trained(adapted, before)

    frames = np.random.default_rng(0).integers(0, 255, (4, 48, 64, 3), dtype=np.uint8)

    def track(model) -> list[torch.Tensor]:
        session = Sam2VideoSession(model, frames, progress=False)
        session.add_box(0, 1, [10, 8, 40, 36])
        return [result.mask_logits for result in session.propagate()]

    with_adapters = track(adapted)
    merged = adapted.merge_and_unload()
    assert isinstance(merged, Sam2VideoModelForTraining)
    for ours, expected in zip(track(merged), with_adapters, strict=True):
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)
    merged.save_pretrained(tmp_path / "merged")
    main(["export-onnx", "--model", str(tmp_path / "merged"), "--output", str(tmp_path / "onnx"), "--quiet"])
    assert (tmp_path / "onnx" / "memory_attention.onnx").is_file()


@pytest.mark.parametrize("bad, message", [({"r": 0}, "at least 1"), ({"target_modules": ["nope"]}, "nope")])
def test_bad_lora_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        add_lora(Sam2Model(tiny_config()), **{"r": 4, **bad})


def test_image_example_trains_adapters(tmp_path):
    """`finetune_sam2.py --lora_r 4` saves the adapters and a merged folder whose frozen parts are unchanged."""
    torch.manual_seed(0)
    Sam2Model(tiny_config()).save_pretrained(tmp_path / "base")
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    generator = np.random.default_rng(0)
    for index in range(2):
        from PIL import Image

        Image.fromarray(generator.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(data / "images" / f"{index}.jpg")
        mask = np.zeros((64, 64), np.uint8)
        mask[10:40, 12:50] = 1
        Image.fromarray(mask).save(data / "masks" / f"{index}.png")
    args = {
        "model_name_or_path": tmp_path / "base", "image_folder": data, "output_dir": tmp_path / "run", "lora_r": 4,
        "max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-2, "mask_size": "low",
        "report_to": "none", "save_strategy": "no", "dataloader_num_workers": 0,
    }  # fmt: skip
    run_example("finetune_sam2.py", args)
    assert (tmp_path / "run" / ADAPTER_FOLDER / "adapter_config.json").is_file()
    base, tuned = Sam2Model.from_pretrained(tmp_path / "base"), Sam2Model.from_pretrained(tmp_path / "run")
    tuned_weights = dict(tuned.named_parameters())
    for name, value in base.named_parameters():
        *_, module, kind = ["", *name.split(".")]
        is_target = module in ("qkv", "q_proj", "v_proj") and kind == "weight"
        assert torch.equal(value, tuned_weights[name]) != is_target, name  # merged targets moved, the rest did not
    assert TINY["image_size"] == tuned.config.image_size
