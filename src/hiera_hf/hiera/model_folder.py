"""The one check of a saved model folder before its weights are loaded, used by every path that loads them: the
`from_pretrained` of hiera-hf's Hiera and SAM 2 classes, the command line (`hub.load_pretrained`) and the ONNX
export.

A folder passes when its `config.json` is a JSON object whose `model_type` is one the caller loads (a folder of
another family, or relabelled, is named as such), and its weights are safetensors (`model.safetensors`, or the
shards of `model.safetensors.index.json`; pickled `pytorch_model.bin` files are refused: unpickling can run code)
whose every tensor is floating point, of the config's `dtype` when it names one, and finite (int8, NaN or infinite
weights would otherwise be cast or used silently). Every problem is a `ValueError` naming the file
(`FileNotFoundError` for a missing one).

It lives beside `modeling_hiera.py` because that module ships as remote code (a flat folder, relative imports only),
so a folder loaded with `trust_remote_code=True` is checked the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch

# model_type -> what it is, for messages about a folder of the wrong kind.
MODEL_KINDS = {
    "hiera_hf": "Hiera",
    "hiera": "transformers Hiera",
    "hiera_hf_sam2": "SAM 2",
    "sam2": "transformers SAM 2",
    "sam2_video": "transformers SAM 2 video",
}
PICKLED_WEIGHTS = ("pytorch_model.bin", "model.pt", "model.pth")


def read_config(path: str | os.PathLike) -> dict:
    """A `config.json` as a dict; `ValueError` naming the file when it is not a JSON object."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a text file ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object (a model config), got {type(config).__name__}")
    return config


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder: `model.safetensors`, or the shards its index names."""
    index = folder / "model.safetensors.index.json"
    if not (folder / "model.safetensors").is_file() and index.is_file():
        weight_map = read_config(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no weight_map of tensor names to files")
        return [folder / name for name in sorted(set(map(str, weight_map.values())))]
    return [folder / "model.safetensors"]


def check_weights(path: Path, dtype: str | None, values: bool = True) -> None:
    """The safetensors file `path` is complete and, with `values`, every tensor is floating point (of `dtype`, e.g.
    "float32", when given) and finite (this reads them all); `ValueError` naming the file and the first tensor that
    is not, or saying the file is damaged."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} has no {path.name}")
    try:
        with safe_open(path, "pt") as handle:
            for name in handle.keys() if values else ():
                tensor = handle.get_tensor(name)
                if not tensor.is_floating_point() or (dtype is not None and tensor.dtype != getattr(torch, dtype)):
                    wanted = dtype or "floating point"
                    raise ValueError(
                        f"{path} holds {name} as {str(tensor.dtype).removeprefix('torch.')}, but the model's weights "
                        f"are {wanted}: not weights saved by this model (quantized or edited?)"
                    )
                if not bool(torch.isfinite(tensor).all()):
                    raise ValueError(f"{path} holds NaN or infinite values in {name}: the weights are damaged")
    except (SafetensorError, OSError, RuntimeError) as error:  # a bad header, a short file, an unreadable tensor
        raise ValueError(f"{path} is damaged or truncated: {error}") from None


def check_model_folder(
    folder: str | os.PathLike, model_types: tuple[str, ...], needed: str, values: bool = True
) -> dict:
    """The `config.json` of a model folder, checked with its weights before loading (see the module docstring);
    `needed` completes the message about a folder of the wrong kind (e.g. "segment needs a SAM 2 folder").
    `values=False` checks the weight files' headers only (the `from_pretrained` of our classes reads the values)."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} is not a model folder: it has no config.json")
    config = read_config(config_file)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in model_types:
        kind = MODEL_KINDS.get(model_type, f"model_type {model_type!r}") if isinstance(model_type, str) else None
        found = f"holds a {kind} model" if kind else f"has model_type {model_type!r} in its config.json"
        raise ValueError(f"{folder} {found}, not the kind needed here: {needed}")
    files = weight_files(folder)
    if not any(path.is_file() for path in files) and any((folder / name).is_file() for name in PICKLED_WEIGHTS):
        raise ValueError(
            f"{folder} holds pickled PyTorch weights, not model.safetensors; hiera-hf loads safetensors only "
            "(pickles can run code): convert the original checkpoint with `hiera-hf convert`"
        )
    dtype = config.get("dtype", config.get("torch_dtype"))
    if dtype is not None and not (isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype)):
        raise ValueError(f"{config_file} has dtype {dtype!r}, not a torch dtype such as 'float32'")
    for path in files:
        check_weights(path, dtype, values)
    return config


class MismatchedWeightsError(RuntimeError, ValueError):
    """Weights whose shapes do not fit the config: a `RuntimeError` as transformers raises it (its contract), and a
    `ValueError` (a user error: one line on the command line)."""


@contextlib.contextmanager
def checked_loading(model_class: type, path: str | os.PathLike | None, kwargs: dict) -> Iterator[None]:
    """Around `model_class.from_pretrained(path, **kwargs)`: a local folder is checked first (`check_model_folder`,
    and its `config.json` must make a config of the class; the command line and the app download a Hub repo first
    and load the local copy), and weights whose shapes do not fit the config raise a `MismatchedWeightsError`
    saying so."""
    folder = Path(path, kwargs.get("subfolder") or "") if isinstance(path, (str, os.PathLike)) else None
    if folder is not None and folder.is_dir():
        model_type = model_class.config_class.model_type
        kind = f"{MODEL_KINDS[model_type]} (model_type {model_type!r})"
        check_model_folder(folder, (model_type,), f"{model_class.__name__} loads {kind} folders")
        if kwargs.get("config") is None:
            try:
                model_class.config_class.from_pretrained(folder)
            except (TypeError, ValueError, KeyError, AttributeError) as error:
                raise ValueError(f"{folder / 'config.json'} is not a valid {kind} config: {error}") from error
    try:
        yield
    except RuntimeError as error:
        if "ignore_mismatched_sizes" not in str(error):
            raise
        raise MismatchedWeightsError(
            f"The weights in {path} do not fit its config.json (tensor shapes differ, see the load report above): "
            "the config may have been edited or the weights belong to another model; to give the model another "
            "shape on purpose (e.g. a new head), pass ignore_mismatched_sizes=True to from_pretrained"
        ) from error


__all__ = [
    "MODEL_KINDS",
    "MismatchedWeightsError",
    "check_model_folder",
    "checked_loading",
    "check_weights",
    "read_config",
    "weight_files",
]
