"""Shared Hiera test helpers: a tiny MAE config, test inputs and Meta's models with random weights (one recipe for
every test)."""

import hiera
import torch
from accelerate import init_empty_weights

from hiera_hf import HieraConfig

# A 64x64 MAE with 4x4 mask units: builds and runs in milliseconds.
TINY_MAE = {
    "embed_dim": 16,
    "num_heads": (1, 1, 2, 2),
    "depths": (1, 1, 1, 1),
    "image_size": (64, 64),
    "patch_size": (3, 3),
    "patch_stride": (2, 2),
    "patch_padding": (1, 1),
    "decoder_hidden_size": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}


def tiny_mae_config(**kwargs) -> HieraConfig:
    """`TINY_MAE` with `kwargs` over the `mae_hiera_tiny_224` preset."""
    return HieraConfig.from_preset("mae_hiera_tiny_224", **{**TINY_MAE, **kwargs})


def pixels(size: HieraConfig | tuple[int, ...], batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Standard-normal input `(batch, channels, *image_size)` for a config, or `(batch, 3, *size)` for a size."""
    channels, size = (size.num_channels, size.image_size) if isinstance(size, HieraConfig) else (3, size)
    return torch.randn(batch, channels, *size, generator=torch.Generator().manual_seed(seed))


def randomize_meta_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter of Meta's model in one cheap pass (much faster than Meta's truncated-normal
    initialisation for the 700M-parameter variants) and return it in eval mode.

    Weights, biases, position embeddings and the mask token get normal(0, 0.02) values (Meta zero-initialises some:
    here every parameter matters); LayerNorm scales lie around 1; a classifier head gets std 1, so that its logits
    are far from 0 (Meta initialises it ~0).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(0.0, 1.0 if name.startswith("head.") else 0.02, generator=generator)
            if param.ndim == 1 and "norm" in name and name.endswith("weight"):
                param.add_(1.0)
    return model.eval()


def meta_model(variant: str | None = None, seed: int = 0, **kwargs) -> torch.nn.Module:
    """Meta's model with random weights (`randomize_meta_weights`): an official variant by name (e.g.
    `"hiera_tiny_224"`, `"mae_hiera_base_16x224"`), or `hiera.Hiera(**kwargs)` for a custom architecture. Built
    without Meta's initialisation (every weight is drawn afterwards)."""
    with init_empty_weights():
        model = getattr(hiera, variant)(pretrained=False) if variant is not None else hiera.Hiera(**kwargs)
    return randomize_meta_weights(model.to_empty(device="cpu"), seed)


def save_meta_checkpoint(model: torch.nn.Module, path) -> None:
    """Meta's `.pth` layout: `{"model_state": state_dict}`."""
    torch.save({"model_state": model.state_dict()}, path)
