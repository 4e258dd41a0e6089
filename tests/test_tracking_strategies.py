"""Tracking strategies (`hiera_hf.sam2.tracking_strategies`) against their official implementations.

SAMURAI: its official predictor (PyPI `absolutely-not-samurai`, run apart: `samurai_helpers`) and ours track the
same 16 real frames (blocks.mp4) with a random-weight SAM 2.1 tiny at 128 px, converted from the official format.
The weights' object scores are shifted so that the object is absent for SAM 2 but present for SAMURAI (score in
(-1, 0]) on the first frames and present for both later, the mask hypernetworks' outputs are scaled by 30 (logits
spread out, so masks are not all of the frame and the comparison away from the threshold means something), and
SAMURAI's thresholds are raised near the random model's predicted IoUs (~0.504) so that every branch is taken:
Kalman starts, build-ups, resets and the stable phase, frames kept out of the memory and frames let in, and a
Kalman-weighted choice that differs from the highest predicted IoU.
"""

import av
import numpy as np
import pytest
import torch
from sam2_helpers import MEDIA_FOLDER, load_converted, meta_video_predictor, randomize_meta_weights
from samurai_helpers import run_samurai

from hiera_hf.sam2 import Sam2Config, Sam2VideoModel, Sam2VideoSession
from hiera_hf.sam2.memory_bank import MemoryRules, select_memory
from hiera_hf.sam2.presets import get_sam2_preset
from hiera_hf.sam2.tracking_strategies import (
    KalmanBoxFilter,
    Samurai,
    SamuraiSettings,
    box_iou,
    strategy_settings,
    xyxy_to_xyah,
)

SIZE, NUM_FRAMES, SCORE_SHIFT = 128, 16, 2.7
# Raised near the random model's predicted IoUs (0.49-0.51) so that tracks reset and frames are gated out; the
# stable phase starts after 3 frames instead of 15, and the choice is the Kalman filter's alone (weight 1): the
# random masks' boxes tie, so it takes the first candidate where the highest predicted IoU is another one.
SETTINGS = {
    "stable_frames_threshold": 3,
    "stable_ious_threshold": 0.504,
    "memory_bank_iou_threshold": 0.504,
    "kf_score_weight": 1.0,
}
PROMPTS = {"box": {"box": [300, 100, 700, 500]}, "click": {"points": [[500, 300]], "labels": [1]}}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """SAM 2.1 tiny with random weights in the official format, ours converted from it, and 16 real frames."""
    root = tmp_path_factory.mktemp("samurai")
    meta = meta_video_predictor(get_sam2_preset("sam2.1_hiera_tiny").meta_config, SIZE)
    randomize_meta_weights(meta, SCORE_SHIFT)
    with torch.no_grad():
        for mlp in meta.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30)
            mlp.layers[-1].bias.mul_(30)
    checkpoint = root / "sam2.1_hiera_tiny.pt"
    torch.save({"model": meta.state_dict()}, checkpoint)
    ours, info = load_converted(meta, Sam2Config.from_preset("sam2.1_hiera_tiny", image_size=SIZE), root / "ours")
    assert not any(info.values()), info
    frames = root / "frames"
    frames.mkdir()
    with av.open(str(MEDIA_FOLDER / "blocks.mp4")) as container:
        for t, frame in zip(range(NUM_FRAMES), container.decode(video=0)):
            frame.to_image().save(frames / f"{t:05d}.jpg", quality=95)
    return {"root": root, "checkpoint": checkpoint, "model": ours.eval(), "frames": frames}


