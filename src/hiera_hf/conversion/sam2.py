"""SAM 2 / 2.1 checkpoints -> hiera-hf: key renaming and config translation.

Two sources: Meta's official `.pt` files (`sam2`, `{"model": ...}`) and transformers-format folders
(`facebook/sam2*-hiera-*`: transformers' `Sam2Config` / `Sam2VideoConfig` + `model.safetensors`). Transformers' names
are first mapped to Meta's, so that one table (Meta -> ours) is the single source of truth for our names.
"""

from __future__ import annotations

import json
import re

import torch

from ..sam2 import Sam2Config

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


# transformers name (regex) -> Meta's name, applied in order, each to the result of the previous ones. MLPs
# (`proj_in`, `layers.i`, `proj_out`) and the mask downsampler are renumbered first (`_renumber_transformers_keys`).
_TRANSFORMERS_SAM2_RULES: list[tuple[str, str]] = [
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.shared_embedding\.positional_embedding$", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^prompt_encoder\.point_embed\.weight$", "prompt_encoder.point_embeddings.weight"),  # split below
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
    (r"\.layer_norm(\d)\.", r".norm\1."),
    (r"\.layer_norm\.", ".norm."),
    (r"\.layer_norm_final_attn\.", ".norm_final_attn."),
    (r"\.o_proj\.", ".out_proj."),
    (r"\.patch_embed\.projection\.", ".patch_embed.proj."),
    (r"\.depthwise_conv\.", ".dwconv."),
    (r"\.pointwise_conv(\d)\.", r".pwconv\1."),
    (r"(\.memory_fuser\.layers\.\d+)\.scale$", r"\1.gamma"),
    (r"^vision_encoder\.backbone\.", "image_encoder.trunk."),
    (r"^vision_encoder\.neck\.convs\.(\d+)\.", r"image_encoder.neck.convs.\1.conv."),
    (r"^prompt_encoder\.", "sam_prompt_encoder."),
    (r"^mask_decoder\.", "sam_mask_decoder."),
    (r"^memory_encoder\.feature_projection\.", "memory_encoder.pix_feat_proj."),
    (r"^memory_encoder\.projection\.", "memory_encoder.out_proj."),
    (r"^memory_encoder\.memory_fuser\.", "memory_encoder.fuser."),
    (r"^object_pointer_proj\.", "obj_ptr_proj."),
    (r"^temporal_positional_encoding_projection_layer\.", "obj_ptr_tpos_proj."),
    (r"^memory_temporal_positional_encoding$", "maskmem_tpos_enc"),
    (r"^no_memory_embedding$", "no_mem_embed"),
    (r"^no_memory_positional_encoding$", "no_mem_pos_enc"),
    (r"^no_object_pointer$", "no_obj_ptr"),
    (r"^occlusion_spatial_embedding_parameter$", "no_obj_embed_spatial"),
]  # fmt: skip
_DUPLICATE_KEY = "shared_image_embedding.positional_embedding"  # transformers keeps a copy of the prompt encoder's
_MLP_KEY = re.compile(r"^(.+)\.(proj_in|proj_out|layers\.(\d+))\.(weight|bias)$")
_DOWNSAMPLER_KEY = re.compile(
    r"^(memory_encoder\.mask_downsampler)\.(?:layers\.(\d+)\.(conv|layer_norm)|final_conv)\."
)


def _renumber_transformers_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta numbers MLP layers `layers.0..n-1` where transformers has `proj_in`, `layers.0..n-3`, `proj_out`; and
    its mask downsampler is one `Sequential` (conv, norm, activation per layer, then the final conv)."""
    mlps = {match[1] for match in map(_MLP_KEY.match, state_dict) if match and match[2] == "proj_in"}
    hidden = {
        prefix: {int(m[3]) for m in map(_MLP_KEY.match, state_dict) if m and m[1] == prefix and m[3]}
        for prefix in mlps
    }
    num_down = len({m[2] for m in map(_DOWNSAMPLER_KEY.match, state_dict) if m and m[2] is not None})
    renamed = {}
    for key, value in state_dict.items():
        mlp, down = _MLP_KEY.match(key), _DOWNSAMPLER_KEY.match(key)
        if mlp and mlp[1] in mlps:
            index = {"proj_in": 0, "proj_out": len(hidden[mlp[1]]) + 1}.get(mlp[2], int(mlp[3] or 0) + 1)
            key = f"{mlp[1]}.layers.{index}.{mlp[4]}"
        elif down:
            index = 3 * num_down if down[2] is None else 3 * int(down[2]) + (down[3] == "layer_norm")
            key = f"{down[1]}.encoder.{index}.{key[down.end() :]}"
        renamed[key] = value
    return renamed


def convert_transformers_sam2_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a transformers `Sam2Model` / `Sam2VideoModel` state dict to ours (through Meta's names).

    transformers stores the prompt encoder's random-feature matrix twice; the copies must be equal. Raises
    `KeyError` listing unknown keys and `ValueError` when the copies differ.
    """
    state_dict = dict(state_dict)
    duplicate = state_dict.pop(_DUPLICATE_KEY, None)
    shared = state_dict.get("prompt_encoder.shared_embedding.positional_embedding")
    if duplicate is not None and shared is not None and not torch.equal(duplicate, shared):
        raise ValueError(
            f"{_DUPLICATE_KEY} differs from prompt_encoder.shared_embedding.positional_embedding; SAM 2 uses one "
            "matrix for both (Meta's pe_layer), so this checkpoint cannot be converted"
        )
    meta = {}
    for key, value in _renumber_transformers_keys(state_dict).items():
        for pattern, replacement in _TRANSFORMERS_SAM2_RULES:
            key = re.sub(pattern, replacement, key)
        meta[key] = value
    points = meta.pop("sam_prompt_encoder.point_embeddings.weight", None)
    if points is not None:
        meta.update({f"sam_prompt_encoder.point_embeddings.{i}.weight": row[None] for i, row in enumerate(points)})
    return convert_meta_sam2_state_dict(meta)


