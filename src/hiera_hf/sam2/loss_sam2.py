"""The training loss of SAM 2: the recipe of the SAM 2 paper and of Meta's fine-tuning config
(`training/loss_fns.py`, `MultiStepMultiMasksAndIous` with `sam2.1_hiera_b+_MOSE_finetune.yaml`).

For every prediction step (a prompt on an image, or one decoder call on a video frame) and every object:

- focal loss (alpha 0.25, gamma 2, mean over pixels) and dice loss on the mask logits, weighted 20:1, on the one
  candidate mask (of the multimask outputs) with the lowest weighted focal + dice loss;
- L1 loss between the predicted IoU and the actual IoU of each candidate mask (binarised at 0), averaged over all
  candidates (Meta's `supervise_all_iou`);
- binary cross-entropy on the object-score logit, the target being "the object has pixels in the ground truth".

The mask and IoU terms count only for objects present in the ground truth. As in Meta's training, the masks of
objects predicted absent are the constant "no object" logit (-1024): such an object adds a large constant to the
mask terms (hence loss values in the thousands early in training) and learns through its object score only. Each term is summed over objects and
divided by the number of objects; video steps add up. Targets marked `IGNORE_INDEX` everywhere are padding
objects and are left out. The weights and the focal parameters come from `Sam2Config` (`focal_loss_weight`, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .configuration_sam2 import Sam2Config

IGNORE_INDEX = -100  # a target mask filled with it is a padding object, left out of the loss


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Focal loss of mask logits `(..., H, W)` against binary targets of the same shape, averaged over the pixels:
    `(...)`. `alpha < 0` disables the class balance, `gamma = 0` gives plain binary cross-entropy."""
    probabilities = logits.sigmoid()
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    # p_t is the probability given to the true class; (1 - p_t)^gamma down-weights the easy pixels.
    p_t = probabilities * targets + (1 - probabilities) * (1 - targets)
    loss = cross_entropy * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`1 - (2 |P * T| + 1) / (|P| + |T| + 1)` with `P` the sigmoid of the logits `(..., H, W)`: `(...)`."""
    probabilities = logits.sigmoid().flatten(-2)
    targets = targets.flatten(-2)
    overlap = 2 * (probabilities * targets).sum(-1)
    return 1 - (overlap + 1) / (probabilities.sum(-1) + targets.sum(-1) + 1)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the masks `logits > 0` `(..., H, W)` with `targets > 0`: `(...)`; 0 when both are empty."""
    predicted, truth = logits.flatten(-2) > 0, targets.flatten(-2) > 0
    intersection = (predicted & truth).sum(-1).float()
    union = (predicted | truth).sum(-1).float()
    return intersection / union.clamp(min=1.0)


def check_mask_targets(targets: torch.Tensor, config: Sam2Config, name: str = "labels") -> None:
    """Targets must be binary masks (or `IGNORE_INDEX`-filled padding) at the low-resolution output size
    (`mask_input_size`, 256 for a 1024 input) or at the model input size (`image_size`)."""
    sizes = (config.mask_input_size, config.image_size)
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of binary masks, got {type(targets).__name__}")
    if targets.ndim < 3 or targets.shape[-1] != targets.shape[-2] or targets.shape[-1] not in sizes:
        raise ValueError(
            f"{name} must end in square masks of {sizes[0]}x{sizes[0]} (the low-resolution outputs) or "
            f"{sizes[1]}x{sizes[1]} (the model input), got shape {tuple(targets.shape)}"
        )
    valid = (targets == 0) | (targets == 1) | (targets == IGNORE_INDEX)
    if not bool(valid.all()):
        raise ValueError(f"{name} must hold 0/1 masks (or {IGNORE_INDEX} for padding objects)")


def sam2_loss(
    pred_masks: torch.Tensor,
    iou_scores: torch.Tensor,
    object_score_logits: torch.Tensor,
    targets: torch.Tensor,
    config: Sam2Config,
    num_objects: int | torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Loss terms of one prediction step of `N` objects.

    Args:
        pred_masks: `(N, M, h, w)` mask logits of the `M` candidate masks, at the low-resolution output size; they
            are upsampled bilinearly (as Meta does) when the targets are at the input size. Masks of objects
            predicted absent should already hold the model's "no object" logit (Meta's training does so).
        iou_scores: `(N, M)` predicted IoUs.
        object_score_logits: `(N, 1)`.
        targets: `(N, H, W)` binary masks, `H` = `h` or `config.image_size`; padding objects are all `IGNORE_INDEX`.
        config: gives the weights and the focal parameters.
        num_objects: divisor of the sums (default: the number of non-padding objects, at least 1).
    Returns:
        `{"loss": weighted sum, "loss_mask": focal, "loss_dice", "loss_iou", "loss_class"}`, scalars.
    """
    # In float32 whatever the model ran in (bf16 logits would round the focal terms).
    pred_masks, iou_scores, object_score_logits = pred_masks.float(), iou_scores.float(), object_score_logits.float()
    targets = targets.float()
    valid = ~(targets == IGNORE_INDEX).flatten(1).all(dim=1)
    if num_objects is None:
        num_objects = valid.sum().clamp(min=1)
    targets = targets.clamp(min=0)[:, None]
    if pred_masks.shape[-2:] != targets.shape[-2:]:
        pred_masks = F.interpolate(pred_masks, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    targets = targets.expand_as(pred_masks)
    focal = sigmoid_focal_loss(pred_masks, targets, config.focal_loss_alpha, config.focal_loss_gamma)
    dice = dice_loss(pred_masks, targets)
    iou = (iou_scores - mask_iou(pred_masks, targets)).abs().mean(dim=1)
    # The candidate with the lowest mask loss is the one supervised (SAM's multimask ambiguity rule).
    best = (focal * config.focal_loss_weight + dice * config.dice_loss_weight).argmin(dim=1, keepdim=True)
    if config.pred_obj_scores:
        present = targets[:, 0].flatten(1).amax(dim=1)
        object_loss = F.binary_cross_entropy_with_logits(object_score_logits[:, 0], present, reduction="none")
    else:  # like Meta: every object counts as present and there is no object-score term
        present = targets.new_ones(targets.shape[0])
        object_loss = torch.zeros_like(present)
    weight = valid.to(pred_masks.dtype)
    terms = {
        "loss_mask": focal.gather(1, best)[:, 0] * present,
        "loss_dice": dice.gather(1, best)[:, 0] * present,
        "loss_iou": iou * present,
        "loss_class": object_loss,
    }
    losses = {name: (value * weight).sum() / num_objects for name, value in terms.items()}
    losses["loss"] = (
        losses["loss_mask"] * config.focal_loss_weight
        + losses["loss_dice"] * config.dice_loss_weight
        + losses["loss_iou"] * config.iou_loss_weight
        + losses["loss_class"] * config.object_score_loss_weight
    )
    return losses


__all__ = ["IGNORE_INDEX", "check_mask_targets", "dice_loss", "mask_iou", "sam2_loss", "sigmoid_focal_loss"]
