"""SAM 2.1 tiny video tracking: hiera-hf's `Sam2VideoSession` vs Meta's `SAM2VideoPredictor` and transformers'
`Sam2VideoModel`, on the same frames; and each tracking strategy of ours vs plain SAM 2 (ours) and vs its official
implementation (SAMURAI's predictor, PyPI `absolutely-not-samurai` in `.references/samurai` or `$HIERA_HF_SAMURAI`,
run in a subprocess since its module is also named `sam2`; it keeps one Kalman filter on the model, so several
objects are tracked one after the other, as its own scripts do).

Meta's randomly initialised model is the source of the weights; ours loads them through our converter and is
checked against Meta's masks before anything is timed. transformers' model has its own random weights (mapping
Meta's checkpoint into it needs transformers' conversion script, which its wheel does not ship): its speed and
memory are comparable, its masks are not. Meta's loader reads JPEG folders only, so the video's first frames are
written to a JPEG folder that every implementation reads.

Measured:
- frames/s of propagation (prompts on frame 0, one click per object), 1 and 4 objects, implementations interleaved
  round-robin; our bfloat16 mode too (the model loaded in bfloat16), with the mean IoU of its masks against our
  float32 masks;
- resident memory (VmRSS) after N and 4N tracked frames and the growth per frame, each implementation in a fresh
  process, at a reduced input size (`--memory-size`) for all alike.

    python benchmarks/bench_sam2_video.py                        # blocks.mp4, 8 frames, 1 and 4 objects
    python benchmarks/bench_sam2_video.py --frames 4 --memory-frames 25 --memory-size 256
    python benchmarks/bench_sam2_video.py --quick                # smoke run: 2 frames, 1 object, 256 px, no memory
    python benchmarks/bench_sam2_video.py --device cuda --memory-frames 50 --memory-size 1024   # GPU, 200 frames
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, parse_device, peak_gpu_mb, peak_rss_mb, synchronize  # noqa: E402

from hiera_hf.conversion.sam2 import convert_meta_sam2_state_dict  # noqa: E402
from hiera_hf.sam2 import Sam2Config, Sam2VideoModel, Sam2VideoSession  # noqa: E402
from hiera_hf.video_io import open_video  # noqa: E402

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media" / "blocks.mp4"  # ../shared/media next to the checkout
IMPLEMENTATIONS = ("ours", "ours-bf16", "meta", "transformers", "ours-samurai", "ours-dam4sam")
SAMURAI = Path(__file__).resolve().parents[1] / ".references" / "samurai"


def current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def write_jpegs(video: str, folder: Path, num_frames: int) -> tuple[int, int]:
    """The first `num_frames` frames of `video` (looped if shorter) as `00000.jpg ...`; returns (height, width)."""
    with open_video(video) as frames:
        for t in range(num_frames):
            Image.fromarray(frames[t % len(frames)]).save(folder / f"{t:05d}.jpg", quality=95)
        return frames[0].shape[:2]


def build_models(image_size: int, folder: Path, device: torch.device):
    """Meta's predictor with random weights (1-D tensors and object scores spread so masks are not trivial), ours
    converted from it, and transformers' with its own random weights at the same input size."""
    from sam2.build_sam import build_sam2_video_predictor
    from transformers import Sam2VideoConfig
    from transformers import Sam2VideoModel as TransformersVideoModel

    torch.manual_seed(0)
    meta = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        ckpt_path=None,
        device=str(device),
        hydra_overrides_extra=[f"++model.image_size={image_size}"],
    )
    meta.fill_hole_area = 0  # skipped on CPU anyway (needs Meta's CUDA extension); ours runs with it off too
    with torch.no_grad():
        for parameter in meta.parameters():
            if parameter.ndim <= 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
        meta.sam_mask_decoder.pred_obj_score_head.layers[2].weight.mul_(30.0)
    Sam2Config.from_preset("sam2.1_hiera_tiny", image_size=image_size, fill_hole_area=0).save_pretrained(folder)
    converted = convert_meta_sam2_state_dict(meta.state_dict())
    save_file(
        {k: v.contiguous() for k, v in converted.items()}, folder / "model.safetensors", metadata={"format": "pt"}
    )
    ours = Sam2VideoModel.from_pretrained(folder).to(device).eval()

    config = Sam2VideoConfig()
    config.image_size = config.prompt_encoder_config.image_size = image_size
    config.vision_config.backbone_config.image_size = [image_size, image_size]
    config.vision_config.backbone_feature_sizes = [[image_size // s] * 2 for s in (4, 8, 16)]
    config.memory_attention_rope_feat_sizes = [image_size // 16] * 2
    transformers_model = TransformersVideoModel(config).to(device).eval()
    return meta.eval(), ours, transformers_model


def clicks(num_objects: int, height: int, width: int) -> list[list[float]]:
    """One click per object, spread over the middle of the frame."""
    return [[width * (i + 1) / (num_objects + 1), height / 2] for i in range(num_objects)]


def trackers(models, frames_dir: Path, size: tuple[int, int], image_size: int, device: torch.device):
    """For each implementation, `start(num_objects, num_frames)` -> a generator of `(N, H, W)` float32 logits per
    frame (setup done on the first `next`, untimed by the caller)."""
    meta, ours, transformers_model = models
    height, width = size

    low_precision = {}  # ours loaded again in bfloat16 (at first use): autocast then casts no weight per frame

    def run_ours(dtype, strategy="sam2"):
        def start(num_objects, num_frames):
            model = ours
            if dtype != torch.float32:
                if dtype not in low_precision:
                    loaded = Sam2VideoModel.from_pretrained(ours.name_or_path, dtype=dtype)
                    low_precision[dtype] = loaded.to(device).eval()
                model = low_precision[dtype]
            session = Sam2VideoSession(model, frames_dir, fill_hole_area=0, progress=False, strategy=strategy)
            for obj, point in enumerate(clicks(num_objects, height, width), start=1):
                session.add_points(0, obj, [point], [1])
            yield None
            for result in session.propagate(max_frames=num_frames):
                yield result.mask_logits.float()

        return start

    def run_meta(num_objects, num_frames):
        with torch.inference_mode():
            state = meta.init_state(str(frames_dir))
            for obj, point in enumerate(clicks(num_objects, height, width), start=1):
                meta.add_new_points_or_box(state, 0, obj, points=[point], labels=[1])
        yield None
        for _, _, logits in meta.propagate_in_video(state, max_frame_num_to_track=num_frames - 1):
            yield logits[:, 0]

    def run_transformers(num_objects, num_frames):
        from transformers import Sam2VideoProcessor
        from transformers.models.sam2.image_processing_sam2 import Sam2ImageProcessor
        from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

        square = {"height": image_size, "width": image_size}
        processor = Sam2VideoProcessor(
            image_processor=Sam2ImageProcessor(size=square), video_processor=Sam2VideoVideoProcessor(size=square)
        )
        frames = [np.asarray(Image.open(frames_dir / f"{t:05d}.jpg")) for t in range(num_frames)]
        session = processor.init_video_session(video=frames, inference_device=device)
        points = [[[point] for point in clicks(num_objects, height, width)]]
        ids = list(range(1, num_objects + 1))
        processor.add_inputs_to_inference_session(
            session, frame_idx=0, obj_ids=ids, input_points=points, input_labels=[[[1]] * num_objects]
        )
        transformers_model(inference_session=session, frame_idx=0)
        yield None
        for output in transformers_model.propagate_in_video_iterator(session, start_frame_idx=0):
            yield processor.post_process_masks([output.pred_masks], original_sizes=[[height, width]], binarize=False)[
                0
            ][:, 0]

    return {
        "ours": run_ours(torch.float32),
        "ours-bf16": run_ours(torch.bfloat16),
        "meta": run_meta,
        "transformers": run_transformers,
        "ours-samurai": run_ours(torch.float32, "samurai"),
        "ours-dam4sam": run_ours(torch.float32, "dam4sam"),
    }


def samurai_worker(args) -> None:
    """SAMURAI's official predictor in this process (its `sam2` first on `sys.path`), on the weights of
    `--checkpoint`: seconds of propagation (objects one after the other, each from a fresh Kalman state), peak RSS
    and each object's logits, saved to `--output` (`.npz`) with the timings printed as JSON."""
    import sam2
    from sam2.build_sam import build_sam2_video_predictor

    if "site-packages" in sam2.__file__:
        raise RuntimeError("the SAMURAI worker imported Meta's sam2: run it with SAMURAI's folder on PYTHONPATH")
    overrides = [f"++model.image_size={args.image_size}", "++model.fill_hole_area=0"]
    predictor = build_sam2_video_predictor(
        "configs/samurai/sam2.1_hiera_t.yaml", ckpt_path=None, device=str(args.device), hydra_overrides_extra=overrides
    )
    predictor.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True)["model"])
    predictor.fill_hole_area = 0
    predictor.eval()
    frames = sorted(Path(args.frames_dir).glob("*.jpg"))
    height, width = np.asarray(Image.open(frames[0])).shape[:2]
    with torch.inference_mode():  # untimed warm-up, as the in-process implementations get
        state = predictor.init_state(args.frames_dir, offload_video_to_cpu=True)
        predictor.add_new_points_or_box(state, 0, 1, points=clicks(1, height, width), labels=[1])
        for _ in predictor.propagate_in_video(state, max_frame_num_to_track=1):
            pass
    seconds, logits = 0.0, []
    for point in clicks(args.num_objects, height, width):
        predictor.kf_mean = predictor.kf_covariance = None  # the filter lives on the model: one object at a time
        predictor.stable_frames = 0
        with torch.inference_mode():
            state = predictor.init_state(args.frames_dir, offload_video_to_cpu=True)
            predictor.add_new_points_or_box(state, 0, 1, points=[point], labels=[1])
            synchronize(args.device)
            begin = time.perf_counter()
            masks = [m[:, 0].float().cpu() for _, _, m in predictor.propagate_in_video(state, max_frame_num_to_track=args.frames - 1)]
            synchronize(args.device)
            seconds += time.perf_counter() - begin
        logits.append(torch.cat(masks).numpy())
    np.save(args.output, np.stack(logits, 1))  # (frames, objects, H, W)
    print(json.dumps({"seconds": seconds, "peak": peak_rss_mb()}))


def run_samurai_official(
    checkpoint: Path, frames_dir: Path, num_frames: int, image_size: int, device: torch.device, num_objects: int
) -> tuple[float, float, list[torch.Tensor]]:
    """`samurai_worker` in a fresh process on the weights of `checkpoint` (official format): (seconds, peak RSS MB,
    logits per frame)."""
    folder = Path(os.environ.get("HIERA_HF_SAMURAI") or SAMURAI)
    if not (folder / "sam2" / "configs" / "samurai").is_dir():
        raise FileNotFoundError(
            f"SAMURAI's official code is not in {folder}: pip install --no-deps --target .references/samurai "
            "absolutely-not-samurai==1.0.0 (or set HIERA_HF_SAMURAI)"
        )
    output = checkpoint.with_name("samurai_logits.npy")
    command = [sys.executable, __file__, "--samurai-worker", "--checkpoint", str(checkpoint), "--frames-dir"]
    command += [str(frames_dir), "--frames", str(num_frames), "--image-size", str(image_size), "--device"]
    command += [str(device), "--num-objects", str(num_objects), "--output", str(output)]
    environment = {**os.environ, "PYTHONPATH": str(folder)}
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], result["peak"], [torch.from_numpy(frame) for frame in np.load(output)]


