"""SAM 2 / SAM 2.1 for images: Hiera trunk, FPN neck, prompt encoder and mask decoder.

The trunk is the package's Hiera (`HieraBlock`, `HieraAttention`, `pool_tokens`) in SAM 2's form: tokens stay in
spatial layout `(B, H, W, C)`, and each block pads and cuts the map into windows, which `HieraAttention` sees as its
units `(B, windows, ws, ws, C)`; a global-attention block is one window covering the whole map.

Prompts. `forward` takes `P` prompts per image: points `(B, P, N, 2)` with labels `(B, P, N)`, boxes `(B, P, 4)`
and low-resolution mask logits `(B, P, 1, 256, 256)`, all in the coordinates of the 1024x1024 model input. Like
Meta's predictors, a box becomes two points with labels 2 and 3 placed before the clicks, and a padding point
(label -1) is always appended. Label `-10` marks a point as absent: prompts with fewer clicks are padded with it and
the mask decoder does not attend to those tokens, so the result equals the prompt without them. Images with fewer
prompts than others in a batch are padded with whole prompts (clicks labelled -10, any box) whose outputs the caller
drops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from ..hiera.model_folder import checked_loading
from ..hiera.modeling_hiera import (
    HieraBlock,
    drop_path_rates,
    eager_attention_forward,
    grid_to_units,
    resolve_output_flags,
    units_to_grid,
)
from .configuration_sam2 import Sam2Config
from .frame_arithmetic import NO_OBJECT_SCORE
from .loss_sam2 import check_mask_targets, sam2_loss
from .position_encoding import fourier_features, sine_position_encoding
from .prompts import BOX_LABELS, NOT_A_POINT_LABEL, PADDING_LABEL

# Weights of the video model, kept under Meta's names in a converted folder; the image model does not use them.
VIDEO_ONLY_KEYS = (
    r"^memory_attention\.",
    r"^memory_encoder\.",
    r"^maskmem_tpos_enc$",
    r"^no_mem_pos_enc$",
    r"^no_obj_ptr$",
    r"^no_obj_embed_spatial$",
    r"^obj_ptr_proj\.",
    r"^obj_ptr_tpos_proj\.",
    r"^mask_downsample\.",
)


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------------


class Sam2LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a channels-first map `(B, C, H, W)`."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Sam2MLP(nn.Module):
    """`num_layers` Linear layers with an activation between them, optionally a sigmoid at the end."""

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, activation: str, sigmoid: bool = False
    ):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.act = ACT2FN[activation]
        self.sigmoid = sigmoid

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            hidden_states = layer(hidden_states)
            if i < len(self.layers) - 1:
                hidden_states = self.act(hidden_states)
        return hidden_states.sigmoid() if self.sigmoid else hidden_states


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same device, dtype, shape and values (unlike `torch.equal`, never raises across devices)."""
    return a.device == b.device and a.dtype == b.dtype and torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------------------
# Hiera trunk
# ---------------------------------------------------------------------------------------------------------------


