"""Test-wide settings (never reach the network: no Hub access exists where the suite runs) and the fixtures that
several modules share, built once per run."""

import os
import urllib.error

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (`item.report_call` ...), for fixtures that act on a failure (the browser
    tests' screenshot)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def no_network(monkeypatch) -> list[str]:
    """Every checkpoint download fails as it does offline; the list collects the URLs tried."""
    tried = []

    def offline(url, dst, progress=True):
        tried.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tried


# Shared tiny models and media, built once per run (session scope) for every module that uses them -------------


@pytest.fixture(scope="session")
def sam2_folder(tmp_path_factory):
    """A random-weight SAM 2.1 tiny video model at 128 px (2 memories, 2 pointers), saved without a processor."""
    from hiera_hf import Sam2Config, Sam2VideoModel

    torch.manual_seed(0)
    config = Sam2Config.from_preset("sam2.1_hiera_tiny", image_size=128, num_maskmem=2, max_obj_ptrs_in_encoder=2)
    folder = tmp_path_factory.mktemp("sam2") / "model"
    Sam2VideoModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def app_model_folder(tmp_path_factory):
    """The app tests' converted SAM 2.1 tiny (`app_helpers.converted_tiny`: 256 px input, objects kept present)."""
    from app_helpers import OBJECT_SCORE_SHIFT, SIZE, converted_tiny

    return converted_tiny(tmp_path_factory.mktemp("app-sam"), SIZE, OBJECT_SCORE_SHIFT)


@pytest.fixture(scope="session")
def app_models(app_model_folder):
    """`hiera_hf.app.Models` of `app_model_folder` on the CPU (read-only: the tests share it)."""
    from hiera_hf.app import Models

    return Models.from_pretrained(app_model_folder, device="cpu")


@pytest.fixture(scope="session")
def app_clip(tmp_path_factory):
    """The first `app_helpers.NUM_FRAMES` frames of blocks.mp4 at `VIDEO_SIZE`, as a PNG folder."""
    from app_helpers import NUM_FRAMES, VIDEO_SIZE, first_frames

    return first_frames(tmp_path_factory.mktemp("app-clip"), NUM_FRAMES, VIDEO_SIZE)

