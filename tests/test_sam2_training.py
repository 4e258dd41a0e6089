"""SAM 2 training: the loss against Meta's `training/loss_fns.py`, freezing, gradient checkpointing, video clips with
corrective clicks, metrics (mIoU, DAVIS J&F), data collators and the fine-tuning examples."""

import sys
import types

import pytest
import torch
import torch.nn.functional as F

# Meta's `training.loss_fns` imports its Trainer module for one constant (`CORE_LOSS_KEY`); that module pulls in Hydra,
# iopath and tensordict, which the loss never uses. A stand-in for it lets the real loss functions import.
if "training.trainer" not in sys.modules:
    _trainer_stub = types.ModuleType("training.trainer")
    _trainer_stub.CORE_LOSS_KEY = "core_loss"
    sys.modules["training.trainer"] = _trainer_stub
from training.loss_fns import MultiStepMultiMasksAndIous  # noqa: E402

from hiera_hf.sam2 import Sam2Config, Sam2Model  # noqa: E402
from hiera_hf.sam2.loss_sam2 import IGNORE_INDEX, sam2_loss  # noqa: E402
from hiera_hf.sam2.modeling_sam2 import NO_OBJECT_SCORE  # noqa: E402

# A small SAM 2.1 for fast CPU steps: 64x64 inputs (4x4 image embeddings, 16x16 low-resolution masks).
TINY = {
    "image_size": 64,
    "embed_dim": 16,
    "num_heads": (1, 1, 2, 2),
    "depths": (1, 1, 1, 1),
    "window_sizes": (4, 4, 2, 2),
    "global_attention_blocks": (2,),
    "window_position_embedding_background_size": (4, 4),
    "fpn_hidden_size": 32,
    "decoder_num_heads": 2,
    "decoder_mlp_dim": 64,
    "iou_head_hidden_dim": 32,
    "memory_attention_num_layers": 1,
    "memory_attention_feedforward_dim": 64,
    "memory_encoder_hidden_size": 16,
    "memory_attention_rope_feat_sizes": (4, 4),
}


def tiny_config(**kwargs) -> Sam2Config:
    return Sam2Config.from_preset("sam2.1_hiera_tiny", **{**TINY, **kwargs})


def meta_loss():
    """Meta's loss with the weights of its SAM 2.1 fine-tuning config (`sam2.1_hiera_b+_MOSE_finetune.yaml`)."""
    return MultiStepMultiMasksAndIous(
        weight_dict={"loss_mask": 20, "loss_dice": 1, "loss_iou": 1, "loss_class": 1},
        supervise_all_iou=True,
        iou_use_l1_loss=True,
        pred_obj_scores=True,
        focal_gamma_obj_score=0.0,
        focal_alpha_obj_score=-1.0,
    )


