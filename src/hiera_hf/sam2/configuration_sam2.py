"""Configuration of SAM 2 / SAM 2.1: Hiera trunk, FPN neck, prompt encoder, mask decoder and the video-model
settings (memory attention, memory encoder, object pointers). One flat config serves the image model, the trunk
used alone as a backbone, and the video model, so that one converted folder loads as any of them."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers.backbone_utils import BackboneConfigMixin
from transformers.configuration_utils import PreTrainedConfig

# Fields of earlier hiera-hf versions that the model never let vary, with the one value it supported; folders
# converted before their removal still load (the value is checked, then dropped).
REMOVED_FIELDS = {
    "use_obj_ptrs_in_encoder": True,
    "non_overlap_masks_for_mem_enc": False,
    "use_mask_input_as_output_without_sam": True,
    "directly_add_no_mem_embed": True,
}
# Fields earlier versions stored but never read (any value loads).
UNUSED_FIELDS = ("memory_attention_rope_feat_sizes",)


def _drop_removed_fields(kwargs: dict) -> None:
    """Pops the removed fields from a config's extra keyword arguments; refuses values the model cannot honour."""
    for name in UNUSED_FIELDS:
        kwargs.pop(name, None)
    for name, supported in REMOVED_FIELDS.items():
        if name in kwargs and kwargs.pop(name) != supported:
            raise ValueError(
                f"{name}={not supported} is not supported: hiera-hf's SAM 2 always behaves as {name}={supported} "
                "(as every official SAM 2 model does), so the setting is no longer a config field"
            )


