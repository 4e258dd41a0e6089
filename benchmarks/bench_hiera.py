"""Hiera image classification throughput: hiera-hf vs Meta's `hiera`, transformers and timm, on the same weights.

Meta's randomly initialised model is the source of the weights; its state dict is mapped into every other
implementation, outputs are checked against Meta's before anything is timed, and all implementations of one
(model, batch size) run interleaved in one process. See `benchmarks/README.md`.

    python benchmarks/bench_hiera.py                      # tiny+base, batch 1 and 8, fp32 and bf16, compile rows
    python benchmarks/bench_hiera.py --models base --batch-sizes 8 --dtypes fp32 --repeats 20
    python benchmarks/bench_hiera.py --quick              # smoke run: tiny, batch 1, fp32, no compile
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import hiera
import timm
import torch
import transformers
from timm.models.hiera import checkpoint_filter_fn as timm_checkpoint_filter_fn
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    environment,
    interleaved_times,
    markdown_table,
    meta_to_transformers,
    paired_ratio,
    parse_device,
    peak_gpu_mb,
    peak_rss_mb,
    throughput,
)

from hiera_hf import HieraConfig, HieraForImageClassification  # noqa: E402
from hiera_hf.conversion import convert_meta_hiera_state_dict  # noqa: E402

# short name -> (Meta / timm / preset name, blocks per stage)
MODELS = {"tiny": ("hiera_tiny_224", (1, 2, 7, 2)), "base": ("hiera_base_224", (2, 3, 16, 3))}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
REFERENCES = ("meta", "transformers", "timm")
COMPILED = ("ours", "meta")
FP32_TOLERANCE = 1e-4  # max abs difference of probabilities allowed before timing (fp32)


def build_models(name: str, depths: tuple[int, ...]) -> dict[str, nn.Module]:
    """The four implementations in eval mode, fp32, all holding the weights of one random Meta model."""
    meta = getattr(hiera, name)().eval()
    state_dict = meta.state_dict()
    ours = HieraForImageClassification(HieraConfig.from_preset(name)).eval()
    ours.load_state_dict(convert_meta_hiera_state_dict(state_dict), strict=True)
    hf_config = transformers.HieraConfig(embed_dim=96, depths=list(depths), num_heads=[1, 2, 4, 8], num_labels=1000)
    hf = transformers.HieraForImageClassification(hf_config).eval()
    hf.load_state_dict(meta_to_transformers(state_dict, depths), strict=True)
    tm = timm.create_model(name).eval()
    tm.load_state_dict(timm_checkpoint_filter_fn(state_dict), strict=True)
    return {"meta": meta, "ours": ours, "transformers": hf, "timm": tm}


def logits_fn(impl: str, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A call returning pre-softmax logits `(batch, 1000)` (Meta's model applies a softmax in eval mode)."""
    if impl == "meta":
        captured = {}
        model.head.projection.register_forward_hook(lambda mod, inp, out: captured.update(logits=out))
        return lambda x: (model(x), captured["logits"])[1]
    if impl == "timm":
        return model
    return lambda x: model(pixel_values=x).logits


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """`||value - reference|| / ||reference||` in fp32 (Frobenius norms)."""
    reference = reference.float()
    return ((value.float() - reference).norm() / reference.norm()).item()


