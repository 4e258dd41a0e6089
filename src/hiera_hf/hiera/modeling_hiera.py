"""Hiera for images and videos: encoder, classifiers and backbone.

Token layout. Inside the encoder, tokens are grouped by mask unit: `(batch, units, *unit_shape, channels)`,
where a mask unit is a `masked_unit_size` block of the token grid (8x8 for images, 1x8x8 for videos).
With this one layout, every operation of Hiera is local and simple:

- query pooling (a max over `query_stride` blocks) stays inside a unit, so it is a reshape and a max;
- mask-unit attention attends within a unit, global attention across all units;
- MAE masking keeps a subset of units (a gather on dimension 1, static shapes);
- stage features go back to spatial order with one permute (`units_to_grid`).

Meta's code reaches the same computation by "unrolling" tokens once; attention and max-pooling do not depend on
token order, so the two agree to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_hiera import HieraConfig
from .model_folder import checked_loading

# ---------------------------------------------------------------------------------------------------------------
# Layout helpers (shared with SAM 2's Hiera trunk)
# ---------------------------------------------------------------------------------------------------------------


def pool_tokens(hidden_states: torch.Tensor, stride: tuple[int, ...] | None) -> torch.Tensor:
    """Max-pool the `len(stride)` dimensions that precede the channels.

    `hidden_states` is `(*leading, *spatial, channels)`; each spatial size must be divisible by its stride.
    Returns `(*leading, *spatial // stride, channels)`.
    """
    if stride is None or all(s == 1 for s in stride):
        return hidden_states
    ndim = len(stride)
    spatial = hidden_states.shape[-ndim - 1 : -1]
    split = [d for size, s in zip(spatial, stride) for d in (size // s, s)]
    hidden_states = hidden_states.reshape(*hidden_states.shape[: -ndim - 1], *split, hidden_states.shape[-1])
    # One stride dimension at a time, innermost first: each reduction then runs over whole channel vectors,
    # several times faster on CPU than a single amax over interleaved dimensions.
    for i in range(ndim):
        hidden_states = hidden_states.amax(dim=-2 - i)
    return hidden_states


def grid_to_units(hidden_states: torch.Tensor, unit: tuple[int, ...]) -> torch.Tensor:
    """`(B, *grid, C)` -> `(B, units, *unit, C)`, units in raster order of the unit grid."""
    batch, *grid, channels = hidden_states.shape
    ndim = len(unit)
    split = [d for g, u in zip(grid, unit) for d in (g // u, u)]
    order = [0, *range(1, 2 * ndim, 2), *range(2, 2 * ndim + 1, 2), 2 * ndim + 1]
    hidden_states = hidden_states.reshape(batch, *split, channels).permute(order)
    return hidden_states.reshape(batch, -1, *unit, channels)


def units_to_grid(hidden_states: torch.Tensor, unit_grid: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `grid_to_units`: `(B, units, *unit, C)` -> `(B, *grid, C)` with `units = prod(unit_grid)`."""
    batch, _, *unit, channels = hidden_states.shape
    ndim = len(unit)
    hidden_states = hidden_states.reshape(batch, *unit_grid, *unit, channels)
    order = [0, *(d for i in range(1, ndim + 1) for d in (i, i + ndim)), 2 * ndim + 1]
    grid = [g * u for g, u in zip(unit_grid, unit)]
    return hidden_states.permute(order).reshape(batch, *grid, channels)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention. `query` `(B, heads, Lq, D)`; returns `(B, Lq, heads, D)` and weights `(B, heads, Lq, Lk)`."""
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def resolve_output_flags(
    model: PreTrainedModel, output_hidden_states: bool | None, output_attentions: bool | None
) -> tuple[bool, bool]:
    """`(output_hidden_states, output_attentions)` of a call: `None` takes the config's value (transformers'
    convention). Attention weights exist only with the eager implementation: asking for them otherwise is refused
    (fused kernels would return no weights)."""
    config = model.config
    output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
    output_attentions = config.output_attentions if output_attentions is None else output_attentions
    if output_attentions and config._attn_implementation != "eager":
        raise ValueError(
            f"output_attentions=True needs attn_implementation='eager' (this model uses "
            f"{config._attn_implementation!r}, which returns no attention weights): load it with "
            "attn_implementation='eager' or call model.set_attn_implementation('eager')"
        )
    return bool(output_hidden_states), bool(output_attentions)


def drop_path_rates(drop_path_rate: float, depth: int) -> list[float]:
    """Stochastic-depth rate of each of `depth` blocks, rising linearly from 0 to `drop_path_rate` (Meta's Hiera and
    SAM 2 trunks: the same float32 `linspace`). Computed on the CPU, so that models build on the meta device."""
    return torch.linspace(0.0, drop_path_rate, depth, device="cpu").tolist()


class HieraAttention(nn.Module):
    """Multi-head attention over mask units (or windows) with optional max-pooling of the queries.

    Input `(B, U, *window, dim)`: `U` windows of `window` tokens each. With `windowed=True` every window attends
    to itself; otherwise all `U * prod(window)` tokens attend to each other. Queries are max-pooled by
    `query_stride` inside each window, so the output is `(B, U, *window // query_stride, dim_out)`.
    """

    def __init__(
        self,
        config,
        dim: int,
        dim_out: int,
        num_heads: int,
        query_stride: tuple[int, ...] | None = None,
        windowed: bool = False,
    ):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = dim_out // num_heads
        self.scaling = self.head_dim**-0.5
        self.query_stride = query_stride
        self.windowed = windowed
        self.is_causal = False
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, units = hidden_states.shape[:2]
        query, key, value = self.qkv(hidden_states).chunk(3, dim=-1)
        query = pool_tokens(query, self.query_stride)
        out_window = query.shape[2:-1]
        groups = batch * units if self.windowed else batch

        def heads_first(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(groups, -1, self.num_heads, self.head_dim).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self, heads_first(query), heads_first(key), heads_first(value), None, scaling=self.scaling, dropout=0.0
        )
        attn_output = attn_output.reshape(batch, units, *out_window, -1)
        return self.proj(attn_output), attn_weights


class HieraMLP(nn.Module):
    def __init__(self, config, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class HieraDropPath(nn.Module):
    """Stochastic depth: drops the residual branch per sample during training."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        return hidden_states * hidden_states.new_empty(shape).bernoulli_(keep).div_(keep)


class HieraBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block; at a stage change it widens the channels and (optionally) pools the tokens.

    Input and output are in the mask-unit layout `(B, U, *unit, C)`. Subclasses that keep another layout
    override `pool` and `attend`.
    """

    def __init__(
        self,
        config,
        dim: int,
        dim_out: int,
        num_heads: int,
        query_stride: tuple[int, ...] | None = None,
        windowed: bool = False,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.query_stride = query_stride
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = HieraAttention(config, dim, dim_out, num_heads, query_stride, windowed)
        self.norm2 = nn.LayerNorm(dim_out, eps=config.layer_norm_eps)
        self.mlp = HieraMLP(config, dim_out, int(dim_out * config.mlp_ratio))
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None
        self.drop_path = HieraDropPath(drop_path)

    def pool(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return pool_tokens(hidden_states, self.query_stride)

    def attend(self, normed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.attn(normed)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        normed = self.norm1(hidden_states)
        if self.proj is not None:
            # Meta projects the *normalised* input for the residual when the width changes.
            hidden_states = self.pool(self.proj(normed))
        attn_output, attn_weights = self.attend(normed)
        hidden_states = hidden_states + self.drop_path(attn_output)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.norm2(hidden_states)))
        return hidden_states, attn_weights


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class HieraModelOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_tokens, hidden_size)`):
        Last-stage tokens in raster order of the final token grid (e.g. 7x7 = 49 tokens for a 224 image). With a
        MAE `mask`, the kept units' tokens: `(batch_size, kept_units * tokens_per_unit, hidden_size)`.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`, *optional*):
        Mean over tokens followed by the final LayerNorm (the classifier's input).
    intermediates (`tuple(torch.FloatTensor)`):
        Output of every stage, channels last, in spatial order: `(batch_size, height, width, channels)` for images,
        `(batch_size, frames, height, width, channels)` for videos. With a `mask`:
        `(batch_size, kept_units, *unit_shape, channels)`. These equal Meta's `return_intermediates` outputs.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
        The embeddings and the output of every block, in the same layout as `intermediates`.
    attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        Attention weights of every block, `(batch_size * windows, heads, query_tokens, key_tokens)`; needs
        `attn_implementation="eager"` (fused kernels do not return weights).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    intermediates: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------


class HieraEmbeddings(nn.Module):
    """Patch embedding (Conv2d or Conv3d) plus absolute position embeddings (joint, or spatial + temporal)."""

    def __init__(self, config: HieraConfig):
        super().__init__()
        self.config = config
        conv = nn.Conv3d if config.is_video else nn.Conv2d
        self.patch_embeddings = conv(
            config.num_channels,
            config.embed_dim,
            kernel_size=config.patch_size,
            stride=config.patch_stride,
            padding=config.patch_padding,
        )
        grid = config.token_grid
        if config.sep_pos_embed:
            self.position_embeddings_spatial = nn.Parameter(torch.zeros(1, math.prod(grid[-2:]), config.embed_dim))
            self.position_embeddings_temporal = nn.Parameter(torch.zeros(1, grid[0], config.embed_dim))
        else:
            self.position_embeddings = nn.Parameter(torch.zeros(1, math.prod(grid), config.embed_dim))

    def position_grid(self, grid: tuple[int, ...], interpolate: bool) -> torch.Tensor:
        """Position embeddings `(1, *grid, C)`, resized (bicubic in space, linear in time) when `grid` differs."""
        config = self.config
        native = config.token_grid
        if tuple(grid) != native and not interpolate:
            raise ValueError(
                f"Input gives a {tuple(grid)} token grid but the model was built for {native} "
                f"(image_size={config.image_size}); pass interpolate_pos_encoding=True to resize the position embeddings."
            )
        if config.sep_pos_embed:
            spatial = self.position_embeddings_spatial.reshape(1, *native[-2:], -1)
            temporal = self.position_embeddings_temporal
            if tuple(grid) != native:
                spatial = _resize(spatial, grid[-2:], "bicubic")
                temporal = _resize(temporal, grid[:1], "linear")
            return spatial[:, None] + temporal[:, :, None, None]
        pos = self.position_embeddings.reshape(1, *native, -1)
        if tuple(grid) != native:
            pos = _resize(pos, grid, "bicubic" if len(grid) == 2 else "trilinear")
        return pos

    def forward(
        self, pixel_values: torch.Tensor, mask: torch.Tensor | None = None, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """`pixel_values` `(B, C, H, W)` or `(B, C, T, H, W)`; `mask` `(B, *mask_unit_grid)` keep-flags.
        Returns tokens `(B, *grid, embed_dim)`."""
        if mask is not None:
            # Zero the hidden units' pixels so that overlapping kernels do not leak them into visible tokens.
            keep = F.interpolate(mask[:, None].to(pixel_values.dtype), size=pixel_values.shape[2:])
            pixel_values = pixel_values * keep
        embeddings = self.patch_embeddings(pixel_values)
        embeddings = embeddings.flatten(2).transpose(1, 2).reshape(embeddings.shape[0], *embeddings.shape[2:], -1)
        return embeddings + self.position_grid(embeddings.shape[1:-1], interpolate_pos_encoding)


def _resize(pos: torch.Tensor, size: tuple[int, ...], mode: str) -> torch.Tensor:
    """Resize channels-last position embeddings `(1, *grid, C)` to `(1, *size, C)`."""
    channels_first = pos.movedim(-1, 1)
    resized = F.interpolate(channels_first.float(), size=tuple(size), mode=mode, align_corners=False)
    return resized.to(pos.dtype).movedim(1, -1)


class HieraEncoder(nn.Module):
    """The stack of Hiera blocks, in Meta's order, plus the geometry to put stage outputs back in space."""

    # In inference, windowed blocks run their mask units in groups of about this many tokens (see `run_block`).
    unit_group_tokens = 2048

    def __init__(self, config: HieraConfig):
        super().__init__()
        depth = sum(config.depths)
        self.stage_ends = [sum(config.depths[: i + 1]) - 1 for i in range(len(config.depths))]
        pool_blocks = {end + 1 for end in self.stage_ends[: config.num_query_pool]}
        drop_rates = drop_path_rates(config.drop_path_rate, depth)
        dims, stage = config.stage_dims, 0
        self.blocks = nn.ModuleList()
        for i in range(depth):
            dim_in = dims[stage]
            # Meta lags mask-unit attention by one block: the first block of a stage still uses the previous
            # stage's setting, so that global attention starts after the pooling.
            windowed = config.masked_unit_attention[stage]
            if i - 1 in self.stage_ends:
                stage += 1
            self.blocks.append(
                HieraBlock(
                    config,
                    dim_in,
                    dims[stage],
                    config.num_heads[stage],
                    query_stride=tuple(config.query_stride) if i in pool_blocks else None,
                    windowed=windowed,
                    drop_path=drop_rates[i],
                )
            )
        self.gradient_checkpointing = False

    def run_block(
        self, block: HieraBlock, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`block(hidden_states)`, with `hidden_states` `(B, U, *unit, C)`.

        Mask units do not interact in a windowed block, so in inference it runs them in groups of about
        `unit_group_tokens` tokens: each group's intermediates (the MLP's are 4x the input) then stay in cache
        instead of filling fresh memory. Same result, faster on CPU. Training keeps whole batches (drop path is
        per sample) and so does `torch.compile` (it fuses the block itself); so do calls that return the attention
        weights (the returned weights are then the ones the block used, not a concatenated copy).
        """
        batch, units, *unit, channels = hidden_states.shape
        group = max(1, self.unit_group_tokens // math.prod(unit))
        if (
            self.training
            or output_attentions
            or not block.attn.windowed
            or batch * units <= group
            or torch.compiler.is_compiling()
        ):
            return block(hidden_states)
        flat = hidden_states.reshape(1, batch * units, *unit, channels)
        outputs = [block(part) for part in flat.split(group, dim=1)]
        hidden_states = torch.cat([output[0] for output in outputs], dim=1)
        weights = None if outputs[0][1] is None else torch.cat([output[1] for output in outputs])
        return hidden_states.reshape(batch, units, *hidden_states.shape[2:]), weights

    def forward(
        self,
        hidden_states: torch.Tensor,
        unit_grid: tuple[int, ...] | None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple, tuple | None, tuple | None]:
        """`hidden_states` `(B, U, *unit, C)`. `unit_grid` is the unit grid for spatial outputs, or `None` for
        masked inputs (outputs stay per unit). Returns (last, stage outputs, hidden states, attentions).

        The returned hidden states are on the graph the forward continues from (so `retain_grad()` on them gets a
        gradient): in spatial order, the next block reads the mask-unit view of the returned spatial tensor (the
        two layouts are one permutation apart, so the values are the same)."""
        intermediates = []
        all_hidden = [] if output_hidden_states else None
        all_attn = [] if output_attentions else None

        def record(x: torch.Tensor) -> torch.Tensor:
            """Appends `x` in spatial order and returns the tensor to continue from, `(B, U, *unit, C)`."""
            if unit_grid is None:
                all_hidden.append(x)
                return x
            grid = units_to_grid(x, unit_grid)
            all_hidden.append(grid)
            return grid_to_units(grid, tuple(x.shape[2:-1]))

        if output_hidden_states:
            hidden_states = record(hidden_states)
        for i, block in enumerate(self.blocks):
            hidden_states, attn_weights = self.run_block(block, hidden_states, output_attentions)
            if output_hidden_states:
                hidden_states = record(hidden_states)
            if output_attentions:
                all_attn.append(attn_weights)
            if i in self.stage_ends:
                intermediates.append(hidden_states if unit_grid is None else units_to_grid(hidden_states, unit_grid))
        return (
            hidden_states,
            tuple(intermediates),
            tuple(all_hidden) if output_hidden_states else None,
            tuple(all_attn) if output_attentions else None,
        )


class HieraPreTrainedModel(PreTrainedModel):
    config: HieraConfig
    config_class = HieraConfig
    base_model_prefix = "hiera"
    main_input_name = "pixel_values"
    input_modalities = ("image", "video")
    supports_gradient_checkpointing = True
    _no_split_modules = ["HieraEmbeddings", "HieraBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # The losses are means over the batch: the Trainer must scale them for gradient accumulation (and must not pass
    # `num_items_in_batch`, which no forward takes).
    accepts_loss_kwargs = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' `from_pretrained`, with a local folder's config and weights checked (`checked_loading`)."""
        with checked_loading(cls, pretrained_model_name_or_path, kwargs):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        """Meta's initialisation: truncated normal (std 0.02), Linear biases 0.02, LayerNorm (1, 0.02)."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                if isinstance(module, nn.Linear):
                    init.constant_(module.bias, 0.02)
                else:
                    init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.constant_(module.bias, 0.02)
        elif isinstance(module, HieraEmbeddings):
            for param in module.parameters(recurse=False):
                init.trunc_normal_(param, std=std)

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        config = self.config
        expected = 2 + len(config.image_size)
        kind = "(batch, channels, frames, height, width)" if config.is_video else "(batch, channels, height, width)"
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
        if pixel_values.ndim != expected:
            raise ValueError(f"pixel_values must be {expected}-D {kind}, got shape {tuple(pixel_values.shape)}")
        if pixel_values.shape[1] != config.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels, the model expects {config.num_channels} {kind}"
            )
        if not pixel_values.is_floating_point():
            raise TypeError(f"pixel_values must be a floating-point tensor, got {pixel_values.dtype}")
        granule = [p * m for p, m in zip(config.patch_stride, config.masked_unit_size)]
        if any(s % g for s, g in zip(pixel_values.shape[2:], granule)):
            raise ValueError(
                f"Input size {tuple(pixel_values.shape[2:])} must be a multiple of patch_stride*masked_unit_size="
                f"{tuple(granule)}"
            )


class HieraModel(HieraPreTrainedModel):
    """Hiera encoder. `forward` takes images `(B, C, H, W)` or videos `(B, C, T, H, W)` (per the config)."""

    def __init__(self, config: HieraConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = HieraEmbeddings(config)
        self.encoder = HieraEncoder(config)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def unit_grid(self, pixel_values: torch.Tensor) -> tuple[int, ...]:
        """Mask-unit grid of an input, e.g. `(7, 7)` for a 224 image."""
        config = self.config
        return tuple(
            s // (p * m) for s, p, m in zip(pixel_values.shape[2:], config.patch_stride, config.masked_unit_size)
        )

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        mask: torch.Tensor | None = None,
        num_kept: int | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> HieraModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, channels, height, width)` or
            `(batch_size, channels, frames, height, width)`): normalised input.
        mask (`torch.BoolTensor` of shape `(batch_size, num_mask_units)`, *optional*):
            MAE visibility per mask unit, **True = keep** (Meta's convention); every row must keep the same
            number of units. Hidden units are dropped from the encoder.
        num_kept (`int`, *optional*): the number of True entries per row of `mask`, when the caller knows it
            statically (keeps `torch.compile` graphs free of data-dependent shapes); counted from `mask` otherwise.
        interpolate_pos_encoding (`bool`): resize the position embeddings to an input of another size.
        output_hidden_states, output_attentions (`bool`, *optional*): return every block's output / attention
            weights (the latter needs `attn_implementation="eager"`); default: the config's values.
        return_dict (`bool`, *optional*): return a tuple instead of the output class when False.
        """
        self._check_pixel_values(pixel_values)
        output_hidden_states, output_attentions = resolve_output_flags(self, output_hidden_states, output_attentions)
        unit_grid = self.unit_grid(pixel_values)
        keep_index = None
        if mask is not None:
            keep_index = self.kept_units(mask, unit_grid, num_kept)
            mask = mask.reshape(mask.shape[0], *unit_grid)
        embeddings = self.embeddings(pixel_values, mask=mask, interpolate_pos_encoding=interpolate_pos_encoding)
        hidden_states = grid_to_units(embeddings, tuple(self.config.masked_unit_size))
        if keep_index is not None:
            index = keep_index.reshape(*keep_index.shape, *(1,) * (hidden_states.ndim - 2))
            hidden_states = hidden_states.gather(1, index.expand(-1, -1, *hidden_states.shape[2:]))
        last, intermediates, hidden, attentions = self.encoder(
            hidden_states,
            None if mask is not None else unit_grid,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        last_hidden_state = (last if mask is not None else intermediates[-1]).flatten(1, -2)
        pooled = self.norm(last_hidden_state.mean(dim=1)) if self.norm is not None else None
        return HieraModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=pooled,
            intermediates=intermediates,
            hidden_states=hidden,
            attentions=attentions,
        )

    @staticmethod
    def kept_units(mask: torch.Tensor, unit_grid: tuple[int, ...], num_kept: int | None = None) -> torch.Tensor:
        """Indices `(B, kept)` of the True entries of a keep-mask `(B, num_mask_units)`, in ascending order."""
        num_units = math.prod(unit_grid)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = keep), got {mask.dtype}")
        if mask.ndim != 2 or mask.shape[1] != num_units:
            raise ValueError(
                f"mask must have shape (batch, {num_units}) for a {unit_grid} mask-unit grid, got {tuple(mask.shape)}"
            )
        if num_kept is None:
            kept = mask.sum(dim=1).tolist()
            if len(set(kept)) != 1:
                raise ValueError(f"every row of mask must keep the same number of units, got {kept}")
            num_kept = kept[0]
        if not 0 < num_kept <= num_units:
            raise ValueError(f"mask must keep between 1 and {num_units} units, got {num_kept}")
        # A stable sort of "hidden" flags puts the kept units first, in their original order.
        order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
        return order[:, :num_kept]


