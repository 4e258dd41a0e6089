"""Shared helpers for the benchmarks: environment report, interleaved timing, peak RSS, Markdown tables.

Timing is round-robin: every repeat runs each implementation once, in turn, so that load from other processes
on a shared machine hits all of them alike. Compare medians and ratios measured in the same run, not numbers
from different runs.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm


def parse_device(name: str) -> torch.device:
    """`--device` of the benchmarks: `cpu`, `cuda` or `cuda:N`. On CUDA, TF32 is switched off so that the fp32 rows
    do fp32 math (the outputs are checked against the references before timing); bf16 rows are what the hardware
    gives."""
    device = torch.device(name)
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda[:N], got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda was asked for, but torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def synchronize(device: torch.device | None) -> None:
    """Waits for queued device work (CUDA kernels run asynchronously); nothing to do on the CPU."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gpu_mb(device: torch.device | None) -> float:
    """Peak memory allocated by torch on a CUDA device since the last reset, in MB; NaN on the CPU."""
    if device is None or device.type != "cuda":
        return float("nan")
    return torch.cuda.max_memory_allocated(device) / 2**20


def environment(device: torch.device | None = None) -> dict[str, str]:
    """Versions, threads, CPU (and GPU when `device` is CUDA) of this process, for the report header."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    report = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "cpu": f"{cpu} ({os.cpu_count()} logical cores)",
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    if device is not None and device.type == "cuda":
        report["gpu"] = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return report


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM) in MB; NaN where /proc is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def interleaved_times(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    progress: bool = True,
    desc: str = "",
    device: torch.device | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, run round-robin: `warmup` untimed rounds, then `repeats` timed ones.

    The starting function rotates from round to round so that none always follows the same neighbour. On a CUDA
    `device` each call is bracketed by synchronisations, so its time includes the kernels it queued.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    rounds = tqdm(range(warmup + repeats), desc=desc, disable=not progress, leave=False)
    for r in rounds:
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            elapsed = time.perf_counter() - start
            if r >= warmup:
                times[name].append(elapsed)
    return times


def throughput(seconds: Sequence[float], items: int) -> tuple[float, float, float]:
    """(median, min, max) items per second from per-call times."""
    rates = [items / s for s in seconds]
    return statistics.median(rates), min(rates), max(rates)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; floats are printed with 3 significant decimals."""

    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def paired_ratio(faster: list[float], slower: list[float]) -> float:
    """Median over rounds of `slower / faster` call times: > 1 means `faster` has the higher throughput."""
    return statistics.median(s / f for f, s in zip(faster, slower))


# Meta's Hiera names -> transformers' (prefix renames; encoder blocks are regrouped into stages separately).
_TRANSFORMERS_PREFIXES = {
    "pos_embed": "hiera.embeddings.position_embeddings",
    "patch_embed.proj.": "hiera.embeddings.patch_embeddings.projection.",
    "norm.": "hiera.pooler.layernorm.",
    "head.projection.": "classifier.",
    "encoder_norm.": "encoder_norm.",
    "multi_scale_fusion_heads.": "multiscale_fusion.multi_scale_fusion_heads.",
    "mask_token": "decoder.mask_token",
    "decoder_pos_embed": "decoder.decoder_position_embeddings",
    "decoder_embed.": "decoder.decoder_embeddings.",
    "decoder_blocks.": "decoder.decoder_block.layers.",
    "decoder_norm.": "decoder.decoder_norm.",
    "decoder_pred.": "decoder.decoder_pred.",
}


def meta_to_transformers(state_dict: dict[str, torch.Tensor], depths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Meta's Hiera or MaskedAutoencoderHiera keys -> transformers' `HieraForImageClassification` /
    `HieraForPreTraining` keys (encoder blocks regrouped into stages, `norm1/2` -> `layernorm_before/after`)."""
    starts = [sum(depths[:stage]) for stage in range(len(depths))]
    converted = {}
    for key, value in state_dict.items():
        if match := re.match(r"blocks\.(\d+)\.(.+)", key):
            block = int(match[1])
            stage = max(s for s, start in enumerate(starts) if start <= block)
            key = f"hiera.encoder.stages.{stage}.layers.{block - starts[stage]}.{match[2]}"
        else:
            prefix = max((p for p in _TRANSFORMERS_PREFIXES if key.startswith(p)), key=len)
            key = _TRANSFORMERS_PREFIXES[prefix] + key[len(prefix) :]
        converted[key.replace(".norm1.", ".layernorm_before.").replace(".norm2.", ".layernorm_after.")] = value
    return converted
