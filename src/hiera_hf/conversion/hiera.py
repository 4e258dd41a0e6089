"""Hiera checkpoints -> hiera-hf: key renaming, config translation, loading with clear errors.

Two sources: Meta's official `.pth` files (`hiera-transformer`, `{"model_state": ...}`) and transformers-format
folders (`facebook/hiera-*-hf`: transformers' `HieraConfig` + `model.safetensors`). Transformers' names are first
mapped to Meta's, so that one table (Meta -> ours) is the single source of truth for our names.
"""

from __future__ import annotations

import contextlib
import re
import zipfile
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file

from ..hiera import HieraConfig, HieraForImageClassification, HieraForVideoClassification, HieraModel
from ..hiera.model_folder import check_model_folder

# Meta name (regex) -> our name. Trunk weights live under `hiera.`; the MAE modules keep Meta's names.
_META_HIERA_RULES: list[tuple[str, str]] = [
    (r"^pos_embed$", "hiera.embeddings.position_embeddings"),
    (r"^pos_embed_spatial$", "hiera.embeddings.position_embeddings_spatial"),
    (r"^pos_embed_temporal$", "hiera.embeddings.position_embeddings_temporal"),
    (r"^patch_embed\.proj\.(weight|bias)$", r"hiera.embeddings.patch_embeddings.\1"),
    (r"^blocks\.(\d+)\.(.+)$", r"hiera.encoder.blocks.\1.\2"),
    (r"^norm\.(weight|bias)$", r"hiera.norm.\1"),
    (r"^head\.projection\.(weight|bias)$", r"classifier.\1"),
    (r"^(encoder_norm|decoder_embed|decoder_norm|decoder_pred)\.(weight|bias)$", r"\1.\2"),
    (r"^(mask_token|decoder_pos_embed)$", r"\1"),
    (r"^multi_scale_fusion_heads\.(\d+)\.(weight|bias)$", r"multi_scale_fusion_heads.\1.\2"),
    (r"^decoder_blocks\.(\d+)\.(.+)$", r"decoder_blocks.\1.\2"),
]

# transformers name (regex) -> Meta's name. Encoder blocks are numbered per stage there (handled separately).
_TRANSFORMERS_HIERA_RULES: list[tuple[str, str]] = [
    (r"^hiera\.embeddings\.position_embeddings$", "pos_embed"),
    (r"^hiera\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^hiera\.pooler\.layernorm\.", "norm."),
    (r"^classifier\.", "head.projection."),
    (r"^encoder_norm\.", "encoder_norm."),
    (r"^multiscale_fusion\.multi_scale_fusion_heads\.", "multi_scale_fusion_heads."),
    (r"^decoder\.decoder_embeddings\.", "decoder_embed."),
    (r"^decoder\.mask_token$", "mask_token"),
    (r"^decoder\.decoder_position_embeddings$", "decoder_pos_embed"),
    (r"^decoder\.decoder_block\.layers\.", "decoder_blocks."),
    (r"^decoder\.decoder_norm\.", "decoder_norm."),
    (r"^decoder\.decoder_pred\.", "decoder_pred."),
]
_TRANSFORMERS_BLOCK_NAMES = {"layernorm_before.": "norm1.", "layernorm_after.": "norm2."}
_TRANSFORMERS_STAGE_KEY = re.compile(r"^hiera\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)$")

# Our `HieraConfig` fields that transformers' `HieraConfig` shares (same name, same meaning).
_SHARED_CONFIG_FIELDS = (
    "image_size", "num_channels", "embed_dim", "num_heads", "depths", "embed_dim_multiplier", "num_query_pool",
    "query_stride", "masked_unit_size", "masked_unit_attention", "patch_size", "patch_stride", "patch_padding",
    "mlp_ratio", "drop_path_rate", "hidden_act", "layer_norm_eps", "initializer_range", "decoder_hidden_size",
    "decoder_depth", "decoder_num_heads", "mask_ratio", "normalize_pixel_loss", "id2label", "label2id",
)  # fmt: skip

# Keys of a classifier that an MAE-only (trunk) checkpoint cannot provide: they are newly initialised.
CLASSIFIER_HEAD_KEYS = ("hiera.norm.weight", "hiera.norm.bias", "classifier.weight", "classifier.bias")
_MAE_ONLY_PREFIXES = ("encoder_norm.", "multi_scale_fusion_heads.", "decoder_", "mask_token")

