"""Test-wide settings: never reach the network (no Hub access exists where the suite runs)."""

import os
import urllib.error

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture
def no_network(monkeypatch) -> list[str]:
    """Every checkpoint download fails as it does offline; the list collects the URLs tried."""
    tried = []

    def offline(url, dst, progress=True):
        tried.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tried