def run_group(args, short: str, batch: int, models: dict[str, nn.Module], compiled: dict) -> tuple[list, list]:
    """Verify then time every implementation x dtype for one model and batch size. Returns (rows, notes)."""
    torch.manual_seed(0)
    pixels = torch.randn(batch, 3, 224, 224).to(args.device)
    fns, outputs, notes = {}, {}, []
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        x = pixels.to(dtype)
        variants = {impl: models[(impl, dtype_name)] for impl in ("meta", "ours", "transformers", "timm")}
        if args.compile:
            for impl in COMPILED:
                key = (impl, dtype_name, batch)
                if key not in compiled:
                    compiled[key] = torch.compile(models[(impl, dtype_name)])
                variants[f"{impl} + torch.compile"] = compiled[key]
        for impl, model in variants.items():
            call = logits_fn(impl.split(" ")[0], model)
            start = time.perf_counter()
            with torch.inference_mode():
                outputs[(impl, dtype_name)] = call(x).float()
            if "compile" in impl:
                notes.append(f"{short} bs={batch} {dtype_name} {impl}: first call {time.perf_counter() - start:.1f} s")
            fns[(impl, dtype_name)] = (lambda c, v: lambda: c(v))(call, x)
        meta = outputs[("meta", dtype_name)]
        for impl in variants:
            out = outputs[(impl, dtype_name)]
            prob_err = (out.softmax(-1) - meta.softmax(-1)).abs().max().item()
            logit_err = (out - meta).abs().max().item()
            print(
                f"  verify {short} bs={batch} {dtype_name} {impl:>26} vs meta: "
                f"max|d prob| {prob_err:.2e}  max|d logit| {logit_err:.2e}"
            )
            if dtype_name == "fp32" and prob_err > FP32_TOLERANCE:
                raise RuntimeError(
                    f"{impl} disagrees with Meta's Hiera ({prob_err:.2e} > {FP32_TOLERANCE}); not timing"
                )

    if {"fp32", "bf16"} <= set(args.dtypes):
        with torch.inference_mode():
            feats = {d: models[("ours", d)].hiera(pixels.to(DTYPES[d])).intermediates[-1] for d in ("fp32", "bf16")}
        notes.append(
            f"{short} bs={batch} ours bf16 vs fp32 stage-4 features: relative error "
            f"{relative_error(feats['bf16'], feats['fp32']):.2e} (Frobenius), argmax agreement "
            f"{(outputs[('ours', 'bf16')].argmax(-1) == outputs[('ours', 'fp32')].argmax(-1)).float().mean():.2f}"
        )

    with torch.inference_mode():
        labels = {key: " ".join(key) for key in fns}
        times = interleaved_times(
            {labels[key]: fn for key, fn in fns.items()},
            repeats=args.repeats,
            warmup=args.warmup,
            progress=not args.quiet,
            desc=f"{short} bs={batch}",
            device=args.device,
        )
    times = {key: times[labels[key]] for key in fns}

    rows = []
    for (impl, dtype_name), seconds in times.items():
        median, low, high = throughput(seconds, batch)
        references = [(r, dtype_name) for r in REFERENCES]
        fastest = max(references, key=lambda key: throughput(times[key], batch)[0])
        rows.append(
            [
                f"Hiera-{short[0].upper()}",
                batch,
                dtype_name,
                impl,
                median,
                f"{low:.2f}–{high:.2f}",
                paired_ratio(seconds, times[("meta", dtype_name)]),
                paired_ratio(seconds, times[fastest]),
                fastest[0],
            ]
        )
    if {"fp32", "bf16"} <= set(args.dtypes):
        for impl in ("ours", "meta"):
            speedup = paired_ratio(times[(impl, "bf16")], times[(impl, "fp32")])
            notes.append(f"{short} bs={batch} {impl} bf16 / fp32 throughput: {speedup:.2f}x")
    return rows, notes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help=f"comma-separated, from {','.join(MODELS)} (default: all)")
    parser.add_argument("--batch-sizes", help="comma-separated batch sizes (default: 1,8)")
    parser.add_argument("--dtypes", help=f"comma-separated, from {','.join(DTYPES)} (default: all)")
    parser.add_argument("--repeats", type=int, help="timed rounds per implementation (default: 10)")
    parser.add_argument("--warmup", type=int, help="untimed rounds before timing (default: 2)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, help="add torch.compile rows")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny, batch 1, fp32, 3 repeats, no compile")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu); TF32 off on CUDA")
    args = parser.parse_args(argv)
    args.device = parse_device(args.device)
    quick = args.quick
    defaults = {
        "models": "tiny" if quick else ",".join(MODELS),
        "batch_sizes": "1" if quick else "1,8",
        "dtypes": "fp32" if quick else ",".join(DTYPES),
        "repeats": 3 if quick else 10,
        "warmup": 1 if quick else 2,
        "compile": not quick,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.models = args.models.split(",")
    args.dtypes = args.dtypes.split(",")
    for given, valid, flag in ((args.models, MODELS, "--models"), (args.dtypes, DTYPES, "--dtypes")):
        if unknown := [v for v in given if v not in valid]:
            parser.error(f"{flag}: unknown {unknown}; valid: {','.join(valid)}")
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if min(args.batch_sizes) < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("batch sizes and --repeats must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(args.device)
    env.update(transformers=transformers.__version__, timm=timm.__version__)
    print("\n".join(f"{key}: {value}" for key, value in env.items()))

    rows, notes = [], []
    for short in args.models:
        name, depths = MODELS[short]
        fp32 = {impl: model.to(args.device) for impl, model in build_models(name, depths).items()}
        models = {}
        for dtype_name in args.dtypes:
            for impl, model in fp32.items():
                models[(impl, dtype_name)] = (
                    model if dtype_name == "fp32" else copy.deepcopy(model).to(DTYPES[dtype_name])
                )
        compiled = {}
        for batch in args.batch_sizes:
            group_rows, group_notes = run_group(args, short, batch, models, compiled)
            rows += group_rows
            notes += group_notes
        del fp32, models, compiled
        torch._dynamo.reset()

    headers = [
        "model",
        "batch",
        "dtype",
        "implementation",
        "img/s (median)",
        "min–max",
        "vs meta",
        "vs fastest reference",
        "fastest reference",
    ]
    print()
    print(markdown_table(headers, rows))
    print()
    print("\n".join(f"- {note}" for note in notes))
    gpu = f"; peak GPU memory {peak_gpu_mb(args.device):.0f} MB" if args.device.type == "cuda" else ""
    print(f"- peak RSS {peak_rss_mb():.0f} MB{gpu}; load average at end {environment()['load average']}")


if __name__ == "__main__":
    main()