def _track_ours(model, frames, prompt: dict, strategy, monkeypatch) -> tuple[list[torch.Tensor], list[dict]]:
    """Our session's logits per frame and, after each Kalman step, the object's Kalman state and choice."""
    steps = []
    step = Samurai._step

    def recorded(self, state, boxes, ious, best, stable_iou):
        chosen = step(self, state, boxes, ious, best, stable_iou)
        steps.append(
            {
                "stable_frames": state.stable_frames,
                "mean": state.mean.copy(),
                "covariance": state.covariance.copy(),
                "chosen": chosen,
                "highest_iou": int(np.argmax(ious)),
            }
        )
        return chosen

    monkeypatch.setattr(Samurai, "_step", recorded)
    session = Sam2VideoSession(model, frames, fill_hole_area=8, progress=False, strategy=strategy)
    if "box" in prompt:
        session.add_box(0, 1, prompt["box"])
    else:
        session.add_points(0, 1, prompt["points"], prompt["labels"])
    logits = [result.mask_logits for result in session.propagate()]
    return logits, steps, session


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_samurai_matches_official(official, prompt, monkeypatch):
    reference = run_samurai(
        official["checkpoint"], official["frames"], SIZE, SETTINGS, PROMPTS[prompt], official["root"] / f"{prompt}.npz"
    )
    logits, steps, session = _track_ours(
        official["model"], official["frames"], PROMPTS[prompt], SamuraiSettings(**SETTINGS), monkeypatch
    )

    assert reference["frames"].tolist() == list(range(NUM_FRAMES)) and len(logits) == NUM_FRAMES
    worst = 0.0
    for ours_logits, official_logits in zip(logits, torch.from_numpy(reference["mask_logits"])):
        worst = max(worst, (ours_logits - official_logits).abs().max().item())
        clear = official_logits.abs() > 1e-3
        assert torch.equal((ours_logits > 0)[clear], (official_logits > 0)[clear])
    assert worst < 1e-4, worst  # measured: 2e-5 on logits of up to ~100 (float32 rounding)

    # The Kalman state after every step with candidates (the official calls without candidates leave it alone).
    kalman = reference["branch"] >= 0
    assert len(steps) == kalman.sum() >= NUM_FRAMES - 1
    assert [s["stable_frames"] for s in steps] == reference["stable_frames"][kalman].tolist()
    np.testing.assert_allclose(np.stack([s["mean"] for s in steps]), reference["kf_mean"][kalman], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        np.stack([s["covariance"] for s in steps]), reference["kf_covariance"][kalman], rtol=1e-9, atol=1e-9
    )

    # Every branch was taken: starts (also after resets), the build-up, the Kalman-weighted phase; a reset; a
    # weighted choice other than the highest predicted IoU; frames gated out of the memory; objects present for
    # SAMURAI (score in (-1, 0]) that SAM 2 would call absent.
    branches = reference["branch"][kalman].tolist()
    assert {0, 1, 2} <= set(branches)
    assert branches.count(0) >= 2
    assert any(s["chosen"] != s["highest_iou"] for s, b in zip(steps, branches) if b == 2)
    gate = session.strategy.memory_gate[1]  # frames let in and read by later frames, and frames kept out
    assert not all(gate[t] for t in gate if t >= 2) and any(gate[t] for t in gate if 2 <= t <= NUM_FRAMES - 3)
    scores = reference["object_score"]
    assert ((scores > -1) & (scores <= 0)).any() and (scores > 0).any()


def test_samurai_changes_what_sam2_does(official, monkeypatch):
    """The strategy is not a no-op on this video (so the parity above can fail), and `"sam2"` is plain SAM 2."""
    samurai, _, _ = _track_ours(
        official["model"], official["frames"], PROMPTS["click"], SamuraiSettings(**SETTINGS), monkeypatch
    )
    session = Sam2VideoSession(official["model"], official["frames"], fill_hole_area=8, progress=False)
    session.add_points(0, 1, **{"points": PROMPTS["click"]["points"], "labels": PROMPTS["click"]["labels"]})
    plain = [result.mask_logits for result in session.propagate()]
    assert any(not torch.equal(a > 0, b > 0) for a, b in zip(samurai, plain))
    assert session.strategy.name == "sam2" and session.strategy.choice(0, [1]) is None


