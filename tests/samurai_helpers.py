"""SAMURAI's official code as a reference: PyPI `absolutely-not-samurai==1.0.0` (yangchris11/samurai's `sam2`
package), installed apart from Meta's `sam2` (both are the module `sam2`) and run in a subprocess.

The test command of the README (and `.ci/run`) installs it with
`pip install --no-deps --target .references/samurai absolutely-not-samurai==1.0.0`; `HIERA_HF_SAMURAI` names
another folder. Without it the parity tests fail, saying how to install it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
INSTALL = "pip install --no-deps --target .references/samurai absolutely-not-samurai==1.0.0"


def samurai_folder() -> Path:
    """The folder holding SAMURAI's `sam2` package."""
    folder = Path(os.environ.get("HIERA_HF_SAMURAI") or REPOSITORY / ".references" / "samurai")
    if not (folder / "sam2" / "configs" / "samurai").is_dir():
        raise FileNotFoundError(
            f"SAMURAI's official code is not in {folder}: install it there with `{INSTALL}` (from the repository "
            "root; the README's test command does) or set HIERA_HF_SAMURAI to its folder"
        )
    return folder


def run_samurai(
    checkpoint: Path, frames: Path, image_size: int, settings: dict, prompt: dict, output: Path
) -> dict[str, np.ndarray]:
    """Track object 1 from a prompt on frame 0 with SAMURAI's predictor (its `sam2.1_hiera_t` SAMURAI config at
    `image_size`, `settings` overriding its SAMURAI fields) over a folder of JPEG frames; returns what
    `samurai_reference.py` saves."""
    request = {
        "checkpoint": str(checkpoint),
        "frames": str(frames),
        "image_size": image_size,
        "settings": settings,
        "prompt": prompt,
        "output": str(output),
    }
    request_path = output.with_suffix(".json")
    request_path.write_text(json.dumps(request))
    environment = {**os.environ, "PYTHONPATH": str(samurai_folder())}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("samurai_reference.py")), str(request_path)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode:
        raise RuntimeError(f"SAMURAI's reference run failed:\n{done.stderr[-4000:]}")
    with np.load(output) as saved:
        return dict(saved)
