"""Training SAM 2 on video clips, as Meta's `SAM2Train` does (with gradients: no `inference_mode` anywhere).

A clip of `T` frames (8 in Meta's recipe) and the ground-truth masklets of its objects go through
`Sam2VideoModel` frame by frame:

1. Frame 0 gets a prompt sampled from the ground truth: the mask itself (used as the output, Meta's default half of
   the time), one click inside the object, or a noisy box.
2. With clicks or a box, `num_correction_points` corrective clicks (7) follow on frame 0 and on up to
   `max_frames_to_correct - 1` other random frames: each is sampled uniformly in the error region of the current
   prediction (with probability `prob_click_from_ground_truth`, inside the object instead) and goes to the decoder
   with the previous mask logits. Corrected frames become conditioning frames.
3. Every frame attends to the memories of the conditioning frames and of the `num_maskmem - 1` previous frames,
   and to the object pointers of the conditioning frames and of the `max_obj_ptrs_in_encoder - 1` previous frames
   (`memory_bank.select_memory` with the training rules, `memory_tokens.assemble_memory`); each prompt goes through
   `Sam2VideoModel.track_step`, and the frame's final mask is encoded into memory (`encode_memory`).

Every decoder call adds its `sam2_loss` (best of the multimask outputs), summed over the clip and divided by the
number of objects. `Sam2VideoModelForTraining` wraps this in `forward` for the `Trainer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

from .frame_arithmetic import NO_OBJECT_SCORE
from .loss_sam2 import IGNORE_INDEX, check_mask_targets, sam2_loss
from .memory_bank import MemoryRules, select_memory
from .memory_tokens import assemble_memory
from .modeling_sam2_video import Sam2VideoModel
from .prompt_sampling import sample_box, sample_click

PROMPT_TYPES = ("mask", "point", "box")


@dataclass
class Sam2VideoTrainingOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`):
        The SAM 2 loss summed over the frames and correction steps of the clips, divided by the number of objects.
    pred_masks (`torch.FloatTensor` of shape `(batch_size, num_frames, num_objects, mask_size, mask_size)`):
        Final low-resolution mask logits of every object on every frame (after the corrective clicks); padding
        objects hold -1024.
    object_score_logits (`torch.FloatTensor` of shape `(batch_size, num_frames, num_objects)`):
        Final object-score logits (-1024 for padding objects).
    """

    loss: torch.FloatTensor | None = None
    pred_masks: torch.FloatTensor | None = None
    object_score_logits: torch.FloatTensor | None = None


def _frame_memory(
    model: Sam2VideoModel,
    rules: MemoryRules,
    frame: int,
    num_frames: int,
    cond_frames: list[int],
    memories: dict[int, torch.Tensor],
    pointers: dict[int, torch.Tensor],
) -> dict:
    """`track_step`'s memory arguments for `frame`: the memories (`(K, memory_dim, h, w)` per frame) and pointers
    (`(K, hidden)`) of the earlier frames, selected by the memory bank; none on frame 0."""
    if frame == 0:
        return {}
    held = [t for t in memories if t not in cond_frames]
    selection = select_memory(frame, cond_frames, held, held, rules, num_frames=num_frames)
    frame_pointers = None
    if selection.pointer_frames:
        frame_pointers = torch.stack([pointers[t] for t in selection.pointer_frames], dim=1)
    tokens = assemble_memory(
        model, selection, torch.stack([memories[t] for t in selection.spatial_frames], dim=1), frame_pointers
    )
    return {
        "memory": tokens.memory,
        "memory_position_encoding": tokens.memory_position_encoding,
        "num_pointer_tokens": tokens.num_pointer_tokens,
    }


