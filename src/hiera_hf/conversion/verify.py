"""Parity of a converted model with the code its weights came from (Meta's `hiera` or transformers' Hiera).

Both models get the same random input (fixed seed, batch 1); the report holds the max absolute error of every
compared output. Conversion fails when one exceeds `TOLERANCE`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
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


@contextlib.contextmanager
def reference_deprecations() -> Iterator[None]:
    """Silences the reference packages' own FutureWarnings while they are imported and built (`hiera` imports
    `timm.models.layers`, `sam2` calls `torch.jit.script`): nothing a user of `convert` can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


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
    with reference_deprecations():
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


def _relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """Max abs error over the reference's magnitude (at least 1): for mask logits, which reach tens."""
    return _max_abs(ours, reference) / max(1.0, reference.abs().max().item())


def sam2_verification_prompts(image_size: int) -> dict[str, dict[str, torch.Tensor]]:
    """The prompts of a SAM 2 verification, in model-input pixels: two clicks (positive and negative, multimask
    output) and a box (single-mask output, which may fall back to the best multimask output)."""
    points = torch.tensor([[[0.3, 0.4], [0.7, 0.6]]]) * image_size
    return {
        "points": {"input_points": points[None], "input_labels": torch.tensor([[[1, 0]]])},
        "box": {"input_boxes": torch.tensor([[[0.1, 0.15, 0.6, 0.5]]]) * image_size},
    }


def _sam2_errors(report: ParityReport, ours: dict, reference: dict) -> None:
    """Errors of image embeddings and of the decoder outputs of every prompt (`reference` has the same keys)."""
    for name, value in reference.items():
        error = _relative if name.startswith("mask logits") else _max_abs
        report.errors[name.replace("mask logits", "mask logits / max |logit|")] = error(ours[name], value)


def _sam2_ours(model: torch.nn.Module, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    embeddings = model.get_image_embeddings(pixel_values)
    outputs = {"image embeddings": embeddings.image_embeddings}
    for level, features in enumerate(embeddings.high_res_features or ()):
        outputs[f"high-res features {level}"] = features
    for name, prompt in sam2_verification_prompts(model.config.image_size).items():
        result = model(**embeddings, **prompt, multimask_output=name == "points")
        outputs[f"mask logits ({name})"] = result.pred_masks[0]
        outputs[f"IoU scores ({name})"] = result.iou_scores[0]
        outputs[f"object-score logits ({name})"] = result.object_score_logits[0]
    return outputs


@torch.no_grad()
def verify_sam2_against_meta(model: torch.nn.Module, preset, meta_state_dict: dict[str, torch.Tensor]) -> ParityReport:
    """Build Meta's `preset` model (`sam2.build_sam.build_sam2`) holding `meta_state_dict` and compare, through
    Meta's `SAM2ImagePredictor` on the same random image: the image embeddings and high-resolution features, then
    the mask logits, IoU scores and object-score logits of the prompts of `sam2_verification_prompts`.
    `model` is our image model (`Sam2Model`)."""
    with reference_deprecations():
        from sam2.build_sam import build_sam2  # the reference (test extra); callers check that it is installed
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        reference = build_sam2(preset.meta_config, ckpt_path=None, device="cpu")
        reference.load_state_dict(meta_state_dict)
        predictor = SAM2ImagePredictor(reference.eval())  # its transforms go through torch.jit.script
    size = model.config.image_size
    image = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    predictor.set_image(image.numpy())
    theirs = {"image embeddings": predictor._features["image_embed"]}
    for level, features in enumerate(predictor._features["high_res_feats"]):
        theirs[f"high-res features {level}"] = features
    decoder = _Capture(reference.sam_mask_decoder)
    try:
        for name, prompt in sam2_verification_prompts(size).items():
            points, labels = prompt.get("input_points"), prompt.get("input_labels")
            boxes = prompt["input_boxes"][0] if "input_boxes" in prompt else None
            predictor._predict(
                None if points is None else points[0], None if labels is None else labels[0], boxes,
                multimask_output=name == "points", return_logits=True,
            )  # fmt: skip
            masks, iou, _tokens, object_scores = decoder.output  # before Meta's +-32 clamp
            theirs.update({f"mask logits ({name})": masks, f"IoU scores ({name})": iou})
            theirs[f"object-score logits ({name})"] = object_scores
    finally:
        decoder.handle.remove()
    report = ParityReport(f"Meta's {preset.name} via SAM2ImagePredictor (sam2 {version('sam2')})")
    _sam2_errors(report, _sam2_ours(model, predictor._transforms(image.numpy())[None]), theirs)
    return report


@torch.no_grad()
def verify_sam2_against_transformers(model: torch.nn.Module, folder: str | Path) -> ParityReport:
    """Compare with transformers' `Sam2Model` loaded from `folder` (a `facebook/sam2*-hiera-*` layout): image
    embeddings and high-resolution features of a random input, then the decoder outputs of the prompts of
    `sam2_verification_prompts`."""
    import transformers

    reference = transformers.Sam2Model.from_pretrained(folder).eval()
    pixel_values = random_input(model.config.num_channels, (model.config.image_size,) * 2)
    embeddings = reference.get_image_embeddings(pixel_values)  # [high-res 0, high-res 1, image embeddings]
    theirs = {"image embeddings": embeddings[-1]}
    theirs.update({f"high-res features {level}": features for level, features in enumerate(embeddings[:-1])})
    for name, prompt in sam2_verification_prompts(model.config.image_size).items():
        result = reference(image_embeddings=embeddings, **prompt, multimask_output=name == "points")
        theirs[f"mask logits ({name})"] = result.pred_masks[0]
        theirs[f"IoU scores ({name})"] = result.iou_scores[0]
        theirs[f"object-score logits ({name})"] = result.object_score_logits[0]
    report = ParityReport(f"transformers' Sam2Model ({transformers.__version__})")
    _sam2_errors(report, _sam2_ours(model, pixel_values), theirs)
    return report
