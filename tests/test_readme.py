"""Every README snippet runs verbatim: each ```python block in a fresh interpreter and each line of the ```bash
blocks of `hiera-hf` commands, from a repository root with `../shared/media` beside it (where the README runs them),
with random-weight stand-ins for the official checkpoints (Meta's layout, in `$HIERA_HF_CACHE/checkpoints/` as the
README says) and for the converted folders a `--model NAME` run leaves in `$HIERA_HF_CACHE/models/`. Blocks that
install packages or launch training (`pip install`, `accelerate launch`: network or GPU) are the only ones not run;
```text blocks are synopses, not snippets."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import hiera
import pytest
import torch
from detector_helpers import grounding_dino_folder
from sam2_helpers import media

from hiera_hf import HIERA_PRESETS, Sam2Config, Sam2ImageProcessor, Sam2VideoModel
from hiera_hf.hub import resolve_model
from hiera_hf.onnx.export import export_onnx

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.slow  # converts, exports and runs every snippet: minutes
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README.read_text(), flags=re.M | re.S)
NOT_RUN = ("pip install", "accelerate launch")  # installation and GPU training commands


def snippets(language: str) -> list[str]:
    return [code for lang, code in BLOCKS if lang == language and not any(m in code for m in NOT_RUN)]


def test_every_block_is_run_or_named():
    assert {lang for lang, _ in BLOCKS} <= {"python", "bash", "text"}
    assert len(snippets("python")) >= 3 and len(snippets("bash")) >= 1
    for code in snippets("bash"):
        for line in code.splitlines():
            assert not line.strip() or line.startswith("hiera-hf "), line


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, dict]:
    """The layout the README is run in: a repository root (`repo`, the working folder) with `../shared/media`
    beside it (dog.jpg, truck.jpg, blocks.mp4); an hiera-hf cache holding a random-weight hiera_tiny_224 checkpoint
    in Meta's layout (`checkpoints/`, for `--model hiera_tiny_224`) and, in `models/`, the converted folders that
    `resolve_model("hiera_base_224")` and `--model sam2.1_hiera_tiny` find there once converted (stand-ins: a
    converted random hiera_tiny_224; a random SAM 2.1 tiny at 256 px, so that the mask-generation pipeline takes
    seconds); `repo/sam2.1_tiny_onnx`, its ONNX export; and a Hugging Face cache holding a tiny random Grounding
    DINO as IDEA-Research/grounding-dino-tiny (the text prompts' detector). Returns (repo, environment)."""
    root = tmp_path_factory.mktemp("readme")
    cache, work, media_folder = root / "cache", root / "repo", root / "shared" / "media"
    (cache / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"model_state": hiera.hiera_tiny_224().state_dict()}, cache / "checkpoints" / "hiera_tiny_224.pth")
    previous = os.environ.get("HIERA_HF_CACHE")
    os.environ["HIERA_HF_CACHE"] = str(cache)
    try:
        tiny = resolve_model("hiera_tiny_224", progress=False)
    finally:
        os.environ.pop("HIERA_HF_CACHE") if previous is None else os.environ.update(HIERA_HF_CACHE=previous)
    shutil.copytree(tiny, cache / "models" / f"hiera_base_224.{HIERA_PRESETS['hiera_base_224'].default_checkpoint}")
    sam2 = cache / "models" / "sam2.1_hiera_tiny"
    Sam2VideoModel(Sam2Config.from_preset("sam2.1_hiera_tiny", image_size=256)).save_pretrained(sam2)  # both halves
    Sam2ImageProcessor(size={"height": 256, "width": 256}).save_pretrained(sam2)
    media_folder.mkdir(parents=True)
    for name in ("dog.jpg", "truck.jpg", "blocks.mp4"):
        shutil.copy(media(name), media_folder / name)
    work.mkdir()
    export_onnx(sam2, work / "sam2.1_tiny_onnx", progress=False)  # what the README exports
    commit = "0123456789abcdef0123456789abcdef01234567"  # huggingface_hub's cache layout
    detector = root / "hf" / "hub" / "models--IDEA-Research--grounding-dino-tiny"
    grounding_dino_folder(detector / "snapshots" / commit)
    (detector / "refs").mkdir()
    (detector / "refs" / "main").write_text(commit)
    return work, {**os.environ, "HIERA_HF_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf")}


@pytest.mark.parametrize("index", range(len(snippets("python"))))
def test_python_snippet(workspace, index):
    work, env = workspace
    run = subprocess.run(
        [sys.executable, "-c", snippets("python")[index]], cwd=work, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.parametrize(
    "line", [line for code in snippets("bash") for line in code.splitlines() if line.strip()]
)
def test_command_line(workspace, line):
    work, env = workspace
    arguments = shlex.split(line, comments=True)[1:]
    run = subprocess.run(
        [sys.executable, "-m", "hiera_hf.cli", *arguments], cwd=work, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    if arguments[0] == "classify":  # the converted classifier prints ImageNet names, not LABEL_i
        assert "LABEL_" not in run.stdout and len(run.stdout.splitlines()) == 6, run.stdout
