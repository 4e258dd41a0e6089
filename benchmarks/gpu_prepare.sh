#!/usr/bin/env bash
# Run on a development machine (it reaches the package registries) before a GPU lease. The GPU machine is bare and
# offline: it has its own python3 with CUDA torch, but not our pinned references. This gathers into .gpu/ (ignored
# by git; carried with the run) what benchmarks/gpu_check.sh installs there:
#   .gpu/whl/     pure-Python wheels: transformers, hiera-transformer, sam2 (+ hydra-core, omegaconf, antlr4, iopath),
#                 hiera-optim (Triton MAE kernels, optional reference)
#   .gpu/frames/  the first 50 frames of ../shared/media/blocks.mp4 (longer side 1024 px: SAM 2's input size;
#                 the video benchmark loops them to the 200 frames of its memory run)
#   .gpu/media/   what tests/test_cuda.py reads (HIERA_HF_MEDIA there): truck.jpg, dog.jpg, and blocks/, the first
#                 8 frames of blocks.mp4 as JPEGs (the GPU machine has no PyAV)
# Size: ~15 MB of wheels + ~7 MB of frames + ~3 MB of media (a device run carries at most 64 MiB with the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
version() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .gpu && mkdir -p .gpu/whl .gpu/frames .gpu/media/blocks
"$py" -m pip download --no-deps -q -d .gpu/whl "transformers==$(version transformers)" \
    "hiera-transformer==$(version hiera-transformer)" "hydra-core==$(version hydra-core)" \
    "omegaconf==$(version omegaconf)" hiera-optim
SAM2_BUILD_CUDA=0 "$py" -m pip wheel --no-deps --no-build-isolation -q -w .gpu/whl "sam2==$(version sam2)" \
    "antlr4-python3-runtime==$(version antlr4-python3-runtime)" "iopath==$(version iopath)"
"$py" - <<'PY'
from pathlib import Path

from PIL import Image

from hiera_hf.video_io import open_video

with open_video("../shared/media/blocks.mp4") as frames:
    for t in range(min(50, len(frames))):
        image = Image.fromarray(frames[t])
        image.thumbnail((1024, 1024), Image.Resampling.BICUBIC)
        image.save(Path(".gpu/frames") / f"{t:05d}.jpg", quality=85)
    for t in range(8):
        Image.fromarray(frames[t]).save(Path(".gpu/media/blocks") / f"{t:05d}.jpg", quality=95)
PY
cp ../shared/media/truck.jpg ../shared/media/dog.jpg .gpu/media/
du -sh .gpu/whl .gpu/frames .gpu/media
