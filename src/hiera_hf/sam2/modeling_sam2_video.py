"""SAM 2 / SAM 2.1 video: the stateless building blocks of tracking.

- `Sam2MemoryAttention` conditions the current frame's image embedding on the memory bank: self-attention and
  cross-attention to the memories, both with axial 2-D rotary position encoding (RoPE, `position_encoding`).
- `Sam2MemoryEncoder` fuses a predicted mask with the frame's image embedding into a small spatial memory.
- `Sam2VideoModel` is the image modules (`Sam2Base`) plus those two and the memory-bank parameters (temporal
  encodings, object pointers, "no memory" / "no object" embeddings), all under the names of Meta's checkpoints.
  Its one public per-frame step is `track_step`, returning a `Sam2VideoFrameOutput`. Which frames a frame attends
  to is `memory_bank`'s, how their memories become tokens `memory_tokens`'s; the session that keeps them is
  `video_session` (on `video_tracking`'s runtime-independent half).

All tensors are batch first; the batch is the set of tracked objects (one frame of one video). The memory bank of
`N` objects is `(N, M, memory_dim)` tokens: the spatial memories of the selected frames (`H * W` tokens each),
then the object-pointer tokens (each 256-d pointer split into 4 tokens of 64).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from ..hiera.modeling_hiera import eager_attention_forward
from .configuration_sam2 import Sam2Config
from .frame_arithmetic import best_candidates, fill_absent, take_candidates
from .modeling_sam2 import Sam2Attention, Sam2Base, Sam2LayerNorm2d, Sam2MLP
from .position_encoding import apply_rotary, axial_rope_angles, sine_encoding_1d, sine_position_encoding
from .prompts import NOT_A_POINT_LABEL, PADDING_LABEL, wants_multimask

if TYPE_CHECKING:
    from .tracking_strategies import CandidateChoice

# ---------------------------------------------------------------------------------------------------------------
# Memory attention
# ---------------------------------------------------------------------------------------------------------------


class Sam2RoPEAttention(Sam2Attention):
    """`Sam2Attention` with 2-D RoPE on queries and keys, keys and values of `kv_in_dim` channels, and attention
    dropout in training. Keys longer than the queries (memories of several frames) are rotated with the query
    angles repeated over the frames; the last `num_k_exclude_rope` keys (object pointers) are not rotated.

    `query_chunks` (default 1) attends the queries in that many chunks, so that an implementation that materialises
    the attention weights (eager, or ONNX Runtime running the ONNX export) holds `(N, heads, L / query_chunks, Lk)`
    of them at a time instead of `(N, heads, L, Lk)`."""

    def __init__(self, config: Sam2Config, kv_in_dim: int):
        super().__init__(config, config.fpn_hidden_size, config.memory_attention_num_heads, kv_in_dim=kv_in_dim)
        self.dropout = config.memory_attention_dropout
        self.query_chunks = 1

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        rope: torch.Tensor,
        num_k_exclude_rope: int = 0,
    ) -> torch.Tensor:
        """`query` `(N, L, hidden)`, `key`/`value` `(N, Lk, kv_in_dim)` with `Lk - num_k_exclude_rope` a multiple of
        `L`, `rope` the rotations `(L, head_dim // 2)` (complex) of the query grid. Returns `(N, L, hidden)`."""

        def heads_first(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

        batch, length = query.shape[:2]
        query, key, value = (
            heads_first(self.q_proj(query)),
            heads_first(self.k_proj(key)),
            heads_first(self.v_proj(value)),
        )
        query = apply_rotary(query, rope)
        num_rope = key.shape[2] - num_k_exclude_rope
        if num_rope % length:
            raise ValueError(
                f"{num_rope} rotated keys ({key.shape[2]} keys minus {num_k_exclude_rope} object-pointer tokens) "
                f"are not a whole number of {length}-token frames"
            )
        # View the rotated keys as (frames, L) so every frame reuses the query angles without a copy.
        rotated = apply_rotary(key[:, :, :num_rope].unflatten(2, (-1, length)), rope).flatten(2, 3)
        key = torch.cat((rotated, key[:, :, num_rope:]), dim=2)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        dropout = self.dropout if self.training else 0.0
        chunks = query.chunk(self.query_chunks, dim=2)
        outputs = [
            attention_interface(self, chunk, key, value, None, scaling=self.scaling, dropout=dropout)[0]
            for chunk in chunks
        ]
        attn_output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
        return self.out_proj(attn_output.reshape(batch, length, self.num_heads * self.head_dim))


class Sam2MemoryAttentionLayer(GradientCheckpointingLayer):
    """Pre-norm layer: self-attention, cross-attention to the memories, ReLU feed-forward; each added back."""

    def __init__(self, config: Sam2Config):
        super().__init__()
        hidden = config.fpn_hidden_size
        self.self_attn = Sam2RoPEAttention(config, hidden)
        self.cross_attn_image = Sam2RoPEAttention(config, config.memory_encoder_hidden_size)
        self.linear1 = nn.Linear(hidden, config.memory_attention_feedforward_dim)
        self.linear2 = nn.Linear(config.memory_attention_feedforward_dim, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.norm3 = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(config.memory_attention_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        memory_keys: torch.Tensor,
        memory: torch.Tensor,
        rope: torch.Tensor,
        num_pointer_tokens: int,
    ) -> torch.Tensor:
        """`hidden_states` `(N or 1, L, hidden)`, `memory_keys` (memory plus its position encoding) and `memory`
        `(N, M, memory_dim)`. Returns `(N, L, hidden)`."""
        normed = self.norm1(hidden_states)
        hidden_states = hidden_states + self.dropout(self.self_attn(normed, normed, normed, rope))
        hidden_states = hidden_states.expand(memory.shape[0], -1, -1)  # one frame shared by the objects fans out
        normed = self.norm2(hidden_states)
        attended = self.cross_attn_image(normed, memory_keys, memory, rope, num_pointer_tokens)
        hidden_states = hidden_states + self.dropout(attended)
        normed = self.norm3(hidden_states)
        feed_forward = self.linear2(self.dropout(F.relu(self.linear1(normed))))
        return hidden_states + self.dropout(feed_forward)


class Sam2MemoryAttention(nn.Module):
    """Meta's `MemoryAttention`: the current frame's tokens (plus 0.1 times their position encoding) go through
    `memory_attention_num_layers` layers attending to the memory bank, then a final LayerNorm. The RoPE angles of
    each feature-map size are computed once and cached."""

    def __init__(self, config: Sam2Config):
        super().__init__()
        self.layers = nn.ModuleList(
            Sam2MemoryAttentionLayer(config) for _ in range(config.memory_attention_num_layers)
        )
        self.norm = nn.LayerNorm(config.fpn_hidden_size)
        self.head_dim = config.fpn_hidden_size // config.memory_attention_num_heads
        self.rope_theta = config.memory_attention_rope_theta
        self._rope_cache: dict[tuple, torch.Tensor] = {}

    def rope(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """RoPE rotations of a `height x width` map: unit complex numbers `(height * width, head_dim // 2)`."""
        key = (height, width, device)
        if key not in self._rope_cache:
            angles = axial_rope_angles(height, width, self.head_dim, self.rope_theta, device)
            self._rope_cache[key] = torch.polar(torch.ones_like(angles), angles)
        return self._rope_cache[key]

    def forward(
        self,
        vision_features: torch.Tensor,
        vision_position_encoding: torch.Tensor,
        memory: torch.Tensor,
        memory_position_encoding: torch.Tensor,
        num_pointer_tokens: int = 0,
    ) -> torch.Tensor:
        """Condition a frame on its memories.

        Args:
            vision_features: `(N, hidden, H, W)` image embedding of the frame, one copy per object, or `(1, hidden,
                H, W)` for all objects alike: the first self-attention then runs once, not once per object.
            vision_position_encoding: `(N or 1, hidden, H, W)` its sine position encoding.
            memory: `(N, M, memory_dim)` memory tokens: spatial memories (`H * W` tokens per frame) first, then
                `num_pointer_tokens` object-pointer tokens.
            memory_position_encoding: `(N, M, memory_dim)`.
        Returns:
            `(N, hidden, H, W)` memory-conditioned features.
        """
        if memory.ndim != 3 or memory.shape[:2] != memory_position_encoding.shape[:2]:
            raise ValueError(
                f"memory and memory_position_encoding must both be (num_objects, tokens, memory_dim), got "
                f"{tuple(memory.shape)} and {tuple(memory_position_encoding.shape)}"
            )
        if vision_features.shape[0] not in (1, memory.shape[0]):
            raise ValueError(
                f"memory has {memory.shape[0]} objects but vision_features has {vision_features.shape[0]} (give 1 or "
                f"{memory.shape[0]})"
            )
        if not 0 <= num_pointer_tokens <= memory.shape[1]:
            raise ValueError(f"num_pointer_tokens={num_pointer_tokens} must be in [0, {memory.shape[1]}]")
        channels, height, width = vision_features.shape[1:]
        hidden_states = (vision_features + 0.1 * vision_position_encoding).flatten(2).transpose(1, 2)
        rope = self.rope(height, width, vision_features.device)
        # Memories may be stored in a lower precision than the model runs in (Meta keeps them in bf16).
        memory = memory.to(hidden_states.dtype)
        memory_keys = memory + memory_position_encoding.to(hidden_states.dtype)
        for layer in self.layers:
            hidden_states = layer(hidden_states, memory_keys, memory, rope, num_pointer_tokens)
        hidden_states = self.norm(hidden_states)
        return hidden_states.transpose(1, 2).reshape(memory.shape[0], channels, height, width)


# ---------------------------------------------------------------------------------------------------------------
# Memory encoder
# ---------------------------------------------------------------------------------------------------------------


class Sam2MaskDownsampler(nn.Module):
    """Downsample a full-resolution mask to the image-embedding grid: [conv (stride `mask_downsampler_stride`),
    LayerNorm2d, GELU] until the backbone stride is reached, the channels growing by stride**2 each time, then a
    1x1 convolution to `fpn_hidden_size`."""

    def __init__(self, config: Sam2Config):
        super().__init__()
        stride = config.mask_downsampler_stride
        layers, channels, total = [], 1, 1
        while total < config.backbone_stride:
            layers += [
                nn.Conv2d(
                    channels,
                    channels * stride**2,
                    kernel_size=config.mask_downsampler_kernel_size,
                    stride=stride,
                    padding=config.mask_downsampler_padding,
                ),
                Sam2LayerNorm2d(channels * stride**2, eps=1e-6),
                nn.GELU(),
            ]
            channels, total = channels * stride**2, total * stride
        if total != config.backbone_stride:
            raise ValueError(
                f"mask_downsampler_stride={stride} must be a root of the backbone stride {config.backbone_stride}"
            )
        layers.append(nn.Conv2d(channels, config.fpn_hidden_size, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """`(N, 1, s*H, s*W)` -> `(N, fpn_hidden_size, H, W)`, `s` the backbone stride."""
        return self.encoder(masks)


class Sam2MemoryFuserBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm2d, Linear (4x) - GELU - Linear, layer scale `gamma`, residual."""

    def __init__(self, config: Sam2Config):
        super().__init__()
        dim = config.fpn_hidden_size
        self.dwconv = nn.Conv2d(
            dim, dim, config.memory_fuser_kernel_size, padding=config.memory_fuser_padding, groups=dim
        )
        self.norm = Sam2LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), config.memory_fuser_layer_scale_init_value))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(N, C, H, W)` -> `(N, C, H, W)`."""
        update = self.norm(self.dwconv(hidden_states)).permute(0, 2, 3, 1)
        update = self.gamma * self.pwconv2(self.act(self.pwconv1(update)))
        return hidden_states + update.permute(0, 3, 1, 2)


class Sam2MemoryFuser(nn.Module):
    def __init__(self, config: Sam2Config):
        super().__init__()
        self.layers = nn.ModuleList(Sam2MemoryFuserBlock(config) for _ in range(config.memory_fuser_num_layers))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class Sam2MemoryEncoder(nn.Module):
    """Meta's `MemoryEncoder`: downsampled mask plus projected image embedding, two ConvNeXt blocks, projection to
    `memory_encoder_hidden_size` channels."""

    def __init__(self, config: Sam2Config):
        super().__init__()
        hidden = config.fpn_hidden_size
        self.mask_downsampler = Sam2MaskDownsampler(config)
        self.pix_feat_proj = nn.Conv2d(hidden, hidden, kernel_size=1)
        self.fuser = Sam2MemoryFuser(config)
        self.out_proj = nn.Conv2d(hidden, config.memory_encoder_hidden_size, kernel_size=1)

    def forward(self, vision_features: torch.Tensor, mask_inputs: torch.Tensor) -> torch.Tensor:
        """`vision_features` `(N, hidden, H, W)` (the frame's image embedding, without memory), `mask_inputs`
        `(N, 1, s*H, s*W)` already scaled (see `Sam2VideoModel.encode_memory`). Returns `(N, memory_dim, H, W)`."""
        fused = self.pix_feat_proj(vision_features) + self.mask_downsampler(mask_inputs)
        return self.out_proj(self.fuser(fused))


# ---------------------------------------------------------------------------------------------------------------
# Video model
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Sam2VideoFrameOutput(ModelOutput):
    r"""
    The result of `Sam2VideoModel.track_step` for the `N` objects of one frame (sizes for a 1024 input: image
    embedding 64x64, low-resolution masks 256x256).

    pred_masks (`torch.FloatTensor` of shape `(num_objects, 1, 256, 256)`):
        Low-resolution mask logits of each object (a quarter of the model input size); the best of the multimask
        outputs when several were predicted, `-1024` everywhere for objects predicted absent.
    high_res_masks (`torch.FloatTensor` of shape `(num_objects, 1, image_size, image_size)`):
        `pred_masks` upsampled (bilinear) to the model input: what the memory encoder reads. For a mask prompt, the
        prompt itself as logits +-10.
    low_res_multimasks (`torch.FloatTensor` of shape `(num_objects, num_masks, 256, 256)`):
        Every candidate mask, float32 (`-1024` for absent objects); the training loss picks the best against the
        target. `pred_masks` is one of them.
    iou_scores (`torch.FloatTensor` of shape `(num_objects, num_masks)`):
        Predicted IoU of every candidate mask (`num_masks` 3 with multimask output, else 1; all ones when a mask
        prompt is used as the output).
    object_score_logits (`torch.FloatTensor` of shape `(num_objects, 1)`):
        Logit that each object is visible in the frame.
    object_pointers (`torch.FloatTensor` of shape `(num_objects, hidden_size)`):
        The objects' pointers, for the memory bank of later frames.
    conditioned_features (`torch.FloatTensor` of shape `(num_objects, hidden_size, 64, 64)`, *optional*):
        The frame's image embedding after memory attention (Meta's `pix_feat_with_mem`); `None` on a frame without
        memory. Give it back to `track_step` for more clicks on the same frame without attending again.
    maskmem_features (`torch.FloatTensor` of shape `(num_objects, memory_dim, 64, 64)`, *optional*):
        The frame's new spatial memory of each object (with `run_memory_encoder=True`).
    maskmem_position_encoding (`torch.FloatTensor` of shape `(1, memory_dim, 64, 64)`, *optional*):
        The sine position encoding of the spatial memory (with `run_memory_encoder=True`).
    """

    pred_masks: torch.FloatTensor | None = None
    high_res_masks: torch.FloatTensor | None = None
    low_res_multimasks: torch.FloatTensor | None = None
    iou_scores: torch.FloatTensor | None = None
    object_score_logits: torch.FloatTensor | None = None
    object_pointers: torch.FloatTensor | None = None
    conditioned_features: torch.FloatTensor | None = None
    maskmem_features: torch.FloatTensor | None = None
    maskmem_position_encoding: torch.FloatTensor | None = None


class Sam2VideoModel(Sam2Base):
    """SAM 2 for video: the image modules (`Sam2Base`: trunk, neck, prompt encoder, mask decoder) plus memory
    attention, memory encoder and the memory-bank parameters under Meta's names (`maskmem_tpos_enc`,
    `no_mem_pos_enc`, `no_obj_ptr`, `no_obj_embed_spatial`, `obj_ptr_proj`, `obj_ptr_tpos_proj`, `mask_downsample`),
    so a converted SAM 2 folder loads without any key left over. A sibling of `Sam2Model`, not one: it has no
    image-prompting `forward` (load the same folder with `Sam2Model` for images).

    Stateless: `track_step` (also the module's `forward`) maps one frame's features, the memory tokens
    (`memory_tokens.assemble_memory`) and prompts to the masks, pointers and new memory of the frame's `N` objects."""

    def __init__(self, config: Sam2Config):
        super().__init__(config)
        hidden, memory_dim = config.fpn_hidden_size, config.memory_encoder_hidden_size
        if config.fpn_hidden_size % memory_dim:
            raise ValueError(
                f"memory_encoder_hidden_size={memory_dim} must divide fpn_hidden_size={hidden} (object pointers "
                "are split into memory-sized tokens)"
            )
        if config.proj_tpos_enc_in_obj_ptrs and not config.add_tpos_enc_to_obj_ptrs:
            raise ValueError("proj_tpos_enc_in_obj_ptrs needs add_tpos_enc_to_obj_ptrs")
        self._build_image_modules(config)
        self.memory_attention = Sam2MemoryAttention(config)
        self.memory_encoder = Sam2MemoryEncoder(config)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(config.num_maskmem, 1, 1, memory_dim))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, hidden))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, memory_dim)) if config.no_obj_embed_spatial else None
        # Turns a mask prompt into low-resolution logits for the decoder when a mask is used as output.
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        if config.use_mlp_for_obj_ptr_proj:
            self.obj_ptr_proj = Sam2MLP(hidden, hidden, hidden, 3, "relu")
        else:
            self.obj_ptr_proj = nn.Linear(hidden, hidden)
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, hidden)) if config.pred_obj_scores else None
        self.obj_ptr_tpos_proj = nn.Linear(hidden, memory_dim) if config.proj_tpos_enc_in_obj_ptrs else None
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, Sam2VideoModel):
            for parameter in (
                module.maskmem_tpos_enc,
                module.no_mem_pos_enc,
                module.no_obj_embed_spatial,
                module.no_obj_ptr,
            ):
                if parameter is not None:
                    init.trunc_normal_(parameter, std=std)
        elif isinstance(module, Sam2MemoryFuserBlock):
            init.constant_(module.gamma, self.config.memory_fuser_layer_scale_init_value)

    # Memory encoding -----------------------------------------------------------------------------------------

    def encode_memory(
        self,
        vision_features: torch.Tensor,
        mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        from_points: bool | torch.Tensor = False,
    ) -> torch.Tensor:
        """Encode each object's predicted mask on this frame into a spatial memory (Meta's `_encode_new_memory`).

        Args:
            vision_features: `(N, hidden, H, W)` the frame's image embedding (without memory conditioning).
            mask_logits: `(N, 1, s*H, s*W)` full-resolution mask logits (`s` the backbone stride: 1024x1024).
            object_score_logits: `(N, 1)`; objects with a logit <= 0 get `no_obj_embed_spatial` added (SAM 2.1).
            from_points: per object (`bool` or `(N,)` bool tensor), whether the mask answers clicks on this frame;
                in eval with `binarize_mask_from_pts_for_mem_enc` those masks enter as hard `logits > 0` masks
                instead of sigmoid probabilities.
        Returns:
            `(N, memory_encoder_hidden_size, H, W)` memory features.
        """
        config = self.config
        probabilities = mask_logits.sigmoid()
        if not isinstance(from_points, torch.Tensor):  # made on the device (a copy from the host would wait for it)
            from_points = mask_logits.new_full((1,), bool(from_points), dtype=torch.bool)
        from_points = from_points.to(mask_logits.device, torch.bool)
        if from_points.ndim > 1 or from_points.numel() not in (1, mask_logits.shape[0]):
            raise ValueError(
                f"from_points must be a bool or a ({mask_logits.shape[0]},) tensor, got shape {tuple(from_points.shape)}"
            )
        mask_inputs = probabilities
        if config.binarize_mask_from_pts_for_mem_enc and not self.training:  # no branch on values: ONNX-traceable
            hard = (mask_logits > 0).to(probabilities.dtype)
            mask_inputs = torch.where(from_points.reshape(-1, 1, 1, 1), hard, probabilities)
        mask_inputs = mask_inputs * config.sigmoid_scale_for_mem_enc + config.sigmoid_bias_for_mem_enc
        features = self.memory_encoder(vision_features, mask_inputs.to(vision_features.dtype))
        if self.no_obj_embed_spatial is not None:
            absent = (object_score_logits <= 0).to(features.dtype)[..., None, None]
            features = features + absent * self.no_obj_embed_spatial[..., None, None]
        return features

    # One frame ---------------------------------------------------------------------------------------------------

    @can_return_tuple
    def track_step(
        self,
        fpn_features: tuple[torch.Tensor, ...],
        vision_position_encoding: torch.Tensor,
        memory: torch.Tensor | None = None,
        memory_position_encoding: torch.Tensor | None = None,
        num_pointer_tokens: int = 0,
        input_points: torch.Tensor | None = None,
        input_labels: torch.Tensor | None = None,
        input_masks: torch.Tensor | None = None,
        prompt_masks: torch.Tensor | None = None,
        conditioned_features: torch.Tensor | None = None,
        run_memory_encoder: bool = True,
        candidate_choice: CandidateChoice | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> Sam2VideoFrameOutput:
        r"""
        One tracking step of the `N` objects of a frame, all at once (Meta's `SAM2Base.track_step`). Sizes below
        are for a 1024 input (`h = w = 64`).

        fpn_features (`tuple(torch.FloatTensor)`):
            `Sam2VisionOutput.fpn_features` of the frame, batch 1 (shared by the objects) or `N`.
        vision_position_encoding (`torch.FloatTensor` of shape `(1, hidden_size, h, w)`):
            `Sam2VisionOutput.position_encoding`.
        memory, memory_position_encoding (`torch.FloatTensor` of shape `(N, M, memory_dim)`), num_pointer_tokens:
            The fields of `memory_tokens.assemble_memory`'s `MemoryTokens`. `None` on an initial conditioning frame
            (the objects' first prompts, before any memory exists): the frame then gets `no_mem_embed` instead of
            memory attention.
        input_points (`torch.FloatTensor` of shape `(N, K, 2)`), input_labels (`torch.LongTensor` of shape `(N, K)`):
            Clicks as (x, y) in model-input pixels, box corners first (labels 2 and 3); pad with label -10. Whether
            to predict 3 masks follows Meta's rule on `K` (3 masks for 0 or 1 click) for the whole batch: objects
            for which Meta would decide differently (e.g. 1 click and 2 clicks) go in separate calls.
        input_masks (`torch.FloatTensor` of shape `(N, 1, image_size, image_size)`):
            A mask prompt (> 0 inside), taken as the output without the decoder (Meta's
            `use_mask_input_as_output_without_sam`); not combined with clicks or memory.
        prompt_masks (`torch.FloatTensor` of shape `(N, 1, 4h, 4w)`):
            Low-resolution mask logits given to the decoder together with `input_points` (Meta's
            `prev_sam_mask_logits`: the object's previous mask on this frame when clicks are added to it).
        conditioned_features (`torch.FloatTensor` of shape `(N, hidden_size, h, w)`):
            The `conditioned_features` of an earlier step on this frame, used instead of `memory` (corrective
            clicks reuse the memory attention's result, dropout draw included, as in Meta's training).
        run_memory_encoder (`bool`): also encode the new masks into `maskmem_features`.
        candidate_choice (`tracking_strategies.CandidateChoice`, *optional*):
            A tracking strategy's choice among the decoder's candidates and its object-presence threshold
            (default: SAM 2's, the highest predicted IoU and a logit > 0).
        output_attentions, output_hidden_states: not offered by the tracking step (refused when True); the trunk's
            come from `get_vision_features(..., output_hidden_states=True, output_attentions=True)`.
        """
        config = self.config
        for name, value in (("output_attentions", output_attentions), ("output_hidden_states", output_hidden_states)):
            if value:
                raise ValueError(
                    f"track_step does not return {name.removeprefix('output_')}; ask get_vision_features for the "
                    "image encoder's"
                )
        if input_masks is not None and input_points is not None:
            raise ValueError("Give either input_points or input_masks for a frame, not both")
        if prompt_masks is not None and input_points is None:
            raise ValueError("prompt_masks go with input_points (they refine a previous mask with new clicks)")
        if (memory is None) != (memory_position_encoding is None):
            raise ValueError("memory and memory_position_encoding must be given together")
        if conditioned_features is not None and memory is not None:
            raise ValueError("Give memory or conditioned_features (already conditioned on a memory), not both")
        if input_masks is not None and (memory is not None or conditioned_features is not None):
            raise ValueError("input_masks are taken as the output: memory is not read, do not pass it")
        sizes = {x.shape[0] for x in (memory, conditioned_features, input_points, input_masks) if x is not None}
        if len(sizes) != 1:
            raise ValueError(
                "The number of objects comes from memory, conditioned_features, input_points or input_masks: give at "
                f"least one, all with the same first dimension (got {sorted(sizes)})"
            )
        num_objects = sizes.pop()
        if any(x.shape[0] not in (1, num_objects) for x in fpn_features):
            raise ValueError(f"fpn_features must have batch 1 or {num_objects}, got {[x.shape for x in fpn_features]}")
        *high_res, embedding = (x.expand(num_objects, -1, -1, -1) for x in fpn_features)
        high_res = tuple(high_res) if config.use_high_res_features else None

        conditioned = None
        if input_masks is not None:
            size = config.image_size
            if input_masks.shape[1:] != (1, size, size):
                raise ValueError(
                    f"input_masks must be (num_objects, 1, {size}, {size}), got {tuple(input_masks.shape)}"
                )
            heads = self.mask_as_output(embedding, high_res, input_masks)
        else:
            tracking = memory is not None or conditioned_features is not None
            features = conditioned_features
            if features is None:
                features = self.condition_on_memory(
                    embedding, vision_position_encoding, memory, memory_position_encoding, num_pointer_tokens
                )
            conditioned = features if tracking else None
            multimask = wants_multimask(self.config, 0 if input_points is None else input_points.shape[1], tracking)
            heads = self._sam_heads(
                features, high_res, input_points, input_labels, prompt_masks, multimask, candidate_choice
            )
        maskmem = maskmem_position = None
        if run_memory_encoder:
            maskmem = self.encode_memory(
                embedding, heads.high_res_masks, heads.object_score_logits, from_points=input_points is not None
            )
            maskmem_position = sine_position_encoding(*maskmem.shape[-2:], maskmem.shape[1], maskmem.device)
            maskmem_position = maskmem_position.to(maskmem.dtype)
        return Sam2VideoFrameOutput(
            **heads,
            conditioned_features=conditioned,
            maskmem_features=maskmem,
            maskmem_position_encoding=maskmem_position,
        )

    forward = track_step

    def condition_on_memory(
        self,
        embedding: torch.Tensor,
        vision_position_encoding: torch.Tensor,
        memory: torch.Tensor | None,
        memory_position_encoding: torch.Tensor | None,
        num_pointer_tokens: int = 0,
    ) -> torch.Tensor:
        """The frame's image embedding `(N, C, h, w)` conditioned on the memory tokens (see `track_step`); with no
        memory (an initial conditioning frame), the embedding plus `no_mem_embed`."""
        if memory is None:
            return embedding + self.no_mem_embed.reshape(1, -1, 1, 1)
        if embedding.stride(0) == 0 and not self.training:  # the objects share one frame (an expanded view)
            embedding = embedding[:1]
        return self.memory_attention(
            embedding, vision_position_encoding, memory, memory_position_encoding, num_pointer_tokens
        )

    def _sam_heads(
        self,
        embedding: torch.Tensor,
        high_res: tuple[torch.Tensor, ...] | None,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_prompt: torch.Tensor | None,
        multimask: bool,
        choice: CandidateChoice | None = None,
    ) -> Sam2VideoFrameOutput:
        """Prompt encoder and mask decoder on the (memory-conditioned) `embedding` `(N, C, h, w)` (Meta's
        `_forward_sam_heads`): the mask, score and pointer fields of the output (the best mask chosen by IoU, or by
        a strategy's `choice`)."""
        num_objects = embedding.shape[0]
        given = points is not None
        if not given:  # like Meta, an empty prompt is one "not a point" (plus the padding point)
            points = embedding.new_zeros(num_objects, 1, 2)
            labels = torch.full((num_objects, 1), NOT_A_POINT_LABEL, device=embedding.device)
        points, labels, masks, _ = self._flatten_prompts(
            num_objects,
            points[:, None],
            labels[:, None],
            None,
            None if mask_prompt is None else mask_prompt[:, None],
            check_label_values=given,
        )
        sparse, dense = self.prompt_encoder(points, labels, masks, num_objects)
        masks, iou_scores, sam_tokens, scores = self.mask_decoder(
            embedding,
            self.prompt_encoder.dense_positional_embedding(),
            sparse,
            dense,
            high_res,
            multimask,
            sparse_mask=labels != PADDING_LABEL,
        )
        threshold = 0.0 if choice is None else choice.presence_threshold
        if self.config.pred_obj_scores:
            masks = fill_absent(masks, scores, threshold)
        all_masks = masks.float()
        if choice is None:
            best = best_candidates(iou_scores, multimask)
        else:
            best = choice(iou_scores, all_masks, scores, multimask)
        masks = take_candidates(all_masks, best)[:, None]
        token = take_candidates(sam_tokens, best)
        size = self.config.image_size
        return Sam2VideoFrameOutput(
            pred_masks=masks,
            high_res_masks=F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False),
            low_res_multimasks=all_masks,
            iou_scores=iou_scores,
            object_score_logits=scores,
            object_pointers=self.object_pointer(token, scores, threshold),
        )

    def mask_as_output(
        self, embedding: torch.Tensor, high_res: tuple[torch.Tensor, ...] | None, input_masks: torch.Tensor
    ) -> Sam2VideoFrameOutput:
        """A mask prompt `(N, 1, S, S)` as the output, logits +-10 (Meta's `_use_mask_as_output`); the pointer comes
        from the decoder prompted with the mask, presence from the mask itself. The output mask is the only
        candidate."""
        mask = input_masks.float()
        high_res_masks = mask * 20.0 - 10.0
        size = high_res_masks.shape[-1] // 4
        low_res = F.interpolate(
            high_res_masks, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        prompt = self.mask_downsample(mask.to(self.mask_downsample.weight.dtype))
        pointers = self._sam_heads(embedding, high_res, None, None, prompt, False).object_pointers
        present = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()
        return Sam2VideoFrameOutput(
            pred_masks=low_res,
            high_res_masks=high_res_masks,
            low_res_multimasks=low_res,
            iou_scores=mask.new_ones(mask.shape[0], 1),
            object_score_logits=present * 20.0 - 10.0,
            object_pointers=self._mark_absent(pointers, present),
        )

    # Object pointers -------------------------------------------------------------------------------------------

    def object_pointer(
        self, sam_token: torch.Tensor, object_score_logits: torch.Tensor, threshold: float | torch.Tensor = 0.0
    ) -> torch.Tensor:
        """Object pointer `(N, hidden)` from the chosen mask token `(N, hidden)` of the decoder; absent objects
        (`object_score_logits` `(N, 1)` <= `threshold`, 0 in SAM 2) get `no_obj_ptr` (mixed softly with
        `soft_no_obj_ptr`, which ignores the threshold)."""
        pointer = self.obj_ptr_proj(sam_token)
        if self.config.soft_no_obj_ptr:
            return self._mark_absent(pointer, object_score_logits.sigmoid())
        return self._mark_absent(pointer, (object_score_logits > threshold).to(pointer.dtype))

    def _mark_absent(self, pointer: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        """Mix `no_obj_ptr` into pointers `(N, hidden)` by `1 - presence` `(N, 1)` (replace with
        `fixed_no_obj_ptr`)."""
        if self.no_obj_ptr is None:
            return pointer
        presence = presence.to(pointer.dtype)
        if self.config.fixed_no_obj_ptr:
            pointer = presence * pointer
        return pointer + (1 - presence) * self.no_obj_ptr

    # Temporal encodings of the memory bank --------------------------------------------------------------------

    def memory_temporal_encoding(self, temporal_positions: torch.Tensor) -> torch.Tensor:
        """Learned temporal encoding `(F, memory_dim)` of spatial memories at `temporal_positions` `(F,)` (0 for
        conditioning frames, `num_maskmem - 1` for the previous frame: see `memory_bank.MemorySelection`)."""
        num_maskmem = self.config.num_maskmem
        return self.maskmem_tpos_enc[num_maskmem - 1 - temporal_positions].reshape(temporal_positions.shape[0], -1)

    def pointer_position_encoding(self, frame_offsets: torch.Tensor, max_offset: int) -> torch.Tensor:
        """Temporal encoding `(P, memory_dim)` of object pointers made `frame_offsets` `(P,)` frames before the
        current frame in the tracking direction (negative for a conditioning frame ahead of it; made unsigned
        unless `use_signed_tpos_enc_to_obj_ptrs`). `max_offset` is the normaliser, Meta's
        `min(num_frames, max_obj_ptrs_in_encoder) - 1`. Zeros for SAM 2 (no temporal encoding)."""
        config, memory_dim = self.config, self.config.memory_encoder_hidden_size
        if not config.add_tpos_enc_to_obj_ptrs:
            return self.maskmem_tpos_enc.new_zeros(frame_offsets.shape[0], memory_dim)
        if max_offset < 1:
            raise ValueError(f"max_offset must be >= 1 to normalise pointer distances, got {max_offset}")
        if not config.use_signed_tpos_enc_to_obj_ptrs:
            frame_offsets = frame_offsets.abs()
        dim = config.fpn_hidden_size if config.proj_tpos_enc_in_obj_ptrs else memory_dim
        encoding = sine_encoding_1d(frame_offsets.float() / max_offset, dim).to(self.maskmem_tpos_enc.dtype)
        return self.obj_ptr_tpos_proj(encoding) if self.obj_ptr_tpos_proj is not None else encoding


__all__ = [
    "Sam2MemoryAttention",
    "Sam2MemoryEncoder",
    "Sam2VideoFrameOutput",
    "Sam2VideoModel",
]
