"""MAE training-step speed: hiera-hf's HieraForPreTraining vs Meta's MaskedAutoencoderHiera vs transformers'
HieraForPreTraining, on the same weights, inputs and masks, interleaved in one process.

    python benchmarks/bench_hiera_mae.py                       # Hiera-B 224, batch 8, eager
    python benchmarks/bench_hiera_mae.py --compile             # also ours under torch.compile
    python benchmarks/bench_hiera_mae.py --preset mae_hiera_tiny_224 --batch 2 --rounds 3
    python benchmarks/bench_hiera_mae.py --device cuda --dtype bf16 --batch 128   # plus hiera-optim if installed

A step is: forward with the loss, backward, AdamW step. Prints the median seconds per step (min-max) and the speed
ratio of ours over each reference (>1 = ours is faster), plus the first-step losses (they must agree).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import hiera
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    environment,
    interleaved_times,
    markdown_table,
    meta_to_transformers,
    paired_ratio,
    parse_device,
    peak_gpu_mb,
)

from hiera_hf import HieraConfig, HieraForPreTraining  # noqa: E402
from hiera_hf.conversion import convert_meta_hiera_state_dict  # noqa: E402


def build(preset: str) -> tuple[torch.nn.Module, HieraForPreTraining, torch.nn.Module, HieraConfig]:
    config = HieraConfig.from_preset(preset)
    if config.is_video:
        raise ValueError("transformers' HieraForPreTraining is image-only; pick an image preset")
    torch.manual_seed(0)
    meta = getattr(hiera, preset)(pretrained=False)
    state = meta.state_dict()
    ours = HieraForPreTraining(config)
    ours.load_state_dict(convert_meta_hiera_state_dict(state), strict=True)
    reference_config = transformers.HieraConfig(
        embed_dim=config.embed_dim,
        num_heads=list(config.num_heads),
        depths=list(config.depths),
        num_query_pool=config.num_query_pool,
        decoder_hidden_size=config.decoder_hidden_size,
        decoder_depth=config.decoder_depth,
        decoder_num_heads=config.decoder_num_heads,
        mask_ratio=config.mask_ratio,
    )
    theirs = transformers.HieraForPreTraining(reference_config)
    theirs.load_state_dict(meta_to_transformers(state, config.depths), strict=True)
    return meta, ours, theirs, config


def hiera_optim_twin(meta: torch.nn.Module) -> torch.nn.Module | None:
    """A copy of Meta's model with hiera-optim's drop-in optimisations (Triton kernels: CUDA only), or None when
    the package is not installed."""
    try:
        from hiera_optim import optimize
    except ImportError:
        return None
    twin = copy.deepcopy(meta)
    optimize(twin)
    return twin


def training_step(
    model: torch.nn.Module, forward: Callable[[], torch.Tensor], dtype: torch.dtype = torch.float32
) -> Callable[[], float]:
    """One optimisation step: forward with the loss (under bf16 autocast for `dtype=torch.bfloat16`, fp32 master
    weights as in mixed-precision training), backward, AdamW step. The optimizer is the same for every
    implementation: torch's fused AdamW (the fastest one on CPU; the default per-parameter loop would add the same
    ~40% of a step to every row and hide the model's own speed)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    device_type = next(model.parameters()).device.type

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            loss = forward()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mae_hiera_base_224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time ours under torch.compile(fullgraph=True)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu); TF32 off on CUDA")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast, fp32 weights")
    args = parser.parse_args()
    device = parse_device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    meta, ours, theirs, config = (
        part.to(device) if isinstance(part, torch.nn.Module) else part for part in build(args.preset)
    )
    x = torch.randn(args.batch, 3, *config.image_size, generator=torch.Generator().manual_seed(0)).to(device)
    noise = torch.rand(args.batch, config.num_mask_units, generator=torch.Generator().manual_seed(1)).to(device)
    mask = ours.random_mask(noise, ours.num_kept_units())
    steps = {
        "meta MaskedAutoencoderHiera": training_step(meta, lambda: meta(x, mask=mask)[0], dtype),
        "transformers HieraForPreTraining": training_step(theirs, lambda: theirs(x, noise=noise).loss, dtype),
        "hiera-hf HieraForPreTraining": training_step(ours, lambda: ours(x, noise=noise).loss, dtype),
    }
    optimized = hiera_optim_twin(meta) if device.type == "cuda" else None
    if optimized is not None:
        steps["meta + hiera-optim"] = training_step(optimized, lambda: optimized(x, mask=mask)[0], dtype)
    if args.compile:
        twin = copy.deepcopy(ours)  # its own weights and optimizer, so every first step starts from the same weights
        compiled = torch.compile(twin, fullgraph=True)
        steps["hiera-hf HieraForPreTraining + torch.compile"] = training_step(
            twin, lambda: compiled(x, noise=noise).loss, dtype
        )
    # Every model takes its first step from the same weights, so the first losses must agree (bf16: loosely).
    losses = {name: step() for name, step in steps.items()}  # also the warm-up
    print("first-step losses:", {name: round(loss, 6) for name, loss in losses.items()})
    reference = losses["meta MaskedAutoencoderHiera"]
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2  # bf16 autocast: rounding of ~1e-2 relative per matmul
    if any(abs(loss - reference) > tolerance * abs(reference) for loss in losses.values()):
        raise RuntimeError("the implementations disagree on the first loss; not timing")
    times = interleaved_times(
        steps, repeats=args.rounds, warmup=0, progress=not args.no_progress, desc="rounds", device=device
    )

    print(f"\n{args.preset}, batch {args.batch}, mask ratio {config.mask_ratio}, {args.dtype}")
    print(" | ".join(f"{key}: {value}" for key, value in environment(device).items()))
    if device.type == "cuda":
        print(f"peak GPU memory (all implementations in one process): {peak_gpu_mb(device):.0f} MB")
    ours = times["hiera-hf HieraForPreTraining"]
    rows = [
        [name, statistics.median(values), f"{min(values):.2f}–{max(values):.2f}", paired_ratio(ours, values)]
        for name, values in times.items()
    ]
    print(markdown_table(["implementation", "s/step (median)", "min–max", "ours eager speed-up over it"], rows))
    if args.compile:
        compiled = times["hiera-hf HieraForPreTraining + torch.compile"]
        for name in steps:
            if "compile" not in name:
                print(f"ours + torch.compile speed-up over {name}: x{paired_ratio(compiled, times[name]):.2f}")


if __name__ == "__main__":
    main()