def test_samurai_objects_are_batched_and_independent(official):
    """Two objects tracked together give each the masks (and Kalman state) it gets when tracked alone."""
    prompts = {1: [640, 300, 900, 600], 2: [200, 80, 520, 420]}

    def track(obj_ids):
        session = Sam2VideoSession(
            official["model"], official["frames"], fill_hole_area=8, progress=False, strategy=SamuraiSettings(**SETTINGS)
        )
        for obj_id in obj_ids:
            session.add_box(0, obj_id, prompts[obj_id])
        return [r.mask_logits for r in session.propagate(max_frames=8)], session.strategy

    together, strategy = track([1, 2])
    for index, obj_id in enumerate([1, 2]):
        alone, alone_strategy = track([obj_id])
        for x, y in zip(together, alone):
            assert (x[index] - y[0]).abs().max().item() < 1e-4
        assert alone_strategy.kalman[obj_id].stable_frames == strategy.kalman[obj_id].stable_frames
        np.testing.assert_allclose(alone_strategy.kalman[obj_id].mean, strategy.kalman[obj_id].mean, rtol=1e-6)


def test_samurai_memory_stays_bounded_and_objects_can_be_removed():
    """A stream of 40 frames: the memory bank keeps a bounded number of frames per object whatever the gate keeps;
    `remove_object` and `reset` forget the strategy's state too."""
    torch.manual_seed(0)
    config = Sam2Config.from_preset("sam2.1_hiera_tiny", image_size=64, num_maskmem=3, max_obj_ptrs_in_encoder=4)
    model = Sam2VideoModel(config).eval()
    session = Sam2VideoSession(model, None, progress=False, strategy="samurai")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(40)]
    session.push_frame(frames[0])
    session.add_points(0, 1, [[30, 20]], [1])
    session.add_points(0, 2, [[10, 40]], [1])
    held = []
    for frame in frames[1:]:
        session.push_frame(frame)
        list(session.propagate())
        held.append(max(len(session._objects[k].memory.recent) for k in (1, 2)))
    assert max(held[10:]) <= 2 * (config.num_maskmem - 1) + config.max_obj_ptrs_in_encoder
    assert all(len(gate) <= max(held) + 1 for gate in session.strategy.memory_gate.values())
    session.remove_object(2)
    assert set(session.strategy.kalman) <= {1} and 2 not in session.strategy.memory_gate
    session.reset()
    assert not session.strategy.kalman and not session.strategy.memory_gate


def test_samurai_recent_frames_rule():
    """The official rule: the previous frame plus the most recent earlier frames that passed the gate (never frames
    0 and 1), ranked by recency; in reverse, mirrored."""
    strategy = Samurai(SamuraiSettings(), image_size=64, num_maskmem=7)
    strategy.memory_gate[1] = {t: t % 3 != 0 for t in range(20)}
    held = set(range(20))
    assert strategy.recent_frames(1, 20, held, False, None) == [11, 13, 14, 16, 17, 19]
    assert strategy.recent_frames(1, 4, held, False, None) == [2, 3]
    assert strategy.recent_frames(1, 2, held, False, None) == [1]
    assert strategy.recent_frames(1, 12, held - {10}, False, None) == [2, 4, 5, 7, 8, 11]
    assert strategy.recent_frames(1, 5, held, True, 20) == [13, 11, 10, 8, 7, 6]
    assert strategy.recent_frames(1, 15, held, True, 20) == [17, 16]  # frames 18 and 19 never
    # Ranked positions in the memory bank: the previous frame last (num_maskmem - 1), the others before it.
    recent = strategy.recent_frames(1, 20, held - {14}, False, None)
    selection = select_memory(20, [0], held - {14}, held, MemoryRules(num_maskmem=7), recent_frames=recent)
    assert selection.spatial_frames == (0, 10, 11, 13, 16, 17, 19)
    assert selection.temporal_positions == (0, 1, 2, 3, 4, 5, 6)
    # A frame not held leaves its rank's slot empty (the official code skips missing frames the same way).
    selection = select_memory(20, [0], held - {19}, held, MemoryRules(num_maskmem=7), recent_frames=[13, 16, 19])
    assert selection.spatial_frames == (0, 13, 16) and selection.temporal_positions == (0, 4, 5)


