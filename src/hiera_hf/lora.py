"""LoRA fine-tuning with PEFT (`pip install peft`): which modules of hiera-hf's models to adapt, and the calls the
fine-tuning examples make.

Default targets (`target_modules` of `peft.LoraConfig`, matched against module names):

- Hiera (classifiers, backbone, MAE): `qkv`, the fused query/key/value projection of every block (add `proj`,
  `fc1`, `fc2` for more capacity). A classifier's `classifier` head is trained in full beside the adapters.
- UperNet on a `HieraBackbone` (`examples/finetune_semantic_segmentation.py`): the backbone's `qkv`; its
  `decode_head` and `auxiliary_head` train in full.
- SAM 2 (image and video models): the trunk's `qkv`, and `q_proj` / `v_proj` of every attention of the mask
  decoder and, in the video model, of memory attention.

A model with adapters trains with the `Trainer` (and `Sam2VideoModelForTraining` under it) and tracks in
`Sam2VideoSession`; `merge_and_unload()` gives back a plain model of the same class, which saves, loads and exports
with `export-onnx` like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TARGETS = {"hiera_hf": ("qkv",), "upernet": ("qkv",), "hiera_hf_sam2": ("qkv", "q_proj", "v_proj")}
HEADS = ("classifier", "decode_head", "auxiliary_head")  # trained in full beside the adapters, where a model has them
ADAPTER_FOLDER = "lora_adapter"  # where the examples save the adapters, inside their output folder


def add_lora(
    model,
    r: int = 8,
    target_modules: list[str] | tuple[str, ...] | None = None,
    alpha: int | None = None,
    dropout: float = 0.0,
):
    """`model` (a hiera-hf model) with LoRA adapters of rank `r` on `target_modules` (default: `DEFAULT_TARGETS` of
    its model type) scaled by `alpha / r` (default `alpha = 2 * r`); only the adapters (and the model's `HEADS`)
    train. Returns a `peft.PeftModel`."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ImportError("LoRA needs PEFT: pip install peft") from error
    model_type = getattr(model.config, "model_type", None)
    if target_modules is None:
        if model_type not in DEFAULT_TARGETS:
            raise ValueError(f"No default LoRA targets for model type {model_type!r}: give target_modules")
        target_modules = DEFAULT_TARGETS[model_type]
    if r < 1:
        raise ValueError(f"The LoRA rank must be at least 1, got {r}")
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = sorted(set(target_modules) - names)
    if unknown:
        raise ValueError(f"{type(model).__name__} has no modules named {unknown} to adapt")
    heads = [name for name in HEADS if getattr(model, name, None) is not None and name not in target_modules]
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r if alpha is None else alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        modules_to_save=heads or None,
    )
    return get_peft_model(model, config)


@dataclass
class LoraArguments:
    """The fine-tuning examples' LoRA options (a dataclass for `HfArgumentParser`)."""

    lora_r: int = field(default=0, metadata={"help": "LoRA rank (PEFT adapters); 0 trains the weights themselves."})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA scale numerator (default 2 * rank)."})
    lora_target_modules: str | None = field(
        default=None,
        metadata={"help": "Comma-separated names of the modules to adapt (default: hiera_hf.lora.DEFAULT_TARGETS)."},
    )

    def apply(self, model):
        """`model` with LoRA adapters when `lora_r` > 0, else `model` unchanged."""
        if not self.lora_r:
            return model
        targets = None
        if self.lora_target_modules:
            targets = [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]
        return add_lora(model, self.lora_r, targets, alpha=self.lora_alpha)


def merge_for_saving(trainer) -> None:
    """After training a `PeftModel` with `trainer`: save the adapters to `output_dir/lora_adapter`, then put the
    merged model in the trainer, so that `trainer.save_model()` writes a plain folder that loads without PEFT."""
    model = trainer.model
    if not hasattr(model, "merge_and_unload"):
        return
    if trainer.is_world_process_zero():
        model.save_pretrained(Path(trainer.args.output_dir) / ADAPTER_FOLDER)
    trainer.model = trainer.model_wrapped = model.merge_and_unload()


def base_model(model):
    """The hiera-hf model inside a `peft.PeftModel` (its adapters still in place), or `model` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


__all__ = ["ADAPTER_FOLDER", "DEFAULT_TARGETS", "HEADS", "LoraArguments", "add_lora", "base_model", "merge_for_saving"]