def timed_run(start, num_objects: int, num_frames: int, device: torch.device) -> tuple[float, list[torch.Tensor]]:
    """Seconds spent tracking `num_frames` frames (setup excluded) and the logits of each frame."""
    generator = start(num_objects, num_frames)
    next(generator)
    synchronize(device)
    begin = time.perf_counter()
    logits = list(generator)
    synchronize(device)
    return time.perf_counter() - begin, logits


def mean_iou(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, int]:
    """Mean IoU of the binary masks over (frame, object) pairs with a non-empty union, and how many there were."""
    ious = []
    for x, y in zip(a, b):
        for mx, my in zip(x > 0, y > 0):
            union = (mx | my).sum().item()
            if union:
                ious.append((mx & my).sum().item() / union)
    return (statistics.mean(ious) if ious else float("nan")), len(ious)


def speed(args, tmp: Path) -> None:
    frames_dir = tmp / "frames"
    frames_dir.mkdir()
    size = write_jpegs(args.video, frames_dir, args.frames)
    models = build_models(args.image_size, tmp / "model", args.device)
    torch.save({"model": models[0].state_dict()}, tmp / "meta.pt")  # the official format, for SAMURAI's worker
    runs = trackers(models, frames_dir, size, args.image_size, args.device)
    for name in IMPLEMENTATIONS:  # untimed warm-up: lazy initialisation, allocator growth
        timed_run(runs[name], 1, 2, args.device)
    rows = []
    for num_objects in args.objects:
        times = {name: [] for name in IMPLEMENTATIONS}
        masks = {}
        times["samurai"] = []
        for r in range(args.repeats):
            names = (*IMPLEMENTATIONS, "samurai")
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                if name == "samurai":
                    seconds, _, logits = run_samurai_official(
                        tmp / "meta.pt", frames_dir, args.frames, args.image_size, args.device, num_objects
                    )
                else:
                    seconds, logits = timed_run(runs[name], num_objects, args.frames, args.device)
                times[name].append(seconds)
                masks[name] = logits
        worst = max((x - y).abs().max().item() for x, y in zip(masks["ours"], masks["meta"]))
        if worst > 1e-3:
            raise RuntimeError(f"ours and Meta's mask logits differ by {worst} with {num_objects} object(s)")
        # Official SAMURAI tracks objects one by one, so without non-overlap: compare with ours per object alike
        # (its logits equal ours when the objects do not overlap; the benchmark's clicks rarely make them overlap).
        samurai_worst = max((x - y).abs().max().item() for x, y in zip(masks["ours-samurai"], masks["samurai"]))
        iou, pairs = mean_iou(masks["ours-bf16"], masks["ours"])
        meta_fps = args.frames / statistics.median(times["meta"])
        ours_fps = args.frames / statistics.median(times["ours"])
        samurai_fps = args.frames / statistics.median(times["samurai"])
        for name in (*IMPLEMENTATIONS, "samurai"):
            fps = args.frames / statistics.median(times[name])
            note = f"max |logit - Meta| {worst:.1e}" if name == "ours" else ""
            note = f"mask IoU vs ours fp32 {iou:.4f} ({pairs} masks)" if name == "ours-bf16" else note
            note = "own random weights" if name == "transformers" else note
            if name == "ours-samurai":
                note = (
                    f"{ours_fps / fps:.2f}x ours' time per frame; {fps / samurai_fps:.2f}x official SAMURAI's "
                    f"frames/s; max |logit - official| {samurai_worst:.1e}"
                )
            if name == "ours-dam4sam":  # DAM4SAM's official tracker is not packaged: no official column
                note = f"{ours_fps / fps:.2f}x ours' time per frame"
            note = "official code (objects one by one)" if name == "samurai" else note
            rows.append((num_objects, name, fps, fps / meta_fps, note))
    print(f"\n### Propagation speed ({args.frames} frames of {Path(args.video).name}, {args.image_size} px input)\n")
    print(markdown_table(("objects", "implementation", "frames/s", "vs Meta fp32", "notes"), rows))