class HieraForImageClassification(HieraPreTrainedModel):
    """Hiera with Meta's classification head (mean pool, LayerNorm, dropout, Linear). Returns logits: Meta's
    model applies a softmax in eval mode; here take `logits.softmax(-1)` to compare."""

    def __init__(self, config: HieraConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.hiera = HieraModel(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(config.head_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        if module is getattr(self, "classifier", None) and isinstance(module, nn.Linear):
            # Meta scales the head's initial weights and bias by head_init_scale.
            scale = self.config.head_init_scale
            init.trunc_normal_(module.weight, std=self.config.initializer_range * scale)
            init.constant_(module.bias, 0.02 * scale)
        else:
            super()._init_weights(module)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> ImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): class indices for the cross-entropy loss
            (or float targets of shape `(batch_size,)` for regression when `num_labels == 1`).

        Returns `logits` `(batch_size, num_labels)`.
        """
        outputs = self.hiera(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class HieraForVideoClassification(HieraForImageClassification):
    """Hiera video classifier (Meta's `hiera_*_16x224`): `pixel_values` `(batch, channels, frames, height, width)`."""

    input_modalities = ("video",)


class HieraBackbone(BackboneMixin, HieraPreTrainedModel):
    """Hiera as a multi-scale backbone: `feature_maps` are the selected stage outputs, channels first
    (`(B, C, H, W)`, or `(B, C, T, H, W)` for videos), equal to Meta's intermediates."""

    def __init__(self, config: HieraConfig):
        super().__init__(config)
        self.num_features = [config.embed_dim, *config.stage_dims]
        self.hiera = HieraModel(config, add_pooling_layer=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        interpolate_pos_encoding: bool = True,
    ) -> BackboneOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, channels, height, width)` or
            `(batch_size, channels, frames, height, width)`): normalised input; sides multiples of the total stride
            (32 for the image models), other sizes than the config's included.
        output_hidden_states, output_attentions (`bool`, *optional*): as for [`HieraModel`]; default: the config's.
        interpolate_pos_encoding (`bool`): resize the position embeddings to an input of another size than the
            config's (default, as dense-prediction heads such as UperNet or Mask2Former feed their own sizes and pass
            no such flag); `False` refuses other sizes.
        """
        output_hidden_states, output_attentions = resolve_output_flags(self, output_hidden_states, output_attentions)
        need_stem = "stem" in self.out_features
        outputs = self.hiera(
            pixel_values,
            output_hidden_states=output_hidden_states or need_stem,
            output_attentions=output_attentions,
            interpolate_pos_encoding=interpolate_pos_encoding,
        )
        maps = dict(zip(self.stage_names, (outputs.hidden_states[0] if need_stem else None, *outputs.intermediates)))
        feature_maps = tuple(maps[name].movedim(-1, 1).contiguous() for name in self.out_features)
        return BackboneOutput(
            feature_maps=feature_maps,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            attentions=outputs.attentions,
        )


__all__ = [
    "HieraAttention",
    "HieraBackbone",
    "HieraBlock",
    "HieraForImageClassification",
    "HieraForVideoClassification",
    "HieraModel",
    "HieraModelOutput",
    "HieraPreTrainedModel",
    "grid_to_units",
    "pool_tokens",
    "resolve_output_flags",
    "units_to_grid",
]