def test_kalman_filter_and_boxes():
    """Box conversions and IoU as SAMURAI's; the filter stays at a still box and follows a moving one."""
    boxes = np.array([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(xyxy_to_xyah(boxes), [[30, 60, 0.5, 80], [0, 0, 0, 1]])
    candidates = np.array([[[10, 20, 50, 100], [30, 20, 70, 100], [0, 0, 0, 0]]], dtype=float)
    np.testing.assert_allclose(box_iou(boxes[:1], candidates), [[1.0, 1600 / 4800, 0.0]])
    kf = KalmanBoxFilter()
    mean, covariance = kf.initiate(xyxy_to_xyah(boxes[:1]))
    for step in range(1, 6):
        mean, covariance = kf.predict(mean, covariance)
        mean, covariance = kf.update(mean, covariance, xyxy_to_xyah(boxes[:1] + [5 * step, 0, 5 * step, 0]))
    assert 2 < mean[0, 4] < 5  # the x velocity picks up the motion of 5 px per frame
    assert np.all(np.linalg.eigvalsh(covariance[0]) > 0)


def test_strategy_settings_are_checked():
    assert strategy_settings("samurai", {"kf_score_weight": 0.3}) == SamuraiSettings(kf_score_weight=0.3)
    assert strategy_settings(SamuraiSettings()).stable_frames_threshold == 15
    with pytest.raises(ValueError, match="Unknown tracking strategy 'kalman'; choose one of sam2, samurai"):
        strategy_settings("kalman")
    with pytest.raises(ValueError, match="Unknown samurai setting.*kf_weight.*kf_score_weight"):
        strategy_settings("samurai", {"kf_weight": 0.3})
    with pytest.raises(ValueError, match="kf_score_weight must be between 0.0 and 1.0"):
        SamuraiSettings(kf_score_weight=1.5)
    with pytest.raises(ValueError, match="stable_frames_threshold must be an integer"):
        SamuraiSettings(stable_frames_threshold=2.5)
    with pytest.raises(ValueError, match="Unknown sam2 setting"):
        strategy_settings("sam2", {"x": 1})


def test_track_cli_strategy(tmp_path, capsys):
    """`hiera-hf track --strategy samurai --strategy-setting ...` writes what the session gives with those settings;
    bad settings are refused before anything is written."""
    from PIL import Image
    from sam2_helpers import write_mp4

    from hiera_hf.cli import main
    from hiera_hf.sam2.video_output import label_map

    torch.manual_seed(0)
    model = Sam2VideoModel(Sam2Config.from_preset("sam2.1_hiera_tiny", image_size=64)).eval()
    model.save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    video = write_mp4(tmp_path / "clip.mp4", [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(6)])
    out = tmp_path / "out"
    flags = ["--strategy", "samurai", "--strategy-setting", "stable_frames_threshold=2"]
    command = ["track", str(video), "--model", str(tmp_path / "model"), "--point", "0,1,30,20", "--out", str(out)]
    assert main([*command, *flags, "--format", "png", "--quiet"]) == 0
    session = Sam2VideoSession(
        model, str(video), progress=False, strategy=SamuraiSettings(stable_frames_threshold=2)
    )
    session.add_points(0, 1, [[30, 20]], [1])
    for result in session.propagate():
        with Image.open(out / "masks" / f"{result.frame_idx:05d}.png") as image:
            assert np.array_equal(np.asarray(image), label_map(result))
    assert session.strategy.kalman[1].stable_frames >= 2

    fresh = tmp_path / "fresh"
    command[-1] = str(fresh)
    assert main([*command, "--strategy", "samurai", "--strategy-setting", "kf_weight=0.3"]) == 1
    assert "Unknown samurai setting(s) kf_weight" in capsys.readouterr().err
    assert main([*command, "--strategy-setting", "kf_score_weight=0.3"]) == 1  # sam2 has no settings
    assert "Unknown sam2 setting(s) kf_score_weight" in capsys.readouterr().err
    assert main([*command, *flags, "--strategy-setting", "stable_frames_threshold=3"]) == 1
    assert "given more than once" in capsys.readouterr().err
    assert not fresh.exists()
    with pytest.raises(SystemExit):
        main([*command, "--strategy-setting", "kf_score_weight"])
    assert "expected NAME=NUMBER" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*command, "--strategy", "kalman"])
