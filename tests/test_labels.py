"""Class names: the shipped ImageNet-1k and Kinetics-400 lists equal their sources (timm, torchvision), known ids
have their known names, and a classifier converted from a Meta checkpoint carries them, so `classify` prints them.
"""

import importlib.util
from pathlib import Path

import hiera
import pytest
import torch
from sam2_helpers import media
from transformers import AutoConfig

from hiera_hf.cli import main
from hiera_hf.conversion import convert_hiera
from hiera_hf.labels import class_names, label_fields

ROOT = Path(__file__).resolve().parents[1]


def test_known_ids():
    imagenet, kinetics = class_names("imagenet-1k"), class_names("kinetics-400")
    assert len(imagenet) == 1000 and len(kinetics) == 400
    assert imagenet[0] == "tench, Tinca tinca" and imagenet[207] == "golden retriever"
    assert imagenet[281] == "tabby, tabby cat" and imagenet[999].startswith("toilet tissue")
    assert kinetics[0] == "abseiling" and kinetics[399] == "zumba"
    fields = label_fields("imagenet-1k")
    assert fields["label2id"]["golden retriever"] == 207 and fields["id2label"][207] == "golden retriever"
    with pytest.raises(ValueError, match="No class names for dataset 'coco'"):
        class_names("coco")


def test_shipped_files_are_what_the_generator_writes(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("write_label_files", ROOT / "conversion_scripts/write_label_files.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr("sys.argv", ["write_label_files.py", "--output", str(tmp_path)])
    script.main()
    for dataset in ("imagenet-1k", "kinetics-400"):
        shipped = ROOT / "src" / "hiera_hf" / "labels" / f"{dataset}.json"
        assert (tmp_path / f"{dataset}.json").read_bytes() == shipped.read_bytes(), dataset


@pytest.fixture(scope="module")
def converted_tiny(tmp_path_factory):
    """hiera_tiny_224 converted from Meta's layout (random weights, so the names it prints are arbitrary)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("labels")
    torch.save({"model_state": hiera.hiera_tiny_224().state_dict()}, folder / "hiera_tiny_224.pth")
    return convert_hiera(
        folder / "converted", "hiera_tiny_224", checkpoint=folder / "hiera_tiny_224.pth", verify=False, progress=False
    )


def test_converted_classifier_prints_imagenet_names(converted_tiny, capsys):
    config = AutoConfig.from_pretrained(converted_tiny)
    assert config.id2label[207] == "golden retriever" and config.label2id["tench, Tinca tinca"] == 0
    assert main(["classify", media("dog.jpg"), "--model", str(converted_tiny), "--quiet", "--top-k", "3"]) == 0
    printed = [line.split("  ", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert len(printed) == 3 and all(name in class_names("imagenet-1k") for name in printed), printed