# Our `Sam2Config` field <- path in a transformers `Sam2Config` / `Sam2VideoConfig` dict (video fields optional).
_CONFIG_FIELDS = {
    "embed_dim": "vision_config.backbone_config.hidden_size",
    "num_heads": "vision_config.backbone_config.num_attention_heads_per_stage",
    "depths": "vision_config.backbone_config.blocks_per_stage",
    "num_query_pool": "vision_config.backbone_config.num_query_pool_stages",
    "query_stride": "vision_config.backbone_config.query_stride",
    "window_sizes": "vision_config.backbone_config.window_size_per_stage",
    "global_attention_blocks": "vision_config.backbone_config.global_attention_blocks",
    "window_position_embedding_background_size": "vision_config.backbone_config.window_positional_embedding_background_size",
    "patch_size": "vision_config.backbone_config.patch_kernel_size",
    "patch_stride": "vision_config.backbone_config.patch_stride",
    "patch_padding": "vision_config.backbone_config.patch_padding",
    "num_channels": "vision_config.backbone_config.num_channels",
    "mlp_ratio": "vision_config.backbone_config.mlp_ratio",
    "hidden_act": "vision_config.backbone_config.hidden_act",
    "layer_norm_eps": "vision_config.backbone_config.layer_norm_eps",
    "fpn_hidden_size": "vision_config.fpn_hidden_size",
    "fpn_top_down_levels": "vision_config.fpn_top_down_levels",
    "mask_input_channels": "prompt_encoder_config.mask_input_channels",
    "decoder_num_layers": "mask_decoder_config.num_hidden_layers",
    "decoder_num_heads": "mask_decoder_config.num_attention_heads",
    "decoder_mlp_dim": "mask_decoder_config.mlp_dim",
    "decoder_attention_downsample_rate": "mask_decoder_config.attention_downsample_rate",
    "num_multimask_outputs": "mask_decoder_config.num_multimask_outputs",
    "iou_head_depth": "mask_decoder_config.iou_head_depth",
    "iou_head_hidden_dim": "mask_decoder_config.iou_head_hidden_dim",
    "dynamic_multimask_via_stability": "mask_decoder_config.dynamic_multimask_via_stability",
    "dynamic_multimask_stability_delta": "mask_decoder_config.dynamic_multimask_stability_delta",
    "dynamic_multimask_stability_thresh": "mask_decoder_config.dynamic_multimask_stability_thresh",
    "num_maskmem": "num_maskmem",
    "sigmoid_scale_for_mem_enc": "sigmoid_scale_for_mem_enc",
    "sigmoid_bias_for_mem_enc": "sigmoid_bias_for_mem_enc",
    "no_obj_embed_spatial": "enable_occlusion_spatial_embedding",
    "multimask_output_in_sam": "multimask_output_in_sam",
    "multimask_min_pt_num": "multimask_min_pt_num",
    "multimask_max_pt_num": "multimask_max_pt_num",
    "multimask_output_for_tracking": "multimask_output_for_tracking",
    "max_obj_ptrs_in_encoder": "max_object_pointers_in_encoder",
    "max_cond_frames_in_attn": "max_cond_frame_num",
    "memory_attention_num_layers": "memory_attention_num_layers",
    "memory_attention_num_heads": "memory_attention_num_attention_heads",
    "memory_attention_feedforward_dim": "memory_attention_feed_forward_hidden_size",
    "memory_attention_dropout": "memory_attention_dropout",
    "memory_attention_rope_theta": "rope_parameters.rope_theta",
    "memory_encoder_hidden_size": "memory_encoder_output_channels",
    "mask_downsampler_kernel_size": "mask_downsampler_kernel_size",
    "mask_downsampler_stride": "mask_downsampler_stride",
    "mask_downsampler_padding": "mask_downsampler_padding",
    "memory_fuser_num_layers": "memory_fuser_num_layers",
    "memory_fuser_kernel_size": "memory_fuser_kernel_size",
    "memory_fuser_padding": "memory_fuser_padding",
    "memory_fuser_layer_scale_init_value": "memory_fuser_layer_scale_init_value",
}  # fmt: skip
# transformers settings that our model derives instead of storing: path -> value for our config.
_DERIVED_FIELDS = {
    "image_size": lambda c: c.image_size,
    "prompt_encoder_config.image_size": lambda c: c.image_size,
    "prompt_encoder_config.patch_size": lambda c: c.backbone_stride,
    "vision_config.backbone_config.embed_dim_per_stage": lambda c: c.stage_dims,
    "vision_config.backbone_channel_list": lambda c: c.stage_dims[::-1],
    "vision_config.backbone_feature_sizes": lambda c: [
        [c.image_size // (c.patch_stride[0] * c.query_stride[0] ** level)] * 2
        for level in range(len(c.depths) - c.scalp)
    ],
    "prompt_encoder_config.hidden_size": lambda c: c.fpn_hidden_size,
    "mask_decoder_config.hidden_size": lambda c: c.fpn_hidden_size,
    "memory_attention_hidden_size": lambda c: c.fpn_hidden_size,
    "memory_encoder_hidden_size": lambda c: c.fpn_hidden_size,
    "mask_downsampler_embed_dim": lambda c: c.fpn_hidden_size,
    "mask_downsampler_total_stride": lambda c: c.backbone_stride,
    "memory_fuser_embed_dim": lambda c: c.fpn_hidden_size,
    "memory_fuser_intermediate_dim": lambda c: 4 * c.fpn_hidden_size,
}
TRANSFORMERS_SAM2_MODEL_TYPES = ("sam2", "sam2_video")


def _lookup(config: dict, path: str):
    for part in path.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def sam2_config_from_transformers(transformers_config: dict) -> Sam2Config:
    """Our `Sam2Config` from a transformers `Sam2Config` (`model_type` "sam2") or `Sam2VideoConfig` ("sam2_video"),
    given as the dict of its `config.json`. Settings that our model does not expose must have the values it
    fixes; an image-only config keeps our video defaults. Raises `ValueError` naming what cannot be represented."""
    model_type = transformers_config.get("model_type")
    if model_type not in TRANSFORMERS_SAM2_MODEL_TYPES:
        raise ValueError(
            f"Expected a transformers SAM 2 config (model_type {' or '.join(TRANSFORMERS_SAM2_MODEL_TYPES)}), got "
            f"model_type {model_type!r}"
        )
    kwargs = {
        ours: value
        for ours, path in _CONFIG_FIELDS.items()
        if (value := _lookup(transformers_config, path)) is not None
    }
    image_size = _lookup(transformers_config, "vision_config.backbone_config.image_size")
    if image_size is not None:
        kwargs["image_size"] = image_size[0] if isinstance(image_size, (list, tuple)) else image_size
    if "vision_config" in transformers_config:
        kwargs["scalp"] = len(kwargs.get("depths", Sam2Config().depths)) - _lookup(
            transformers_config, "vision_config.num_feature_levels"
        )
    temporal = transformers_config.get("enable_temporal_pos_encoding_for_object_pointers")
    if temporal is not None:  # transformers ties Meta's three object-pointer flags to one setting
        kwargs.update(
            dict.fromkeys(
                ("add_tpos_enc_to_obj_ptrs", "proj_tpos_enc_in_obj_ptrs", "use_signed_tpos_enc_to_obj_ptrs"), temporal
            )
        )
    config = Sam2Config(**kwargs)
    differing = [
        f"{path}={value} (must be {expected})"
        for path, derive in _DERIVED_FIELDS.items()
        if (value := _lookup(transformers_config, path)) is not None
        and json.loads(json.dumps(value)) != json.loads(json.dumps(expected := derive(config)))
    ]
    if differing:
        raise ValueError(f"transformers SAM 2 config settings hiera-hf cannot represent: {'; '.join(differing)}")
    return config


__all__ = [
    "TRANSFORMERS_SAM2_MODEL_TYPES",
    "convert_meta_sam2_state_dict",
    "convert_transformers_sam2_state_dict",
    "sam2_config_from_transformers",
]
