"""`frame_arithmetic`, the per-frame arithmetic both video sessions share, gives the same answers on numpy arrays
(ONNX Runtime) and torch tensors (PyTorch), and the torch answers are the operations the model used before the
functions were shared (checked against torch written out by hand here)."""

import numpy as np
import torch
import torch.nn.functional as F

from hiera_hf.sam2.frame_arithmetic import (
    NO_OBJECT_SCORE,
    best_candidates,
    fill_absent,
    frame_logits,
    mask_prompt,
    resize,
    take_candidates,
)


def test_candidate_choice_matches_meta_and_numpy():
    generator = torch.Generator().manual_seed(0)
    masks = torch.randn(4, 3, 8, 8, generator=generator)
    iou = torch.rand(4, 3, generator=generator)
    scores = torch.tensor([[1.0], [-2.0], [0.5], [0.0]])  # objects 1 and 3 are absent (logit <= 0)
    tokens = torch.randn(4, 3, 16, generator=generator)
    for multimask in (True, False):
        best = best_candidates(iou, multimask)
        expected_best = iou.argmax(-1) if multimask else torch.zeros(4, dtype=torch.long)
        assert torch.equal(best, expected_best)
        filled = fill_absent(masks, scores)
        expected = torch.where(scores[..., None, None] > 0, masks, NO_OBJECT_SCORE)
        assert torch.equal(filled, expected) and bool((filled[1] == NO_OBJECT_SCORE).all())
        rows = torch.arange(4)
        assert torch.equal(take_candidates(filled, best), expected[rows, expected_best])
        assert torch.equal(take_candidates(tokens, best), tokens[rows, expected_best])
        # numpy gives the same, in float32
        best_np = best_candidates(iou.numpy(), multimask)
        filled_np = fill_absent(masks.numpy(), scores.numpy())
        assert filled_np.dtype == np.float32 and np.array_equal(filled_np, filled.numpy())
        assert np.array_equal(take_candidates(filled_np, best_np), take_candidates(filled, best).numpy())
    assert torch.equal(take_candidates(tokens[:, :1], torch.zeros(4, dtype=torch.long)), tokens[:, 0])


def test_mask_prompt_resize_matches_torch_and_numpy():
    mask = (torch.rand(90, 130, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    resized = F.interpolate(mask[None, None], size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    expected = (resized >= 0.5).float()
    assert torch.equal(mask_prompt(mask, 64), expected)
    prompt = mask_prompt(mask.numpy(), 64)
    assert prompt.dtype == np.float32 and prompt.shape == (1, 1, 64, 64)
    clear = (resized - 0.5).abs().numpy() > 1e-5  # away from the threshold, where float sums may round either way
    assert np.array_equal(prompt[clear], expected.numpy()[clear]) and clear.mean() > 0.9
    already = torch.ones(64, 64)
    assert torch.equal(mask_prompt(already, 64), already[None, None])  # the model's size: taken as it is


def test_frame_logits_same_on_numpy_and_torch():
    generator = torch.Generator().manual_seed(2)
    masks = [torch.randn(1, 16, 16, generator=generator) * 5, None, torch.randn(1, 16, 16, generator=generator)]
    scores = [torch.tensor([2.0]), None, torch.tensor([-1.0])]
    for non_overlap_masks in (False, True):
        logits, object_scores = frame_logits(masks, scores, torch.empty(0), (16, 16), (40, 30), non_overlap_masks)
        assert logits.shape == (3, 40, 30) and torch.equal(object_scores, torch.tensor([2.0, NO_OBJECT_SCORE, -1.0]))
        assert bool((logits[1] <= NO_OBJECT_SCORE + 1e-3).all())  # no output: absent everywhere
        expected = resize(masks[0], (40, 30))[0]
        if not non_overlap_masks:
            torch.testing.assert_close(logits[0], expected, rtol=0, atol=0)
        else:  # pixels object 0 loses to object 2 are capped at -10
            loses = logits[2] > expected
            assert torch.equal(logits[0][~loses], expected[~loses]) and bool((logits[0][loses] <= -10).all())
        logits_np, scores_np = frame_logits(
            [None if m is None else m.numpy() for m in masks],
            [None if s is None else s.numpy() for s in scores],
            np.empty(0, np.float32),
            (16, 16),
            (40, 30),
            non_overlap_masks,
        )
        assert logits_np.dtype == scores_np.dtype == np.float32
        np.testing.assert_allclose(logits_np, logits.numpy(), rtol=1e-6, atol=1e-5)  # -1024 +- float rounding
        assert np.array_equal(scores_np, object_scores.numpy())
