"""Running the scripts of `examples/` as a user does: in a fresh interpreter, or under `accelerate launch` with two CPU
processes, offline."""

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def accelerate_two_cpu_processes() -> list[str]:
    """`accelerate launch` of two CPU ranks. accelerate 1.15's `launch --cpu --num_processes 2` silently starts ONE
    process (its CPU path only spreads over mpirun); its multi-process launcher (torchrun, gloo backend) with the
    Trainer's `--use_cpu` runs two. On a free port: not torchrun's default 29500, which a concurrent run may hold."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    accelerate = str(Path(sys.executable).parent / "accelerate")
    launcher = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    return [*launcher, "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no"]


def run_example(script: str, args: dict, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """`python examples/SCRIPT --key value ...` (or `launcher` + the script), offline with one thread per process;
    asserts that it succeeds, showing the end of its output otherwise."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "examples"), env.get("PYTHONPATH", "")])
    argv = [item for key, value in args.items() for item in (f"--{key}", str(value))]
    command = [*(launcher or [sys.executable]), str(ROOT / "examples" / script), *argv]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result
