"""Meta's published Hiera variants as data: architecture, checkpoints, preprocessing, license."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

META_HIERA_URL = "https://dl.fbaipublicfiles.com/hiera/{file}.pth"
_IMAGENET = tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)  # transformers' mean and std
# Meta's video notebook normalises with these values (the last std entry is 0.255, as published).
KINETICS_MEAN, KINETICS_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.255)


@dataclass(frozen=True)
class HieraPreset:
    """One official variant.

    `config` holds `HieraConfig` keyword arguments; `checkpoints` maps Meta's checkpoint names (e.g.
    `"mae_in1k_ft_in1k"`) to their download URLs, the first being the default.
    """

    name: str
    config: dict
    checkpoints: dict[str, str]
    dataset: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    license: str = "cc-by-nc-4.0"
    extra: dict = field(default_factory=dict)

    @property
    def is_video(self) -> bool:
        return len(self.config["image_size"]) == 3

    @property
    def is_mae(self) -> bool:
        return self.config.get("decoder_hidden_size") is not None

    @property
    def default_checkpoint(self) -> str:
        return next(iter(self.checkpoints))


# (embed_dim, initial heads, blocks per stage) of Meta's sizes; heads double at every stage.
_SIZES = {
    "tiny": (96, 1, (1, 2, 7, 2)),
    "small": (96, 1, (1, 2, 11, 2)),
    "base": (96, 1, (2, 3, 16, 3)),
    "base_plus": (112, 2, (2, 3, 16, 3)),
    "large": (144, 2, (2, 6, 36, 4)),
    "huge": (256, 4, (2, 6, 36, 4)),
}
_VIDEO_SIZES = ("base", "base_plus", "large", "huge")
_VIDEO = {
    "image_size": (16, 224, 224),
    "query_stride": (1, 2, 2),
    "masked_unit_size": (1, 8, 8),
    "patch_size": (3, 7, 7),
    "patch_stride": (2, 4, 4),
    "patch_padding": (1, 3, 3),
    "sep_pos_embed": True,
}
_MAE = {"num_query_pool": 2, "decoder_hidden_size": 512, "decoder_depth": 8, "decoder_num_heads": 16}


def _arch(size: str) -> dict:
    embed_dim, heads, depths = _SIZES[size]
    return {"embed_dim": embed_dim, "num_heads": tuple(heads * 2**i for i in range(4)), "depths": depths}


def _build() -> dict[str, HieraPreset]:
    presets = {}
    for size in _SIZES:
        name = f"hiera_{size}_224"
        presets[name] = HieraPreset(
            name,
            {**_arch(size), "image_size": (224, 224), "num_labels": 1000},
            {
                "mae_in1k_ft_in1k": META_HIERA_URL.format(file=name),
                "mae_in1k": META_HIERA_URL.format(file=f"mae_{name}"),
            },
            "imagenet-1k",
            *_IMAGENET,
        )
        presets[f"mae_{name}"] = HieraPreset(
            f"mae_{name}",
            {**_arch(size), "image_size": (224, 224), **_MAE, "mask_ratio": 0.6},
            {"mae_in1k": META_HIERA_URL.format(file=f"mae_{name}")},
            "imagenet-1k",
            *_IMAGENET,
        )
    for size in _VIDEO_SIZES:
        name = f"hiera_{size}_16x224"
        presets[name] = HieraPreset(
            name,
            {**_arch(size), **_VIDEO, "num_labels": 400},
            {
                "mae_k400_ft_k400": META_HIERA_URL.format(file=name),
                "mae_k400": META_HIERA_URL.format(file=f"mae_{name}"),
            },
            "kinetics-400",
            KINETICS_MEAN,
            KINETICS_STD,
        )
        presets[f"mae_{name}"] = HieraPreset(
            f"mae_{name}",
            {**_arch(size), **_VIDEO, **_MAE, "mask_ratio": 0.9},
            {"mae_k400": META_HIERA_URL.format(file=f"mae_{name}")},
            "kinetics-400",
            KINETICS_MEAN,
            KINETICS_STD,
        )
    return presets


HIERA_PRESETS: dict[str, HieraPreset] = _build()


def get_preset(name: str) -> HieraPreset:
    """The preset called `name`, e.g. `"hiera_base_224"`; raises a `ValueError` listing the valid names otherwise
    (as `get_sam2_preset` does)."""
    if name not in HIERA_PRESETS:
        raise ValueError(f"Unknown Hiera variant {name!r}. Known variants: {', '.join(sorted(HIERA_PRESETS))}")
    return HIERA_PRESETS[name]
