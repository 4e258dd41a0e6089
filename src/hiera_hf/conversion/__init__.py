"""Pure functions that turn official and transformers-format checkpoints into hiera-hf state dicts."""

from .hiera import convert_meta_hiera_state_dict

__all__ = ["convert_meta_hiera_state_dict"]
