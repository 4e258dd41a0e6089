"""Auto classes, pipelines and remote code for hiera-hf's Hiera; transformers' own `hiera` is left intact."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import transformers
from hiera_helpers import pixels
from PIL import Image
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForVideoClassification,
    AutoVideoProcessor,
    pipeline,
)
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

import hiera_hf
from hiera_hf import (
    HieraBackbone,
    HieraConfig,
    HieraForImageClassification,
    HieraForVideoClassification,
    HieraImageProcessor,
    HieraModel,
    HieraVideoProcessor,
    save_for_hub,
)
from hiera_hf.hiera import add_remote_code

LABELS = {0: "cat", 1: "dog", 2: "goat"}


def labelled(config_kwargs: dict, preset: str) -> HieraConfig:
    return HieraConfig.from_preset(
        preset, num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, **config_kwargs
    )


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> tuple[Path, HieraForImageClassification]:
    torch.manual_seed(0)
    model = HieraForImageClassification(labelled({"depths": (1, 1, 1, 1)}, "hiera_tiny_224")).eval()
    folder = save_for_hub(model, tmp_path_factory.mktemp("hub") / "hiera-tiny", image_processor=HieraImageProcessor())
    return folder, model


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory) -> tuple[Path, HieraForVideoClassification]:
    torch.manual_seed(0)
    config = labelled({"depths": (1, 1, 1, 1), "image_size": (4, 64, 64)}, "hiera_base_16x224")
    model = HieraForVideoClassification(config).eval()
    processor = HieraVideoProcessor(num_frames=4, size={"height": 64, "width": 64})
    folder = save_for_hub(model, tmp_path_factory.mktemp("hub") / "hiera-video", video_processor=processor)
    return folder, model


def test_folder_layout(image_folder):
    folder, _ = image_folder
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "config.json",
        "configuration_hiera.py",
        "image_processing_hiera.py",
        "image_utils.py",
        "model.safetensors",
        "model_folder.py",
        "modeling_hiera.py",
        "modeling_hiera_mae.py",
        "preprocessor_config.json",
        "presets.py",
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "hiera_hf"
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_hiera.HieraForImageClassification"
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "HieraImageProcessor"
    assert processor["auto_map"] == {"AutoImageProcessor": "image_processing_hiera.HieraImageProcessor"}


def test_auto_classes_load_ours(image_folder):
    folder, model = image_folder
    pixel_values = pixels((224, 224), seed=1)
    assert type(AutoConfig.from_pretrained(folder)) is HieraConfig
    loaded = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert type(loaded) is HieraForImageClassification
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits, atol=0, rtol=0)
    assert type(AutoModel.from_pretrained(folder)) is HieraModel
    # transformers 5.23-5.25's AutoBackbone.from_pretrained asks the Hub about the name before looking for a local
    # folder (HFValidationError on any absolute path), so resolve the class through from_config.
    assert type(AutoBackbone.from_config(AutoConfig.from_pretrained(folder))) is HieraBackbone
    processor = AutoImageProcessor.from_pretrained(folder)
    assert type(processor) is HieraImageProcessor
    assert {k: v for k, v in processor.to_dict().items() if k != "auto_map"} == HieraImageProcessor().to_dict()
    assert type(AutoImageProcessor.from_pretrained(folder, backend="pil")) is HieraImageProcessor


def test_video_auto_classes_load_ours(video_folder):
    folder, model = video_folder
    loaded = AutoModelForVideoClassification.from_pretrained(folder)
    assert type(loaded) is HieraForVideoClassification
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), atol=0, rtol=0)
    processor = AutoVideoProcessor.from_pretrained(folder)
    assert type(processor) is HieraVideoProcessor and processor.num_frames == 4 and processor.size.height == 64


def test_transformers_hiera_still_loads_as_transformers(tmp_path):
    config = transformers.HieraConfig(
        embed_dim=8, num_heads=[1, 1, 1, 1], depths=[1, 1, 1, 1], num_labels=2, image_size=[224, 224]
    )
    transformers.HieraForImageClassification(config).save_pretrained(tmp_path / "cls")
    transformers.HieraModel(config).save_pretrained(tmp_path / "base")
    transformers.BitImageProcessor().save_pretrained(tmp_path / "cls")
    assert type(AutoConfig.from_pretrained(tmp_path / "cls")) is transformers.HieraConfig
    cls = AutoModelForImageClassification.from_pretrained(tmp_path / "cls")
    assert type(cls) is transformers.HieraForImageClassification
    assert type(AutoModel.from_pretrained(tmp_path / "base")) is transformers.HieraModel
    assert type(AutoImageProcessor.from_pretrained(tmp_path / "cls")).__name__ == "BitImageProcessor"
    # Both config classes are named HieraConfig: each must keep its own processor mapping.
    theirs, ours = IMAGE_PROCESSOR_MAPPING[transformers.HieraConfig], IMAGE_PROCESSOR_MAPPING[HieraConfig]
    assert {k: v.__name__ for k, v in theirs.items()} == {
        "torchvision": "BitImageProcessor",
        "pil": "BitImageProcessorPil",
    }
    assert ours == {"torchvision": HieraImageProcessor, "pil": HieraImageProcessor}


def test_image_pipelines(image_folder):
    folder, model = image_folder
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    pixel_values = HieraImageProcessor()(image, return_tensors="pt").pixel_values
    with torch.no_grad():
        probabilities = model(pixel_values).logits.softmax(-1)[0]
        features = model.hiera(pixel_values).last_hidden_state

    classify = pipeline("image-classification", model=str(folder))
    assert isinstance(classify.model, HieraForImageClassification)
    assert isinstance(classify.image_processor, HieraImageProcessor)
    top = classify(image, top_k=2)
    assert len(top) == 2 and top[0]["score"] >= top[1]["score"]
    expected = probabilities.topk(2)
    assert [r["label"] for r in top] == [LABELS[i] for i in expected.indices.tolist()]
    np.testing.assert_allclose([r["score"] for r in top], expected.values.numpy(), atol=1e-6)

    extract = pipeline("image-feature-extraction", model=str(folder))
    out = extract(image, return_tensors=True)
    assert out.shape == (1, 49, model.config.hidden_size)
    torch.testing.assert_close(out, features, atol=1e-6, rtol=0)


def test_video_classification_pipeline(video_folder, tmp_path):
    """transformers' pipeline reads `model.config.num_frames` unless `num_frames` is passed; HieraConfig has
    no such field, so the call names it."""
    folder, model = video_folder
    path = tmp_path / "clip.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 40, "yuv420p"
        for _ in range(20):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    classify = pipeline("video-classification", model=str(folder))
    assert isinstance(classify.video_processor, HieraVideoProcessor)
    top = classify(str(path), num_frames=4, top_k=3)
    pixel_values = classify.video_processor(str(path), return_tensors="pt").pixel_values
    with torch.no_grad():
        expected = model(pixel_values).logits.softmax(-1)[0].topk(3)
    assert [r["label"] for r in top] == [LABELS[i] for i in expected.indices.tolist()]
    np.testing.assert_allclose([r["score"] for r in top], expected.values.numpy(), atol=1e-6)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hiera_hf"] = None  # any import of hiera_hf now fails: the folder's own code must suffice
    import torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

    folder, inputs, outputs = sys.argv[1:]
    try:
        AutoModel.from_pretrained(folder)
        raise SystemExit("loaded without trust_remote_code")
    except ValueError:
        pass
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    data = torch.load(inputs, weights_only=True)
    with torch.no_grad():
        logits = model(processor(data["image"], return_tensors="pt").pixel_values).logits
    torch.save({"logits": logits, "classes": [type(o).__module__ for o in (config, model, base, processor)],
                "hiera_hf": sorted(m for m in sys.modules if m.startswith("hiera_hf") and sys.modules[m])}, outputs)
    """
)


