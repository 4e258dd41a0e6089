"""Meta's SAM 2 / 2.1 checkpoints (`sam2`, `{"model": ...}` `.pt`) -> hiera-hf state dicts."""

from __future__ import annotations

import re

import torch

# Meta name (regex) -> our name. Video-model weights keep Meta's names (the video model owns them; the image model
# skips them on load, see `hiera_hf.sam2.modeling_sam2.VIDEO_ONLY_KEYS`).
_TRUNK = r"^image_encoder\.trunk\."
_META_SAM2_RULES: list[tuple[str, str]] = [
    (_TRUNK + r"pos_embed$", "hiera.position_embeddings"),
    (_TRUNK + r"pos_embed_window$", "hiera.position_embeddings_window"),
    (_TRUNK + r"patch_embed\.proj\.(weight|bias)$", r"hiera.patch_embeddings.\1"),
    (_TRUNK + r"blocks\.(\d+)\.mlp\.layers\.0\.(weight|bias)$", r"hiera.blocks.\1.mlp.fc1.\2"),
    (_TRUNK + r"blocks\.(\d+)\.mlp\.layers\.1\.(weight|bias)$", r"hiera.blocks.\1.mlp.fc2.\2"),
    (_TRUNK + r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|proj)\.(weight|bias)$", r"hiera.blocks.\1.\2.\3"),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.(weight|bias)$", r"neck.convs.\1.\2"),
    (r"^sam_prompt_encoder\.pe_layer\.(positional_encoding_gaussian_matrix)$", r"prompt_encoder.\1"),
    (r"^sam_prompt_encoder\.point_embeddings\.([0-3])\.weight$", r"prompt_encoder.point_embeddings.\1"),
    (r"^sam_prompt_encoder\.(not_a_point_embed|no_mask_embed)\.weight$", r"prompt_encoder.\1.weight"),
    (r"^sam_prompt_encoder\.mask_downscaling\.0\.(weight|bias)$", r"prompt_encoder.mask_conv1.\1"),
    (r"^sam_prompt_encoder\.mask_downscaling\.1\.(weight|bias)$", r"prompt_encoder.mask_norm1.\1"),
    (r"^sam_prompt_encoder\.mask_downscaling\.3\.(weight|bias)$", r"prompt_encoder.mask_conv2.\1"),
    (r"^sam_prompt_encoder\.mask_downscaling\.4\.(weight|bias)$", r"prompt_encoder.mask_norm2.\1"),
    (r"^sam_prompt_encoder\.mask_downscaling\.6\.(weight|bias)$", r"prompt_encoder.mask_conv3.\1"),
    (r"^sam_mask_decoder\.output_upscaling\.0\.(weight|bias)$", r"mask_decoder.upscale_conv1.\1"),
    (r"^sam_mask_decoder\.output_upscaling\.1\.(weight|bias)$", r"mask_decoder.upscale_layer_norm.\1"),
    (r"^sam_mask_decoder\.output_upscaling\.3\.(weight|bias)$", r"mask_decoder.upscale_conv2.\1"),
    (
        r"^sam_mask_decoder\.((transformer|output_hypernetworks_mlps|iou_prediction_head|pred_obj_score_head"
        r"|conv_s0|conv_s1|iou_token|mask_tokens|obj_score_token)\..+)$",
        r"mask_decoder.\1",
    ),
    (r"^(no_mem_embed)$", r"\1"),
    # Video model
    (r"^((memory_attention|memory_encoder|obj_ptr_proj|obj_ptr_tpos_proj|mask_downsample)\..+)$", r"\1"),
    (r"^(maskmem_tpos_enc|no_mem_pos_enc|no_obj_ptr|no_obj_embed_spatial)$", r"\1"),
]
_POINT_EMBEDDING = "prompt_encoder.point_embeddings."


def convert_meta_sam2_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of Meta's SAM 2 state dict (the `"model"` entry of an official `.pt`) to ours.

    Every key is used: image-model weights get our names, video-model weights keep Meta's names. Meta's four
    point embeddings `(1, C)` become one `(4, C)` table. Raises `KeyError` listing every unknown key.
    """
    converted, unknown, points = {}, [], {}
    for key, value in state_dict.items():
        for pattern, replacement in _META_SAM2_RULES:
            if re.match(pattern, key):
                converted[re.sub(pattern, replacement, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"Unknown keys in SAM 2 checkpoint: {', '.join(sorted(unknown))}")
    for index in range(4):
        points[index] = converted.pop(f"{_POINT_EMBEDDING}{index}", None)
    present = [value is not None for value in points.values()]
    if any(present) and not all(present):
        missing = [f"sam_prompt_encoder.point_embeddings.{i}.weight" for i, value in points.items() if value is None]
        raise KeyError(f"SAM 2 checkpoint lacks {', '.join(missing)}")
    if all(present):
        converted[f"{_POINT_EMBEDDING}weight"] = torch.cat([points[i] for i in range(4)], dim=0)
    return converted


__all__ = ["convert_meta_sam2_state_dict"]
