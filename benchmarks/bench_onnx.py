"""ONNX Runtime vs PyTorch for SAM 2 on CPU, side by side in one run:

- image: encoder s/image (ORT fp32, ORT int8, our PyTorch fp32), mask decoder prompts/s, and the int8 encoder's mask
  IoU against fp32 on real photos;
- video: propagation frames/s with 1 and 4 objects (ORT fp32, ORT with the int8 encoder, our `Sam2VideoSession`
  fp32, Meta's `SAM2VideoPredictor`), on the same weights and frames, and the peak resident memory of each tracking
  the same frames in a fresh process.

    python benchmarks/bench_onnx.py [--model DIR] [--rounds 3] [--video-frames 8] [--video-size 1024]

Without `--model`, a sam2.1_hiera_tiny with random weights is built (no Hub access here): speed figures hold, the
IoU figures are only indicative (random weights make masks that real weights would not). The video rows always use
Meta's randomly initialised model (converted to ours, then exported), so that Meta's predictor runs the same
weights. Interleaved rounds, medians.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, peak_rss_mb  # noqa: E402
from bench_sam2_video import build_models, clicks, timed_run, trackers, write_jpegs  # noqa: E402

from hiera_hf import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2VideoModel  # noqa: E402
from hiera_hf.onnx.export import export_onnx  # noqa: E402
from hiera_hf.onnx.runtime import Sam2OnnxImagePredictor  # noqa: E402
from hiera_hf.onnx.video_session import Sam2OnnxVideoSession  # noqa: E402

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
IMAGES = ("truck.jpg", "dog.jpg", "groceries.jpg")
VIDEO_IMPLEMENTATIONS = ("ORT fp32", "ORT int8 encoder", "PyTorch fp32 (ours)", "Meta fp32")


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
    parser.add_argument("--video", default="blocks.mp4", help="video in --media (or a path) for the video rows")
    parser.add_argument("--video-frames", type=int, default=8, help="frames tracked per timed run (0: no video)")
    parser.add_argument("--video-size", type=int, default=1024, help="model input size of the video rows")
    parser.add_argument("--worker", choices=VIDEO_IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.video = str(Path(args.media) / args.video) if not Path(args.video).exists() else args.video
    if args.worker:
        return memory_worker(args)

    work = Path(tempfile.mkdtemp(prefix="bench_onnx_"))
    try:
        run(args, work)
        if args.video_frames:
            video(args, work)
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



# ---------------------------------------------------------------------------------------------------------------
# Video
# ---------------------------------------------------------------------------------------------------------------


def video_trackers(work: Path, size: tuple[int, int], image_size: int, export: bool = True) -> dict:
    """`start(num_objects, num_frames)` generators of `(N, H, W)` logits per frame (see `bench_sam2_video.trackers`)
    on the frames of `work / "frames"`: ours and Meta's on the weights of `build_models` (converted into
    `work / "model"`), and with `export` the two ORT rows (exported into `work / "video_onnx"`)."""
    models = build_models(image_size, work / "model", torch.device("cpu"))
    runs = trackers(models, work / "frames", size, image_size, torch.device("cpu"))
    runs = {"PyTorch fp32 (ours)": runs["ours"], "Meta fp32": runs["meta"]}
    if not export:
        return runs
    onnx_folder = work / "video_onnx"
    export_onnx(work / "model", onnx_folder, int8=True, progress=False)

    def run_onnx(quantized: bool):
        def start(num_objects: int, num_frames: int):
            session = Sam2OnnxVideoSession(onnx_folder, work / "frames", quantized=quantized, progress=False)
            for obj, point in enumerate(clicks(num_objects, *size), start=1):
                session.add_points(0, obj, [point], [1])
            yield None
            for result in session.propagate(max_frames=num_frames):
                yield torch.from_numpy(result.mask_logits)

        return start

    return {"ORT fp32": run_onnx(False), "ORT int8 encoder": run_onnx(True), **runs}


def video(args: argparse.Namespace, work: Path) -> None:
    """Propagation frames/s of the four implementations, interleaved, then each one's peak RSS in a fresh process."""
    (work / "frames").mkdir()
    size = write_jpegs(args.video, work / "frames", args.video_frames)
    runs = video_trackers(work, size, args.video_size)
    rows = []
    for num_objects in (1, 4):
        times = {name: [] for name in VIDEO_IMPLEMENTATIONS}
        logits = {}
        for r in range(args.rounds):
            order = VIDEO_IMPLEMENTATIONS[r % 4 :] + VIDEO_IMPLEMENTATIONS[: r % 4]
            for name in order:
                seconds, logits[name] = timed_run(runs[name], num_objects, args.video_frames, torch.device("cpu"))
                times[name].append(seconds)
        base = args.video_frames / statistics.median(times["PyTorch fp32 (ours)"])
        meta = args.video_frames / statistics.median(times["Meta fp32"])
        for name in VIDEO_IMPLEMENTATIONS:
            fps = args.video_frames / statistics.median(times[name])
            worst = max((x - y).abs().max().item() for x, y in zip(logits[name], logits["Meta fp32"]))
            rows.append((num_objects, name, fps, fps / base, fps / meta, f"{worst:.1e}"))
    print(f"\n### Video propagation ({args.video_frames} frames of {Path(args.video).name}, {args.video_size} px)\n")
    headers = ("objects", "implementation", "frames/s", "vs ours PyTorch", "vs Meta", "max |logit - Meta|")
    print(markdown_table(headers, rows))

    rows = []
    for name in VIDEO_IMPLEMENTATIONS:
        command = [sys.executable, __file__, "--worker", name, "--work", str(work), "--media", args.media]
        command += ["--video", args.video, "--video-frames", str(args.video_frames)]
        command += ["--video-size", str(args.video_size)]
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        rows.append((name, json.loads(result.stdout.strip().splitlines()[-1])["peak"]))
    print(f"\n### Peak resident memory, 1 object, {args.video_frames} frames, fresh process each\n")
    print(markdown_table(("implementation", "peak RSS MB"), rows))


def memory_worker(args: argparse.Namespace) -> None:
    """One implementation tracking the frames of `--work` in this fresh process; prints its peak RSS as JSON.
    The ORT rows load no PyTorch model (Meta's and ours are still built: the weights come from Meta's model)."""
    work = Path(args.work)
    size = np.asarray(Image.open(work / "frames" / "00000.jpg")).shape[:2]
    if args.worker.startswith("ORT"):
        quantized = args.worker == "ORT int8 encoder"
        session = Sam2OnnxVideoSession(work / "video_onnx", work / "frames", quantized=quantized, progress=False)
        session.add_points(0, 1, [clicks(1, *size)[0]], [1])
        for _ in session.propagate(max_frames=args.video_frames):
            pass
    else:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(work / "frames", Path(tmp) / "frames")
            runs = video_trackers(Path(tmp), size, args.video_size, export=False)
            for _ in runs[args.worker](1, args.video_frames):
                pass
    print(json.dumps({"peak": peak_rss_mb()}))


if __name__ == "__main__":
    sys.exit(main())
