"""The `hiera-hf` command: `classify` (the README's main job) on real media, its errors, the offline message, and
the subcommand listing. `convert` is tested with the converters (test_hiera_conversion.py, test_sam2_conversion.py).
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from hiera_hf import (
    HieraConfig,
    HieraForImageClassification,
    HieraForVideoClassification,
    HieraImageProcessor,
    HieraModel,
    HieraVideoProcessor,
    save_for_hub,
)
from hiera_hf.cli import SUBCOMMANDS, main

MEDIA = Path("/work/shared/media")
DOG, GOAT = MEDIA / "dog.jpg", MEDIA / "goat.mp4"
LABELS = {i: name for i, name in enumerate(["cat", "dog", "goat", "truck", "tench, Tinca tinca", "block", "a", "b"])}


def labelled(preset: str, **kwargs) -> HieraConfig:
    return HieraConfig.from_preset(
        preset, depths=(1, 1, 1, 1), num_labels=len(LABELS), id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()}, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = HieraForImageClassification(labelled("hiera_tiny_224")).eval()
    folder = save_for_hub(model, tmp_path_factory.mktemp("cli") / "image", image_processor=HieraImageProcessor())
    return folder, model


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = HieraForVideoClassification(labelled("hiera_base_16x224", image_size=(4, 64, 64))).eval()
    processor = HieraVideoProcessor(num_frames=4, size={"height": 64, "width": 64})
    folder = save_for_hub(model, tmp_path_factory.mktemp("cli") / "video", video_processor=processor)
    return folder, model, processor


def printed_top(capsys) -> list[tuple[float, str]]:
    """`(probability, label)` of the lines printed by `classify --quiet`."""
    lines = capsys.readouterr().out.splitlines()
    return [(float(p), label) for p, label in (line.split("  ", 1) for line in lines)]


def assert_top(printed: list[tuple[float, str]], logits: torch.Tensor, k: int = 5) -> None:
    expected = logits.softmax(-1)[0].topk(k)
    assert [label for _, label in printed] == [LABELS[i] for i in expected.indices.tolist()]
    # printed with 4 decimals
    assert all(abs(p - e) <= 5e-5 for (p, _), e in zip(printed, expected.values.tolist()))


def test_classify_image_prints_the_top_5_of_a_direct_call(image_folder, capsys):
    folder, model = image_folder
    assert main(["classify", str(DOG), "--model", str(folder), "--quiet"]) == 0
    printed = printed_top(capsys)
    assert len(printed) == 5
    with Image.open(DOG) as image, torch.no_grad():
        logits = model(HieraImageProcessor()(image, return_tensors="pt").pixel_values).logits
    assert_top(printed, logits)

    assert main(["classify", str(DOG), "--model", str(folder), "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Top 2 labels for") and len(out) == 3


def test_classify_video(video_folder, capsys):
    folder, model, processor = video_folder
    assert main(["classify", str(GOAT), "--model", str(folder), "--quiet"]) == 0
    with torch.no_grad():
        logits = model(processor(str(GOAT), return_tensors="pt").pixel_values).logits
    assert_top(printed_top(capsys), logits)


def test_classify_errors(image_folder, video_folder, tmp_path, capsys):
    image_model, video_model = str(image_folder[0]), str(video_folder[0])
    HieraModel(labelled("hiera_tiny_224")).save_pretrained(tmp_path / "headless")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    capsys.readouterr()
    cases = [
        ([str(DOG), "--model", video_model], "is a video model; give it a video file"),
        ([str(GOAT), "--model", image_model], "is an image model; give it an image"),
        ([str(DOG), "--model", str(tmp_path / "headless")], "without a classification head"),
        ([str(tmp_path / "broken.jpg"), "--model", image_model], "Cannot read the image"),
        ([str(tmp_path / "broken.mp4"), "--model", video_model], "broken.mp4"),
        ([str(tmp_path / "missing.jpg"), "--model", image_model], "No such image or video"),
        ([str(DOG), "--model", image_model, "--top-k", "0"], "--top-k must be at least 1"),
        ([str(DOG), "--model", "hiera_nano"], "neither an existing folder, a known Hiera or SAM 2 variant"),
        ([str(DOG), "--model", str(tmp_path / "nope_dir")], "No such model folder"),
    ]
    for arguments, message in cases:
        assert main(["classify", *arguments]) == 1, arguments
        err = capsys.readouterr().err
        assert "hiera-hf classify: error: " in err and message in err, (arguments, err)
        assert "Traceback" not in err


def test_classify_offline_names_the_folder_alternative(tmp_path, monkeypatch, capsys, no_network):
    monkeypatch.setenv("HIERA_HF_CACHE", str(tmp_path / "cache"))
    assert main(["classify", str(DOG), "--model", "hiera_tiny_224", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "hiera_tiny_224 is not in the cache" in err and "--model DIR" in err
    assert no_network == ["https://dl.fbaipublicfiles.com/hiera/hiera_tiny_224.pth"]


def python(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (this one has long imported transformers)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)


def test_import_and_help_do_not_import_torch():
    run = python(
        "import sys, hiera_hf, hiera_hf.cli\n"
        "from hiera_hf import HIERA_PRESETS, SAM2_PRESETS\n"
        "assert 'hiera_tiny_224' in HIERA_PRESETS and 'sam2.1_hiera_tiny' in SAM2_PRESETS\n"
        "heavy = {'torch', 'transformers', 'numpy', 'PIL'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "hiera_hf.cli.main(['--help'])"
    )
    assert "hiera-hf" in run.stdout


@pytest.mark.parametrize(
    "imports",
    ["import hiera_hf\nimport transformers", "import transformers\nimport hiera_hf", "from hiera_hf import HieraConfig"],
    ids=["hiera_hf_first", "transformers_first", "a_class_first"],
)
def test_import_registers_the_auto_classes(image_folder, imports):
    """`import hiera_hf` then `AutoModel...from_pretrained(folder)` loads our classes, whatever was imported first."""
    folder = str(image_folder[0])
    code = (
        f"{imports}\nfrom transformers import AutoImageProcessor, AutoModelForImageClassification\n"
        f"model = AutoModelForImageClassification.from_pretrained({folder!r})\n"
        f"processor = AutoImageProcessor.from_pretrained({folder!r})\n"
        "print(type(model).__module__, type(processor).__module__)"
    )
    assert python(code).stdout.split() == ["hiera_hf.hiera.modeling_hiera", "hiera_hf.hiera.image_processing_hiera"]


def test_help_lists_every_subcommand():
    run = subprocess.run(
        [sys.executable, "-m", "hiera_hf.cli", "--help"], capture_output=True, text=True, timeout=300, check=True
    )
    assert set(SUBCOMMANDS) >= {"convert", "classify"}
    for name, (summary, _, _) in SUBCOMMANDS.items():
        assert name in run.stdout and summary in run.stdout
