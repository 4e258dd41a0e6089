"""Meta's masked autoencoder (MAE) pre-training for Hiera, images and videos.

The encoder sees only the kept mask units (a gather, static shapes); the first `num_query_pool` stage outputs are
brought to the last stage's resolution by "fusion" convolutions (kernel = stride, inside each unit) and summed with
it; the decoder puts a learned mask token at every hidden unit, restores spatial order and predicts each
`pred_stride x pred_stride` pixel patch. The loss is the mean squared error over the hidden units' patches only,
against targets normalised per patch (Meta's `norm_pix_loss`). Videos predict the first frame of every temporal
patch (Meta's "time-strided" targets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_hiera import HieraConfig
from .modeling_hiera import HieraBlock, HieraModel, HieraPreTrainedModel, units_to_grid

# Meta normalises each target patch with its unbiased variance plus this epsilon.
_PATCH_NORM_EPS = 1e-6


@dataclass
class HieraForPreTrainingOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`):
        Mean squared error between `logits` and `labels` over the patches of hidden units (`loss_mask`).
    logits (`torch.FloatTensor` of shape `(batch_size, num_patches, patch_dim)`):
        Predicted pixels of every patch, in raster order of the patch grid (`(frames // patch_stride[0]) * (height //
        pred_stride) * (width // pred_stride)` patches). `patch_dim = pred_stride**2 * num_channels`, ordered
        `(channels, y, x)` for images and `(y, x, channels)` for videos (Meta's layouts). Use
        [`HieraForPreTraining.reconstruct`] to turn them back into an image or clip.
    labels (`torch.FloatTensor` of shape `(batch_size, num_patches, patch_dim)`):
        The targets: the input's patches (first frame of every temporal patch for videos), normalised per patch
        when `config.normalize_pixel_loss`.
    mask (`torch.BoolTensor` of shape `(batch_size, num_mask_units)`):
        The mask units the encoder saw, **True = kept** (Meta's convention).
    loss_mask (`torch.BoolTensor` of shape `(batch_size, num_patches)`):
        True for the patches of hidden units, the ones the loss is computed on. `logits[loss_mask]` and
        `labels[loss_mask]` are Meta's `pred` and `label`.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
        Encoder embeddings and block outputs, `(batch_size, kept_units, *unit_shape, channels)`.
    attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        Encoder attention weights, `(batch_size * windows, heads, query_tokens, key_tokens)`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    labels: torch.FloatTensor | None = None
    mask: torch.BoolTensor | None = None
    loss_mask: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class HieraForPreTraining(HieraPreTrainedModel):
    """Hiera masked autoencoder (Meta's `MaskedAutoencoderHiera`), for the `mae_hiera_*` presets.

    `forward(pixel_values)` hides a random `mask_ratio` of the mask units and returns the reconstruction loss.
    """

    def __init__(self, config: HieraConfig):
        super().__init__(config)
        if config.decoder_hidden_size is None:
            raise ValueError(
                "HieraForPreTraining needs a decoder: set decoder_hidden_size, decoder_depth and decoder_num_heads, "
                "e.g. HieraConfig.from_preset('mae_hiera_base_224')"
            )
        self.hiera = HieraModel(config, add_pooling_layer=False)
        dims = config.stage_dims
        ndim = len(config.image_size)
        shrink = tuple(q**config.num_query_pool for q in config.query_stride)
        self.final_unit_size = tuple(m // s for m, s in zip(config.masked_unit_size, shrink))
        final_grid = tuple(t // s for t, s in zip(config.token_grid, shrink))
        self.pred_stride = config.patch_stride[-1] * config.query_stride[-1] ** config.num_query_pool
        target_grid = (*config.image_size[:-2], *(s // self.pred_stride for s in config.image_size[-2:]))
        if config.is_video:
            target_grid = (config.image_size[0] // config.patch_stride[0], *target_grid[1:])
        if final_grid != target_grid or config.query_stride[-2] != config.query_stride[-1]:
            raise ValueError(
                f"The decoder's token grid {final_grid} does not match the target patch grid {target_grid}: MAE "
                "needs square spatial query strides and, for videos, no temporal query pooling"
            )

        self.encoder_norm = nn.LayerNorm(dims[-1], eps=config.layer_norm_eps)
        conv = nn.Conv3d if config.is_video else nn.Conv2d
        heads, unit = [], tuple(config.masked_unit_size)
        for dim in dims[: config.num_query_pool]:
            kernel = tuple(u // f for u, f in zip(unit, self.final_unit_size))
            heads.append(conv(dim, dims[-1], kernel_size=kernel, stride=kernel))
            unit = tuple(u // q for u, q in zip(unit, config.query_stride))
        self.multi_scale_fusion_heads = nn.ModuleList([*heads, nn.Identity()])

        width = config.decoder_hidden_size
        self.decoder_embed = nn.Linear(dims[-1], width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, math.prod(final_grid), width))
        self.decoder_blocks = nn.ModuleList(
            [HieraBlock(config, width, width, config.decoder_num_heads) for _ in range(config.decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.decoder_pred = nn.Linear(width, self.pred_stride ** min(2, ndim) * config.num_channels)
        self.post_init()

    # -- initialisation ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        """Meta's MAE initialisation: xavier-uniform Linear (bias 0), LayerNorm (1, 0), the patch embedding
        xavier-uniform as a Linear, PyTorch's default for the fusion convolutions, truncated normal (std 0.02)
        for the mask token and the position embeddings."""
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif module is self.hiera.embeddings.patch_embeddings:
            if not getattr(module.weight, "_is_hf_initialized", False):  # the flattened view loses the flag
                init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
            init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv2d, nn.Conv3d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.weight[0].numel())
            init.uniform_(module.bias, -bound, bound)
        elif module is self:
            init.trunc_normal_(module.mask_token, std=self.config.initializer_range)
            init.trunc_normal_(module.decoder_pos_embed, std=self.config.initializer_range)
        else:
            super()._init_weights(module)

    @torch.no_grad()
    def initialize_weights(self):
        # The trunk is a sub-model that would keep its classifier initialisation; Meta re-initialises it for MAE.
        super().initialize_weights()
        for module in self.hiera.modules():
            self._init_weights(module)

    # -- masks and targets ---------------------------------------------------------------------------------------

    def num_kept_units(self, mask_ratio: float | None = None) -> int:
        """Mask units the encoder keeps at `mask_ratio` (default `config.mask_ratio`), as Meta rounds it."""
        mask_ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)):
            raise TypeError(f"mask_ratio must be a float in (0, 1), got {mask_ratio!r}")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        units = self.config.num_mask_units
        kept = int(units * (1 - mask_ratio))
        if kept < 1:
            raise ValueError(f"mask_ratio={mask_ratio} keeps no mask unit out of {units}; use a smaller ratio")
        return kept

    def random_mask(self, noise: torch.Tensor, num_kept: int) -> torch.Tensor:
        """Keep-mask `(B, num_mask_units)` (True = keep) that keeps the `num_kept` units with the lowest `noise`
        `(B, num_mask_units)`, as Meta's and transformers' `argsort` masking does."""
        units = self.config.num_mask_units
        if not isinstance(noise, torch.Tensor) or not noise.is_floating_point():
            raise TypeError(f"noise must be a floating-point tensor of shape (batch, {units})")
        if noise.ndim != 2 or noise.shape[1] != units:
            raise ValueError(
                f"noise must have shape (batch, {units}) (one value per mask unit), got {tuple(noise.shape)}"
            )
        keep = noise.argsort(dim=1)[:, :num_kept]
        return torch.zeros(noise.shape, dtype=torch.bool, device=noise.device).scatter(1, keep, True)

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Target patches `(B, num_patches, patch_dim)` of images `(B, C, H, W)` or videos `(B, C, T, H, W)`
        (videos keep every `patch_stride[0]`-th frame), in Meta's layouts (see `HieraForPreTrainingOutput`)."""
        p = self.pred_stride
        if self.config.is_video:
            frames = pixel_values[:, :, :: self.config.patch_stride[0]]
            batch, channels, time, height, width = frames.shape
            patches = frames.reshape(batch, channels, time, height // p, p, width // p, p)
            return patches.permute(0, 2, 3, 5, 4, 6, 1).reshape(batch, -1, p * p * channels)
        batch, channels, height, width = pixel_values.shape
        patches = pixel_values.reshape(batch, channels, height // p, p, width // p, p)
        return patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, -1, channels * p * p)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """Inverse of `patchify`: `(B, num_patches, patch_dim)` -> `(B, C, H, W)`, or `(B, C, T // patch_stride[0],
        H, W)` for videos."""
        config, p = self.config, self.pred_stride
        batch, channels = patches.shape[0], config.num_channels
        height, width = (s // p for s in config.image_size[-2:])
        if config.is_video:
            time = config.image_size[0] // config.patch_stride[0]
            frames = patches.reshape(batch, time, height, width, p, p, channels).permute(0, 6, 1, 2, 4, 3, 5)
            return frames.reshape(batch, channels, time, height * p, width * p)
        image = patches.reshape(batch, height, width, channels, p, p).permute(0, 3, 1, 4, 2, 5)
        return image.reshape(batch, channels, height * p, width * p)

    def targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`patchify`, then per-patch normalisation when `config.normalize_pixel_loss` (Meta's `norm_pix_loss`)."""
        patches = self.patchify(pixel_values)
        if not self.config.normalize_pixel_loss:
            return patches
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True)
        return (patches - mean) / (var + _PATCH_NORM_EPS) ** 0.5

    def reconstruct(self, pixel_values: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Predicted pixels in the input's layout: `logits` `(B, num_patches, patch_dim)` are un-normalised with each
        patch's mean and std from `pixel_values` (when `normalize_pixel_loss`) and put back into an image
        `(B, C, H, W)` or clip `(B, C, T // patch_stride[0], H, W)`."""
        if self.config.normalize_pixel_loss:
            patches = self.patchify(pixel_values)
            std = (patches.var(dim=-1, keepdim=True) + _PATCH_NORM_EPS) ** 0.5
            logits = logits * std + patches.mean(dim=-1, keepdim=True)
        return self.unpatchify(logits)

    # -- forward -------------------------------------------------------------------------------------------------

    def fuse(self, intermediates: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Sum of the pooled stages' outputs (brought to the final unit shape) and the last stage's output.
        Each is `(B, kept, *unit_shape, C)`; returns `(B, kept, *final_unit_shape, C_last)`."""
        stages = (*intermediates[: self.config.num_query_pool], intermediates[-1])
        fused = 0.0
        for head, features in zip(self.multi_scale_fusion_heads, stages):
            if not isinstance(head, nn.Identity):
                batch, kept = features.shape[:2]
                features = head(features.flatten(0, 1).movedim(-1, 1)).movedim(1, -1)
                features = features.reshape(batch, kept, *features.shape[1:])
            fused = fused + features
        return fused

    def decode(self, latent: torch.Tensor, keep_index: torch.Tensor) -> torch.Tensor:
        """`latent` `(B, kept, *final_unit_shape, C)` of the units `keep_index` `(B, kept)` -> predictions
        `(B, num_patches, patch_dim)`."""
        hidden = self.decoder_embed(latent)
        batch, _, *unit, width = hidden.shape
        tokens = self.mask_token.to(hidden.dtype).view(1, 1, *(1,) * len(unit), width)
        tokens = tokens.expand(batch, self.config.num_mask_units, *unit, width)
        index = keep_index.view(*keep_index.shape, *(1,) * (len(unit) + 1)).expand_as(hidden)
        hidden = tokens.scatter(1, index, hidden)
        hidden = units_to_grid(hidden, self.config.mask_unit_grid).flatten(1, -2) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            hidden = block(hidden)[0]
        return self.decoder_pred(self.decoder_norm(hidden))

    def patch_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Keep-mask per unit `(B, num_mask_units)` -> hidden-patch mask `(B, num_patches)` (True = hidden)."""
        hidden = (~mask).view(*mask.shape, *(1,) * (len(self.final_unit_size) + 1))
        hidden = hidden.expand(*mask.shape, *self.final_unit_size, 1)
        return units_to_grid(hidden, self.config.mask_unit_grid).flatten(1)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> HieraForPreTrainingOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, channels, height, width)` or
            `(batch_size, channels, frames, height, width)`): normalised input of `config.image_size`.
        noise (`torch.FloatTensor` of shape `(batch_size, num_mask_units)`, *optional*):
            The units with the lowest noise are kept (Meta's and transformers' convention); uniform noise is drawn
            when neither `noise` nor `mask` is given.
        mask (`torch.BoolTensor` of shape `(batch_size, num_mask_units)`, *optional*):
            Explicit keep-mask, **True = keep** (Meta's convention); every row must keep the same number of units.
        mask_ratio (`float`, *optional*): fraction of units to hide with `noise`; defaults to `config.mask_ratio`.
        """
        if mask is not None and (noise is not None or mask_ratio is not None):
            raise ValueError("Pass either an explicit `mask` or `noise`/`mask_ratio`, not both")
        self._check_pixel_values(pixel_values)
        if self.hiera.unit_grid(pixel_values) != self.config.mask_unit_grid:
            raise ValueError(
                f"pixel_values of size {tuple(pixel_values.shape[2:])} do not match the model's image_size "
                f"{self.config.image_size}; MAE pre-training runs at its configured size"
            )
        if mask is None:
            num_kept = self.num_kept_units(mask_ratio)
            if noise is None:
                noise = torch.rand(pixel_values.shape[0], self.config.num_mask_units, device=pixel_values.device)
            mask = self.random_mask(noise, num_kept)
            keep_index = HieraModel.kept_units(mask, self.config.mask_unit_grid, num_kept)
        else:
            keep_index = HieraModel.kept_units(mask, self.config.mask_unit_grid)
            num_kept = keep_index.shape[1]
        if mask.shape[0] != pixel_values.shape[0]:
            raise ValueError(f"mask/noise has batch size {mask.shape[0]}, pixel_values {pixel_values.shape[0]}")

        outputs = self.hiera(
            pixel_values,
            mask=mask,
            num_kept=num_kept,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        latent = self.encoder_norm(self.fuse(outputs.intermediates))
        logits = self.decode(latent, keep_index)

        labels = self.targets(pixel_values)
        loss_mask = self.patch_mask(mask)
        weights = loss_mask.to(logits.dtype)
        loss = ((logits - labels).pow(2).mean(dim=-1) * weights).sum() / weights.sum()
        return HieraForPreTrainingOutput(
            loss=loss,
            logits=logits,
            labels=labels,
            mask=mask,
            loss_mask=loss_mask,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = ["HieraForPreTraining", "HieraForPreTrainingOutput"]