def random_targets(num: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Blobs (upsampled noise) with object 0 empty: both the present and the absent branch of the loss."""
    blobs = F.interpolate(torch.randn(num, 1, 4, 4, generator=generator), size=(size, size), mode="bilinear")
    targets = (blobs[:, 0] > 0.3).float()
    targets[0] = 0
    return targets


# -- loss ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_masks", [3, 1])
def test_loss_matches_meta(num_masks):
    generator = torch.Generator().manual_seed(0)
    config = tiny_config()
    num, size = 6, 16
    logits = 4 * torch.randn(num, num_masks, size, size, generator=generator)
    ious = torch.rand(num, num_masks, generator=generator)
    scores = torch.tensor([[-2.0], [1.5], [0.3], [-0.7], [3.0], [2.0]])
    targets = random_targets(num, size, generator)
    assert targets.flatten(1).amax(1).tolist().count(0.0) >= 1  # an absent object
    ours = sam2_loss(logits, ious, scores, targets, config)
    outputs = {
        "multistep_pred_multimasks_high_res": [logits],
        "multistep_pred_ious": [ious],
        "multistep_object_score_logits": [scores],
    }
    reference = meta_loss()([outputs], targets[None])
    for name in ("loss_mask", "loss_dice", "loss_iou", "loss_class"):
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["loss"], reference["core_loss"], rtol=1e-5, atol=1e-6)

    # Padding objects (all IGNORE_INDEX) change nothing.
    padded = torch.cat([targets, torch.full((2, size, size), float(IGNORE_INDEX))])
    more = sam2_loss(
        torch.cat([logits, logits[:2]]), torch.cat([ious, ious[:2]]), torch.cat([scores, scores[:2]]), padded, config
    )
    torch.testing.assert_close(more["loss"], ours["loss"], rtol=1e-6, atol=0)


def test_loss_recomputed_by_hand():
    """One object, three candidates: the formulas written out."""
    config = tiny_config()
    generator = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(1, 3, 8, 8, generator=generator)
    target = (torch.rand(1, 8, 8, generator=generator) > 0.5).float()
    ious, score = torch.tensor([[0.2, 0.5, 0.9]]), torch.tensor([[0.4]])
    per_mask = []
    for m in range(3):
        p = torch.sigmoid(logits[0, m])
        t = target[0]
        ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
        p_t = torch.where(t == 1, p, 1 - p)
        alpha_t = torch.where(t == 1, 0.25, 0.75)
        focal = (alpha_t * (1 - p_t) ** 2 * ce).mean()
        dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
        hard = logits[0, m] > 0
        actual_iou = (hard & (t > 0)).sum() / (hard | (t > 0)).sum()
        per_mask.append((focal, dice, (ious[0, m] - actual_iou).abs()))
    best = min(range(3), key=lambda m: 20 * per_mask[m][0] + per_mask[m][1])
    class_loss = -torch.log(torch.sigmoid(score[0, 0]))  # the object is present
    iou_loss = sum(term[2] for term in per_mask) / 3
    expected = 20 * per_mask[best][0] + per_mask[best][1] + iou_loss + class_loss
    ours = sam2_loss(logits, ious, score, target, config)
    torch.testing.assert_close(ours["loss"], expected, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def image_batch():
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 64, 64, generator=generator)
    targets = torch.stack([random_targets(3, 64, generator) for _ in range(2)])  # (B, P, 64, 64)
    points = torch.randint(0, 64, (2, 3, 1, 2), generator=generator).float()
    return {
        "pixel_values": pixels,
        "input_points": points,
        "input_labels": torch.ones(2, 3, 1, dtype=torch.long),
    }, targets


@pytest.mark.parametrize("resolution", ["low", "input"])
def test_model_loss_is_metas_loss_on_its_outputs(image_batch, resolution):
    torch.manual_seed(0)
    model = Sam2Model(tiny_config()).train()
    with torch.no_grad():  # spread the object scores: some prompts present, some absent
        model.mask_decoder.pred_obj_score_head.layers[2].weight.mul_(50.0)
    inputs, targets = image_batch
    if resolution == "low":
        targets = F.interpolate(targets, size=(16, 16), mode="nearest")
    outputs = model(**inputs, labels=targets)
    scores = outputs.object_score_logits.flatten(0, 1)
    assert (scores > 0).any() and (scores <= 0).any()
    # Meta's SAM2Base: masks of absent objects become NO_OBJ_SCORE, then are upsampled to the input size.
    masks = torch.where(scores[..., None, None] > 0, outputs.pred_masks.flatten(0, 1), NO_OBJECT_SCORE)
    if resolution == "input":
        masks = F.interpolate(masks, size=(64, 64), mode="bilinear", align_corners=False)
    reference = meta_loss()(
        [
            {
                "multistep_pred_multimasks_high_res": [masks],
                "multistep_pred_ious": [outputs.iou_scores.flatten(0, 1)],
                "multistep_object_score_logits": [scores],
            }
        ],
        targets.flatten(0, 1)[None],
    )
    torch.testing.assert_close(outputs.loss, reference["core_loss"], rtol=1e-5, atol=1e-5)
    outputs.loss.backward()
    assert model.mask_decoder.iou_token.weight.grad.abs().sum() > 0


def test_freezing_and_gradient_checkpointing(image_batch, tmp_path):
    inputs, targets = image_batch
    torch.manual_seed(0)
    model = Sam2Model(tiny_config()).train()
    model(**inputs, labels=targets).loss.backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert any(name.startswith("hiera.") for name in reference)
    model.zero_grad(set_to_none=True)
    model.gradient_checkpointing_enable()
    model(**inputs, labels=targets).loss.backward()
    checkpointed = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert checkpointed.keys() == reference.keys()
    for name, grad in checkpointed.items():
        torch.testing.assert_close(grad, reference[name], rtol=1e-4, atol=1e-6, msg=name)

    model.config.freeze_image_encoder = model.config.freeze_prompt_encoder = True
    model.save_pretrained(tmp_path)
    frozen = Sam2Model.from_pretrained(tmp_path).train()
    trainable = {name for name, p in frozen.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("mask_decoder.") or name == "no_mem_embed" for name in trainable)
    frozen(**inputs, labels=targets).loss.backward()
    assert all(p.grad is None for p in frozen.hiera.parameters())
    assert all(p.grad is None for p in frozen.prompt_encoder.parameters())
    assert frozen.mask_decoder.iou_token.weight.grad.abs().sum() > 0


def test_bad_labels():
    model = Sam2Model(tiny_config())
    inputs = {"pixel_values": torch.randn(1, 3, 64, 64), "input_boxes": torch.tensor([[[4.0, 4, 40, 40]]])}
    with pytest.raises(ValueError, match="16x16"):
        model(**inputs, labels=torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="one target mask per prompt"):
        model(**inputs, labels=torch.zeros(1, 2, 16, 16))
    with pytest.raises(ValueError, match="0/1 masks"):
        model(**inputs, labels=torch.full((1, 1, 16, 16), 0.5))
