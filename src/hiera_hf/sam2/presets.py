"""Meta's published SAM 2 / SAM 2.1 variants as data: architecture and checkpoint URLs."""

from __future__ import annotations

from dataclasses import dataclass

SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/{date}/{name}.pt"


@dataclass(frozen=True)
class Sam2Preset:
    """One official variant: `config` holds `Sam2Config` keyword arguments, `meta_config` names the yaml file of
    Meta's `sam2` package that describes the same model, `checkpoint` is the download URL of the `.pt` file."""

    name: str
    config: dict
    meta_config: str
    checkpoint: str
    hub_id: str
    license: str = "apache-2.0"


# Hiera trunks (Meta's `configs/sam2*/sam2*_hiera_{t,s,b+,l}.yaml`); heads double at every stage.
_TRUNKS = {
    "tiny": (
        "t",
        {
            "embed_dim": 96,
            "num_heads": (1, 2, 4, 8),
            "depths": (1, 2, 7, 2),
            "global_attention_blocks": (5, 7, 9),
            "window_position_embedding_background_size": (7, 7),
        },
    ),
    "small": (
        "s",
        {
            "embed_dim": 96,
            "num_heads": (1, 2, 4, 8),
            "depths": (1, 2, 11, 2),
            "global_attention_blocks": (7, 10, 13),
            "window_position_embedding_background_size": (7, 7),
        },
    ),
    "base_plus": (
        "b+",
        {
            "embed_dim": 112,
            "num_heads": (2, 4, 8, 16),
            "depths": (2, 3, 16, 3),
            "global_attention_blocks": (12, 16, 20),
            "window_position_embedding_background_size": (14, 14),
        },
    ),
    "large": (
        "l",
        {
            "embed_dim": 144,
            "num_heads": (2, 4, 8, 16),
            "depths": (2, 6, 36, 4),
            "global_attention_blocks": (23, 33, 43),
            "window_position_embedding_background_size": (7, 7),
            "window_sizes": (8, 4, 16, 8),
        },
    ),
}
# The only differences between SAM 2 and SAM 2.1 (video-model flags).
_SAM2_1 = {
    "no_obj_embed_spatial": True,
    "add_tpos_enc_to_obj_ptrs": True,
    "proj_tpos_enc_in_obj_ptrs": True,
    "use_signed_tpos_enc_to_obj_ptrs": True,
}
_SAM2_0 = {key: False for key in _SAM2_1}


def _build() -> dict[str, Sam2Preset]:
    presets = {}
    for version, date, flags in (("sam2", "072824", _SAM2_0), ("sam2.1", "092824", _SAM2_1)):
        for size, (short, trunk) in _TRUNKS.items():
            name = f"{version}_hiera_{size}"
            presets[name] = Sam2Preset(
                name=name,
                config={**trunk, **flags},
                meta_config=f"configs/{version}/{version}_hiera_{short}.yaml",
                checkpoint=SAM2_URL.format(date=date, name=name),
                hub_id=f"facebook/{version}-hiera-{size.replace('_', '-')}",
            )
    return presets


SAM2_PRESETS: dict[str, Sam2Preset] = _build()


def get_sam2_preset(name: str) -> Sam2Preset:
    """The preset called `name`, e.g. `"sam2.1_hiera_tiny"`; raises a `ValueError` listing the valid names otherwise
    (as `get_preset` does)."""
    if name not in SAM2_PRESETS:
        raise ValueError(f"Unknown SAM 2 variant {name!r}. Known variants: {', '.join(sorted(SAM2_PRESETS))}")
    return SAM2_PRESETS[name]


__all__ = ["SAM2_PRESETS", "Sam2Preset", "get_sam2_preset"]