@strict
class Sam2Config(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration for [`Sam2Model`] and [`Sam2HieraBackbone`]. Defaults are Meta's `sam2.1_hiera_b+` model;
    `Sam2Config.from_preset(name)` gives any official variant. Names in brackets are Meta's.

    Hiera trunk:
        image_size: square input size in pixels (`image_size`).
        num_channels: input channels.
        embed_dim: channels of the first stage.
        num_heads: attention heads of each stage (`num_heads` times `head_mul` per stage).
        depths: blocks per stage (`stages`).
        embed_dim_multiplier: channel multiplier at every stage change (`dim_mul`).
        num_query_pool: number of stage changes that max-pool the queries (`q_pool`).
        query_stride: pooling stride (`q_stride`).
        window_sizes: attention window of each stage (`window_spec`); the first block of a stage still uses the
            previous stage's window, halved by the pooling.
        global_attention_blocks: blocks that attend over the whole map (`global_att_blocks`).
        window_position_embedding_background_size: grid of the background position embedding, resized
            bicubically to the token grid (`window_pos_embed_bkg_spatial_size`).
        patch_size, patch_stride, patch_padding: the patch-embedding convolution.
        mlp_ratio, hidden_act, layer_norm_eps, drop_path_rate: block MLP, activation, LayerNorm epsilon, stochastic
            depth.

    Neck and heads:
        fpn_hidden_size: channels of the FPN outputs, the prompt embeddings and the mask decoder (`d_model`).
        fpn_top_down_levels: levels that receive the upsampled coarser level (`fpn_top_down_levels`).
        scalp: number of coarsest FPN levels dropped (`scalp`).
        mask_input_channels: hidden channels of the mask-prompt downscaling (`mask_in_chans`).
        decoder_num_layers, decoder_num_heads, decoder_mlp_dim, decoder_attention_downsample_rate,
            decoder_layer_norm_eps: the two-way transformer of the mask decoder.
        num_multimask_outputs: masks predicted besides the single-mask output.
        iou_head_depth, iou_head_hidden_dim, iou_prediction_use_sigmoid: the IoU head.
        pred_obj_scores, pred_obj_scores_mlp: the object-score head (an MLP or a Linear).
        use_high_res_features: add the stride-4 and stride-8 features while upscaling masks
            (`use_high_res_features_in_sam`).
        dynamic_multimask_via_stability, dynamic_multimask_stability_delta, dynamic_multimask_stability_thresh:
            in eval, a single-mask request falls back to the best multimask output when the single mask is unstable
            (Meta's `build_sam2(..., apply_postprocessing=True)`).
        use_multimask_token_for_obj_ptr: the object pointer comes from the multimask tokens when several masks are
            predicted.

    Video model (Meta's `SAM2Base` arguments, same names): num_maskmem, memory_attention_*, memory_encoder_*,
    mask_downsampler_*, memory_fuser_*, sigmoid_scale_for_mem_enc, sigmoid_bias_for_mem_enc,
    binarize_mask_from_pts_for_mem_enc, max_cond_frames_in_attn, multimask_output_in_sam, multimask_min_pt_num,
    multimask_max_pt_num, multimask_output_for_tracking, memory_temporal_stride_for_eval, max_obj_ptrs_in_encoder,
    add_tpos_enc_to_obj_ptrs, proj_tpos_enc_in_obj_ptrs, use_signed_tpos_enc_to_obj_ptrs,
    only_obj_ptrs_in_the_past_for_eval, fixed_no_obj_ptr, soft_no_obj_ptr, use_mlp_for_obj_ptr_proj,
    no_obj_embed_spatial, fill_hole_area, non_overlap_masks. Meta's options that every official model sets one way
    (`use_obj_ptrs_in_encoder`, `non_overlap_masks_for_mem_enc`, `use_mask_input_as_output_without_sam`,
    `directly_add_no_mem_embed`) are not options here: the model is built that way, and a config that sets them
    otherwise (e.g. an old `config.json`) is refused.

    Training (see `hiera_hf.sam2.loss_sam2`; defaults are the SAM 2 paper's recipe, Meta's fine-tuning config):
        focal_loss_weight, dice_loss_weight, iou_loss_weight, object_score_loss_weight: weights of the focal and
            dice mask losses (20:1), of the L1 loss on the predicted IoU and of the object-score cross-entropy.
        focal_loss_alpha, focal_loss_gamma: the focal loss's class balance and focusing exponent.
        freeze_image_encoder: no gradients for the Hiera trunk and FPN neck (Meta's `freeze_image_encoder`).
        freeze_prompt_encoder: no gradients for the prompt encoder.
        num_correction_points, max_frames_to_correct, prob_click_from_ground_truth: corrective clicks when training
            on clips (`hiera_hf.sam2.training`; Meta: 7 clicks on 1 to 2 frames, 10% sampled from the object alone).
    """

    model_type = "hiera_hf_sam2"

    # Hiera trunk
    image_size: int = 1024
    num_channels: int = 3
    embed_dim: int = 112
    num_heads: list[int] | tuple[int, ...] = (2, 4, 8, 16)
    depths: list[int] | tuple[int, ...] = (2, 3, 16, 3)
    embed_dim_multiplier: float | int = 2.0
    num_query_pool: int = 3
    query_stride: list[int] | tuple[int, ...] = (2, 2)
    window_sizes: list[int] | tuple[int, ...] = (8, 4, 14, 7)
    global_attention_blocks: list[int] | tuple[int, ...] = (12, 16, 20)
    window_position_embedding_background_size: list[int] | tuple[int, ...] = (14, 14)
    patch_size: list[int] | tuple[int, ...] = (7, 7)
    patch_stride: list[int] | tuple[int, ...] = (4, 4)
    patch_padding: list[int] | tuple[int, ...] = (3, 3)
    mlp_ratio: float | int = 4.0
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    drop_path_rate: float | int = 0.0
    initializer_range: float = 0.02
    # Neck, prompt encoder, mask decoder
    fpn_hidden_size: int = 256
    fpn_top_down_levels: list[int] | tuple[int, ...] = (2, 3)
    scalp: int = 1
    mask_input_channels: int = 16
    decoder_num_layers: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    decoder_attention_downsample_rate: int = 2
    decoder_layer_norm_eps: float = 1e-5
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    iou_prediction_use_sigmoid: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    use_high_res_features: bool = True
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    use_multimask_token_for_obj_ptr: bool = True
    # Video model
    num_maskmem: int = 7
    memory_attention_num_layers: int = 4
    memory_attention_num_heads: int = 1
    memory_attention_feedforward_dim: int = 2048
    memory_attention_dropout: float = 0.1
    memory_attention_rope_theta: float = 10000.0
    memory_encoder_hidden_size: int = 64
    mask_downsampler_kernel_size: int = 3
    mask_downsampler_stride: int = 2
    mask_downsampler_padding: int = 1
    memory_fuser_num_layers: int = 2
    memory_fuser_kernel_size: int = 7
    memory_fuser_padding: int = 3
    memory_fuser_layer_scale_init_value: float = 1e-6
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = True
    max_cond_frames_in_attn: int = -1
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    memory_temporal_stride_for_eval: int = 1
    max_obj_ptrs_in_encoder: int = 16
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True
    fixed_no_obj_ptr: bool = True
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = True
    no_obj_embed_spatial: bool = True
    fill_hole_area: int = 8
    non_overlap_masks: bool = False
    # Training
    focal_loss_weight: float | int = 20.0
    dice_loss_weight: float | int = 1.0
    iou_loss_weight: float | int = 1.0
    object_score_loss_weight: float | int = 1.0
    focal_loss_alpha: float | int = 0.25
    focal_loss_gamma: float | int = 2.0
    freeze_image_encoder: bool = False
    freeze_prompt_encoder: bool = False
    num_correction_points: int = 7
    max_frames_to_correct: int = 2
    prob_click_from_ground_truth: float | int = 0.1
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        for name in (
            "num_heads",
            "depths",
            "query_stride",
            "window_sizes",
            "global_attention_blocks",
            "window_position_embedding_background_size",
            "patch_size",
            "patch_stride",
            "patch_padding",
            "fpn_top_down_levels",
        ):
            setattr(self, name, tuple(getattr(self, name)))
        _drop_removed_fields(kwargs)
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(self.depths) + 1)]
        out_features, out_indices = kwargs.pop("out_features", None), kwargs.pop("out_indices", None)
        if out_features is None and out_indices is None and self._out_features is None:
            out_features = self.stage_names[1:]  # the backbone gives every stage map by default
        self.set_output_features_output_indices(out_indices=out_indices, out_features=out_features)
        super().__post_init__(**kwargs)

    # Derived geometry -------------------------------------------------------------------------
    @property
    def stage_dims(self) -> list[int]:
        """Channels of each stage (Meta multiplies and truncates to int at every stage change)."""
        dims = [self.embed_dim]
        for _ in self.depths[1:]:
            dims.append(int(dims[-1] * self.embed_dim_multiplier))
        return dims

    @property
    def backbone_stride(self) -> int:
        """Stride of the image embedding the mask decoder sees (16 for the official models)."""
        return self.patch_stride[0] * self.query_stride[0] ** (len(self.depths) - 1 - self.scalp)

    @property
    def image_embedding_size(self) -> int:
        """Side of the image embedding (64 for a 1024 input)."""
        return self.image_size // self.backbone_stride

    @property
    def mask_input_size(self) -> int:
        """Side of mask prompts and of the low-resolution output masks (256 for a 1024 input)."""
        return 4 * self.image_embedding_size

    def validate_architecture(self):
        """Checks that the options describe a buildable model; called by `@strict` validation."""
        stages = len(self.depths)
        for name in ("num_heads", "window_sizes"):
            if len(getattr(self, name)) != stages:
                raise ValueError(f"{name}={getattr(self, name)} must have one entry per stage ({stages} stages)")
        for name in (
            "query_stride",
            "patch_size",
            "patch_stride",
            "patch_padding",
            "window_position_embedding_background_size",
        ):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"{name}={getattr(self, name)} must have 2 entries (height, width)")
        if len(set(self.query_stride)) != 1 or len(set(self.patch_stride)) != 1:
            raise ValueError(f"query_stride={self.query_stride} and patch_stride={self.patch_stride} must be square")
        if not 0 <= self.num_query_pool < stages:
            raise ValueError(f"num_query_pool={self.num_query_pool} must be in [0, {stages - 1}] for {stages} stages")
        if self.num_query_pool != stages - 1:
            raise ValueError("SAM 2's neck needs every stage change to pool: num_query_pool must be len(depths) - 1")
        if any(b < 0 or b >= sum(self.depths) for b in self.global_attention_blocks):
            raise ValueError(
                f"global_attention_blocks={self.global_attention_blocks} must index blocks in [0, {sum(self.depths)})"
            )
        granule = self.patch_stride[0] * self.query_stride[0] ** (stages - 1)
        if self.image_size % granule:
            raise ValueError(f"image_size={self.image_size} must be a multiple of {granule}")
        for dim, heads in zip(self.stage_dims, self.num_heads):
            if heads < 1 or dim % heads:
                raise ValueError(f"stage width {dim} is not divisible by its number of heads {heads}")
        if not 0 <= self.scalp < stages:
            raise ValueError(f"scalp={self.scalp} must be in [0, {stages - 1}]")
        if any(not 0 <= level < stages for level in self.fpn_top_down_levels):
            raise ValueError(f"fpn_top_down_levels={self.fpn_top_down_levels} must be in [0, {stages - 1}]")
        internal = self.fpn_hidden_size // self.decoder_attention_downsample_rate
        if self.fpn_hidden_size % self.decoder_num_heads or internal % self.decoder_num_heads:
            raise ValueError(
                f"fpn_hidden_size={self.fpn_hidden_size} (and over decoder_attention_downsample_rate) must be "
                f"divisible by decoder_num_heads={self.decoder_num_heads}"
            )

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> Sam2Config:
        """Config of an official variant, e.g. `"sam2_hiera_tiny"` or `"sam2.1_hiera_large"`."""
        from .presets import get_sam2_preset

        return cls(**{**get_sam2_preset(name).config, **kwargs})


__all__ = ["Sam2Config"]
