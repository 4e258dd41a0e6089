"""The position encodings of SAM 2, in one place. Functions of shapes and tensors only; the modules that use them
keep their own parameters and buffers (so the state-dict keys stay Meta's).

- `sine_position_encoding`: DETR-style normalised 2-D sine encoding of a grid (the image embedding for memory
  attention, the spatial memories).
- `sine_encoding_1d`: transformer sine encoding of scalar positions (the temporal distance of object pointers).
- `fourier_features`: random Fourier features of 2-D coordinates (the prompt encoder's points and dense grid).
- `axial_rope_angles` / `apply_rotary`: 2-D axial rotary encoding (memory attention's queries and keys).

(The Hiera trunk uses learned absolute position embeddings only: no sine encoding there.)
"""

from __future__ import annotations

import math

import torch


def _sine_frequencies(half: int, temperature: float, device: torch.device | None) -> torch.Tensor:
    """`temperature ** (2 * (i // 2) / half)` for `i < half`: consecutive channels share a frequency."""
    index = torch.arange(half, dtype=torch.float32, device=device)
    return temperature ** (2 * (index // 2) / half)


def sine_position_encoding(
    height: int, width: int, channels: int, device: torch.device, temperature: float = 10000.0
) -> torch.Tensor:
    """DETR-style normalised sine encoding of a `height x width` grid, `(1, channels, height, width)` float32:
    the first half of the channels encodes y, the second x, alternating sin and cos."""
    half = channels // 2
    scale = 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    y = y / (height + 1e-6) * scale
    x = x / (width + 1e-6) * scale
    dim_t = _sine_frequencies(half, temperature, device)

    def encode(pos: torch.Tensor) -> torch.Tensor:
        pos = pos[:, None] / dim_t
        return torch.stack((pos[:, 0::2].sin(), pos[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, half)
    pos_x = encode(x)[None, :, :].expand(height, width, half)
    return torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)[None]


def sine_encoding_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Transformer sine encoding of scalar positions: `(...,)` -> `(..., dim)` float32, sines then cosines."""
    angles = positions.float()[..., None] / _sine_frequencies(dim // 2, temperature, positions.device)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def fourier_features(coords: torch.Tensor, gaussian_matrix: torch.Tensor) -> torch.Tensor:
    """Random Fourier features of coordinates in [0, 1]: `(..., 2)` -> `(..., 2 * F)` for a `(2, F)` Gaussian
    matrix, sines then cosines, in the matrix's dtype. Computed in float32: the phases reach tens of radians, too
    coarse in bfloat16."""
    phases = 2 * math.pi * ((2 * coords.float() - 1) @ gaussian_matrix.float())
    return torch.cat([phases.sin(), phases.cos()], dim=-1).to(gaussian_matrix.dtype)


def axial_rope_angles(height: int, width: int, head_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    """Rotation angles of 2-D axial RoPE for a row-major `height x width` grid, `(height * width, head_dim // 2)`
    float32: channel pair `j` is rotated by `x * f_j` for the first `head_dim // 4` pairs and by `y * f_j` for the
    rest, with `f_j = theta ** (-4j / head_dim)`."""
    if head_dim % 4:
        raise ValueError(f"2-D rotary encoding needs a head size divisible by 4, got {head_dim}")
    exponents = torch.arange(0, head_dim, 4, device=device)[: head_dim // 4].float() / head_dim
    frequencies = 1.0 / theta**exponents
    index = torch.arange(height * width, device=device)
    x, y = (index % width).float(), torch.div(index, width, rounding_mode="floor").float()
    return torch.cat([torch.outer(x, frequencies), torch.outer(y, frequencies)], dim=-1)


def apply_rotary(hidden_states: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate the channel pairs `(2j, 2j + 1)` of `hidden_states` `(..., L, D)`, read as complex numbers, by the
    unit complex numbers `rotation` `(L, D // 2)` (one complex multiply: a third of the time of the same rotation
    in real arithmetic). Computed in float32 and returned in the input dtype."""
    pairs = torch.view_as_complex(hidden_states.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rotation).flatten(-2).to(hidden_states.dtype)


__all__ = [
    "apply_rotary",
    "axial_rope_angles",
    "fourier_features",
    "sine_encoding_1d",
    "sine_position_encoding",
]
