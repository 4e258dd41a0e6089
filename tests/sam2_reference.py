"""Shared by the SAM 2 video tests: Meta's models with random weights, converted into ours."""

import torch
from safetensors.torch import save_file

from hiera_hf.conversion.sam2 import convert_meta_sam2_state_dict
from hiera_hf.sam2 import Sam2Config, Sam2VideoModel


@torch.no_grad()
def randomize_meta_weights(meta: torch.nn.Module, score_shift: float) -> None:
    """Meta initialises biases and LayerNorm shifts to zero and the layer scales to 1e-6: randomise every 1-D tensor
    so that no path is trivially zero. Random weights also give every object about the same object score: spread
    the scores (x30) and shift them by `-score_shift` so that objects come out both present and absent."""
    for parameter in meta.parameters():
        if parameter.ndim <= 1:
            parameter.add_(0.1 * torch.randn_like(parameter))
    score_layer = meta.sam_mask_decoder.pred_obj_score_head.layers[2]
    score_layer.weight.mul_(30.0)
    score_layer.bias.sub_(score_shift)


def load_converted(meta: torch.nn.Module, config: Sam2Config, folder) -> tuple[Sam2VideoModel, dict]:
    """Convert Meta's weights into a folder and load it with `from_pretrained`; returns (model, loading info)."""
    config.save_pretrained(folder)
    converted = convert_meta_sam2_state_dict(meta.state_dict())
    save_file(
        {k: v.contiguous() for k, v in converted.items()}, folder / "model.safetensors", metadata={"format": "pt"}
    )
    return Sam2VideoModel.from_pretrained(folder, output_loading_info=True)
