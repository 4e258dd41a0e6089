"""Tracking strategies of the video sessions: plain SAM 2 (the default) and SAMURAI, written once for both runtimes
(numpy on the host; device arrays only through `frame_arithmetic`).

A strategy changes three things of a tracking step, each per object, so objects stay batched:

- which of the decoder's candidate masks an object keeps (`CandidateChoice`, called by `Sam2VideoModel.track_step`
  and by the ONNX Runtime session where plain SAM 2 takes the highest predicted IoU), and below which object-score
  logit an object counts as absent for its mask and pointer;
- which earlier frames give a frame its recent spatial memories (`recent_frames`, read by the memory bank's
  selection);
- which stored frames the bounded memory bank must keep (`kept_frames`).

Choose one with `strategy=` on `Sam2VideoSession` / `Sam2OnnxVideoSession` or `--strategy` on `hiera-hf track`:
a name (`"sam2"`, `"samurai"`) for the published defaults, or a settings object (`SamuraiSettings(...)`).

**SAMURAI** (Yang et al., arXiv 2411.11922; official code yangchris11/samurai, Apache-2.0), reproduced exactly:

- A Kalman filter on each object's box (constant velocity on centre x, y, aspect ratio and height, DeepSORT's
  noise model). Boxes are those of the candidate masks upsampled to the model input (`image_size` pixels, logits
  > 0; corner pixels inclusive; an empty mask has the box (0, 0, 0, 0)). On frames with several candidates: while
  the track is not yet stable, the candidate with the highest predicted IoU is kept; the filter starts from its
  box (first such frame, or after a reset), then predicts and is corrected by it while its predicted IoU exceeds
  `stable_ious_threshold` (else the track resets). After `stable_frames_threshold` such frames the choice becomes
  `kf_score_weight * IoU(filter's predicted box, candidate box) + (1 - kf_score_weight) * predicted IoU`, and the
  chosen box corrects the filter unless its predicted IoU falls below `stable_ious_threshold` (then it resets).
- Recent memories: the previous frame, plus the `num_maskmem - 2` most recent earlier frames whose kept mask had a
  predicted IoU above `memory_bank_iou_threshold` and an object score above `memory_bank_obj_score_threshold`,
  ranked by recency (temporal positions 1..`num_maskmem - 1`, the previous frame last) instead of by distance.
  As in the official code, the first two frames of the video are never candidates and the temporal stride is not
  used. Tracked in reverse the rule is mirrored (the official code only tracks forward).
- An object counts as absent (its mask logits set to -1024, its pointer the "no object" pointer) when its score
  is at most `min_obj_score_logits` (-1) instead of 0; its spatial memory still marks it absent at 0, as the
  official code does.
- Not carried over: the official `memory_bank_kf_score_threshold` gate reads a value the official code never
  stores, so it never applies; it is not offered.

The one cost on an accelerator: SAMURAI's choice and memory gate read each frame's candidate boxes, predicted IoUs
and object scores back to the host, so a tracked frame waits for the device once (plain SAM 2 never does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .frame_arithmetic import best_candidates, candidate_boxes, from_host, to_host

# Settings ----------------------------------------------------------------------------------------------------------


def _check_number(name: str, value, kind: type, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ValueError(f"{name} must be {'a number' if kind is float else 'an integer'}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")


@dataclass(frozen=True)
class Sam2Settings:
    """Plain SAM 2 (Meta's predictor): no settings."""

    name = "sam2"


@dataclass(frozen=True)
class SamuraiSettings:
    """SAMURAI's settings, with the defaults of its official configs (`configs/samurai/*.yaml`).

    Attributes:
        stable_frames_threshold: frames of consistent boxes before the Kalman filter weighs in the choice (15).
        stable_ious_threshold: a kept mask with a predicted IoU below this resets the track (0.3).
        kf_score_weight: weight of the filter's box IoU against the predicted IoU once stable, in [0, 1] (0.25).
        memory_bank_iou_threshold: a frame enters the recent memories only if its kept mask's predicted IoU is above
            this (0.5).
        memory_bank_obj_score_threshold: ... and its object-score logit above this (0.0).
        min_obj_score_logits: objects with an object-score logit at most this are absent (-1.0).
    """

    stable_frames_threshold: int = 15
    stable_ious_threshold: float = 0.3
    kf_score_weight: float = 0.25
    memory_bank_iou_threshold: float = 0.5
    memory_bank_obj_score_threshold: float = 0.0
    min_obj_score_logits: float = -1.0
    name = "samurai"

    def __post_init__(self):
        _check_number("stable_frames_threshold", self.stable_frames_threshold, int, 1)
        _check_number("kf_score_weight", self.kf_score_weight, float, 0.0, 1.0)
        for field in ("stable_ious_threshold", "memory_bank_iou_threshold"):
            _check_number(field, getattr(self, field), float)
        for field in ("memory_bank_obj_score_threshold", "min_obj_score_logits"):
            _check_number(field, getattr(self, field), float)


SETTINGS: dict[str, type] = {"sam2": Sam2Settings, "samurai": SamuraiSettings}  # name -> settings class
STRATEGY_NAMES = tuple(SETTINGS)


def strategy_settings(strategy: str | Any = "sam2", overrides: Mapping[str, Any] | None = None):
    """The settings object of a strategy: `strategy` a name of `STRATEGY_NAMES` (its published defaults, changed by
    `overrides`) or a settings object (returned as it is). Unknown names and settings are refused."""
    if isinstance(strategy, tuple(SETTINGS.values())):
        if overrides:
            raise ValueError("Give settings either as a settings object or as overrides of a strategy name")
        return strategy
    if not isinstance(strategy, str) or strategy not in SETTINGS:
        raise ValueError(f"Unknown tracking strategy {strategy!r}; choose one of {', '.join(STRATEGY_NAMES)}")
    settings = SETTINGS[strategy]
    known = {field.name for field in dataclasses.fields(settings)}
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        offered = ", ".join(sorted(known)) or "none"
        raise ValueError(f"Unknown {strategy} setting(s) {', '.join(unknown)}; its settings: {offered}")
    return settings(**dict(overrides or {}))


# Strategies --------------------------------------------------------------------------------------------------------


class CandidateChoice:
    """A strategy's choice among an object batch's candidate masks on one frame (what `best_candidates` does for
    plain SAM 2). Called with the decoder's `iou_scores` `(N, C)`, the candidates' low-resolution `mask_logits`
    `(N, C, h, w)` (absent objects already at -1024), `object_score_logits` `(N, 1)` and whether the decoder gave
    several candidates; returns the kept candidate per object `(N,)` int64, of the arrays' kind and device."""

    def __init__(self, presence_threshold: float, choose: Callable):
        self.presence_threshold = presence_threshold
        self._choose = choose

    def __call__(self, iou_scores, mask_logits, object_score_logits, multimask: bool):
        return self._choose(iou_scores, mask_logits, object_score_logits, multimask)


class TrackingStrategy:
    """Plain SAM 2, and the interface the sessions call (see the module docstring)."""

    def __init__(self, settings=None, image_size: int = 1024, num_maskmem: int = 7):
        self.settings = settings or Sam2Settings()
        self.image_size = image_size
        self.num_maskmem = num_maskmem

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def presence_threshold(self) -> float:
        """The object-score logit at or below which an object is absent (SAM 2: 0)."""
        return getattr(self.settings, "min_obj_score_logits", 0.0)

    def choice(self, frame_idx: int, obj_ids: Sequence[int]) -> CandidateChoice | None:
        """The candidate choice for objects `obj_ids` (in batch order) on a frame; `None`: plain SAM 2's."""
        return None

    def recent_frames(
        self, obj_id: int, frame_idx: int, held: Collection[int], reverse: bool, num_frames: int | None
    ) -> list[int] | None:
        """The frames giving the object's recent spatial memories on `frame_idx`, oldest (in the tracking direction)
        first and ending with the previous frame, from the frames whose memories are `held`; `None`: the memory
        bank's own slots."""
        return None

    def kept_frames(self, obj_id: int, frame_idx: int, held: Collection[int]) -> set[int]:
        """Frames among `held` whose memories must outlive the memory bank's reach after tracking `frame_idx`."""
        return set()

    def forget(self, obj_id: int | None = None) -> None:
        """Drop the state of an object (all objects with `None`)."""


class KalmanBoxFilter:
    """Constant-velocity Kalman filter on boxes `(x_centre, y_centre, aspect, height)` with their velocities, for
    `N` objects at once (float64): means `(N, 8)`, covariances `(N, 8, 8)`. Noise grows with the box height as in
    DeepSORT's filter, which SAMURAI uses: position 1/20 and velocity 1/160 of the height per step, aspect 1e-2 and
    1e-5, measurement 1/20 of the height (aspect 1e-1); a new track starts with twice the position and ten times
    the velocity uncertainty."""

    def __init__(self):
        self.motion = np.eye(8)
        self.motion[:4, 4:] = np.eye(4)
        self.observe = np.eye(4, 8)
        self.position_weight, self.velocity_weight = 1.0 / 20, 1.0 / 160

    def _noise(self, height: np.ndarray, position: float, aspect: float) -> np.ndarray:
        weight = self.position_weight * position
        std = np.stack([weight * height, weight * height, np.full_like(height, aspect), weight * height], -1)
        return std

    def initiate(self, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks from measurements `(N, 4)`: zero velocity."""
        height = measurement[:, 3]
        position = self._noise(height, 2.0, 1e-2)
        velocity = np.stack(
            [10 * self.velocity_weight * height] * 2 + [np.full_like(height, 1e-5), 10 * self.velocity_weight * height],
            -1,
        )
        mean = np.concatenate([measurement, np.zeros_like(measurement)], -1)
        return mean, _diagonal(np.concatenate([position, velocity], -1) ** 2)

    def predict(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One step ahead."""
        height = mean[:, 3]
        velocity = np.stack(
            [self.velocity_weight * height] * 2 + [np.full_like(height, 1e-5), self.velocity_weight * height], -1
        )
        noise = _diagonal(np.concatenate([self._noise(height, 1.0, 1e-2), velocity], -1) ** 2)
        mean = mean @ self.motion.T
        covariance = self.motion @ covariance @ self.motion.T + noise
        return mean, covariance

    def update(
        self, mean: np.ndarray, covariance: np.ndarray, measurement: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Corrected by measurements `(N, 4)`."""
        projected_mean = mean @ self.observe.T
        projected = self.observe @ covariance @ self.observe.T + _diagonal(self._noise(mean[:, 3], 1.0, 1e-1) ** 2)
        cross = covariance @ self.observe.T  # (N, 8, 4)
        gain = np.linalg.solve(projected, np.swapaxes(cross, 1, 2)).swapaxes(1, 2)  # projected is symmetric
        mean = mean + ((measurement - projected_mean)[:, None] @ np.swapaxes(gain, 1, 2))[:, 0]
        covariance = covariance - gain @ projected @ np.swapaxes(gain, 1, 2)
        return mean, covariance


def _diagonal(values: np.ndarray) -> np.ndarray:
    """`(N, K)` -> `(N, K, K)` diagonal matrices."""
    return values[:, :, None] * np.eye(values.shape[-1])


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    """Boxes `(..., 4)` (x0, y0, x1, y1) -> (x_centre, y_centre, width / height, height), a height of 0 taken as 1
    (SAMURAI's conversion)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    height = np.where(height == 0, 1.0, height)
    centre_x, centre_y = (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2
    return np.stack([centre_x, centre_y, width / height, height], -1)


def xyah_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """The inverse of `xyxy_to_xyah`."""
    centre_x, centre_y, aspect, height = np.moveaxis(np.asarray(boxes, dtype=np.float64), -1, 0)
    half_width, half_height = aspect * height / 2, height / 2
    return np.stack([centre_x - half_width, centre_y - half_height, centre_x + half_width, centre_y + half_height], -1)


def box_iou(box: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """IoU of boxes `(N, 4)` with candidate boxes `(N, C, 4)`, all (x0, y0, x1, y1) with areas `width * height`;
    0 for an all-zero candidate (an empty mask) or an empty union (SAMURAI's)."""
    box = box[:, None]
    width = np.clip(np.minimum(box[..., 2], candidates[..., 2]) - np.maximum(box[..., 0], candidates[..., 0]), 0, None)
    height = np.clip(np.minimum(box[..., 3], candidates[..., 3]) - np.maximum(box[..., 1], candidates[..., 1]), 0, None)
    intersection = width * height
    area = (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])
    candidate_area = (candidates[..., 2] - candidates[..., 0]) * (candidates[..., 3] - candidates[..., 1])
    union = area + candidate_area - intersection
    iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=union != 0)
    return np.where((candidates == 0).all(-1), 0.0, iou)


@dataclass
class KalmanState:
    """One object's Kalman track: `mean` `(8,)`, `covariance` `(8, 8)` (`None` before the first box) and the
    number of consecutive stable frames."""

    mean: np.ndarray | None = None
    covariance: np.ndarray | None = None
    stable_frames: int = 0


class Samurai(TrackingStrategy):
    """SAMURAI (see the module docstring); `settings` a `SamuraiSettings`."""

    def __init__(self, settings: SamuraiSettings | None = None, image_size: int = 1024, num_maskmem: int = 7):
        super().__init__(settings or SamuraiSettings(), image_size, num_maskmem)
        self.filter = KalmanBoxFilter()
        self.kalman: dict[int, KalmanState] = {}
        self.memory_gate: dict[int, dict[int, bool]] = {}  # object -> frame -> may enter the recent memories

    def choice(self, frame_idx: int, obj_ids: Sequence[int]) -> CandidateChoice:
        def choose(iou_scores, mask_logits, object_score_logits, multimask: bool):
            boxes = candidate_boxes(mask_logits, self.image_size)
            host = to_host([boxes, iou_scores, object_score_logits])
            best = self._choose(frame_idx, list(obj_ids), *host, multimask)
            return from_host(best, iou_scores)

        return CandidateChoice(self.presence_threshold, choose)

    def _choose(
        self,
        frame_idx: int,
        obj_ids: list[int],
        boxes: np.ndarray,
        iou_scores: np.ndarray,
        object_scores: np.ndarray,
        multimask: bool,
    ) -> np.ndarray:
        """The Kalman-filtered choice on the host: `boxes` `(N, C, 4)`, `iou_scores` `(N, C)`, `object_scores`
        `(N, 1)`; records each object's memory gate for the frame."""
        settings = self.settings
        best = best_candidates(iou_scores, multimask)
        stable_iou = np.float32(settings.stable_ious_threshold)
        if multimask:
            for index, obj_id in enumerate(obj_ids):
                state = self.kalman.setdefault(obj_id, KalmanState())
                best[index] = self._step(state, boxes[index], iou_scores[index], best[index], stable_iou)
        rows = np.arange(len(obj_ids))
        kept_iou = iou_scores[rows, best]
        for index, obj_id in enumerate(obj_ids):  # compared as Python floats, like the official `.item()`s
            passes = float(kept_iou[index]) > settings.memory_bank_iou_threshold and (
                float(object_scores[index, 0]) > settings.memory_bank_obj_score_threshold
            )
            self.memory_gate.setdefault(obj_id, {})[frame_idx] = passes
        return best

    def _step(self, state: KalmanState, boxes: np.ndarray, ious: np.ndarray, best: int, stable_iou) -> int:
        """One object's Kalman step on a frame with candidates `boxes` `(C, 4)` and predicted `ious` `(C,)`;
        returns the kept candidate."""
        kf, settings = self.filter, self.settings
        if state.mean is None or state.stable_frames == 0:
            state.mean, state.covariance = (x[0] for x in kf.initiate(xyxy_to_xyah(boxes[best])[None]))
            state.stable_frames += 1
            return best
        mean, covariance = kf.predict(state.mean[None], state.covariance[None])
        if state.stable_frames < settings.stable_frames_threshold:
            if ious[best] > stable_iou:
                mean, covariance = kf.update(mean, covariance, xyxy_to_xyah(boxes[best])[None])
                state.stable_frames += 1
            else:
                state.stable_frames = 0
        else:
            predicted = xyah_to_xyxy(mean[:, :4])
            box_ious = box_iou(predicted, boxes[None].astype(np.float64))[0].astype(np.float32)
            weight = settings.kf_score_weight
            weighted = np.float32(weight) * box_ious + np.float32(1 - weight) * ious
            best = int(weighted.argmax())
            if ious[best] < stable_iou:
                state.stable_frames = 0
            else:
                mean, covariance = kf.update(mean, covariance, xyxy_to_xyah(boxes[best])[None])
        state.mean, state.covariance = mean[0], covariance[0]
        return best

    def recent_frames(
        self, obj_id: int, frame_idx: int, held: Collection[int], reverse: bool, num_frames: int | None
    ) -> list[int]:
        step = 1 if reverse else -1  # towards earlier frames in the tracking direction
        previous = frame_idx + step
        # The official scan stops before frame 2 (it never reaches frames 0 and 1); mirrored in reverse.
        last = 2 if not reverse else (None if num_frames is None else num_frames - 3)
        gate = self.memory_gate.get(obj_id, {})
        if reverse:
            candidates = [t for t, ok in gate.items() if ok and t > previous and (last is None or t <= last)]
        else:
            candidates = [t for t, ok in gate.items() if ok and last <= t < previous]
        candidates = [t for t in candidates if t in held]
        nearest = sorted(candidates, key=lambda t: abs(t - frame_idx))[: self.num_maskmem - 2]
        return sorted(nearest, key=lambda t: -abs(t - frame_idx)) + [previous]

    def kept_frames(self, obj_id: int, frame_idx: int, held: Collection[int]) -> set[int]:
        gate = self.memory_gate.get(obj_id, {})
        for t in [t for t in gate if t not in held and t != frame_idx]:
            del gate[t]
        passing = [t for t, passes in gate.items() if passes]
        # The passing frames the next frame may read, whichever way tracking goes on.
        before = sorted((t for t in passing if t <= frame_idx), reverse=True)[: self.num_maskmem - 1]
        after = sorted(t for t in passing if t >= frame_idx)[: self.num_maskmem - 1]
        return set(before) | set(after)

    def forget(self, obj_id: int | None = None) -> None:
        if obj_id is None:
            self.kalman.clear()
            self.memory_gate.clear()
        else:
            self.kalman.pop(obj_id, None)
            self.memory_gate.pop(obj_id, None)


STRATEGIES: dict[str, type[TrackingStrategy]] = {"sam2": TrackingStrategy, "samurai": Samurai}


def make_strategy(strategy, image_size: int, num_maskmem: int) -> TrackingStrategy:
    """The strategy object a session runs for a model of `image_size` and `num_maskmem`, from a name or a settings
    object (`strategy_settings`)."""
    settings = strategy_settings(strategy)
    return STRATEGIES[settings.name](settings, image_size, num_maskmem)


__all__ = [
    "CandidateChoice",
    "KalmanBoxFilter",
    "STRATEGY_NAMES",
    "Sam2Settings",
    "Samurai",
    "SamuraiSettings",
    "TrackingStrategy",
    "box_iou",
    "make_strategy",
    "strategy_settings",
    "xyah_to_xyxy",
    "xyxy_to_xyah",
]
