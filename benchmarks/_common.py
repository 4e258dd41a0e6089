"""Shared helpers for the benchmarks: environment report, interleaved timing, peak RSS, Markdown tables.

Timing is round-robin: every repeat runs each implementation once, in turn, so that load from other processes
on a shared machine hits all of them alike. Compare medians and ratios measured in the same run, not numbers
from different runs.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm


def environment() -> dict[str, str]:
    """Versions, threads and CPU of this process, for the report header."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "cpu": f"{cpu} ({os.cpu_count()} logical cores)",
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


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
) -> dict[str, list[float]]:
    """Seconds per call of each function, run round-robin: `warmup` untimed rounds, then `repeats` timed ones.

    The starting function rotates from round to round so that none always follows the same neighbour.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    rounds = tqdm(range(warmup + repeats), desc=desc, disable=not progress, leave=False)
    for r in rounds:
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            fns[name]()
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
