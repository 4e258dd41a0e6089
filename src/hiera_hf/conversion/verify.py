"""Parity of a converted model with the code its weights came from (Meta's `hiera` or transformers' Hiera).

Both models get the same random input (fixed seed, batch 1); the report holds the max absolute error of every
compared output. Conversion fails when one exceeds `TOLERANCE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import torch
from accelerate import init_empty_weights

from ..hiera.presets import HieraPreset

TOLERANCE = 1e-4  # fp32, absolute


@dataclass
class ParityReport:
    """Max absolute errors of the converted model against a reference, by output name."""

    reference: str
    errors: dict[str, float] = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        return max(self.errors.values())

    def check(self, tolerance: float = TOLERANCE) -> None:
        """Raise `ValueError` naming every output whose error exceeds `tolerance`."""
        failed = {name: error for name, error in self.errors.items() if not error <= tolerance}  # catches NaN
        if failed:
            details = ", ".join(f"{name} {error:.3g}" for name, error in failed.items())
            raise ValueError(f"Converted model differs from {self.reference} beyond {tolerance:g}: {details}")

    def to_markdown(self) -> str:
        rows = [f"| {name} | {error:.2e} |" for name, error in self.errors.items()]
        return "\n".join(["| output | max abs error |", "|---|---|", *rows])


def _max_abs(ours: torch.Tensor, reference: torch.Tensor) -> float:
    if ours.shape != reference.shape:
        raise ValueError(f"shape {tuple(ours.shape)} differs from the reference's {tuple(reference.shape)}")
    return (ours.float() - reference.float()).abs().max().item()


def random_input(num_channels: int, size: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The verification input: standard normal pixels `(1, num_channels, *size)`."""
    return torch.randn(1, num_channels, *size, generator=torch.Generator().manual_seed(seed))


def _stage_errors(report: ParityReport, ours: tuple[torch.Tensor, ...], reference: list[torch.Tensor]) -> None:
    if len(ours) != len(reference):
        raise ValueError(f"{len(ours)} stage outputs, the reference has {len(reference)}")
    for stage, (mine, theirs) in enumerate(zip(ours, reference), start=1):
        report.errors[f"stage {stage} features"] = _max_abs(mine, theirs)


class _Capture:
    """Keeps the output of a module's last call (a forward hook)."""

    def __init__(self, module: torch.nn.Module):
        self.output = None
        self.handle = module.register_forward_hook(lambda _module, _args, output: setattr(self, "output", output))


@torch.no_grad()
def verify_against_meta(
    model: torch.nn.Module, preset: HieraPreset, meta_state_dict: dict[str, torch.Tensor], new_head: bool = False
) -> ParityReport:
    """Build Meta's `preset.name` model (`hiera` / `hiera.hiera_mae`) holding `meta_state_dict` and compare.

    Classifiers: logits (Meta's head output before its eval-mode softmax), probabilities (Meta's eval output
    against our `logits.softmax(-1)`) and every stage's features. MAE models: the same keep-mask in both, then
    the predictions on hidden patches, the loss and every stage's (kept-unit) features. With `new_head`, Meta's
    model gets our newly initialised head so that the whole network is still compared.
    """
    import hiera  # the reference (test extra); callers check that it is installed

    constructor = getattr(hiera.hiera_mae if preset.is_mae else hiera, preset.name)
    with init_empty_weights():
        reference = constructor()
    reference.load_state_dict(meta_state_dict, strict=not new_head, assign=True)
    if new_head:
        reference.norm.load_state_dict(model.hiera.norm.state_dict(), assign=True)
        reference.head.projection.load_state_dict(model.classifier.state_dict(), assign=True)
    reference.eval()
    report = ParityReport(f"Meta's hiera.{preset.name} (hiera-transformer {version('hiera-transformer')})")
    pixel_values = random_input(model.config.num_channels, model.config.image_size)
    encoder = _Capture(model.hiera)
    try:
        if preset.is_mae:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                mask = reference.get_random_mask(pixel_values, preset.config["mask_ratio"])
            loss, pred, _label, _mask = reference(pixel_values, mask=mask)
            _, intermediates = hiera.Hiera.forward(reference, pixel_values, mask=mask, return_intermediates=True)
            outputs = model(pixel_values, mask=mask)
            report.errors["predictions (hidden patches)"] = _max_abs(outputs.logits[outputs.loss_mask], pred)
            report.errors["loss"] = _max_abs(outputs.loss, loss)
        else:
            head = _Capture(reference.head.projection)
            probabilities, intermediates = reference(pixel_values, return_intermediates=True)
            head.handle.remove()
            logits = model(pixel_values).logits
            report.errors["logits"] = _max_abs(logits, head.output)
            report.errors["probabilities"] = _max_abs(logits.softmax(-1), probabilities)
        _stage_errors(report, encoder.output.intermediates, intermediates)
    finally:
        encoder.handle.remove()
    return report


@torch.no_grad()
def verify_against_transformers(model: torch.nn.Module, folder: str | Path, architecture: str) -> ParityReport:
    """Compare with transformers' own Hiera loaded from `folder`: logits and probabilities for classifiers,
    predictions and loss under the same masking noise for MAE models, and every stage's features (transformers'
    `reshaped_hidden_states`) of the unmasked encoder."""
    import transformers

    report = ParityReport(f"transformers' {architecture} ({transformers.__version__})")
    pixel_values = random_input(model.config.num_channels, model.config.image_size)
    trunk = getattr(model, "hiera", model)
    encoder = _Capture(trunk)
    try:
        if architecture == "HieraForImageClassification":
            reference = transformers.HieraForImageClassification.from_pretrained(folder).eval()
            theirs = reference(pixel_values).logits
            ours = model(pixel_values).logits
            report.errors["logits"] = _max_abs(ours, theirs)
            report.errors["probabilities"] = _max_abs(ours.softmax(-1), theirs.softmax(-1))
            reference = reference.hiera
        elif architecture == "HieraForPreTraining":
            reference = transformers.HieraForPreTraining.from_pretrained(folder).eval()
            noise = torch.rand(1, model.config.num_mask_units, generator=torch.Generator().manual_seed(0))
            theirs, ours = reference(pixel_values, noise=noise), model(pixel_values, noise=noise)
            report.errors["predictions"] = _max_abs(ours.logits, theirs.logits)
            report.errors["loss"] = _max_abs(ours.loss, theirs.loss)
            # transformers' MAE encoder always masks: compare the stages on its unmasked twin
            masked_trunk = reference.hiera
            reference = transformers.HieraModel(reference.config, add_pooling_layer=False).eval()
            reference.load_state_dict(masked_trunk.state_dict())
            trunk(pixel_values)
        else:
            reference = transformers.HieraModel.from_pretrained(folder).eval()
            trunk(pixel_values)
        stages = reference(pixel_values, output_hidden_states=True).reshaped_hidden_states[1:]
        _stage_errors(report, encoder.output.intermediates, list(stages))
    finally:
        encoder.handle.remove()
    return report
