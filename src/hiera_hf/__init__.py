"""hiera-hf: Meta's Hiera and SAM 2 behind the Hugging Face interfaces.

Importing the package registers its configs, models and processors with transformers' Auto classes, so that
`import hiera_hf` followed by `AutoModel.from_pretrained(folder)` loads a hiera-hf folder. The registration needs
transformers (and torch), so it happens at once if transformers is already imported, otherwise right after it is
(`_RegisterWithTransformers`). Until then `import hiera_hf` stays light, and each public name below is imported on
first use: `hiera-hf --help` does not import torch.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    **dict.fromkeys(
        (
            "HIERA_PRESETS",
            "HieraBackbone",
            "HieraConfig",
            "HieraForImageClassification",
            "HieraForPreTraining",
            "HieraForPreTrainingOutput",
            "HieraForVideoClassification",
            "HieraImageProcessor",
            "HieraModel",
            "HieraModelOutput",
            "HieraPreTrainedModel",
            "HieraVideoProcessor",
            "get_preset",
            "save_for_hub",
        ),
        ".hiera",
    ),
    **dict.fromkeys(
        (
            "SAM2_PRESETS",
            "Sam2Config",
            "Sam2HieraBackbone",
            "Sam2ImageProcessor",
            "Sam2Model",
            "Sam2VideoFrameOutput",
            "Sam2VideoFrameResult",
            "Sam2VideoModel",
            "Sam2VideoSession",
            "TextDetector",
            "TextTracker",
            "segment_text",
        ),
        ".sam2",
    ),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


def _register() -> None:
    from .registration import register_auto_classes

    register_auto_classes()


class _RegisterWithTransformers(importlib.abc.MetaPathFinder):
    """Registers the Auto classes at the first moment both transformers and no module of ours is half-imported.

    It finds nothing itself: for `transformers` and our submodules it hands back the spec the other finders give,
    its loader wrapped so that `_register()` runs after the module has executed, once `transformers` is loaded
    and no module of ours is still executing (our config modules are what import transformers first when a
    hiera-hf class is used before any transformers import). Then it leaves `sys.meta_path`.
    """

    def __init__(self) -> None:
        self.executing = 0  # our submodules being executed (nested imports)

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        ours = fullname.startswith(f"{__name__}.")
        if not ours and fullname != "transformers":
            return None
        for finder in sys.meta_path:
            find = None if finder is self else getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            execute = spec.loader.exec_module

            def exec_module(module: ModuleType) -> None:
                self.executing += ours
                try:
                    execute(module)
                finally:
                    self.executing -= ours
                if not self.executing and "transformers" in sys.modules and self in sys.meta_path:
                    sys.meta_path.remove(self)
                    _register()

            spec.loader.exec_module = exec_module
        return spec


if "transformers" in sys.modules:
    _register()
else:
    sys.meta_path.insert(0, _RegisterWithTransformers())
