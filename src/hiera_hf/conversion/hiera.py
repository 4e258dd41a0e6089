"""Meta's Hiera checkpoints (`hiera-transformer`, `{"model_state": ...}`) -> hiera-hf state dicts."""

from __future__ import annotations

import re

import torch

# Meta name (regex) -> our name. Trunk weights live under `hiera.`; the MAE modules keep Meta's names.
_META_HIERA_RULES: list[tuple[str, str]] = [
    (r"^pos_embed$", "hiera.embeddings.position_embeddings"),
    (r"^pos_embed_spatial$", "hiera.embeddings.position_embeddings_spatial"),
    (r"^pos_embed_temporal$", "hiera.embeddings.position_embeddings_temporal"),
    (r"^patch_embed\.proj\.(weight|bias)$", r"hiera.embeddings.patch_embeddings.\1"),
    (r"^blocks\.(\d+)\.(.+)$", r"hiera.encoder.blocks.\1.\2"),
    (r"^norm\.(weight|bias)$", r"hiera.norm.\1"),
    (r"^head\.projection\.(weight|bias)$", r"classifier.\1"),
    (r"^(encoder_norm|decoder_embed|decoder_norm|decoder_pred)\.(weight|bias)$", r"\1.\2"),
    (r"^(mask_token|decoder_pos_embed)$", r"\1"),
    (r"^multi_scale_fusion_heads\.(\d+)\.(weight|bias)$", r"multi_scale_fusion_heads.\1.\2"),
    (r"^decoder_blocks\.(\d+)\.(.+)$", r"decoder_blocks.\1.\2"),
]


def convert_meta_hiera_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of Meta's Hiera / MAE state dict (the `"model_state"` entry of an official `.pth`).

    Raises `KeyError` listing every key that no rule knows.
    """
    converted, unknown = {}, []
    for key, value in state_dict.items():
        for pattern, replacement in _META_HIERA_RULES:
            if re.match(pattern, key):
                converted[re.sub(pattern, replacement, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"Unknown keys in Hiera checkpoint: {', '.join(sorted(unknown))}")
    return converted