def run_without_hiera_hf(script: str, *args: str, tmp_path: Path) -> None:
    """Run `script` in a fresh Python whose path does not hold hiera-hf (and which blocks importing it)."""
    src = str(Path(hiera_hf.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src
    )
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    run = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def test_remote_code_in_fresh_process(image_folder, tmp_path):
    folder, model = image_folder
    image = torch.randint(0, 256, (3, 100, 140), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    torch.save({"image": image}, tmp_path / "inputs.pt")
    run_without_hiera_hf(REMOTE_SCRIPT, str(folder), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt"),
                         tmp_path=tmp_path)  # fmt: skip
    result = torch.load(tmp_path / "out.pt", weights_only=True)
    assert all(module.startswith("transformers_modules.") for module in result["classes"]), result["classes"]
    assert result["hiera_hf"] == []
    with torch.no_grad():
        expected = model(HieraImageProcessor()(image, return_tensors="pt").pixel_values).logits
    torch.testing.assert_close(result["logits"], expected, atol=0, rtol=0)


REMOTE_VIDEO_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hiera_hf"] = None
    import torch
    from transformers import AutoModelForVideoClassification, AutoVideoProcessor

    folder, inputs, outputs = sys.argv[1:]
    model = AutoModelForVideoClassification.from_pretrained(folder, trust_remote_code=True).eval()
    try:
        AutoVideoProcessor.from_pretrained(folder, trust_remote_code=True)
        processor_error = None
    except Exception as error:
        processor_error = type(error).__name__
    with torch.no_grad():
        logits = model(torch.load(inputs, weights_only=True)).logits
    torch.save({"logits": logits, "module": type(model).__module__, "processor_error": processor_error}, outputs)
    """
)


def test_video_remote_code_is_model_only(video_folder, tmp_path):
    """Decision: the video processor is package-only (it reads videos through `hiera_hf.video_io`), so a video
    folder's remote code covers the model; the processor config has no `auto_map` and the processor does not
    load without hiera-hf. The model loads with `trust_remote_code=True` and gives the same logits."""
    folder, model = video_folder
    assert "auto_map" not in json.loads((folder / "video_preprocessor_config.json").read_text())
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForVideoClassification"] == "modeling_hiera.HieraForVideoClassification"
    pixel_values = pixels((4, 64, 64), seed=3)
    torch.save(pixel_values, tmp_path / "inputs.pt")
    run_without_hiera_hf(REMOTE_VIDEO_SCRIPT, str(folder), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt"),
                         tmp_path=tmp_path)  # fmt: skip
    result = torch.load(tmp_path / "out.pt", weights_only=True)
    assert result["module"].startswith("transformers_modules.") and result["processor_error"] is not None
    with torch.no_grad():
        torch.testing.assert_close(result["logits"], model(pixel_values).logits, atol=0, rtol=0)


def test_save_for_hub_is_atomic(image_folder, tmp_path):
    _, model = image_folder
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        save_for_hub(model, occupied)
    assert sorted(p.name for p in occupied.iterdir()) == ["keep.txt"]

    class BrokenProcessor:
        def save_pretrained(self, directory):
            (Path(directory) / "partial.json").write_text("{")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_for_hub(model, tmp_path / "new", image_processor=BrokenProcessor())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied"]  # no target, no staging folder left

    with pytest.raises(TypeError, match="hiera-hf Hiera model"):
        save_for_hub(transformers.HieraModel(transformers.HieraConfig(embed_dim=8, depths=[1, 1, 1, 1])), tmp_path)


def test_add_remote_code_rejects_other_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        add_remote_code(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "hiera"}))
    with pytest.raises(ValueError, match="not a hiera-hf Hiera config"):
        add_remote_code(tmp_path)