def memory_worker(args) -> None:
    """One implementation in this fresh process: VmRSS (and on CUDA the GPU memory allocated) after N and 4N
    tracked frames, printed as JSON."""
    frames_dir, name, n, device = Path(args.frames_dir), args.worker, args.memory_frames, args.device
    cuda = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(args.memory_size, Path(tmp), device)
        size = np.asarray(Image.open(frames_dir / "00000.jpg")).shape[:2]
        generator = trackers(models, frames_dir, size, args.memory_size, device)[name](1, 4 * n)
        next(generator)
        rss, gpu = {}, {}
        for count, _ in enumerate(generator, start=1):
            if count in (n, 4 * n):
                rss[count] = current_rss_mb()
                gpu[count] = torch.cuda.memory_allocated(device) / 2**20 if cuda else float("nan")
    result = {"rss_n": rss[n], "rss_4n": rss[4 * n], "peak": peak_rss_mb(), "gpu_n": gpu[n], "gpu_4n": gpu[4 * n]}
    print(json.dumps({**result, "gpu_peak": peak_gpu_mb(device)}))


def memory(args, tmp: Path) -> None:
    n = args.memory_frames
    frames_dir = tmp / "memory_frames"
    frames_dir.mkdir()
    write_jpegs(args.video, frames_dir, 4 * n)
    rows = []
    for name in ("ours", "ours-samurai", "ours-dam4sam", "meta", "transformers"):
        command = [sys.executable, __file__, "--worker", name, "--frames-dir", str(frames_dir)]
        command += ["--memory-frames", str(n), "--memory-size", str(args.memory_size), "--device", str(args.device)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        result = json.loads(output)
        growth = (result["rss_4n"] - result["rss_n"]) / (3 * n)
        gpu_growth = (result["gpu_4n"] - result["gpu_n"]) / (3 * n)
        rows.append((name, result["rss_n"], result["rss_4n"], growth, result["peak"]))
        rows[-1] += (
            (result["gpu_n"], result["gpu_4n"], gpu_growth, result["gpu_peak"]) if args.device.type == "cuda" else ()
        )
    models = build_models(args.memory_size, tmp / "memory_model", args.device)  # official SAMURAI: its peak only
    torch.save({"model": models[0].state_dict()}, tmp / "memory_meta.pt")
    _, peak, _ = run_samurai_official(tmp / "memory_meta.pt", frames_dir, 4 * n, args.memory_size, args.device, 1)
    nan = float("nan")
    rows.append(("samurai (official)", nan, nan, nan, peak) + ((nan,) * 4 if args.device.type == "cuda" else ()))
    print(f"\n### Resident memory, 1 object, {args.memory_size} px input, {n} and {4 * n} frames\n")
    headers = ("implementation", f"RSS MB @{n}", f"RSS MB @{4 * n}", "MB/frame", "peak MB")
    if args.device.type == "cuda":
        headers += (f"GPU MB @{n}", f"GPU MB @{4 * n}", "GPU MB/frame", "GPU peak MB")
    print(markdown_table(headers, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default=str(MEDIA.resolve()), help="video file or frame folder")
    parser.add_argument("--frames", type=int, default=8, help="frames tracked per timed run")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--image-size", type=int, default=1024, help="model input size of the speed runs")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per implementation")
    parser.add_argument("--memory-frames", type=int, default=25, help="N of the memory runs (0 skips them)")
    parser.add_argument("--memory-size", type=int, default=256, help="model input size of the memory runs")
    parser.add_argument("--quick", action="store_true", help="2 frames, 1 object, 256 px, no memory runs")
    parser.add_argument(
        "--worker", choices=("ours", "ours-samurai", "ours-dam4sam", "meta", "transformers"), help=argparse.SUPPRESS
    )
    parser.add_argument("--frames-dir", help=argparse.SUPPRESS)
    parser.add_argument("--samurai-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--num-objects", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu); TF32 off on CUDA")
    args = parser.parse_args()
    args.device = parse_device(args.device)
    if args.worker:
        memory_worker(args)
        return
    if args.samurai_worker:
        samurai_worker(args)
        return
    if args.quick:
        args.frames, args.objects, args.image_size, args.memory_frames = 2, [1], 256, 0
    print("\n".join(f"- {k}: {v}" for k, v in environment(args.device).items()))
    with tempfile.TemporaryDirectory() as tmp:
        speed(args, Path(tmp))
        if args.memory_frames:
            memory(args, Path(tmp))


if __name__ == "__main__":
    main()