def track_clips(
    model: Sam2VideoModel,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    prompt_type: str = "mask",
    num_correction_points: int | None = None,
    max_frames_to_correct: int | None = None,
    prob_click_from_ground_truth: float | None = None,
    generator: torch.Generator | None = None,
) -> Sam2VideoTrainingOutput:
    """Run clips through `model` with prompts and corrective clicks sampled from `labels`, and return the loss.

    Args:
        pixel_values: `(batch_size, num_frames, 3, image_size, image_size)` normalised frames.
        labels: `(batch_size, num_frames, num_objects, size, size)` 0/1 masklets at the low-resolution output size
            or at `image_size` (see `Sam2Model.forward`); padding objects are `IGNORE_INDEX` everywhere.
        prompt_type: the prompt on frame 0: `"mask"`, `"point"` or `"box"` (one for the whole batch, so every
            process of a distributed run uses the same weights; the data collator draws it).
        num_correction_points: corrective clicks per corrected frame (Meta: 7); only with clicks or boxes.
        max_frames_to_correct: frames receiving corrective clicks, frame 0 included: a random number from 1 to it.
        prob_click_from_ground_truth: chance that a corrective click ignores the prediction (Meta: 0.1).
            These three default to the config's fields of the same names.
        generator: random source of the prompts (default: torch's global ones), on any device: a seeded CPU
            generator gives the same prompts whichever device the model is on.
    """
    if prompt_type not in PROMPT_TYPES:
        raise ValueError(f"prompt_type must be one of {PROMPT_TYPES}, got {prompt_type!r}")
    config = model.config
    if num_correction_points is None:
        num_correction_points = config.num_correction_points
    if max_frames_to_correct is None:
        max_frames_to_correct = config.max_frames_to_correct
    if prob_click_from_ground_truth is None:
        prob_click_from_ground_truth = config.prob_click_from_ground_truth
    if pixel_values.ndim != 5 or tuple(pixel_values.shape[2:]) != (3, config.image_size, config.image_size):
        raise ValueError(
            f"pixel_values must be (batch, frames, 3, {config.image_size}, {config.image_size}), got "
            f"{tuple(pixel_values.shape)}"
        )
    check_mask_targets(labels, config)
    batch, num_frames = pixel_values.shape[:2]
    if labels.ndim != 5 or tuple(labels.shape[:2]) != (batch, num_frames):
        raise ValueError(
            f"labels must be (batch, frames, objects, size, size) with batch={batch} and frames={num_frames}, got "
            f"{tuple(labels.shape)}"
        )
    if num_correction_points < 0 or max_frames_to_correct < 1:
        raise ValueError("num_correction_points must be >= 0 and max_frames_to_correct >= 1")

    # The objects of all clips form one batch; `owner` maps each to its clip.
    valid = ~(labels[:, 0] == IGNORE_INDEX).flatten(2).all(dim=2)  # (B, N)
    owner, slot = valid.nonzero(as_tuple=True)
    if owner.numel() == 0:
        raise ValueError("labels hold no object (every masklet is padding)")
    targets = labels[owner, :, slot].transpose(0, 1).float()  # (T, K, size, size)
    num_objects, size = owner.numel(), targets.shape[-1]
    vision = model.get_vision_features(pixel_values.flatten(0, 1))
    levels = [level.unflatten(0, (batch, num_frames)) for level in vision.fpn_features]

    on = None if generator is None else generator.device  # the clip-level draws, on the generator's device
    corrected = []  # frames receiving corrective clicks (never after a mask prompt, as in Meta's training)
    if prompt_type != "mask" and num_correction_points > 0:
        extra = int(torch.randint(0, max_frames_to_correct, (), generator=generator, device=on))
        others = torch.randperm(num_frames - 1, generator=generator, device=on)[:extra] + 1
        corrected = [0, *sorted(others.tolist())]

    rules = MemoryRules.from_config(config, training=model.training)
    cond_frames, memories, pointers = [], {}, {}
    total = torch.zeros((), device=pixel_values.device)
    final_masks, final_scores = [], []
    for frame in range(num_frames):
        features = tuple(level[:, frame][owner] for level in levels)
        step_inputs = {"fpn_features": features, "vision_position_encoding": vision.position_encoding}
        truth = targets[frame] > 0
        points = None
        if frame == 0 and prompt_type == "mask":
            full = truth[:, None].float()
            if size != config.image_size:
                full = F.interpolate(full, size=(config.image_size,) * 2, mode="nearest")
            steps = [model.track_step(**step_inputs, input_masks=full, run_memory_encoder=False)]
        else:
            point_labels = None
            if frame == 0:
                sample = sample_click if prompt_type == "point" else sample_box
                points, point_labels = sample(truth, image_size=config.image_size, generator=generator)
            memory = _frame_memory(model, rules, frame, num_frames, cond_frames, memories, pointers)
            steps = [
                model.track_step(
                    **step_inputs, **memory, input_points=points, input_labels=point_labels, run_memory_encoder=False
                )
            ]
            for _ in range(num_correction_points if frame in corrected else 0):
                previous = steps[-1]
                predicted = (previous.high_res_masks if size == config.image_size else previous.pred_masks)[:, 0] > 0
                from_truth = float(torch.rand((), generator=generator, device=on)) < prob_click_from_ground_truth
                click, click_label = sample_click(
                    truth, None if from_truth else predicted, image_size=config.image_size, generator=generator
                )
                points = click if points is None else torch.cat((points, click), dim=1)
                point_labels = click_label if point_labels is None else torch.cat((point_labels, click_label), dim=1)
                # The clicks refine the previous mask on the frame's memory-conditioned features (one memory
                # attention per frame, as Meta's training).
                steps.append(
                    model.track_step(
                        **step_inputs,
                        conditioned_features=steps[0].conditioned_features,
                        input_points=points,
                        input_labels=point_labels,
                        prompt_masks=previous.pred_masks,
                        run_memory_encoder=False,
                    )
                )
        if frame == 0 or frame in corrected:  # corrected frames become conditioning frames, as in Meta's recipe
            cond_frames.append(frame)
        for step in steps:
            losses = sam2_loss(
                step.low_res_multimasks, step.iou_scores, step.object_score_logits, targets[frame], config, num_objects
            )
            total = total + losses["loss"]
        final = steps[-1]
        memories[frame] = model.encode_memory(
            features[-1], final.high_res_masks, final.object_score_logits, from_points=points is not None
        )
        pointers[frame] = final.object_pointers
        final_masks.append(final.pred_masks[:, 0])
        final_scores.append(final.object_score_logits[:, 0])

    # Scatter the objects back to (batch, frames, objects, ...), padding objects at NO_OBJECT_SCORE.
    masks = torch.stack(final_masks, dim=1)  # (K, T, h, w)
    pred_masks = masks.new_full((batch, labels.shape[2], *masks.shape[1:]), NO_OBJECT_SCORE)
    pred_masks[owner, slot] = masks
    scores = torch.stack(final_scores, dim=1)
    pred_scores = scores.new_full((batch, labels.shape[2], num_frames), NO_OBJECT_SCORE)
    pred_scores[owner, slot] = scores
    return Sam2VideoTrainingOutput(
        loss=total, pred_masks=pred_masks.transpose(1, 2), object_score_logits=pred_scores.transpose(1, 2)
    )


class Sam2VideoModelForTraining(Sam2VideoModel):
    """`Sam2VideoModel` whose `forward` trains on clips (`track_clips`), for the `Trainer`. Same weights and
    config: a saved folder loads back as a `Sam2VideoModel` for inference."""

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor, prompt_type: str = "mask"
    ) -> Sam2VideoTrainingOutput:
        r"""`pixel_values` `(batch_size, num_frames, 3, image_size, image_size)`, `labels`
        `(batch_size, num_frames, num_objects, size, size)`: see `track_clips`. In training the first frame gets a
        `prompt_type` prompt and corrective clicks follow (the config's `num_correction_points`, ...); in eval
        mode it gets the ground-truth mask, as in Meta's evaluation (semi-supervised video object segmentation)."""
        if not self.training:
            prompt_type = "mask"
        return track_clips(self, pixel_values, labels, prompt_type=prompt_type)


__all__ = ["PROMPT_TYPES", "Sam2VideoModelForTraining", "Sam2VideoTrainingOutput", "track_clips"]
