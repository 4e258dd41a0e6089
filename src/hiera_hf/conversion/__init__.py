"""Pure functions that turn official and transformers-format checkpoints into hiera-hf models and folders."""

from .export import (
    convert_hiera,
    convert_sam2,
    model_card,
    preprocessor_config,
    sam2_model_card,
    sam2_preprocessor_config,
)
from .hiera import (
    config_from_transformers,
    convert_meta_hiera_state_dict,
    convert_transformers_hiera_state_dict,
    load_meta_state_dict,
)
from .sam2 import convert_meta_sam2_state_dict, convert_transformers_sam2_state_dict, sam2_config_from_transformers
from .verify import (
    ParityReport,
    verify_against_meta,
    verify_against_transformers,
    verify_sam2_against_meta,
    verify_sam2_against_transformers,
)

__all__ = [
    "ParityReport",
    "config_from_transformers",
    "convert_hiera",
    "convert_sam2",
    "convert_meta_hiera_state_dict",
    "convert_meta_sam2_state_dict",
    "convert_transformers_sam2_state_dict",
    "convert_transformers_hiera_state_dict",
    "load_meta_state_dict",
    "model_card",
    "preprocessor_config",
    "sam2_config_from_transformers",
    "sam2_model_card",
    "sam2_preprocessor_config",
    "verify_against_meta",
    "verify_against_transformers",
    "verify_sam2_against_meta",
    "verify_sam2_against_transformers",
]
