"""SAM 2 image speed: hiera-hf vs Meta's `sam2` (same weights) and transformers' `Sam2Model`, interleaved.

Rows: image encoder (s/image at 1024, batch 1), mask decoder (prompts/s, one click each, on a cached embedding)
and automatic mask generation (s/image, `points_per_side` 32 by default, ours vs Meta only). Meta's randomly
initialised sam2.1_hiera_tiny is the source of the weights; ours is converted from it and checked against it
before timing. transformers' `Sam2Model` is built from its default config (sam2.1 tiny geometry) with its own
random weights: same architecture and shapes, different numbers (it is timed, not compared).

Random weights leave every mask logit within about +-1 of the threshold, so no mask would pass Meta's default
filters. As in the tests, the hypernetwork outputs are scaled by 30 (before conversion) and the filters set to
`pred_iou_thresh=0.5`, `stability_score_thresh=0.45`, which keep a share of the masks as a trained model does.
Both generators must return the same masks (count and boxes) before their times are reported.

    python benchmarks/bench_sam2_image.py                      # encoder, decoder, AMG at 32x32 (slow: minutes)
    python benchmarks/bench_sam2_image.py --quick              # smoke run: 2 repeats, AMG at 8x8
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import sam2.utils.misc  # noqa: F401
import torch
import transformers
from PIL import Image
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, interleaved_times, markdown_table, peak_rss_mb  # noqa: E402

from hiera_hf import Sam2Config, Sam2ImageProcessor, Sam2Model  # noqa: E402
from hiera_hf.conversion import convert_meta_sam2_state_dict  # noqa: E402
from hiera_hf.sam2.mask_generation import Sam2AutomaticMaskGenerator  # noqa: E402
from hiera_hf.sam2.presets import get_sam2_preset  # noqa: E402

VARIANT = "sam2.1_hiera_tiny"
FILTERS = {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.45}
DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared" / "media" / "truck.jpg"


def build_models() -> tuple[torch.nn.Module, Sam2Model, transformers.Sam2Model]:
    torch.manual_seed(0)
    meta = build_sam2(get_sam2_preset(VARIANT).meta_config, ckpt_path=None, device="cpu").eval()
    with torch.no_grad():
        for mlp in meta.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30)
            mlp.layers[-1].bias.mul_(30)
    with torch.device("meta"):
        ours = Sam2Model(Sam2Config.from_preset(VARIANT))
    ours.load_state_dict(convert_meta_sam2_state_dict(meta.state_dict()), strict=False, assign=True)
    theirs = transformers.Sam2Model(transformers.Sam2Config()).eval()
    return meta, ours.eval(), theirs


def check_encoders(meta, ours, pixel_values: torch.Tensor) -> float:
    """Max abs difference of the image embeddings (ours vs Meta's predictor features); aborts above 1e-4."""
    predictor = SAM2ImagePredictor(meta)
    with torch.no_grad():
        backbone = meta.forward_image(pixel_values)
        _, feats, _, _ = meta._prepare_backbone_features(backbone)
        reference = (feats[-1] + meta.no_mem_embed).permute(1, 2, 0).reshape(1, -1, 64, 64)
        embeddings = ours.get_image_embeddings(pixel_values)
    del predictor
    error = (embeddings.image_embeddings - reference).abs().max().item()
    if error > 1e-4:
        raise SystemExit(f"ours differs from Meta's image embedding by {error:.2e} > 1e-4")
    return error


def ratio(times: dict[str, list[float]], reference: str, name: str) -> float:
    """Median over rounds of reference time / implementation time (paired, see benchmarks/README.md)."""
    return statistics.median(r / t for r, t in zip(times[reference], times[name]))


def print_rows(rows: list[tuple]) -> None:
    """Results as soon as a section is done (the whole run takes minutes)."""
    for row in rows:
        print(" | ".join(str(v) for v in row), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=str(DEFAULT_IMAGE), help="image file (default: shared/media/truck.jpg)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds for encoder and decoder (default 5)")
    parser.add_argument("--prompts", type=int, default=16, help="clicks per decoder call (default 16)")
    parser.add_argument("--points-per-side", type=int, default=32, help="AMG grid (default 32)")
    parser.add_argument("--amg-repeats", type=int, default=1, help="timed AMG rounds (default 1)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repeats, AMG at 8x8")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.points_per_side = 2, 8
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.quiet
    print("\n".join(f"{key}: {value}" for key, value in environment().items()))

    meta, ours, theirs = build_models()
    image = np.asarray(Image.open(args.image).convert("RGB"))
    pixel_values = Sam2ImageProcessor()(image)["pixel_values"]
    error = check_encoders(meta, ours, pixel_values)
    rows, notes = [], [f"image {Path(args.image).name} {image.shape[1]}x{image.shape[0]}; embeddings ours vs Meta: "
                       f"max abs diff {error:.1e}"]  # fmt: skip

    with torch.no_grad():
        encoders = {
            "ours": lambda: ours.get_image_embeddings(pixel_values),
            "meta": lambda: meta.forward_image(pixel_values),
            "transformers": lambda: theirs.get_image_embeddings(pixel_values),
        }
        times = interleaved_times(encoders, args.repeats, progress=progress, desc="image encoder")
    for name in encoders:
        vs_meta = ratio(times, "meta", name)
        rows.append(("image encoder (s/image)", name, statistics.median(times[name]), f"{vs_meta:.2f}x"))
    print_rows(rows)

    predictor = SAM2ImagePredictor(meta)
    predictor.set_image(image)
    embeddings = ours.get_image_embeddings(pixel_values)
    theirs_embeddings = theirs.get_image_embeddings(pixel_values)
    torch.manual_seed(1)
    clicks = torch.rand(args.prompts, 1, 2) * 1024
    labels = torch.ones(args.prompts, 1, dtype=torch.long)
    with torch.no_grad():
        decoders = {
            "ours": lambda: ours(**embeddings, input_points=clicks[None], input_labels=labels[None]),
            "meta": lambda: predictor._predict(clicks, labels.int(), multimask_output=True, return_logits=True),
            "transformers": lambda: theirs(
                image_embeddings=theirs_embeddings, input_points=clicks[None], input_labels=labels[None]
            ),
        }
        times = interleaved_times(decoders, args.repeats, progress=progress, desc="mask decoder")
    for name in decoders:
        seconds = statistics.median(times[name])
        rows.append(("mask decoder (prompts/s)", name, args.prompts / seconds, f"{ratio(times, 'meta', name):.2f}x"))
    print_rows(rows[-3:])
    notes.append(f"decoder: {args.prompts} single-click prompts per call, multimask; Meta's time includes its "
                 "upsampling of the logits to the image size (its `_predict`)")  # fmt: skip

    settings = {"points_per_side": args.points_per_side, **FILTERS}
    generators = {
        "ours": Sam2AutomaticMaskGenerator(ours, progress=progress, **settings),
        "meta": SAM2AutomaticMaskGenerator(meta, **settings),
    }
    results = {}
    with torch.no_grad():
        times = interleaved_times(
            {name: lambda name=name, g=g: results.update({name: g.generate(image)}) for name, g in generators.items()},
            args.amg_repeats,
            warmup=0,
            progress=progress,
            desc="mask generation",
        )
    boxes = {name: sorted(tuple(round(v) for v in r["bbox"]) for r in records) for name, records in results.items()}
    if len(results["ours"]) != len(results["meta"]):
        raise SystemExit(f"AMG differs: {len(results['ours'])} masks (ours) vs {len(results['meta'])} (Meta)")
    same_boxes = sum(a == b for a, b in zip(boxes["ours"], boxes["meta"]))
    for name in generators:
        rows.append(("mask generation (s/image)", name, statistics.median(times[name]),
                     f"{ratio(times, 'meta', name):.2f}x"))  # fmt: skip
    notes.append(f"mask generation: {args.points_per_side}x{args.points_per_side} clicks, {len(results['ours'])} "
                 f"masks from each, {same_boxes} with identical boxes; {args.amg_repeats} timed round(s)")  # fmt: skip
    notes.append("transformers' Sam2Model has its own random weights (same sam2.1 tiny shapes)")

    print()
    print(markdown_table(("measure", "implementation", "median", "vs meta"), rows))
    print()
    print("\n".join(f"- {note}" for note in notes))
    print(f"- peak RSS {peak_rss_mb():.0f} MB; load average at end {environment()['load average']}")


if __name__ == "__main__":
    main()
