"""Helpers for the suite's own organisation: which parametrized cases belong to the slow part (`-m "not slow"`
runs the rest in a few minutes)."""

import pytest

LARGE = ("large", "huge")  # variant names of the large models


def variants(names) -> list:
    """`names` (official variant names) as pytest parameters, the large variants (`LARGE`) marked slow."""
    return [pytest.param(name, marks=pytest.mark.slow if any(s in name for s in LARGE) else ()) for name in names]