# What `convert --from-transformers` reads: transformers' Hiera and SAM 2 folders (facebook/hiera-*-hf,
# facebook/sam2*-hiera-*).
TRANSFORMERS_MODEL_TYPES = ("hiera", "sam2", "sam2_video")
TRANSFORMERS_NEEDED = "--from-transformers needs a transformers Hiera or SAM 2 folder (facebook/hiera-*-hf, facebook/sam2*)"


def convert_meta_hiera_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of Meta's Hiera / MAE state dict (the `"model_state"` entry of an official `.pth`).

    Raises `KeyError` listing every key that no rule knows.
    """
    return _rename(state_dict, _META_HIERA_RULES, "Hiera checkpoint")


def convert_transformers_hiera_state_dict(
    state_dict: dict[str, torch.Tensor], depths: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Rename the keys of a transformers-format Hiera (`HieraModel`, `HieraForImageClassification` or
    `HieraForPreTraining`) to ours; `depths` (blocks per stage) numbers the blocks globally, as Meta does."""
    if not any(key.startswith("hiera.") for key in state_dict):  # a bare `HieraModel`
        state_dict = {f"hiera.{key}": value for key, value in state_dict.items()}
    offsets = [sum(depths[:stage]) for stage in range(len(depths))]
    meta, other = {}, {}
    for key, value in state_dict.items():
        match = _TRANSFORMERS_STAGE_KEY.match(key)
        if match and int(match[1]) < len(depths):
            meta[f"blocks.{offsets[int(match[1])] + int(match[2])}.{match[3]}"] = value
        else:
            other[key] = value
    meta.update(_rename(other, _TRANSFORMERS_HIERA_RULES, "transformers Hiera checkpoint"))
    for old, new in _TRANSFORMERS_BLOCK_NAMES.items():
        meta = {key.replace(f".{old}", f".{new}"): value for key, value in meta.items()}
    return convert_meta_hiera_state_dict(meta)


