"""Make a saved Hiera folder loadable without hiera-hf, through `trust_remote_code=True`.

transformers' remote-code mechanism: the folder carries the Python files that define its classes, and the
`auto_map` of `config.json` / `preprocessor_config.json` names them, e.g.
`AutoModel.from_pretrained(folder, trust_remote_code=True)`. With hiera-hf imported, the registered
classes are used and the copied files are ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers.dynamic_module_utils import custom_object_save

from .. import image_utils
from ..io_utils import atomic_write, staged_folder
from . import configuration_hiera, image_processing_hiera, modeling_hiera, modeling_hiera_mae

# Auto class -> class. The folder of any head answers all of them (the weights decide what loads).
_AUTO_MAP = {
    "AutoConfig": configuration_hiera.HieraConfig,
    "AutoModel": modeling_hiera.HieraModel,
    "AutoModelForImageClassification": modeling_hiera.HieraForImageClassification,
    "AutoModelForVideoClassification": modeling_hiera.HieraForVideoClassification,
    "AutoBackbone": modeling_hiera.HieraBackbone,
    "AutoModelForPreTraining": modeling_hiera_mae.HieraForPreTraining,
}


# The package import of `image_processing_hiera.py`, rewritten for the flat remote-code folder (see
# `_save_processor_code`).
_IMAGE_UTILS_IMPORT = "from ..image_utils import "


def _class_ref(cls: type) -> str:
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def _add_auto_map(json_path: Path, auto_map: dict[str, str]) -> None:
    data = json.loads(json_path.read_text())
    data["auto_map"] = {**data.get("auto_map", {}), **auto_map}
    atomic_write(json_path, lambda partial: Path(partial).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def _save_processor_code(folder: Path) -> list[Path]:
    """Writes `image_processing_hiera.py` and the `image_utils.py` it imports into the folder.

    transformers' `custom_object_save` copies a module with its same-folder imports (`from .x import`) only, and
    the processor imports the package-level `hiera_hf.image_utils` (`from ..image_utils import`). The remote-code
    folder is flat, so `image_utils.py` (no relative imports of its own) is copied beside the processor and that one
    import line becomes `from .image_utils import`, which transformers then resolves in the folder when loading.
    """
    source = Path(image_processing_hiera.__file__).read_text()
    if source.count(_IMAGE_UTILS_IMPORT) != 1:
        raise RuntimeError(f"image_processing_hiera.py must import hiera_hf.image_utils once as {_IMAGE_UTILS_IMPORT!r}")
    files = {
        folder / "image_processing_hiera.py": source.replace(_IMAGE_UTILS_IMPORT, "from .image_utils import "),
        folder / "image_utils.py": Path(image_utils.__file__).read_text(),
    }
    for path, text in files.items():
        atomic_write(path, lambda partial, text=text: Path(partial).write_text(text))
    return list(files)


def add_remote_code(folder: str | os.PathLike) -> list[Path]:
    """Adds remote code to a folder written by `save_pretrained` (model, and optionally `HieraImageProcessor`).

    Copies `modeling_hiera.py`, `modeling_hiera_mae.py` and the files they import (relative imports only),
    sets the `auto_map` of `config.json` (AutoConfig, AutoModel, AutoModelForImageClassification,
    AutoModelForVideoClassification, AutoBackbone, AutoModelForPreTraining) and, when `preprocessor_config.json` names
    `HieraImageProcessor`, copies `image_processing_hiera.py` with `image_utils.py` and sets its `AutoImageProcessor`
    entry. Video processors are not shipped as
    remote code (they need `hiera_hf.video_io`). Returns the copied files.
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found; save the model with save_pretrained first")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type != configuration_hiera.HieraConfig.model_type:
        raise ValueError(f"{config_path} is not a hiera-hf Hiera config (model_type={model_type!r})")
    one_class_per_module = {cls.__module__: cls for cls in _AUTO_MAP.values()}.values()
    files = {path for cls in one_class_per_module for path in custom_object_save(cls, folder)}
    _add_auto_map(config_path, {auto: _class_ref(cls) for auto, cls in _AUTO_MAP.items()})
    processor_path = folder / "preprocessor_config.json"
    processor_class = image_processing_hiera.HieraImageProcessor
    if processor_path.is_file() and json.loads(processor_path.read_text()).get("image_processor_type") == (
        processor_class.__name__
    ):
        files.update(_save_processor_code(folder))
        _add_auto_map(processor_path, {"AutoImageProcessor": _class_ref(processor_class)})
    return sorted(files)


def save_for_hub(model, save_directory: str | os.PathLike, image_processor=None, video_processor=None) -> Path:
    """Saves `model` and its processors with remote code (see `add_remote_code`), atomically
    (`io_utils.staged_folder`): everything is written to a hidden folder beside `save_directory`, then renamed. `save_directory` must not
    exist or be empty. Returns its path."""
    if not isinstance(model, modeling_hiera.HieraPreTrainedModel):
        raise TypeError(f"save_for_hub expects a hiera-hf Hiera model, got {type(model).__name__}")
    target = Path(save_directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} already exists and is not an empty folder")
    with staged_folder(target, overwrite=True) as staging:  # replaces an empty folder only
        model.save_pretrained(staging)
        for processor in (image_processor, video_processor):
            if processor is not None:
                processor.save_pretrained(staging)
        add_remote_code(staging)
    return target


__all__ = ["add_remote_code", "save_for_hub"]
