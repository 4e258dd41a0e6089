"""MAE training-step speed: hiera-hf's HieraForPreTraining vs Meta's MaskedAutoencoderHiera vs transformers'
HieraForPreTraining, on the same weights, inputs and masks, interleaved in one process.

    python benchmarks/bench_hiera_mae.py                       # Hiera-B 224, batch 8, eager
    python benchmarks/bench_hiera_mae.py --compile             # also ours under torch.compile
    python benchmarks/bench_hiera_mae.py --preset mae_hiera_tiny_224 --batch 2 --rounds 3

A step is: forward with the loss, backward, AdamW step. Prints the median seconds per step (min-max) and the speed
ratio of ours over each reference (>1 = ours is faster), plus the first-step losses (they must agree).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable

import hiera
import torch
import transformers
from tqdm import tqdm

from hiera_hf import HieraConfig, HieraForPreTraining
from hiera_hf.conversion import convert_meta_hiera_state_dict

# Meta's MAE names -> transformers' (encoder blocks are numbered per stage there, see `to_transformers`).
_TRANSFORMERS_NAMES = [
    (r"^pos_embed$", "hiera.embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "hiera.embeddings.patch_embeddings.projection."),
    (r"^multi_scale_fusion_heads\.", "multiscale_fusion.multi_scale_fusion_heads."),
    (r"^mask_token$", "decoder.mask_token"),
    (r"^decoder_pos_embed$", "decoder.decoder_position_embeddings"),
    (r"^decoder_embed\.", "decoder.decoder_embeddings."),
    (r"^decoder_blocks\.", "decoder.decoder_block.layers."),
    (r"^(decoder_norm|decoder_pred)\.", r"decoder.\1."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
]


def to_transformers(state_dict: dict[str, torch.Tensor], depths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    stage_of = [(stage, layer) for stage, depth in enumerate(depths) for layer in range(depth)]
    converted = {}
    for key, value in state_dict.items():
        match = re.match(r"^blocks\.(\d+)\.(.+)$", key)
        if match:
            stage, layer = stage_of[int(match[1])]
            key = f"hiera.encoder.stages.{stage}.layers.{layer}.{match[2]}"
        for pattern, replacement in _TRANSFORMERS_NAMES:
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return converted


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
    theirs.load_state_dict(to_transformers(state, config.depths), strict=True)
    return meta, ours, theirs, config


def training_step(model: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> Callable[[], float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
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
    args = parser.parse_args()

    meta, ours, theirs, config = build(args.preset)
    x = torch.randn(args.batch, 3, *config.image_size, generator=torch.Generator().manual_seed(0))
    noise = torch.rand(args.batch, config.num_mask_units, generator=torch.Generator().manual_seed(1))
    mask = ours.random_mask(noise, ours.num_kept_units())
    steps = {
        "meta MaskedAutoencoderHiera": training_step(meta, lambda: meta(x, mask=mask)[0]),
        "transformers HieraForPreTraining": training_step(theirs, lambda: theirs(x, noise=noise).loss),
        "hiera-hf HieraForPreTraining": training_step(ours, lambda: ours(x, noise=noise).loss),
    }
    if args.compile:
        compiled = torch.compile(ours, fullgraph=True)
        steps["hiera-hf HieraForPreTraining + torch.compile"] = training_step(
            ours, lambda: compiled(x, noise=noise).loss
        )
    # The learning rate is tiny, so the first losses compare implementations on (almost) the same weights.
    print("first-step losses:", {name: round(step(), 6) for name, step in steps.items()})  # also the warm-up

    times = {name: [] for name in steps}
    for _ in tqdm(range(args.rounds), desc="rounds", disable=args.no_progress):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)

    print(f"\n{args.preset}, batch {args.batch}, mask ratio {config.mask_ratio}, {torch.get_num_threads()} threads")
    ours_median = statistics.median(times["hiera-hf HieraForPreTraining"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:48s} {median:7.3f} s/step ({min(values):.3f}-{max(values):.3f})  ours eager is x{median / ours_median:.2f}"
        )


if __name__ == "__main__":
    main()
