"""Decoding a video file forward and backward with `hiera_hf.video_io.PyAVFrames`, per frame.

Backward tracking reads frames in decreasing order. `PyAVFrames` seeks to the keyframe before the frame asked for
and decodes forward, keeping the decoded frames just before it (up to `--cache-mb`), so each earlier frame is
not a new pass from the keyframe. Measured: milliseconds per frame reading frames `--first`..`--last` forward and
backward (median of `--repeats` interleaved rounds; wall time and the process's CPU time, steadier on a
loaded machine), each from a freshly opened file (as `track` does from a prompt on `--first`: forward to the end, then
backward to 0), the ratio, and that both give identical pixels. blocks.mp4 has keyframes at 0 and 250 only.

    python benchmarks/bench_video_decode.py                      # blocks.mp4 of the shared media, every frame
    python benchmarks/bench_video_decode.py VIDEO --first 173 --cache-mb 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table  # noqa: E402

from hiera_hf.video_io import PyAVFrames  # noqa: E402


def default_video() -> Path:
    """blocks.mp4 of the shared media folder (beside the repository in CI, /work/shared here)."""
    for folder in (Path(__file__).resolve().parents[2] / "shared" / "media", Path("/work/shared/media")):
        if (folder / "blocks.mp4").is_file():
            return folder / "blocks.mp4"
    raise SystemExit("blocks.mp4 not found; pass a video file")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", type=Path, help="video file (default: blocks.mp4 of the test media)")
    parser.add_argument("--first", type=int, default=0, help="first frame read (default 0)")
    parser.add_argument("--last", type=int, help="last frame read (default: the video's last)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds, each way in turn (median)")
    parser.add_argument("--cache-mb", type=float, default=256, help="decoded-frame cache of PyAVFrames (MiB)")
    args = parser.parse_args()
    path = args.video or default_video()
    cache = int(args.cache_mb * 2**20)

    with PyAVFrames(path) as video:
        first, last = args.first, len(video) - 1 if args.last is None else args.last
    count = last - first + 1

    def read(order: range) -> dict[int, np.ndarray]:
        with PyAVFrames(path, cache_bytes=cache) as video:
            return {i: video[i] for i in order}

    forward, backward = range(first, last + 1), range(last, first - 1, -1)
    wall: dict[str, list[float]] = {"forward": [], "backward": []}
    cpu: dict[str, list[float]] = {"forward": [], "backward": []}
    for round_ in range(args.repeats):  # interleaved, alternating which goes first
        for name in ("forward", "backward") if round_ % 2 == 0 else ("backward", "forward"):
            start, start_cpu = time.perf_counter(), time.process_time()
            read(forward if name == "forward" else backward)
            wall[name].append((time.perf_counter() - start) / count * 1e3)
            cpu[name].append((time.process_time() - start_cpu) / count * 1e3)
    ahead, behind = read(forward), read(backward)
    same = all(np.array_equal(ahead[i], behind[i]) for i in forward)
    for key, value in environment().items():
        print(f"- {key}: {value}")
    print(f"- video: {path.name}, frames {first}..{last}, cache {args.cache_mb:g} MiB\n")
    rows = []
    for name in ("forward", "backward"):
        wall_ms, cpu_ms = statistics.median(wall[name]), statistics.median(cpu[name])
        ratios = f"{wall_ms / statistics.median(wall['forward']):.2f}x", f"{cpu_ms / statistics.median(cpu['forward']):.2f}x"
        rows.append([name, f"{wall_ms:.1f}", ratios[0], f"{cpu_ms:.1f}", ratios[1]])
    print(markdown_table(["direction", "wall ms / frame", "vs forward", "CPU ms / frame", "vs forward"], rows))
    print(f"\nidentical frames both ways: {same}")
    if not same:
        raise SystemExit("backward decoding gave different frames")


if __name__ == "__main__":
    main()
