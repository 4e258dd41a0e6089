"""SAM 2 training: the loss against Meta's `training/loss_fns.py`, freezing, gradient checkpointing, video clips with
corrective clicks, metrics (mIoU, DAVIS J&F), data collators and the fine-tuning examples."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.morphology import dilation, disk

# Meta's `training.loss_fns` imports its Trainer module for one constant (`CORE_LOSS_KEY`); that module pulls in Hydra,
# iopath and tensordict, which the loss never uses. A stand-in for it lets the real loss functions import.
if "training.trainer" not in sys.modules:
    _trainer_stub = types.ModuleType("training.trainer")
    _trainer_stub.CORE_LOSS_KEY = "core_loss"
    sys.modules["training.trainer"] = _trainer_stub
from example_helpers import accelerate_two_cpu_processes, run_example  # noqa: E402
from sam2_helpers import TINY, load_converted, meta_video_predictor, tiny_config  # noqa: E402
from training.loss_fns import MultiStepMultiMasksAndIous  # noqa: E402

from hiera_hf.metrics import load_j_and_f, load_mean_iou  # noqa: E402
from hiera_hf.sam2 import Sam2Config, Sam2Model  # noqa: E402
from hiera_hf.sam2.data import frame_tensor  # noqa: E402
from hiera_hf.sam2.frame_arithmetic import NO_OBJECT_SCORE  # noqa: E402
from hiera_hf.sam2.loss_sam2 import IGNORE_INDEX, sam2_loss  # noqa: E402
from hiera_hf.sam2.modeling_sam2_video import Sam2VideoModel  # noqa: E402
from hiera_hf.sam2.prompt_sampling import sample_box, sample_click  # noqa: E402
from hiera_hf.sam2.training import Sam2VideoModelForTraining, track_clips  # noqa: E402

pytestmark = pytest.mark.slow  # training steps, clips and the fine-tuning examples: the suite's slow part


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
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing and all(block.gradient_checkpointing for block in model.hiera.blocks)
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


# -- prompts ---------------------------------------------------------------------------------------------------------


def test_clicks_come_from_the_error_region():
    generator = torch.Generator().manual_seed(0)
    truth = torch.zeros(200, 12, 12, dtype=torch.bool)
    truth[:, 2:8, 3:9] = True
    predicted = torch.zeros_like(truth)
    predicted[:, 4:10, 5:11] = True
    points, labels = sample_click(truth, predicted, generator=generator)
    x, y = points[:, 0, 0].long(), points[:, 0, 1].long()
    rows = torch.arange(200)
    assert bool((truth[rows, y, x] ^ predicted[rows, y, x]).all())  # every click is on an error
    assert torch.equal(labels[:, 0], truth[rows, y, x].long())  # positive on a miss, negative on a false positive
    assert set(labels[:, 0].tolist()) == {0, 1}
    # No prediction yet: a positive click inside the object; a perfect prediction: a negative click outside it.
    points, labels = sample_click(truth, None, generator=generator)
    assert bool(truth[rows, points[:, 0, 1].long(), points[:, 0, 0].long()].all()) and bool(labels.all())
    points, labels = sample_click(truth, truth.clone(), generator=generator)
    assert not bool(truth[rows, points[:, 0, 1].long(), points[:, 0, 0].long()].any()) and not bool(labels.any())
    # Mask pixels map to the centre of the input pixels they cover (12-pixel mask, 48-pixel input).
    scaled, _ = sample_click(truth[:1], None, image_size=48, generator=torch.Generator().manual_seed(3))
    plain, _ = sample_click(truth[:1], None, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(scaled, (plain + 0.5) * 4 - 0.5)


def test_boxes_surround_the_mask():
    truth = torch.zeros(50, 40, 40, dtype=torch.bool)
    truth[:, 10:20, 5:35] = True
    corners, labels = sample_box(truth, noise=0.0)
    assert torch.equal(corners[0], torch.tensor([[5.0, 10.0], [34.0, 19.0]])) and labels[0].tolist() == [2, 3]
    noisy, _ = sample_box(truth, generator=torch.Generator().manual_seed(0))
    shift = (noisy - corners).abs()
    assert bool((shift[..., 0] <= 0.1 * 29 + 1e-5).all()) and bool((shift[..., 1] <= 0.1 * 9 + 1e-5).all())
    assert bool((shift > 0).any())


# -- metrics ---------------------------------------------------------------------------------------------------------


def _davis_reference(prediction: np.ndarray, reference: np.ndarray, bound_th: float = 0.008) -> tuple[float, float]:
    """J and F of one frame written out from DAVIS's definitions, with scikit-image's disk dilation."""
    union = np.logical_or(prediction, reference).sum()
    j = 1.0 if union == 0 else np.logical_and(prediction, reference).sum() / union

    def boundary(mask):
        height, width = mask.shape
        out = np.zeros_like(mask, dtype=bool)
        for y in range(height):
            for x in range(width):
                neighbours = [(y, x + 1), (y + 1, x), (y + 1, x + 1)]
                if y == height - 1:
                    neighbours = [(y, x + 1)]
                if x == width - 1:
                    neighbours = [(y + 1, x)] if y < height - 1 else []
                for ny, nx in neighbours:
                    inside = mask[ny, nx] if ny < height and nx < width else False
                    out[y, x] |= bool(mask[y, x]) != bool(inside)
        return out

    radius = int(np.ceil(bound_th * np.linalg.norm(prediction.shape)))
    fg, gt = boundary(prediction), boundary(reference)
    if fg.sum() == 0 or gt.sum() == 0:
        return j, float(fg.sum() == gt.sum())
    precision = (fg & (dilation(gt, disk(radius)) > 0)).sum() / fg.sum()
    recall = (gt & (dilation(fg, disk(radius)) > 0)).sum() / gt.sum()
    return j, 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_j_and_f_hand_computed_cases():
    metric = load_j_and_f()
    square = np.zeros((1, 10, 10), np.uint8)
    square[0, 2:6, 2:6] = 1
    shifted = np.roll(square, 1, axis=2)
    empty = np.zeros_like(square)
    # IoU 12/20; with no tolerance the one-pixel boundaries (16 pixels each) share 8: F = 0.5.
    result = metric.compute(predictions=[shifted], references=[square], bound_th=0)
    assert result["J"] == pytest.approx(0.6) and result["F"] == pytest.approx(0.5)
    # DAVIS's tolerance on a 10x10 frame is one pixel: the shifted boundary matches everywhere.
    assert metric.compute(predictions=[shifted], references=[square])["F"] == pytest.approx(1.0)
    assert metric.compute(predictions=[empty], references=[empty]) == {"J&F": 1.0, "J": 1.0, "F": 1.0}
    assert metric.compute(predictions=[empty], references=[square]) == {"J&F": 0.0, "J": 0.0, "F": 0.0}
    # Per-masklet frame means, then the mean over masklets.
    two = metric.compute(predictions=[np.concatenate([square, empty]), square], references=[square[[0, 0]], square])
    assert two["J"] == pytest.approx((0.5 + 1.0) / 2)


def test_j_and_f_and_mean_iou_match_davis_definitions():
    rng = np.random.default_rng(0)
    blobs = F.interpolate(torch.from_numpy(rng.normal(size=(2, 4, 6, 8))).float(), size=(60, 80), mode="bilinear")
    predictions, references = (blobs[i].numpy() > 0.2 for i in range(2))
    expected = np.array([_davis_reference(p, r) for p, r in zip(predictions, references)])
    assert 0.1 < expected[:, 1].min() and expected[:, 1].max() < 0.99  # partial boundary matches
    result = load_j_and_f().compute(
        predictions=[predictions.astype(np.uint8)], references=[references.astype(np.uint8)]
    )
    assert result["J"] == pytest.approx(expected[:, 0].mean(), abs=1e-12)
    assert result["F"] == pytest.approx(expected[:, 1].mean(), abs=1e-12)
    miou = load_mean_iou().compute(predictions=list(predictions.astype(np.uint8)), references=list(references))
    assert miou["mean_iou"] == pytest.approx(expected[:, 0].mean(), abs=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        load_mean_iou().compute(predictions=[np.zeros((4, 4))], references=[np.zeros((4, 5))])


# -- video clips -----------------------------------------------------------------------------------------------------


def moving_shapes(num_clips: int, num_frames: int, size: int, num_objects: int, seed: int):
    """Clips of discs and squares of random colours drifting over a noisy grey background: RGB frames
    `(num_clips, num_frames, size, size, 3)` uint8 and object ids `(num_clips, num_frames, size, size)` (0 = none)."""
    generator = torch.Generator().manual_seed(seed)
    frames = 128 + 12 * torch.randn(num_clips, num_frames, size, size, 3, generator=generator)
    ids = torch.zeros(num_clips, num_frames, size, size, dtype=torch.long)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for clip in range(num_clips):
        for obj in range(1, num_objects + 1):
            colour = torch.rand(3, generator=generator) * 255
            radius = size * (0.1 + 0.1 * torch.rand((), generator=generator))
            centre = radius + torch.rand(2, generator=generator) * (size - 2 * radius)
            velocity = (torch.rand(2, generator=generator) * 2 - 1) * size / 20
            for t in range(num_frames):
                cy, cx = (centre + velocity * t).clamp(radius, size - radius)
                if obj % 2:
                    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
                else:
                    inside = ((yy - cy).abs() <= 0.8 * radius) & ((xx - cx).abs() <= 0.8 * radius)
                inside &= ids[clip, t] == 0  # earlier objects stay in front
                ids[clip, t][inside] = obj
                frames[clip, t][inside] = colour
    return frames.clamp(0, 255).to(torch.uint8), ids


def clip_tensors(frames: torch.Tensor, ids: torch.Tensor, num_objects: int):
    """Model inputs `(B, T, 3, S, S)` (the package's normalisation) and labels `(B, T, N, S, S)`."""
    pixels = torch.stack(
        [torch.stack([frame_tensor(Image.fromarray(f.numpy()), f.shape[0]) for f in clip]) for clip in frames]
    )
    labels = torch.stack([(ids == i).float() for i in range(1, num_objects + 1)], dim=2)
    return pixels, labels


def clip_j_and_f(model, pixels, labels) -> float:
    """J&F of the masks tracked from a first-frame mask prompt, over the later frames (eval mode)."""
    model.eval()
    with torch.no_grad():
        masks = track_clips(model, pixels, labels, prompt_type="mask").pred_masks
    model.train()
    masks = F.interpolate(masks.flatten(0, 1), size=labels.shape[-2:], mode="bilinear") > 0
    masks = masks.unflatten(0, labels.shape[:2]).numpy().astype(np.uint8)
    truth = labels.numpy().astype(np.uint8)
    pairs = [(masks[b, 1:, o], truth[b, 1:, o]) for b in range(len(truth)) for o in range(truth.shape[2])]
    return load_j_and_f().compute(predictions=[p for p, _ in pairs], references=[r for _, r in pairs])["J&F"]


def test_clip_step_uses_memory_corrections_and_both_label_sizes():
    torch.manual_seed(0)
    model = Sam2VideoModelForTraining(tiny_config()).train()
    with torch.no_grad():  # freshly initialised object scores are about +-1e-3: make the objects present, so that
        model.mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(1.0)  # their pointers (not no_obj_ptr) are used
    frames, ids = moving_shapes(2, 4, 64, 2, seed=5)
    pixels, labels = clip_tensors(frames, ids, 2)
    labels[1, :, 1] = IGNORE_INDEX  # the second clip has one object
    calls = []  # the number of clicks of every tracking step
    original = model.track_step

    def counting(**inputs):
        calls.append(0 if inputs.get("input_points") is None else inputs["input_points"].shape[1])
        return original(**inputs)

    model.track_step = counting
    generator = torch.Generator().manual_seed(0)
    output = track_clips(model, pixels, labels, "point", 3, 2, 0.0, generator=generator)
    output.loss.backward()
    # Frame 0: one click then 3 corrections (2, 3, 4 clicks); the other frames tracked with memory, maybe corrected.
    assert calls[:4] == [1, 2, 3, 4] and len(calls) in (7, 10)
    for module in (model.memory_attention, model.memory_encoder, model.obj_ptr_proj, model.obj_ptr_tpos_proj):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert model.maskmem_tpos_enc.grad.abs().sum() > 0
    assert output.pred_masks.shape == (2, 4, 2, 16, 16) and bool((output.pred_masks[1, :, 1] == NO_OBJECT_SCORE).all())
    # Activation checkpointing (trunk, decoder and memory-attention layers) gives the same gradients.
    del model.track_step  # back to the class method
    grads = {}
    for checkpointed in (False, True):
        if checkpointed:
            model.activation_checkpointing_enable()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same memory-attention dropout
        track_clips(
            model, pixels, labels, "box", 2, 2, 0.0, generator=torch.Generator().manual_seed(2)
        ).loss.backward()
        grads[checkpointed] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert model.memory_attention.layers[0].gradient_checkpointing and grads[True].keys() == grads[False].keys()
    for name, grad in grads[True].items():
        torch.testing.assert_close(grad, grads[False][name], rtol=1e-4, atol=1e-6, msg=name)
    low = F.interpolate(labels.flatten(0, 2)[:, None], size=(16, 16), mode="nearest").reshape(2, 4, 2, 16, 16)
    assert torch.isfinite(track_clips(model, pixels, low, "box").loss)
    model.eval()  # evaluation prompts with the mask whatever the collator says, as Meta's evaluation
    torch.testing.assert_close(
        model(pixels, labels, prompt_type="point").pred_masks, track_clips(model, pixels, labels, "mask").pred_masks
    )
    with pytest.raises(ValueError, match="prompt_type"):
        track_clips(model, pixels, labels, "scribble")
    with pytest.raises(ValueError, match="no object"):
        track_clips(model, pixels, torch.full_like(labels, IGNORE_INDEX))


def test_unknown_keywords_are_refused():
    """A misspelt argument raises, naming it, instead of being dropped (training forward and tracking step)."""
    torch.manual_seed(0)
    model = Sam2VideoModelForTraining(tiny_config())
    pixels, labels = torch.zeros(1, 2, 3, 64, 64), torch.zeros(1, 2, 1, 16, 16)
    with pytest.raises(TypeError, match="prompt_typ"):
        model(pixels, labels, prompt_typ="box")
    vision = model.get_vision_features(pixels[0, :1])
    with pytest.raises(TypeError, match="input_mask"):
        model.track_step(vision.fpn_features, vision.position_encoding, input_mask=torch.ones(1, 1, 64, 64))


def test_fine_tuning_improves_j_and_f_on_held_out_clips():
    """A tiny SAM 2.1 (64x64 inputs) trained from scratch on moving shapes: 300 steps of 2 clips x 4 frames, mask
    prompts (the setting J&F measures), learning rate 3e-3 then 3e-4 for the last 100 steps; J&F on 8 held-out
    clips rises from about 0.

    At a constant rate J&F swings by +-0.2 between nearby steps, so float noise (a changed summation order) decided
    whether the last step cleared the bar; with the decay, five initialisation seeds ended at 0.34-0.60."""
    torch.manual_seed(0)
    model = Sam2VideoModelForTraining(tiny_config()).train()
    train_pixels, train_labels = clip_tensors(*moving_shapes(64, 4, 64, 1, seed=0), 1)
    test_pixels, test_labels = clip_tensors(*moving_shapes(8, 4, 64, 1, seed=1000), 1)
    before = clip_j_and_f(model, test_pixels, test_labels)
    memory_before = model.memory_attention.layers[0].cross_attn_image.k_proj.weight.clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[200], gamma=0.1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = torch.randint(0, 64, (2,), generator=generator)
        loss = model(train_pixels[batch], train_labels[batch], prompt_type="mask").loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    after = clip_j_and_f(model, test_pixels, test_labels)
    print(f"J&F on held-out clips: {before:.3f} -> {after:.3f}")
    assert after - before >= 0.2, (before, after)
    assert not torch.equal(model.memory_attention.layers[0].cross_attn_image.k_proj.weight, memory_before)


@torch.no_grad()
def test_clip_tracking_matches_meta_track_steps(tmp_path):
    """Eval-mode `track_clips` with a mask prompt = Meta's `SAM2Base.track_step` frame after frame, as Meta's
    `SAM2Train.forward_tracking` runs it (memory and pointer selection over 8 frames, two objects)."""
    meta = meta_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", 128)
    for parameter in meta.parameters():  # Meta zero-initialises biases: randomise them so no path is trivial
        if parameter.ndim <= 1:
            parameter.add_(0.1 * torch.randn_like(parameter))
    # Strong temporal encodings, so that a memory or pointer put at the wrong distance changes the masks.
    meta.maskmem_tpos_enc.normal_()
    meta.obj_ptr_tpos_proj.weight.mul_(30.0)
    meta.eval()
    ours, _ = load_converted(meta, Sam2Config.from_preset("sam2.1_hiera_tiny", image_size=128), tmp_path)
    ours.eval()

    frames, ids = moving_shapes(1, 8, 128, 2, seed=3)
    pixels, labels = clip_tensors(frames, ids, 2)
    tracked = track_clips(ours, pixels, labels, "mask")

    backbone = meta.forward_image(pixels[0])
    _, features, positions, sizes = meta._prepare_backbone_features(backbone)
    bank = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    for t in range(8):
        objects = [t, t]  # both objects look at frame t
        out = meta.track_step(
            frame_idx=t,
            is_init_cond_frame=t == 0,
            current_vision_feats=[x[:, objects] for x in features],
            current_vision_pos_embeds=[x[:, objects] for x in positions],
            feat_sizes=sizes,
            point_inputs=None,
            mask_inputs=labels[0, 0, :, None].bool() if t == 0 else None,
            output_dict=bank,
            num_frames=8,
        )
        bank["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = out
        torch.testing.assert_close(tracked.pred_masks[0, t], out["pred_masks"][:, 0], rtol=0, atol=1e-4)
        torch.testing.assert_close(
            tracked.object_score_logits[0, t], out["object_score_logits"][:, 0], rtol=0, atol=1e-4
        )


# -- data and examples -----------------------------------------------------------------------------------------------

PALETTE = [0, 0, 0, 200, 30, 30, 30, 200, 30, 30, 30, 200] + [0] * (256 * 3 - 12)


def _palette_png(ids: np.ndarray, path: Path) -> None:
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette(PALETTE)
    image.save(path)


def write_davis(root: Path, num_videos: int, num_frames: int, size: int = 64, seed: int = 0) -> Path:
    """A DAVIS-layout folder of moving-shape videos (JPEG frames, palette PNG annotations)."""
    frames, ids = moving_shapes(num_videos, num_frames, size, 2, seed)
    for v in range(num_videos):
        for folder in ("JPEGImages", "Annotations"):
            (root / folder / f"video{v}").mkdir(parents=True)
        for t in range(num_frames):
            Image.fromarray(frames[v, t].numpy()).save(root / "JPEGImages" / f"video{v}" / f"{t:05d}.jpg", quality=95)
            _palette_png(ids[v, t].numpy(), root / "Annotations" / f"video{v}" / f"{t:05d}.png")
    return root


def write_image_folder(root: Path, count: int, seed: int) -> Path:
    frames, ids = moving_shapes(count, 1, 64, 2, seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        Image.fromarray(frames[i, 0].numpy()).save(root / "images" / f"{i}.jpg")
        _palette_png(ids[i, 0].numpy(), root / "masks" / f"{i}.png")
    return root


def test_datasets_and_collators(tmp_path):
    import datasets

    from hiera_hf.sam2.data import DavisVideoDataset, Sam2ImageCollator, Sam2ImageDataset, Sam2VideoCollator

    folder = write_image_folder(tmp_path / "images", 3, seed=0)
    images = Sam2ImageDataset.from_folder(folder, image_size=64, mask_size=16, max_objects=1)
    example = images[0]
    assert example["pixel_values"].shape == (3, 64, 64) and example["labels"].shape == (1, 16, 16)
    table = (
        datasets.Dataset.from_dict(
            {
                "image": [Image.open(p) for p in sorted((folder / "images").glob("*.jpg"))],
                "mask": [Image.open(p) for p in sorted((folder / "masks").glob("*.png"))],
            }
        )
        .cast_column("image", datasets.Image())
        .cast_column("mask", datasets.Image())
    )
    from_table = Sam2ImageDataset.from_dataset(table, image_size=64, train=False)
    assert torch.equal(
        from_table[1]["labels"], Sam2ImageDataset.from_folder(folder, image_size=64, train=False)[1]["labels"]
    )
    ids = np.asarray(Image.open(folder / "masks" / "1.png"))
    torch.testing.assert_close(from_table[1]["labels"][0], torch.from_numpy(ids == 1).float())

    two_objects = {
        "pixel_values": images[1]["pixel_values"],
        "labels": torch.cat([images[1]["labels"], images[2]["labels"]]),
    }
    for kind in ("point", "box"):
        batch = Sam2ImageCollator(64, {kind: 1.0})([images[0], two_objects])
        assert batch["labels"].shape == (2, 2, 16, 16) and batch["multimask_output"] == (kind == "point")
        assert bool((batch["labels"][0, 1] == IGNORE_INDEX).all())  # the first image's padding prompt
        assert ("input_points" in batch) == (kind == "point") and ("input_boxes" in batch) == (kind == "box")
        if kind == "point":
            assert batch["input_labels"][0, 1, 0] == -10 and batch["input_labels"][:, 0].eq(1).all()
        assert torch.isfinite(Sam2Model(tiny_config())(**batch).loss)  # the batch is a valid model input
    with pytest.raises(ValueError, match="prompt_probabilities"):
        Sam2ImageCollator(64, {"scribble": 1.0})

    davis = write_davis(tmp_path / "davis", 2, 5)
    clips = DavisVideoDataset(davis, image_size=64, mask_size=16, num_frames=4, max_objects=2, train=False)
    clip = clips[0]
    assert clip["pixel_values"].shape == (4, 3, 64, 64) and clip["labels"].shape == (4, 2, 16, 16)
    collate = Sam2VideoCollator(max_objects=3, seed=0)
    batch = collate([clip, clips[1]])
    assert batch["labels"].shape == (2, 4, 3, 16, 16) and bool((batch["labels"][:, :, 2] == IGNORE_INDEX).all())
    draws = [collate([clip])["prompt_type"] for _ in range(200)]
    fresh = Sam2VideoCollator(max_objects=3, seed=0)  # same seed, same draws: every process agrees
    assert [fresh([clip])["prompt_type"] for _ in range(201)] == [batch["prompt_type"], *draws]
    assert 70 < draws.count("mask") < 130 and draws.count("point") > 20 and draws.count("box") > 20
    with pytest.raises(ValueError, match="at least 6 annotated frames"):
        DavisVideoDataset(davis, image_size=64, num_frames=6)
    for kind in ("JPEGImages", "Annotations"):  # DAVIS 2017 nests the videos under a resolution folder
        (tmp_path / "davis2017" / kind).mkdir(parents=True)
        (davis / kind).rename(tmp_path / "davis2017" / kind / "480p")
    nested = DavisVideoDataset(tmp_path / "davis2017", 64, 16, 4, 2, train=False, resolution="480p")
    assert torch.equal(nested[0]["labels"], clip["labels"])


EXAMPLE_ARGS = {
    "config_overrides": json.dumps(TINY),
    "max_steps": 3,
    "per_device_train_batch_size": 2,
    "per_device_eval_batch_size": 2,
    "learning_rate": 1e-3,
    "logging_steps": 1,
    "save_strategy": "no",
    "report_to": "none",
    "seed": 0,
    "dataloader_num_workers": 0,
}


def test_image_finetune_example(tmp_path):
    args = {
        **EXAMPLE_ARGS,
        "image_folder": write_image_folder(tmp_path / "train", 4, seed=0),
        "eval_folder": write_image_folder(tmp_path / "val", 2, seed=1),
        "output_dir": tmp_path / "run",
        "mask_size": "low",
        "freeze_image_encoder": True,
    }
    run_example("finetune_sam2.py", args)
    metrics = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert 0.0 <= metrics["eval_mean_iou"] <= 1.0 and np.isfinite(metrics["eval_loss"])
    saved = Sam2Model.from_pretrained(tmp_path / "run")
    assert saved.config.freeze_image_encoder and not any(p.requires_grad for p in saved.hiera.parameters())


def test_video_example_under_accelerate_keeps_ranks_identical(tmp_path):
    davis = write_davis(tmp_path / "davis", 4, 5)
    (tmp_path / "val.txt").write_text("video0\nvideo1\n")
    args = {
        **EXAMPLE_ARGS,
        "davis_folder": davis,
        "eval_videos": tmp_path / "val.txt",
        "num_frames": 3,
        "max_objects": 2,
        "mask_size": "low",
        "num_correction_points": 2,
        "per_device_train_batch_size": 1,
        "per_device_eval_batch_size": 1,
        "output_dir": tmp_path / "run",
        "parameter_checksums": True,
        "use_cpu": True,
    }
    run_example("finetune_sam2_video.py", args, accelerate_two_cpu_processes())
    run = tmp_path / "run"
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["log_history"][0]["epoch"] == 0.5  # 4 clips, 1 per rank and step: both ranks took part
    first, second = ((run / f"parameter_checksum_rank{r}.txt").read_text() for r in (0, 1))
    assert first == second and first.strip()
    metrics = json.loads((run / "eval_results.json").read_text())
    assert 0.0 <= metrics["eval_J&F"] <= 1.0
    assert json.loads((run / "config.json").read_text())["num_correction_points"] == 2
    _, info = Sam2VideoModel.from_pretrained(run, output_loading_info=True)  # loads for inference, every key used
    assert not any(info.values()), info
