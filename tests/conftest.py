"""Test-wide settings: never reach the network (no Hub access exists where the suite runs)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
