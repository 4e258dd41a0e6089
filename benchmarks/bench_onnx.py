"""ONNX Runtime vs PyTorch for SAM 2 on CPU: image encoder s/image (ORT fp32, ORT int8, our PyTorch fp32), mask
decoder prompts/s, and the int8 encoder's mask IoU against fp32 on real photos.

    python benchmarks/bench_onnx.py [--model DIR] [--rounds 3]

Without `--model`, a sam2.1_hiera_tiny with random weights is built (no Hub access here): speed figures hold, the
IoU figures are only indicative (random weights make masks that real weights would not). One process, same
weights and inputs, interleaved rounds, medians.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hiera_hf import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2VideoModel
from hiera_hf.onnx.export import export_onnx
from hiera_hf.onnx.runtime import Sam2OnnxImagePredictor

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
IMAGES = ("truck.jpg", "dog.jpg", "groceries.jpg")


def median_seconds(function, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a converted SAM 2 folder (default: random-weight sam2.1_hiera_tiny)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--media", default=str(MEDIA if MEDIA.is_dir() else Path("/work/shared/media")))
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench_onnx_"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work)


def run(args: argparse.Namespace, work: Path) -> None:
    """The benchmark, with its exported folders under `work`."""
    folder = Path(args.model) if args.model else work / "model"
    if not args.model:
        torch.manual_seed(0)
        Sam2VideoModel(Sam2Config.from_preset("sam2.1_hiera_tiny")).save_pretrained(folder)
    start = time.perf_counter()
    onnx_folder = export_onnx(folder, work / "onnx", int8=True, progress=False)
    print(f"export (fp32 + int8 encoder): {time.perf_counter() - start:.0f} s", flush=True)

    model = Sam2Model.from_pretrained(folder).eval()
    size = model.config.image_size
    processor = Sam2ImageProcessor(size={"height": size, "width": size})
    fp32, int8 = Sam2OnnxImagePredictor(onnx_folder), Sam2OnnxImagePredictor(onnx_folder, quantized=True)
    images = [Image.open(Path(args.media) / name).convert("RGB") for name in IMAGES]
    pixels = processor(images[0])["pixel_values"]

    rows = {"ORT fp32": [], "ORT int8": [], "PyTorch fp32": []}
    for _ in range(args.rounds):  # interleaved
        rows["ORT fp32"].append(median_seconds(lambda: fp32.set_image(images[0]), 1))
        rows["ORT int8"].append(median_seconds(lambda: int8.set_image(images[0]), 1))
        with torch.inference_mode():
            rows["PyTorch fp32"].append(median_seconds(lambda: model.get_image_embeddings(pixels), 1))
    print(f"torch threads {torch.get_num_threads()}; image encoder s/image at {size} (median of {args.rounds}):")
    base = statistics.median(rows["PyTorch fp32"])
    for name, values in rows.items():
        value = statistics.median(values)
        print(f"  {name:13s} {value:7.3f} s   {base / value:5.2f}x vs PyTorch fp32")

    fp32.set_image(images[0])
    prompts = 20
    seconds = median_seconds(
        lambda: [fp32.predict([[100 + 10 * i, 200]], [1], multimask_output=True) for i in range(prompts)], args.rounds
    )
    print(f"ORT mask decoder (+ upscaling to {images[0].size}): {prompts / seconds:.1f} prompts/s")

    ious = []
    for image in images:
        fp32.set_image(image)
        int8.set_image(image)
        width, height = image.size
        for x in np.linspace(0.2, 0.8, 3):
            for y in np.linspace(0.2, 0.8, 3):
                click = [[x * width, y * height]]
                a = fp32.predict(click, [1], multimask_output=False)[0][0]
                b = int8.predict(click, [1], multimask_output=False)[0][0]
                union = np.logical_or(a, b).sum()
                ious.append(np.logical_and(a, b).sum() / union if union else 1.0)
    print(
        f"int8 vs fp32 mask IoU over {len(ious)} clicks on {len(images)} photos: mean {np.mean(ious):.3f}, min "
        f"{np.min(ious):.3f}{' (random weights: indicative only)' if not args.model else ''}"
    )


if __name__ == "__main__":
    sys.exit(main())