class Sam2HieraBlock(HieraBlock):
    """Hiera block on a spatial map `(B, H, W, C)` with windowed attention (`window_size` > 0, zero-padded to a
    multiple of the window) or global attention (`window_size` 0)."""

    def __init__(
        self,
        config: Sam2Config,
        dim: int,
        dim_out: int,
        num_heads: int,
        window_size: int,
        query_stride: tuple[int, ...] | None = None,
        drop_path: float = 0.0,
    ):
        super().__init__(config, dim, dim_out, num_heads, query_stride, windowed=True, drop_path=drop_path)
        self.window_size = window_size

    def attend(self, normed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        _, height, width, _ = normed.shape
        window = (height, width) if self.window_size == 0 else (self.window_size, self.window_size)
        pad_h, pad_w = -height % window[0], -width % window[1]
        padded = F.pad(normed, (0, 0, 0, pad_w, 0, pad_h)) if pad_h or pad_w else normed  # F.pad always copies
        window_grid = ((height + pad_h) // window[0], (width + pad_w) // window[1])
        attn_output, attn_weights = self.attn(grid_to_units(padded, window))
        stride = self.query_stride or (1, 1)
        attn_output = units_to_grid(attn_output, window_grid)
        return attn_output[:, : height // stride[0], : width // stride[1]], attn_weights


class Sam2HieraModel(nn.Module):
    """SAM 2's Hiera trunk: patch embedding, windowed position embedding, blocks. Returns every stage's output."""

    def __init__(self, config: Sam2Config):
        super().__init__()
        self.patch_embeddings = nn.Conv2d(
            config.num_channels,
            config.embed_dim,
            kernel_size=config.patch_size,
            stride=config.patch_stride,
            padding=config.patch_padding,
        )
        # Background embedding resized to the token grid, plus a window-sized embedding tiled over it.
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, config.embed_dim, *config.window_position_embedding_background_size)
        )
        window = config.window_sizes[0]
        self.position_embeddings_window = nn.Parameter(torch.zeros(1, config.embed_dim, window, window))
        self._cached_position_grid: tuple | None = None  # (size, copies of the embeddings, grid)

        self.stage_ends = [sum(config.depths[: i + 1]) - 1 for i in range(len(config.depths))]
        pool_blocks = {end + 1 for end in self.stage_ends[: config.num_query_pool]}
        depth = sum(config.depths)
        drop_rates = drop_path_rates(config.drop_path_rate, depth)
        dims, stage = config.stage_dims, 0
        self.blocks = nn.ModuleList()
        for i in range(depth):
            dim_in = dims[stage]
            # Like Meta, the first block of a stage keeps the previous stage's window (it pools, halving it).
            window_size = 0 if i in config.global_attention_blocks else config.window_sizes[stage]
            if i - 1 in self.stage_ends:
                stage += 1
            self.blocks.append(
                Sam2HieraBlock(
                    config,
                    dim_in,
                    dims[stage],
                    config.num_heads[stage],
                    window_size=window_size,
                    query_stride=tuple(config.query_stride) if i in pool_blocks else None,
                    drop_path=drop_rates[i],
                )
            )

    def position_grid(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings `(1, height, width, C)`.

        On the CPU and without autograd the grid is kept for the next call (the bicubic resize costs as much as a
        small block there), together with copies of the embeddings it came from: it is recomputed when the size or
        their values change (optimizers, fused ones included, may update weights without a trace). On an
        accelerator the resize is cheap and comparing the values would make the host wait for the device on every
        frame, so it is always recomputed."""
        background, window = self.position_embeddings, self.position_embeddings_window
        trained = background.requires_grad or window.requires_grad
        if (
            torch.compiler.is_compiling()
            or background.device.type != "cpu"
            or (torch.is_grad_enabled() and trained)
        ):
            return self._position_grid(height, width)
        cached = self._cached_position_grid
        if (
            cached is None
            or cached[0] != (height, width)
            or not all(map(same_tensor, cached[1], (background, window)))
        ):
            grid = self._position_grid(height, width)
            cached = self._cached_position_grid = ((height, width), (background.clone(), window.clone()), grid)
        return cached[2]

    def _position_grid(self, height: int, width: int) -> torch.Tensor:
        pos = F.interpolate(self.position_embeddings, size=(height, width), mode="bicubic")
        window = self.position_embeddings_window
        reps = (height // window.shape[-2], width // window.shape[-1])
        if reps[0] * window.shape[-2] != height or reps[1] * window.shape[-1] != width:
            raise ValueError(
                f"The {height}x{width} token grid is not a multiple of the {window.shape[-1]}-token position window"
            )
        return (pos + window.tile(1, 1, *reps)).permute(0, 2, 3, 1)

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> tuple[tuple[torch.Tensor, ...], tuple | None, tuple | None]:
        """`pixel_values` `(B, C, H, W)`. Returns (stage outputs `(B, h, w, C_stage)` channels last, hidden states
        (embeddings and every block's output, same layout), attention weights)."""
        # A channels-last input makes the convolution's output `(B, H, W, C)` contiguous: the blocks then never copy
        # the widest map just to lay it out for LayerNorm.
        pixel_values = pixel_values.to(self.patch_embeddings.weight.dtype, memory_format=torch.channels_last)
        embeddings = self.patch_embeddings(pixel_values).permute(0, 2, 3, 1)
        hidden_states = embeddings + self.position_grid(*embeddings.shape[1:3])
        stages = []
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attn = [] if output_attentions else None
        for i, block in enumerate(self.blocks):
            hidden_states, attn_weights = block(hidden_states)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_attn.append(attn_weights)
            if i in self.stage_ends:
                stages.append(hidden_states)
        return tuple(stages), tuple(all_hidden) if all_hidden else None, tuple(all_attn) if all_attn else None


class Sam2FpnNeck(nn.Module):
    """1x1 lateral convolutions to `fpn_hidden_size` and a top-down path (nearest 2x upsampling, in float32 like
    Meta) into the levels of `fpn_top_down_levels`. `convs[0]` is the coarsest level, as in Meta's checkpoints."""

    def __init__(self, config: Sam2Config):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, config.fpn_hidden_size, 1) for dim in reversed(config.stage_dims))
        self.top_down_levels = set(config.fpn_top_down_levels)

    def forward(
        self, stage_maps: tuple[torch.Tensor, ...], output_convs: dict[int, nn.Conv2d] | None = None
    ) -> list[torch.Tensor]:
        """`stage_maps` channels first, finest first; returns `(B, fpn_hidden_size, h, w)` maps, finest first.

        `output_convs` maps a level to a 1x1 convolution applied to its output (SAM 2's `conv_s0` / `conv_s1`);
        that level's map then has the convolution's channels. On a level outside the top-down path both 1x1
        convolutions are folded into one, which skips the wide `fpn_hidden_size` map at the finest levels."""
        output_convs = output_convs or {}
        outputs, previous = [], None
        for level in reversed(range(len(stage_maps))):
            lateral_conv, output_conv = self.convs[len(stage_maps) - 1 - level], output_convs.get(level)
            top_down = level in self.top_down_levels and previous is not None
            if output_conv is not None and not top_down and level - 1 not in self.top_down_levels:
                weight, bias = fold_pointwise_convs(lateral_conv, output_conv)
                dtype = lateral_conv.weight.dtype
                outputs.append(F.conv2d(stage_maps[level], weight.to(dtype), bias.to(dtype)))
                previous = None
                continue
            lateral = lateral_conv(stage_maps[level])
            if top_down:
                upsampled = F.interpolate(previous.float(), scale_factor=2.0, mode="nearest")
                previous = (lateral + upsampled).to(lateral.dtype)
            else:
                previous = lateral
            outputs.append(previous if output_conv is None else output_conv(previous))
        return outputs[::-1]


def fold_pointwise_convs(first: nn.Conv2d, second: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight `(C_out, C_in, 1, 1)` and bias `(C_out,)`, in float32, of the 1x1 convolution equal to
    `second(first(x))` for two 1x1 convolutions."""
    outer = second.weight.flatten(1).float()
    weight = outer @ first.weight.flatten(1).float()
    return weight[:, :, None, None], outer @ first.bias.float() + second.bias.float()


# ---------------------------------------------------------------------------------------------------------------
# Prompt encoder
# ---------------------------------------------------------------------------------------------------------------


class Sam2PromptEncoder(nn.Module):
    """Embeds points (random Fourier features plus a learned embedding per label) and mask prompts."""

    def __init__(self, config: Sam2Config):
        super().__init__()
        hidden = config.fpn_hidden_size
        self.image_size = config.image_size
        self.embedding_size = config.image_embedding_size
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, hidden // 2))
        self.point_embeddings = nn.Embedding(4, hidden)  # negative, positive, box top-left, box bottom-right
        self.not_a_point_embed = nn.Embedding(1, hidden)
        self.no_mask_embed = nn.Embedding(1, hidden)
        mask_channels = config.mask_input_channels
        self.mask_conv1 = nn.Conv2d(1, mask_channels // 4, kernel_size=2, stride=2)
        self.mask_norm1 = Sam2LayerNorm2d(mask_channels // 4, eps=1e-6)
        self.mask_conv2 = nn.Conv2d(mask_channels // 4, mask_channels, kernel_size=2, stride=2)
        self.mask_norm2 = Sam2LayerNorm2d(mask_channels, eps=1e-6)
        self.mask_conv3 = nn.Conv2d(mask_channels, hidden, kernel_size=1)
        self.act = nn.GELU()

    def encode_coordinates(self, coords: torch.Tensor) -> torch.Tensor:
        """Fourier features of coordinates in [0, 1]: `(..., 2)` -> `(..., hidden)` in the model's dtype."""
        return fourier_features(coords, self.positional_encoding_gaussian_matrix)

    def dense_positional_embedding(self) -> torch.Tensor:
        """Encoding of the image-embedding grid's cell centres, `(1, hidden, size, size)`."""
        size = self.embedding_size
        centres = (torch.arange(size, device=self.positional_encoding_gaussian_matrix.device) + 0.5) / size
        grid = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), dim=-1)
        return self.encode_coordinates(grid).permute(2, 0, 1)[None]

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`points` `(N, K, 2)` (x, y) in input pixels, `labels` `(N, K)` -> `(N, K, hidden)`."""
        embeddings = self.encode_coordinates((points.float() + 0.5) / self.image_size)
        labels = labels[..., None]
        embeddings = torch.where(labels == NOT_A_POINT_LABEL, self.not_a_point_embed.weight, embeddings)
        embeddings = torch.where(labels == PADDING_LABEL, 0.0, embeddings)
        label_embeddings = self.point_embeddings(labels[..., 0].clamp(0, 3))
        return torch.where(labels >= 0, embeddings + label_embeddings, embeddings)

    def embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Mask logits `(N, 1, 4*size, 4*size)` -> `(N, hidden, size, size)`."""
        hidden = self.act(self.mask_norm1(self.mask_conv1(masks.to(self.mask_conv1.weight.dtype))))
        hidden = self.act(self.mask_norm2(self.mask_conv2(hidden)))
        return self.mask_conv3(hidden)

    def forward(
        self, points: torch.Tensor | None, labels: torch.Tensor | None, masks: torch.Tensor | None, num_prompts: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns sparse `(N, K, hidden)` (K = 0 without points) and dense `(N, hidden, size, size)` embeddings."""
        weight = self.no_mask_embed.weight
        if points is not None:
            sparse = self.embed_points(points, labels)
        else:
            sparse = weight.new_zeros(num_prompts, 0, weight.shape[-1])
        if masks is not None:
            dense = self.embed_masks(masks)
        else:
            dense = weight.reshape(1, -1, 1, 1).expand(num_prompts, -1, self.embedding_size, self.embedding_size)
        return sparse, dense


# ---------------------------------------------------------------------------------------------------------------
# Mask decoder
# ---------------------------------------------------------------------------------------------------------------


class Sam2Attention(nn.Module):
    """Attention whose queries, keys and values are projected to `hidden / downsample_rate` channels; keys and values
    come in with `kv_in_dim` channels (default `hidden_size`)."""

    def __init__(
        self,
        config: Sam2Config,
        hidden_size: int,
        num_heads: int,
        downsample_rate: int = 1,
        kv_in_dim: int | None = None,
    ):
        super().__init__()
        self.config = config
        internal = hidden_size // downsample_rate
        self.num_heads = num_heads
        self.head_dim = internal // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(hidden_size, internal)
        self.k_proj = nn.Linear(kv_in_dim or hidden_size, internal)
        self.v_proj = nn.Linear(kv_in_dim or hidden_size, internal)
        self.out_proj = nn.Linear(internal, hidden_size)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`query` `(N, Lq, hidden)`, `key`/`value` `(N or 1, Lk, kv_in_dim)`, `attention_mask` additive
        `(N, 1, 1, Lk)`. Returns `(N, Lq, hidden)` and the attention weights `(N, heads, Lq, Lk)` (eager attention
        only, else `None`)."""

        def heads_first(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        batch = query.shape[0]
        query, key, value = (
            heads_first(self.q_proj(query)),
            heads_first(self.k_proj(key)),
            heads_first(self.v_proj(value)),
        )
        key, value = key.expand(batch, -1, -1, -1), value.expand(batch, -1, -1, -1)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self, query, key, value, attention_mask, scaling=self.scaling, dropout=0.0
        )
        return self.out_proj(attn_output.reshape(batch, -1, self.num_heads * self.head_dim)), attn_weights


class Sam2TwoWayAttentionBlock(GradientCheckpointingLayer):
    """Tokens attend to themselves and to the image; then the image attends to the tokens (post-norm)."""

    def __init__(self, config: Sam2Config, skip_first_layer_pe: bool):
        super().__init__()
        hidden, heads, rate = (
            config.fpn_hidden_size,
            config.decoder_num_heads,
            config.decoder_attention_downsample_rate,
        )
        eps = config.decoder_layer_norm_eps
        self.self_attn = Sam2Attention(config, hidden, heads)
        self.norm1 = nn.LayerNorm(hidden, eps=eps)
        self.cross_attn_token_to_image = Sam2Attention(config, hidden, heads, rate)
        self.norm2 = nn.LayerNorm(hidden, eps=eps)
        self.mlp = Sam2MLP(hidden, config.decoder_mlp_dim, hidden, 2, "relu")
        self.norm3 = nn.LayerNorm(hidden, eps=eps)
        self.norm4 = nn.LayerNorm(hidden, eps=eps)
        self.cross_attn_image_to_token = Sam2Attention(config, hidden, heads, rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        token_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor | None, ...]]:
        """`queries` `(N, T, C)` tokens, `keys` `(N, HW, C)` image; `token_mask` additive `(N, 1, 1, T)` hides
        padding tokens from whoever attends to the tokens. Returns queries, keys and the weights of the three
        attentions (token self-attention, token-to-image, image-to-token)."""
        if self.skip_first_layer_pe:
            queries, self_weights = self.self_attn(queries, queries, queries, token_mask)
        else:
            q = queries + query_pe
            attended, self_weights = self.self_attn(q, q, queries, token_mask)
            queries = queries + attended
        queries = self.norm1(queries)
        attended, token_weights = self.cross_attn_token_to_image(queries + query_pe, keys + key_pe, keys)
        queries = self.norm2(queries + attended)
        queries = self.norm3(queries + self.mlp(queries))
        attended, image_weights = self.cross_attn_image_to_token(keys + key_pe, queries + query_pe, queries, token_mask)
        keys = self.norm4(keys + attended)
        return queries, keys, (self_weights, token_weights, image_weights)


class Sam2TwoWayTransformer(nn.Module):
    def __init__(self, config: Sam2Config):
        super().__init__()
        hidden = config.fpn_hidden_size
        self.layers = nn.ModuleList(
            Sam2TwoWayAttentionBlock(config, skip_first_layer_pe=(i == 0)) for i in range(config.decoder_num_layers)
        )
        self.final_attn_token_to_image = Sam2Attention(
            config, hidden, config.decoder_num_heads, config.decoder_attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(hidden, eps=config.decoder_layer_norm_eps)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        tokens: torch.Tensor,
        token_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor | None, ...]]:
        """`image_embeddings` `(N, C, h, w)`, `image_pe` `(1, C, h, w)`, `tokens` `(N, T, C)`.
        Returns tokens `(N, T, C)`, image tokens `(N, h*w, C)` and the attention weights of every attention in
        order (three per layer, then the final token-to-image attention)."""
        keys = image_embeddings.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries, attentions = tokens, []
        for layer in self.layers:
            queries, keys, weights = layer(queries, keys, tokens, key_pe, token_mask)
            attentions.extend(weights)
        attended, weights = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        attentions.append(weights)
        return self.norm_final_attn(queries + attended), keys, tuple(attentions)


