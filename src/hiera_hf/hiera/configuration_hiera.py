"""Configuration of Hiera (image and video), including Meta's MAE pre-training settings."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers.backbone_utils import BackboneConfigMixin
from transformers.configuration_utils import PreTrainedConfig

_TUPLE_FIELDS = (
    "image_size",
    "num_heads",
    "depths",
    "query_stride",
    "masked_unit_size",
    "masked_unit_attention",
    "patch_size",
    "patch_stride",
    "patch_padding",
)


@strict
class HieraConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration for [`HieraModel`] and its heads. Spatial options are tuples with one entry per input
    dimension: 2 for images `(height, width)`, 3 for videos `(frames, height, width)`.

    Args:
        image_size: input size in pixels (frames for video).
        num_channels: input channels.
        embed_dim: channels of the first stage.
        num_heads: attention heads of each stage.
        depths: blocks per stage.
        embed_dim_multiplier: channel multiplier applied at every stage change (Meta's `dim_mul`).
        num_query_pool: number of stage changes that pool the queries (Meta's `q_pool`).
        query_stride: pooling stride at those stage changes (Meta's `q_stride`).
        masked_unit_size: tokens per mask unit, the window of mask-unit attention (Meta's `mask_unit_size`).
        masked_unit_attention: per stage, attend within mask units (True) or globally (False).
        patch_size, patch_stride, patch_padding: the patch-embedding convolution.
        mlp_ratio: MLP hidden size over block width.
        drop_path_rate: stochastic depth rate, increasing linearly over the blocks.
        hidden_act: MLP activation.
        layer_norm_eps: epsilon of every LayerNorm.
        sep_pos_embed: separate spatial and temporal position embeddings (Meta's video models).
        head_dropout: dropout before the classifier.
        head_init_scale: scale of the classifier's initial weights.
        initializer_range: std of the truncated-normal initialisation.
        decoder_hidden_size, decoder_depth, decoder_num_heads: MAE decoder (`None` outside pre-training).
        mask_ratio: fraction of mask units hidden during MAE pre-training.
        normalize_pixel_loss: normalise each target patch by its own mean and variance.
    """

    model_type = "hiera_hf"

    image_size: list[int] | tuple[int, ...] = (224, 224)
    num_channels: int = 3
    embed_dim: int = 96
    num_heads: list[int] | tuple[int, ...] = (1, 2, 4, 8)
    depths: list[int] | tuple[int, ...] = (2, 3, 16, 3)
    embed_dim_multiplier: float | int = 2.0
    num_query_pool: int = 3
    query_stride: list[int] | tuple[int, ...] = (2, 2)
    masked_unit_size: list[int] | tuple[int, ...] = (8, 8)
    masked_unit_attention: list[bool] | tuple[bool, ...] = (True, True, False, False)
    patch_size: list[int] | tuple[int, ...] = (7, 7)
    patch_stride: list[int] | tuple[int, ...] = (4, 4)
    patch_padding: list[int] | tuple[int, ...] = (3, 3)
    mlp_ratio: float | int = 4.0
    drop_path_rate: float | int = 0.0
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    sep_pos_embed: bool = False
    head_dropout: float | int = 0.0
    head_init_scale: float = 0.001
    initializer_range: float = 0.02
    decoder_hidden_size: int | None = None
    decoder_depth: int | None = None
    decoder_num_heads: int | None = None
    mask_ratio: float = 0.6
    normalize_pixel_loss: bool = True
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        for name in _TUPLE_FIELDS:  # JSON gives lists; keep one type
            setattr(self, name, tuple(getattr(self, name)))
        self.hidden_size = self.stage_dims[-1]
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(self.depths) + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
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
    def token_grid(self) -> tuple[int, ...]:
        """Patch-token grid of an input of `image_size`."""
        return tuple(s // p for s, p in zip(self.image_size, self.patch_stride))

    @property
    def mask_unit_grid(self) -> tuple[int, ...]:
        """Number of mask units along each dimension for an input of `image_size`."""
        return tuple(t // m for t, m in zip(self.token_grid, self.masked_unit_size))

    @property
    def num_mask_units(self) -> int:
        return math.prod(self.mask_unit_grid)

    @property
    def is_video(self) -> bool:
        return len(self.image_size) == 3

    @property
    def num_frames(self) -> int | None:
        """Frames per clip of a video model (read by transformers' video-classification pipeline); `None` for images."""
        return self.image_size[0] if self.is_video else None

    def validate_architecture(self):
        """Checks that the options describe a buildable Hiera; called by `@strict` validation."""
        dims = len(self.image_size)
        if dims not in (2, 3):
            raise ValueError(f"image_size must have 2 (image) or 3 (video) entries, got {self.image_size}")
        for name in ("query_stride", "masked_unit_size", "patch_size", "patch_stride", "patch_padding"):
            if len(getattr(self, name)) != dims:
                raise ValueError(
                    f"{name}={getattr(self, name)} must have {dims} entries like image_size={self.image_size}"
                )
        stages = len(self.depths)
        for name in ("num_heads", "masked_unit_attention"):
            if len(getattr(self, name)) != stages:
                raise ValueError(f"{name}={getattr(self, name)} must have one entry per stage ({stages} stages)")
        if not 0 <= self.num_query_pool < stages:
            raise ValueError(f"num_query_pool={self.num_query_pool} must be in [0, {stages - 1}] for {stages} stages")
        pooled = tuple(q**self.num_query_pool for q in self.query_stride)
        if any(m % p for m, p in zip(self.masked_unit_size, pooled)):
            raise ValueError(
                f"masked_unit_size={self.masked_unit_size} must be divisible by query_stride**num_query_pool={pooled}"
            )
        tokens = self.token_grid
        if any(t % m for t, m in zip(tokens, self.masked_unit_size)) or any(
            s % p for s, p in zip(self.image_size, self.patch_stride)
        ):
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of patch_stride*masked_unit_size="
                f"{tuple(p * m for p, m in zip(self.patch_stride, self.masked_unit_size))}"
            )
        for dim, heads in zip(self.stage_dims, self.num_heads):
            if heads < 1 or dim % heads:
                raise ValueError(f"stage width {dim} is not divisible by its number of heads {heads}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        decoder = (self.decoder_hidden_size, self.decoder_depth, self.decoder_num_heads)
        if any(d is not None for d in decoder) and any(d is None for d in decoder):
            raise ValueError("decoder_hidden_size, decoder_depth and decoder_num_heads must be set together")
        if self.decoder_hidden_size is not None and self.decoder_hidden_size % self.decoder_num_heads:
            raise ValueError(
                f"decoder_hidden_size={self.decoder_hidden_size} is not divisible by "
                f"decoder_num_heads={self.decoder_num_heads}"
            )

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> HieraConfig:
        """Config of an official variant, e.g. `"hiera_base_224"` or `"mae_hiera_base_16x224"`."""
        from .presets import get_preset

        return cls(**{**get_preset(name).config, **kwargs})


__all__ = ["HieraConfig"]