def _rename(state_dict: dict, rules: list[tuple[str, str]], what: str) -> dict:
    converted, unknown = {}, []
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            if re.match(pattern, key):
                converted[re.sub(pattern, replacement, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"Unknown keys in {what}: {', '.join(sorted(unknown))}")
    return converted


def config_from_transformers(transformers_config: dict) -> HieraConfig:
    """Our `HieraConfig` from a transformers `HieraConfig` (as the dict of its `config.json`)."""
    if transformers_config.get("model_type") != "hiera":
        raise ValueError(
            f"Expected a transformers Hiera config (model_type 'hiera'), got model_type "
            f"{transformers_config.get('model_type')!r}"
        )
    attention = tuple(transformers_config.get("masked_unit_attention", (True, True, False, False)))
    num_query_pool = transformers_config.get("num_query_pool", 3)
    for stage in range(1, len(attention)):
        # transformers' first block of a stage attends within units if this stage OR the previous one does, and its
        # unit shrinks at every stage; Meta (and we) use the previous stage's setting and shrink only when pooling.
        # The official configs never hit the cases where the two differ.
        if attention[stage] and (not attention[stage - 1] or stage > num_query_pool):
            raise ValueError(
                f"masked_unit_attention={attention} with num_query_pool={num_query_pool} behaves differently in "
                "transformers and in Meta's Hiera; only configs where mask-unit attention stops at a stage "
                "change and stays within pooled stages can be converted"
            )
    kwargs = {name: transformers_config[name] for name in _SHARED_CONFIG_FIELDS if name in transformers_config}
    if "id2label" in kwargs:
        kwargs["id2label"] = {int(index): label for index, label in kwargs["id2label"].items()}
    return HieraConfig(**kwargs)


def load_meta_state_dict(path: str | Path, entry: str = "model_state") -> dict[str, torch.Tensor]:
    """The state dict of an official checkpoint, loaded with `weights_only=True` (memory-mapped): the
    `"model_state"` of a Hiera `.pth`, or with `entry="model"` the `"model"` of a SAM 2 `.pt`."""
    path = Path(path)
    kind = "SAM 2" if entry == "model" else "Hiera"
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    try:
        # Memory-mapping needs the zip format (every torch.save since 1.6); older files are read normally.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # anything torch.load raises on a file is about the file
        raise ValueError(_unreadable_checkpoint(path, error)) from None
    if not isinstance(checkpoint, dict) or entry not in checkpoint:
        found = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(
            f"{path} is not an official {kind} checkpoint: expected a dict with a {entry!r} entry, found {found}"
        )
    state = checkpoint[entry]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: {entry!r} must map parameter names to tensors")
    return state


def _unreadable_checkpoint(path: Path, error: Exception) -> str:
    """Why `torch.load(path, weights_only=True)` failed, without torch's advice to retry with `weights_only=False`
    (which would run whatever code the file holds)."""
    text = str(error)
    # torch's own lines are advice (retry with weights_only=False, file an issue, read the docs): keep the rest.
    advice = ("weights_only", "Weights only", "WeightsUnpickler", "torch.load", "trusted source")
    reasons = [line.strip() for line in text.splitlines() if line.strip() and not any(a in line for a in advice)]
    if "GLOBAL" in text:
        return (
            f"{path} holds Python objects besides tensors, which hiera-hf does not load (it reads checkpoints "
            f"with torch.load(weights_only=True)){': ' + reasons[0] if reasons else ''}"
        )
    return (
        f"{path} is not a readable PyTorch checkpoint (corrupt, truncated or not a .pth/.pt file): "
        f"{type(error).__name__}{': ' + reasons[0] if reasons else ''}"
    )


def load_transformers_folder(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """`(config dict, state dict)` of a transformers-format folder (`config.json` + `model.safetensors`), checked
    first as every model folder is (`hiera.model_folder.check_model_folder`: kind, safetensors, dtype, finite)."""
    folder = Path(folder)
    config = check_model_folder(folder, TRANSFORMERS_MODEL_TYPES, TRANSFORMERS_NEEDED)
    return config, load_file(folder / "model.safetensors")


def model_class_for(config: HieraConfig, architecture: str | None = None) -> type:
    """The hiera-hf class for a config: MAE configs -> `HieraForPreTraining`, `architecture="HieraModel"` -> the
    bare encoder, otherwise the image or video classifier."""
    if config.decoder_hidden_size is not None:
        from ..hiera.modeling_hiera_mae import HieraForPreTraining  # written separately; imported on demand

        return HieraForPreTraining
    if architecture == "HieraModel":
        return HieraModel
    return HieraForVideoClassification if config.is_video else HieraForImageClassification


def build_model(
    model_class: type, config: HieraConfig, state_dict: dict[str, torch.Tensor], allow_new_head: bool = False
) -> tuple[torch.nn.Module, list[str]]:
    """Instantiate `model_class(config)` holding `state_dict` (our names) and return `(model in eval mode, notes)`.

    Checks every key and shape first and raises `ValueError` naming missing keys, unexpected keys and shape
    mismatches. With `allow_new_head`, a classifier may lack its head (an MAE trunk checkpoint): the head is
    newly initialised, MAE-only weights are dropped, and the notes say so.
    """
    if model_class is HieraModel:
        state_dict = {key.removeprefix("hiera."): value for key, value in state_dict.items()}
    with init_empty_weights():
        expected = {key: tuple(value.shape) for key, value in model_class(config).state_dict().items()}
    notes = []
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    new_head = [key for key in missing if key in CLASSIFIER_HEAD_KEYS] if allow_new_head else []
    if new_head:
        dropped = [key for key in unexpected if key.startswith(_MAE_ONLY_PREFIXES)]
        missing = [key for key in missing if key not in new_head]
        unexpected = [key for key in unexpected if key not in dropped]
        notes.append(
            f"The checkpoint has no classification head: {', '.join(new_head)} are NEWLY INITIALISED "
            "(fine-tune before use)."
        )
        if dropped:
            notes.append(f"Dropped {len(dropped)} MAE pre-training weights (decoder, fusion heads) not used here.")
    shapes = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {expected[key]}"
        for key in expected
        if key in state_dict and tuple(state_dict[key].shape) != expected[key]
    ]
    problems = [
        f"{len(items)} {what}: {sep.join(items[:8])}{f' (and {len(items) - 8} more)' if len(items) > 8 else ''}"
        for what, items, sep in (("missing keys", missing, ", "), ("unexpected keys", unexpected, ", "),
                                 ("wrong shapes", shapes, "; "))
        if items
    ]  # fmt: skip
    if problems:
        raise ValueError(f"Checkpoint does not fit {model_class.__name__}: " + " | ".join(problems))
    # When every weight comes from the checkpoint, create the parameters empty and adopt the checkpoint's tensors
    # (no random initialisation, no copy).
    with init_empty_weights() if not new_head else contextlib.nullcontext():
        model = model_class(config)
    model.load_state_dict(state_dict, strict=not new_head, assign=True)
    return model.eval(), notes