class Sam2MaskDecoder(nn.Module):
    """Two-way transformer over [object-score, IoU, mask x4] tokens plus prompt tokens, then mask upscaling with
    the high-resolution skips, hypernetwork MLPs, IoU head and object-score head."""

    def __init__(self, config: Sam2Config):
        super().__init__()
        hidden = config.fpn_hidden_size
        self.config = config
        self.num_mask_tokens = config.num_multimask_outputs + 1
        self.transformer = Sam2TwoWayTransformer(config)
        self.iou_token = nn.Embedding(1, hidden)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, hidden)
        self.obj_score_token = nn.Embedding(1, hidden) if config.pred_obj_scores else None
        self.upscale_conv1 = nn.ConvTranspose2d(hidden, hidden // 4, kernel_size=2, stride=2)
        self.upscale_layer_norm = Sam2LayerNorm2d(hidden // 4, eps=1e-6)
        self.upscale_conv2 = nn.ConvTranspose2d(hidden // 4, hidden // 8, kernel_size=2, stride=2)
        self.act = nn.GELU()
        if config.use_high_res_features:
            # Applied by the image encoder path to the stride-4 and stride-8 FPN levels (Meta keeps them here).
            self.conv_s0 = nn.Conv2d(hidden, hidden // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(hidden, hidden // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            Sam2MLP(hidden, hidden, hidden // 8, 3, "relu") for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = Sam2MLP(
            hidden,
            config.iou_head_hidden_dim,
            self.num_mask_tokens,
            config.iou_head_depth,
            "relu",
            sigmoid=config.iou_prediction_use_sigmoid,
        )
        if config.pred_obj_scores:
            self.pred_obj_score_head = (
                Sam2MLP(hidden, hidden, 1, 3, "relu") if config.pred_obj_scores_mlp else nn.Linear(hidden, 1)
            )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_embeddings: torch.Tensor,
        dense_embeddings: torch.Tensor,
        high_res_features: tuple[torch.Tensor, torch.Tensor] | None,
        multimask_output: bool,
        sparse_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """Predict masks for `N = B * P` prompts on `B` images.

        `image_embeddings` `(B, C, h, w)`, `image_pe` `(1, C, h, w)`, `sparse_embeddings` `(N, K, C)`,
        `dense_embeddings` `(N, C, h, w)`, `high_res_features` `((B, C/8, 4h, 4w), (B, C/4, 2h, 2w))`,
        `sparse_mask` `(N, K)` bool, False for tokens to ignore.
        Returns masks `(N, M, 4h, 4w)` logits, IoU scores `(N, M)`, SAM output tokens `(N, M_tokens, C)` and
        object-score logits `(N, 1)`, with `M = num_multimask_outputs` or 1; with `output_attentions`, a fifth
        element: the two-way transformer's attention weights (see `Sam2TwoWayTransformer`).
        """
        num_prompts = sparse_embeddings.shape[0]
        per_image = num_prompts // image_embeddings.shape[0]
        output_tokens = [self.iou_token.weight, self.mask_tokens.weight]
        if self.obj_score_token is not None:
            output_tokens.insert(0, self.obj_score_token.weight)
        output_tokens = torch.cat(output_tokens, dim=0)
        offset = output_tokens.shape[0] - self.num_mask_tokens - 1  # 1 with an object-score token
        tokens = torch.cat((output_tokens.expand(num_prompts, -1, -1), sparse_embeddings), dim=1)
        token_mask = None
        if sparse_mask is not None:  # built even when every token is kept: testing that would break torch.compile
            keep = torch.cat((sparse_mask.new_ones(num_prompts, output_tokens.shape[0]), sparse_mask), dim=1)
            token_mask = torch.zeros(keep.shape, dtype=tokens.dtype, device=tokens.device)
            token_mask = token_mask.masked_fill(~keep, torch.finfo(tokens.dtype).min)[:, None, None, :]

        src = image_embeddings.repeat_interleave(per_image, dim=0) + dense_embeddings
        batch, channels, height, width = src.shape
        hidden_tokens, src, attentions = self.transformer(src, image_pe, tokens, token_mask)
        iou_token_out = hidden_tokens[:, offset]
        mask_tokens_out = hidden_tokens[:, offset + 1 : offset + 1 + self.num_mask_tokens]

        src = src.transpose(1, 2).reshape(batch, channels, height, width)
        upscaled = self.upscale_conv1(src)
        if high_res_features is not None:
            feat_s0, feat_s1 = high_res_features
            # The skips are per image; view the prompts as (B, P, ...) to add them without copying.
            upscaled = (upscaled.unflatten(0, (-1, per_image)) + feat_s1[:, None]).flatten(0, 1)
            upscaled = self.act(self.upscale_layer_norm(upscaled))
            upscaled = self.upscale_conv2(upscaled)
            upscaled = self.act((upscaled.unflatten(0, (-1, per_image)) + feat_s0[:, None]).flatten(0, 1))
        else:
            upscaled = self.act(self.upscale_conv2(self.act(self.upscale_layer_norm(upscaled))))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        masks = (hyper_in @ upscaled.flatten(2)).unflatten(-1, upscaled.shape[-2:])

        iou_scores = self.iou_prediction_head(iou_token_out)
        if self.obj_score_token is not None:
            object_score_logits = self.pred_obj_score_head(hidden_tokens[:, 0])
        else:
            object_score_logits = iou_scores.new_full((num_prompts, 1), 10.0)

        if multimask_output:
            masks, iou_scores = masks[:, 1:], iou_scores[:, 1:]
        elif self.config.dynamic_multimask_via_stability and not self.training:
            masks, iou_scores = self.select_stable_single_mask(masks, iou_scores)
        else:
            masks, iou_scores = masks[:, :1], iou_scores[:, :1]
        if multimask_output and self.config.use_multimask_token_for_obj_ptr:
            sam_tokens = mask_tokens_out[:, 1:]
        else:
            sam_tokens = mask_tokens_out[:, :1]
        if output_attentions:
            return masks, iou_scores, sam_tokens, object_score_logits, attentions
        return masks, iou_scores, sam_tokens, object_score_logits

    def select_stable_single_mask(
        self, masks: torch.Tensor, iou_scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the single-mask output where it is stable (area above +delta over area above -delta reaches the
        threshold); elsewhere take the multimask output with the best predicted IoU. `(N, 1 + M, ...)` -> `(N, 1, ...)`."""
        delta = self.config.dynamic_multimask_stability_delta
        single = masks[:, :1].flatten(2)
        area_inner = (single > delta).sum(-1).float()
        area_outer = (single > -delta).sum(-1).float()
        stability = torch.where(area_outer > 0, area_inner / area_outer, 1.0)
        stable = stability >= self.config.dynamic_multimask_stability_thresh  # (N, 1)
        best = iou_scores[:, 1:].argmax(dim=-1, keepdim=True) + 1
        best_masks = masks.gather(1, best[..., None, None].expand(-1, -1, *masks.shape[-2:]))
        best_scores = iou_scores.gather(1, best)
        return (
            torch.where(stable[..., None, None], masks[:, :1], best_masks),
            torch.where(stable, iou_scores[:, :1], best_scores),
        )


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Sam2VisionOutput(ModelOutput):
    r"""
    fpn_features (`tuple(torch.FloatTensor)`):
        The FPN levels the mask decoder uses, finest first: `(batch_size, fpn_hidden_size // 8, 256, 256)`,
        `(batch_size, fpn_hidden_size // 4, 128, 128)` (already through `conv_s0` / `conv_s1` when
        `use_high_res_features`) and `(batch_size, fpn_hidden_size, 64, 64)` for a 1024 input. The last one is the
        raw image embedding, before `no_mem_embed`.
    position_encoding (`torch.FloatTensor` of shape `(1, fpn_hidden_size, 64, 64)`):
        Sine position encoding of the image-embedding grid (Meta's `vision_pos_enc[-1]`), for memory attention.
    intermediates (`tuple(torch.FloatTensor)`):
        The trunk's stage outputs, channels first: `(batch_size, stage_dim, height, width)`.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        The trunk's embeddings and every block's output, channels last `(batch_size, height, width, channels)`.
    attentions (`tuple(torch.FloatTensor)`, *optional*):
        Attention weights of every trunk block, `(batch_size * windows, heads, query_tokens, key_tokens)`.
    """

    fpn_features: tuple[torch.FloatTensor, ...] | None = None
    position_encoding: torch.FloatTensor | None = None
    intermediates: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class Sam2ImageEmbeddingsOutput(ModelOutput):
    r"""
    image_embeddings (`torch.FloatTensor` of shape `(batch_size, fpn_hidden_size, 64, 64)`):
        The coarsest kept FPN level plus `no_mem_embed`, as Meta's image predictor stores it.
    high_res_features (`tuple(torch.FloatTensor)`):
        `(batch_size, fpn_hidden_size // 8, 256, 256)` and `(batch_size, fpn_hidden_size // 4, 128, 128)`.

    Pass it back as `model(**embeddings, input_points=...)` to segment without re-encoding the image.
    """

    image_embeddings: torch.FloatTensor | None = None
    high_res_features: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class Sam2ImageSegmentationOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
        The SAM 2 training loss (see `hiera_hf.sam2.loss_sam2`), averaged over the prompts.
    pred_masks (`torch.FloatTensor` of shape `(batch_size, num_prompts, num_masks, 256, 256)`):
        Low-resolution mask logits (a quarter of the model input size); `num_masks` is 3 with
        `multimask_output=True`, else 1. Not clamped and not replaced for absent objects (Meta's image predictor
        clamps to +-32 only when returning them).
    iou_scores (`torch.FloatTensor` of shape `(batch_size, num_prompts, num_masks)`):
        Predicted IoU of each mask (after a sigmoid when `iou_prediction_use_sigmoid`).
    object_score_logits (`torch.FloatTensor` of shape `(batch_size, num_prompts, 1)`):
        Logit that the prompted object is present in the image.
    sam_output_tokens (`torch.FloatTensor` of shape `(batch_size, num_prompts, num_tokens, hidden_size)`):
        Mask tokens the video model turns into object pointers (3 with multimask output, else 1).
    image_embeddings (`torch.FloatTensor` of shape `(batch_size, hidden_size, 64, 64)`):
        The image embeddings used (with `no_mem_embed`).
    high_res_features (`tuple(torch.FloatTensor)`):
        The high-resolution features used, see [`Sam2ImageEmbeddingsOutput`].
    vision_hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True` and
        `pixel_values` are given):
        The trunk's embeddings and every block's output, channels last `(batch_size, height, width, channels)`.
    vision_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True` and
        `pixel_values` are given):
        Attention weights of every trunk block, `(batch_size * windows, heads, query_tokens, key_tokens)`.
    mask_decoder_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        Attention weights of the mask decoder's two-way transformer, `(batch_size * num_prompts, heads,
        query_tokens, key_tokens)`: per layer token self-attention, token-to-image and image-to-token, then the
        final token-to-image attention.
    """

    loss: torch.FloatTensor | None = None
    pred_masks: torch.FloatTensor | None = None
    iou_scores: torch.FloatTensor | None = None
    object_score_logits: torch.FloatTensor | None = None
    sam_output_tokens: torch.FloatTensor | None = None
    image_embeddings: torch.FloatTensor | None = None
    high_res_features: tuple[torch.FloatTensor, ...] | None = None
    vision_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    vision_attentions: tuple[torch.FloatTensor, ...] | None = None
    mask_decoder_attentions: tuple[torch.FloatTensor, ...] | None = None


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


class Sam2PreTrainedModel(PreTrainedModel):
    config: Sam2Config
    config_class = Sam2Config
    base_model_prefix = "sam2"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    # Modules that add up tensors of several children (residuals, FPN top-down sums, prompt and output tokens) must
    # sit on one device; the video model's classes are listed here too, so that both models share one list.
    _no_split_modules = [
        "Sam2HieraBlock",
        "Sam2FpnNeck",
        "Sam2PromptEncoder",
        "Sam2MaskDecoder",
        "Sam2MemoryAttentionLayer",
        "Sam2MemoryEncoder",
    ]
    _supports_sdpa = True
    _supports_flash_attn = False  # head sizes of the trunk (e.g. 112) and masked decoder attention
    # transformers' flex path indexes the additive mask per query (ours is (N, 1, 1, Lk)), and with a full mask the
    # compiled CPU flex kernel crashes (torch 2.14.1): refused at load time rather than wrong or crashing.
    _supports_flex_attn = False
    _supports_attention_backend = True
    # The losses are means over the batch's objects: the Trainer must scale them for gradient accumulation.
    accepts_loss_kwargs = False

    def post_init(self):
        super().post_init()
        self.freeze_from_config()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' `from_pretrained`, with a local folder's config and weights checked (`checked_loading`)."""
        with checked_loading(cls, pretrained_model_name_or_path, kwargs):
            loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        # Loading replaces the parameters (with gradients on): freeze again afterwards.
        (loaded[0] if isinstance(loaded, tuple) else loaded).freeze_from_config()
        return loaded

    def freeze_from_config(self) -> None:
        """Turn off the gradients of the parts the config freezes: `freeze_image_encoder` (trunk and FPN neck, as
        Meta's option) and `freeze_prompt_encoder`. Parts not frozen are left as they are."""
        frozen = {
            "hiera": self.config.freeze_image_encoder,
            "neck": self.config.freeze_image_encoder,
            "prompt_encoder": self.config.freeze_prompt_encoder,
        }
        for name, freeze in frozen.items():
            module = getattr(self, name, None)
            if freeze and module is not None:
                module.requires_grad_(False)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight)
        elif isinstance(module, Sam2HieraModel):
            init.trunc_normal_(module.position_embeddings, std=std)
            init.trunc_normal_(module.position_embeddings_window, std=std)
        elif isinstance(module, Sam2PromptEncoder):
            init.normal_(module.positional_encoding_gaussian_matrix)
        elif isinstance(module, Sam2Base):
            init.trunc_normal_(module.no_mem_embed, std=std)

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        size = self.config.image_size
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
        if not pixel_values.is_floating_point():
            raise TypeError(f"pixel_values must be a floating-point tensor, got {pixel_values.dtype}")
        expected = (self.config.num_channels, size, size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape (batch, {', '.join(map(str, expected))}) (images resized to "
                f"image_size={size}), got {tuple(pixel_values.shape)}"
            )


class Sam2Base(Sam2PreTrainedModel):
    """The image path every SAM 2 model is built on (Meta's `SAM2Base`): Hiera trunk, FPN neck, prompt encoder, mask
    decoder and `no_mem_embed`, under Meta's names. Its two subclasses are siblings, neither is the other:
    `Sam2Model` segments images (`forward` takes prompts), `Sam2VideoModel` tracks (`track_step`, a per-frame step
    with memory). Code that needs the image model's `forward` checks for `Sam2Model`."""

    def _build_image_modules(self, config: Sam2Config) -> None:
        """The image modules; a subclass builds them in `__init__`, adds its own, then calls `post_init`."""
        self.hiera = Sam2HieraModel(config)
        self.neck = Sam2FpnNeck(config)
        self.prompt_encoder = Sam2PromptEncoder(config)
        self.mask_decoder = Sam2MaskDecoder(config)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, config.fpn_hidden_size))

    def get_input_embeddings(self) -> nn.Module:
        return self.hiera.patch_embeddings

    @can_return_tuple
    def get_vision_features(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> Sam2VisionOutput:
        """Trunk and neck on `pixel_values` `(batch_size, 3, image_size, image_size)` (Meta's `forward_image`)."""
        self._check_pixel_values(pixel_values)
        stages, hidden, attentions = self.hiera(pixel_values, output_hidden_states, output_attentions)
        intermediates = tuple(stage.permute(0, 3, 1, 2) for stage in stages)
        decoder = self.mask_decoder
        output_convs = {0: decoder.conv_s0, 1: decoder.conv_s1} if self.config.use_high_res_features else None
        features = self.neck(intermediates, output_convs)[: len(intermediates) - self.config.scalp]
        embedding = features[-1]
        position = sine_position_encoding(*embedding.shape[-2:], embedding.shape[1], embedding.device)
        return Sam2VisionOutput(
            fpn_features=tuple(features),
            position_encoding=position.to(embedding.dtype),
            intermediates=intermediates,
            hidden_states=hidden,
            attentions=attentions,
        )

    def _flatten_prompts(
        self,
        batch: int,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        check_label_values: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, int]:
        """Checks the prompts and turns them into Meta's form for `N = batch * num_prompts` prompts: points
        `(N, K, 2)` (box corners first, then clicks, then the padding point), labels `(N, K)`, masks
        `(N, 1, 256, 256)`. Returns (points, labels, masks, num_prompts). Checking the labels' values reads them
        (the host waits for the device): `check_label_values=False` for labels made by the model itself."""
        if (points is None) != (labels is None):
            raise ValueError("input_points and input_labels must be given together")
        given = {
            name: value
            for name, value in (("input_points", points), ("input_boxes", boxes), ("input_masks", masks))
            if value is not None
        }
        if not given:
            raise ValueError("Give at least one prompt: input_points (+ input_labels), input_boxes or input_masks")
        size = self.config.mask_input_size
        shapes = {
            "input_points": (4, "(batch, num_prompts, num_points, 2)"),
            "input_boxes": (3, "(batch, num_prompts, 4)"),
            "input_masks": (5, f"(batch, num_prompts, 1, {size}, {size})"),
        }
        for name, value in given.items():
            ndim, text = shapes[name]
            if not isinstance(value, torch.Tensor) or value.ndim != ndim:
                raise ValueError(f"{name} must be a {ndim}-D tensor {text}, got {getattr(value, 'shape', value)}")
        num_prompts = next(iter(given.values())).shape[1]
        for name, value in given.items():
            if tuple(value.shape[:2]) != (batch, num_prompts):
                raise ValueError(
                    f"{name} has (batch, num_prompts) = {tuple(value.shape[:2])}, expected {(batch, num_prompts)} "
                    f"({batch} image(s), {num_prompts} prompt(s) per image as in the first prompt input)"
                )
        if points is not None and (points.shape[-1] != 2 or tuple(labels.shape) != tuple(points.shape[:-1])):
            raise ValueError(
                f"input_points must be (batch, num_prompts, num_points, 2) and input_labels (batch, num_prompts, "
                f"num_points); got {tuple(points.shape)} and {tuple(labels.shape)}"
            )
        if boxes is not None and boxes.shape[-1] != 4:
            raise ValueError(
                f"input_boxes must be (batch, num_prompts, 4) as (x0, y0, x1, y1), got {tuple(boxes.shape)}"
            )
        if masks is not None and tuple(masks.shape[2:]) != (1, size, size):
            raise ValueError(f"input_masks must be (batch, num_prompts, 1, {size}, {size}), got {tuple(masks.shape)}")

        coords, point_labels = [], []
        if boxes is not None:
            coords.append(boxes.reshape(-1, 2, 2).float())
            box_labels = torch.tensor(BOX_LABELS).to(boxes.device, non_blocking=True)
            point_labels.append(box_labels.expand(coords[0].shape[0], -1))
        if points is not None:
            valid = (-1, 0, 1, 2, 3, PADDING_LABEL)
            # The values are checked in eager mode only: reading them would break a torch.compile graph.
            if labels.is_floating_point() or (
                check_label_values
                and not torch.compiler.is_compiling()
                and not bool(torch.isin(labels, torch.tensor(valid, device=labels.device)).all())
            ):
                raise ValueError(f"input_labels must be integers in {valid}, got {labels.unique().tolist()}")
            coords.append(points.flatten(0, 1).float())
            point_labels.append(labels.flatten(0, 1))
        if coords:
            # Meta's prompt encoder always appends a padding point, because boxes arrive as points.
            num = coords[0].shape[0]
            coords.append(coords[0].new_zeros(num, 1, 2))
            point_labels.append(torch.full((num, 1), NOT_A_POINT_LABEL, device=coords[0].device))
            coords = torch.cat(coords, dim=1)
            point_labels = torch.cat([label.long() for label in point_labels], dim=1)
        else:
            coords, point_labels = None, None
        flat_masks = masks.flatten(0, 1).float() if masks is not None else None
        return coords, point_labels, flat_masks, num_prompts


class Sam2Model(Sam2Base):
    """SAM 2 image segmentation: image encoder, prompt encoder and mask decoder (see the module docstring)."""

    _keys_to_ignore_on_load_unexpected = list(VIDEO_ONLY_KEYS)

    def __init__(self, config: Sam2Config):
        super().__init__(config)
        self._build_image_modules(config)
        self.post_init()

    @can_return_tuple
    def get_image_embeddings(self, pixel_values: torch.Tensor) -> Sam2ImageEmbeddingsOutput:
        """Encode a batch of images `(batch_size, 3, image_size, image_size)` once, to prompt them many times."""
        return self._image_embeddings(self.get_vision_features(pixel_values).fpn_features)

    def _image_embeddings(self, fpn_features: tuple[torch.Tensor, ...]) -> Sam2ImageEmbeddingsOutput:
        """What the mask decoder reads from the FPN levels: the coarsest plus `no_mem_embed` (an image has no
        memory; Meta adds it directly), and the high-resolution levels."""
        embeddings = fpn_features[-1] + self.no_mem_embed.reshape(1, -1, 1, 1)
        high_res = tuple(fpn_features[:-1]) if self.config.use_high_res_features else None
        return Sam2ImageEmbeddingsOutput(image_embeddings=embeddings, high_res_features=high_res)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_points: torch.Tensor | None = None,
        input_labels: torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        input_masks: torch.Tensor | None = None,
        image_embeddings: torch.Tensor | None = None,
        high_res_features: tuple[torch.Tensor, ...] | None = None,
        multimask_output: bool = True,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> Sam2ImageSegmentationOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`, *optional*):
            Normalised images; or pass `image_embeddings` and `high_res_features` from `get_image_embeddings`
            (or its whole output as `image_embeddings`).
        input_points (`torch.FloatTensor` of shape `(batch_size, num_prompts, num_points, 2)`, *optional*):
            Clicks as (x, y) in pixels of the `image_size` model input. Pad prompts with fewer clicks with label -10.
        input_labels (`torch.LongTensor` of shape `(batch_size, num_prompts, num_points)`, *optional*):
            1 foreground, 0 background, -1 Meta's "not a point", -10 padding (ignored).
        input_boxes (`torch.FloatTensor` of shape `(batch_size, num_prompts, 4)`, *optional*):
            Boxes as (x0, y0, x1, y1) in model-input pixels, one per prompt.
        input_masks (`torch.FloatTensor` of shape `(batch_size, num_prompts, 1, 256, 256)`, *optional*):
            Low-resolution mask logits, e.g. a previous `pred_masks` output.
        multimask_output (`bool`): return 3 masks per prompt; otherwise one (with the dynamic stability fallback
            of `dynamic_multimask_via_stability` in eval mode).
        labels (`torch.FloatTensor` of shape `(batch_size, num_prompts, size, size)`, *optional*):
            Target 0/1 mask of each prompt, at the low-resolution output size (`size` 256 for a 1024 input: cheap)
            or at the model input size (`size` = `image_size`: the masks are upsampled first, as in Meta's
            training). A prompt whose target is all -100 is padding and is left out. Gives `loss`: see
            `hiera_hf.sam2.loss_sam2`; with several masks per prompt only the best one gets the mask loss.
        output_hidden_states (`bool`, *optional*): return the trunk's hidden states (`vision_hidden_states`; needs
            `pixel_values`). Default: `config.output_hidden_states`.
        output_attentions (`bool`, *optional*): return the trunk's and the mask decoder's attention weights (needs
            `attn_implementation="eager"`). Default: `config.output_attentions`.
        return_dict (`bool`, *optional*): return a tuple instead of the output class when False.
        """
        if isinstance(image_embeddings, ModelOutput):  # get_image_embeddings' whole output (transformers' pipeline)
            embedded = image_embeddings
            if high_res_features is not None or set(embedded) - {"image_embeddings", "high_res_features"}:
                raise ValueError("image_embeddings as a ModelOutput must be get_image_embeddings' output, alone")
            image_embeddings, high_res_features = embedded.get("image_embeddings"), embedded.get("high_res_features")
        if (pixel_values is None) == (image_embeddings is None):
            raise ValueError("Pass exactly one of pixel_values or image_embeddings")
        if output_hidden_states and pixel_values is None:
            raise ValueError(
                "output_hidden_states=True needs pixel_values: the trunk does not run on given image_embeddings"
            )
        output_hidden_states, output_attentions = resolve_output_flags(self, output_hidden_states, output_attentions)
        vision = None
        if pixel_values is not None:
            vision = self.get_vision_features(pixel_values, output_hidden_states, output_attentions)
            embedded = self._image_embeddings(vision.fpn_features)
            image_embeddings, high_res_features = embedded.image_embeddings, embedded.high_res_features
        else:
            size, channels = self.config.image_embedding_size, self.config.fpn_hidden_size
            if image_embeddings.ndim != 4 or tuple(image_embeddings.shape[1:]) != (channels, size, size):
                raise ValueError(
                    f"image_embeddings must have shape (batch, {channels}, {size}, {size}) as returned by "
                    f"get_image_embeddings, got {tuple(image_embeddings.shape)}"
                )
            if self.config.use_high_res_features and high_res_features is None:
                raise ValueError("high_res_features are required with image_embeddings (see get_image_embeddings)")
        batch = image_embeddings.shape[0]
        points, point_labels, masks, num_prompts = self._flatten_prompts(
            batch, input_points, input_labels, input_boxes, input_masks
        )
        sparse, dense = self.prompt_encoder(points, point_labels, masks, batch * num_prompts)
        masks, iou_scores, sam_tokens, object_score_logits, *decoder_attentions = self.mask_decoder(
            image_embeddings,
            self.prompt_encoder.dense_positional_embedding(),
            sparse,
            dense,
            high_res_features,
            multimask_output,
            sparse_mask=None if point_labels is None else point_labels != PADDING_LABEL,
            output_attentions=output_attentions,
        )
        loss = None
        if labels is not None:
            check_mask_targets(labels, self.config)
            if tuple(labels.shape[:2]) != (batch, num_prompts):
                raise ValueError(
                    f"labels must be (batch, num_prompts, size, size) = ({batch}, {num_prompts}, ...), one target "
                    f"mask per prompt; got {tuple(labels.shape)}"
                )
            # Meta's training replaces the masks of objects predicted absent before the loss (they then learn
            # through the object score only).
            present = object_score_logits[..., None, None] > 0
            loss_masks = torch.where(present, masks, NO_OBJECT_SCORE) if self.config.pred_obj_scores else masks
            loss = sam2_loss(loss_masks.float(), iou_scores, object_score_logits, labels.flatten(0, 1), self.config)
            loss = loss["loss"]
        return Sam2ImageSegmentationOutput(
            loss=loss,
            pred_masks=masks.unflatten(0, (batch, num_prompts)),
            iou_scores=iou_scores.unflatten(0, (batch, num_prompts)),
            object_score_logits=object_score_logits.unflatten(0, (batch, num_prompts)),
            sam_output_tokens=sam_tokens.unflatten(0, (batch, num_prompts)),
            image_embeddings=image_embeddings,
            high_res_features=high_res_features,
            vision_hidden_states=vision.hidden_states if vision is not None else None,
            vision_attentions=vision.attentions if vision is not None else None,
            mask_decoder_attentions=decoder_attentions[0] if output_attentions else None,
        )


class Sam2HieraBackbone(BackboneMixin, Sam2PreTrainedModel):
    """SAM 2's Hiera trunk alone: `feature_maps` are the selected stage outputs `(B, C, H, W)` (all four stages by
    default). A converted SAM 2 folder loads into it through `AutoBackbone`; the other weights are skipped."""

    _keys_to_ignore_on_load_unexpected = [
        r"^neck\.",
        r"^prompt_encoder\.",
        r"^mask_decoder\.",
        r"^no_mem_embed$",
        *VIDEO_ONLY_KEYS,
    ]

    def __init__(self, config: Sam2Config):
        super().__init__(config)
        self.num_features = [config.embed_dim, *config.stage_dims]
        self.hiera = Sam2HieraModel(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.hiera.patch_embeddings

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> BackboneOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`): normalised images.
        output_hidden_states, output_attentions (`bool`, *optional*): return the trunk's hidden states (channels
            last) / attention weights (eager attention only); default: the config's values.
        """
        self._check_pixel_values(pixel_values)
        output_hidden_states, output_attentions = resolve_output_flags(self, output_hidden_states, output_attentions)
        need_stem = "stem" in self.out_features
        stages, hidden, attentions = self.hiera(pixel_values, output_hidden_states or need_stem, output_attentions)
        maps = dict(zip(self.stage_names, (hidden[0] if need_stem else None, *stages)))
        return BackboneOutput(
            feature_maps=tuple(maps[name].permute(0, 3, 1, 2) for name in self.out_features),
            hidden_states=hidden if output_hidden_states else None,
            attentions=attentions,
        )


__all__ = [
    "VIDEO_ONLY_KEYS",
    "Sam2Base",
    "Sam2HieraBackbone",
    "Sam2HieraModel",
    "Sam2ImageEmbeddingsOutput",
    "Sam2ImageSegmentationOutput",
    "Sam2Model",
    "Sam2PreTrainedModel",
    "Sam2VisionOutput",
]
