"""Tracking strategies of the video sessions: plain SAM 2 (the default), SAMURAI and DAM4SAM, written once for both
runtimes (numpy on the host; device arrays only through `frame_arithmetic`).

A strategy changes, per object (so objects stay batched):

- which of the decoder's candidate masks an object keeps (`CandidateChoice`, called by `Sam2VideoModel.track_step`
  and by the ONNX Runtime session where plain SAM 2 takes the highest predicted IoU), and below which object-score
  logit an object counts as absent for its mask and pointer;
- which earlier frames give a frame its memories: the recent spatial memories only (`recent_frames`, read by the
  memory bank's selection) or the whole selection (`select`);
- which tracked frames become conditioning frames ("anchors", `new_anchors`) and which stored frames the bounded
  memory bank must keep (`kept_frames`);
- how frames are resized (`antialiased_frames`), whether holes are filled (`fills_holes`) and whether a box alone
  is first turned into a mask prompt (`box_as_mask`).

Choose one with `strategy=` on `Sam2VideoSession` / `Sam2OnnxVideoSession` or `--strategy` on `hiera-hf track`:
a name (`"sam2"`, `"samurai"`, `"dam4sam"`) for the published defaults, or a settings object
(`SamuraiSettings(...)`, `Dam4SamSettings(...)`).

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

**DAM4SAM** (SAM 2.1++; Videnovic, Lukezic and Kristan, "A Distractor-Aware Memory for Visual Object Tracking with
SAM2", CVPR 2025, arXiv 2411.17576; official code jovanavidenovic/DAM4SAM, commit 9c95450), reproduced exactly
(`tests/data/dam4sam/README.md`: the reference runs). The kept candidate is still the highest predicted IoU; what
changes is the memory, split into a distractor-resolving memory (DRM) of anchor frames and a recent-appearance
memory (RAM):

- Anchors. A tracked frame becomes an anchor (a conditioning frame, its memory encoded again from the binarised mask
  as a prompt's) when the object is confidently and steadily tracked but a distractor shows in the other candidates:
  the kept mask's predicted IoU is above `drm_iou_threshold` (0.8), its area at the video's resolution divided by the
  median of the last `area_history` (10) non-empty areas among the last `area_window` (300) frames (the current one
  included; never on the first tracked frame) lies in [`min_area_ratio`, `max_area_ratio`] (0.8, 1.2), more than
  `min_anchor_gap` (5) frames passed since the last anchor, and some other candidate, reduced to the largest
  8-connected part of it outside the kept mask and joined to the kept mask, has a bounding box whose IoU with the
  kept mask's is at most `alternative_iou_threshold` (0.7). Boxes and IoUs are the VOT toolkit's: a box spans from
  the first to the last pixel column and row (one pixel short of the mask), its IoU counts rasterised pixels, and
  boxes without extent across the joint bounds have IoU 1.
- DRM: at most `max_anchor_frames` (4) conditioning frames, all at temporal position 0: the latest one before the
  previous frame, the first prompt, then the nearest others; never the previous frame.
- RAM: the other `num_maskmem - |DRM|` slots: the previous frame (or, if the object was not visible there, the
  latest earlier non-anchor frame where it was), then frames on the grid of every `recent_stride`-th (5) frame
  before it, each walking back over frames where the object was not visible; never frame 0. They take the last
  temporal positions by recency (the most recent `num_maskmem - 1`). "Visible": the kept low-resolution mask has a
  positive logit.
- Object pointers: those of the selected anchors and prompts, then of the frames among the last
  `max_obj_ptrs_in_encoder - 1` where the object was visible; distances normalised by `min(t, max - 1)` (the official
  tracker has seen `t + 1` frames).
- Frames are resized as the official code does (float pixels, antialiased bilinear, not Pillow's 8-bit bicubic),
  holes are never filled (the official hole filling is a no-op), and a box alone is first turned into a mask: the
  decoder's mask on the frame without memory, whatever its object score, at the video's resolution, thresholded at
  0, then given as a mask prompt.

Differences by design: any number of objects, each with its own areas, anchors and visibility (the official tracker
follows one); prompts on any frame, and clicks (SAM 2's prompt path: the official tracker takes a box or a mask on
frame 0 only), "frame 0" of the rules being the first prompt in the tracking direction; reverse tracking mirrors the
rules (the official code tracks forward only); the bank keeps the prompts and the last `max_anchor_frames` anchors
(older ones are never selected again, nor, with the default gap, within pointer reach), the recent frames the RAM
may still read and the pointers' reach. A frame prompted again replays its stored output, anchors included.

Cost: each tracked frame waits for the device once (per batch of objects; the predicted IoUs, the kept masks' low-resolution pixel counts
and all candidates at the video's resolution, as bytes, come back in one transfer) and the host measures areas,
components and boxes; an anchor frame runs the memory encoder once more. The memory attends to no more frames
than SAM 2's.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .frame_arithmetic import (
    best_candidates,
    candidate_boxes,
    from_host,
    resize,
    take_candidates,
    to_host,
    to_host_with_masks,
)
from .memory_bank import MemoryRules, MemorySelection, ObjectMemory

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


@dataclass(frozen=True)
class Dam4SamSettings:
    """DAM4SAM's settings, with the values of its official code (`dam4sam_tracker.py`, `sam2/sam21pp_*.yaml`).

    Attributes:
        drm_iou_threshold: a frame may become an anchor only if its kept mask's predicted IoU is above this (0.8).
        min_area_ratio, max_area_ratio: ... and its mask's area (pixels at the video's resolution) divided by the
            median of the recent areas is within these bounds (0.8, 1.2).
        area_history: the median is over the last this many non-empty areas (10) ...
        area_window: ... among the areas of the last this many frames, the current one included (300).
        min_anchor_gap: ... and more than this many frames have passed since the object's last anchor (5).
        alternative_iou_threshold: the frame becomes an anchor if some alternative candidate, once its largest part
            outside the kept mask is joined to it, has a bounding box whose IoU with the kept mask's box is at most
            this (0.7).
        max_anchor_frames: spatial memories of conditioning frames (the prompt and the anchors) per frame: the
            distractor-resolving memory, DAM4SAM's `max_cond_frames_in_attn` (4).
        recent_stride: the recent memories beyond the previous visible frame are taken every this many frames
            (DAM4SAM's `memory_temporal_stride_for_eval`, 5).
    """

    drm_iou_threshold: float = 0.8
    min_area_ratio: float = 0.8
    max_area_ratio: float = 1.2
    area_history: int = 10
    area_window: int = 300
    min_anchor_gap: int = 5
    alternative_iou_threshold: float = 0.7
    max_anchor_frames: int = 4
    recent_stride: int = 5
    name = "dam4sam"

    def __post_init__(self):
        for field in ("drm_iou_threshold", "min_area_ratio", "max_area_ratio", "alternative_iou_threshold"):
            _check_number(field, getattr(self, field), float)
        if self.min_area_ratio > self.max_area_ratio:
            raise ValueError(
                f"min_area_ratio ({self.min_area_ratio}) must not exceed max_area_ratio ({self.max_area_ratio})"
            )
        _check_number("area_history", self.area_history, int, 1)
        _check_number("area_window", self.area_window, int, 1)
        _check_number("min_anchor_gap", self.min_anchor_gap, int, 0)
        _check_number("max_anchor_frames", self.max_anchor_frames, int, 2)
        _check_number("recent_stride", self.recent_stride, int, 1)


SETTINGS: dict[str, type] = {
    "sam2": Sam2Settings,
    "samurai": SamuraiSettings,
    "dam4sam": Dam4SamSettings,
}  # name -> settings class
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

    antialiased_frames = False  # frames resized as Meta's video loader does (Pillow, 8 bits); True: DAM4SAM's
    fills_holes = True  # the session's `fill_hole_area` applies; False: never fill holes (DAM4SAM's code)
    box_as_mask = False  # a box alone is turned into a mask prompt first (DAM4SAM's initialisation)

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

    def choice(
        self, frame_idx: int, obj_ids: Sequence[int], video_size: tuple[int, int] | None = None
    ) -> CandidateChoice | None:
        """The candidate choice for objects `obj_ids` (in batch order) on a tracked frame of a video of
        `video_size` (height, width); `None`: plain SAM 2's."""
        return None

    def prompt_choice(self, frame_idx: int, obj_ids: Sequence[int]) -> CandidateChoice | None:
        """The candidate choice on a frame prompted with clicks (default: as on a tracked frame)."""
        return self.choice(frame_idx, obj_ids)

    def select(
        self,
        obj_id: int,
        frame_idx: int,
        bank: ObjectMemory,
        rules: MemoryRules,
        reverse: bool,
        num_frames: int | None = None,
    ) -> MemorySelection | None:
        """The whole memory selection of an object on a frame from what its `bank` holds (`num_frames`: the
        video's length, `None` for a stream); `None`: the memory bank's (with `recent_frames`)."""
        return None

    def recent_frames(
        self, obj_id: int, frame_idx: int, held: Collection[int], reverse: bool, num_frames: int | None
    ) -> list[int] | None:
        """The frames giving the object's recent spatial memories on `frame_idx`, oldest (in the tracking direction)
        first and ending with the previous frame, from the frames whose memories are `held`; `None`: the memory
        bank's own slots."""
        return None

    def new_anchors(self, frame_idx: int, obj_ids: Sequence[int]) -> dict[int, list[int]]:
        """Objects among `obj_ids` whose tracked output on `frame_idx` becomes a conditioning frame (its memory
        encoded again from the binarised mask, as a prompt's), each with the earlier such frames it no longer
        needs."""
        return {}

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

    def choice(
        self, frame_idx: int, obj_ids: Sequence[int], video_size: tuple[int, int] | None = None
    ) -> CandidateChoice:
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


# DAM4SAM -------------------------------------------------------------------------------------------------------------


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The bounding box of a binary mask `(H, W)` as DAM4SAM takes it (the VOT toolkit's conversion): (x, y, width,
    height) with `width = right - left` and `height = bottom - top` of the inclusive pixel bounds, so the box
    covers one pixel less than the mask each way; (0, 0, 0, 0) for an empty mask."""
    columns, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    if not len(rows):
        return (0, 0, 0, 0)
    return (int(columns[0]), int(rows[0]), int(columns[-1] - columns[0]), int(rows[-1] - rows[0]))


def vot_box_iou(first: tuple[int, int, int, int], second: tuple[int, int, int, int]) -> float:
    """IoU of two `mask_box` boxes as the VOT toolkit rasterises them (box `(x, y, w, h)` covers pixels `x..x+w-1`
    and `y..y+h-1`): 1 when the two boxes' joint bounds have no extent (both empty, say), 0 when neither covers
    a pixel."""
    bounds = [(x, y, x + w - 1, y + h - 1) for x, y, w, h in (first, second)]
    joint = (min(b[0] for b in bounds), min(b[1] for b in bounds), max(b[2] for b in bounds), max(b[3] for b in bounds))
    if joint[0] >= joint[2] or joint[1] >= joint[3]:
        return 1.0
    (x0, y0, w0, h0), (x1, y1, w1, h1) = first, second
    width = max(0, min(x0 + w0, x1 + w1) - max(x0, x1))
    height = max(0, min(y0 + h0, y1 + h1) - max(y0, y1))
    intersection = width * height if w0 > 0 and h0 > 0 and w1 > 0 and h1 > 0 else 0
    union = max(w0, 0) * max(h0, 0) + max(w1, 0) * max(h1, 0) - intersection
    return float(intersection) / float(union) if union > 0 else 0.0


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a non-empty binary mask `(H, W)` (the first in OpenCV's label order on
    ties), as bool."""
    import cv2

    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _grid_below(frame: int, stride: int, last: int | None) -> int:
    """The frame before `frame` (in mirrored indices when tracking in reverse, `last` the video's last frame) on
    the grid of every `stride`-th frame: DAM4SAM's `((frame - 1) // stride) * stride` forward; in reverse the same
    grid of frame indices, so the next multiple of `stride` after the real frame."""
    if last is None:
        return (frame - 1) // stride * stride
    real = last - frame
    return last - (-(-(real + 1) // stride) * stride)


@dataclass
class AnchorState:
    """One object's DAM4SAM state: recent mask areas at the video's resolution (`areas`, the last
    `area_window`), the frame of its last anchor, its anchors still kept (oldest first) and which frames showed it
    (`visible`: its kept low-resolution mask has a positive logit)."""

    areas: deque
    last_anchor: int | None = None
    anchors: list[int] = dataclasses.field(default_factory=list)
    visible: dict[int, bool] = dataclasses.field(default_factory=dict)


class Dam4Sam(TrackingStrategy):
    """DAM4SAM (see the module docstring); `settings` a `Dam4SamSettings`."""

    antialiased_frames = True
    fills_holes = False
    box_as_mask = True

    def __init__(self, settings: Dam4SamSettings | None = None, image_size: int = 1024, num_maskmem: int = 7):
        super().__init__(settings or Dam4SamSettings(), image_size, num_maskmem)
        if self.settings.max_anchor_frames >= num_maskmem:
            raise ValueError(
                f"max_anchor_frames ({self.settings.max_anchor_frames}) must be below the model's num_maskmem "
                f"({num_maskmem}): the anchors and the recent frames share its memory slots"
            )
        self.states: dict[int, AnchorState] = {}
        self._added: dict[int, set[int]] = {}  # frame -> objects that made it an anchor, until the session asks
        self._pointer_reach = 15  # the memory rules' (seen at each selection)
        self._reverse = False  # the direction of the last selection

    def _state(self, obj_id: int) -> AnchorState:
        if obj_id not in self.states:
            self.states[obj_id] = AnchorState(deque(maxlen=self.settings.area_window))
        return self.states[obj_id]

    def prompt_choice(self, frame_idx: int, obj_ids: Sequence[int]) -> CandidateChoice | None:
        return None  # clicks: SAM 2's choice; the official tracker takes no clicks

    def box_choice(self) -> CandidateChoice:
        """The choice of the box prompt turned into a mask: the highest predicted IoU, and no candidate set to "no
        object" whatever the object score (the official code reads the decoder's mask as it is)."""
        def choose(iou_scores, mask_logits, object_score_logits, multimask: bool):
            return best_candidates(iou_scores, multimask)

        return CandidateChoice(-np.inf, choose)

    def choice(
        self, frame_idx: int, obj_ids: Sequence[int], video_size: tuple[int, int] | None = None
    ) -> CandidateChoice:
        if video_size is None:
            raise ValueError("DAM4SAM's choice needs the video's size")

        def choose(iou_scores, mask_logits, object_score_logits, multimask: bool):
            best = best_candidates(iou_scores, multimask)
            kept_pixels = (take_candidates(mask_logits, best) > 0).sum((-2, -1))
            (ious, kept_pixels), masks = to_host_with_masks(
                [iou_scores, kept_pixels], resize(mask_logits, video_size) > 0
            )
            self._gate(frame_idx, list(obj_ids), ious, kept_pixels, masks)
            return best

        return CandidateChoice(self.presence_threshold, choose)

    def _gate(
        self, frame_idx: int, obj_ids: list[int], ious: np.ndarray, kept_pixels: np.ndarray, masks: np.ndarray
    ) -> None:
        """Record each object's area and visibility on the frame and decide whether the frame becomes an anchor:
        `ious` `(N, C)` predicted IoUs, `kept_pixels` `(N,)` positive pixels of the kept low-resolution masks,
        `masks` `(N, C, H, W)` the candidates at the video's resolution."""
        settings = self.settings
        for index, obj_id in enumerate(obj_ids):
            state = self._state(obj_id)
            kept = int(np.argmax(ious[index]))  # the official gate's own argmax over the candidates' IoUs
            mask = masks[index, kept]
            area = int(mask.sum())
            state.visible[frame_idx] = bool(kept_pixels[index] >= 1)
            state.areas.append(area)
            ratio = -1.0
            if len(state.areas) > 1 and area >= 1:
                recent = [a for a in state.areas if a >= 1][-settings.area_history :]
                ratio = area / np.median(recent)
            gap = state.last_anchor is None or abs(frame_idx - state.last_anchor) > settings.min_anchor_gap
            steady = settings.min_area_ratio <= ratio <= settings.max_area_ratio
            if not (float(ious[index, kept]) > settings.drm_iou_threshold and steady and area >= 1 and gap):
                continue
            box = mask_box(mask)
            ious_alternatives = []
            for candidate in range(masks.shape[1]):
                outside = masks[index, candidate] & ~mask
                if candidate == kept or not outside.any():
                    continue
                ious_alternatives.append(vot_box_iou(box, mask_box(largest_component(outside) | mask)))
            if ious_alternatives and min(ious_alternatives) <= settings.alternative_iou_threshold:
                state.last_anchor = frame_idx
                self._added.setdefault(frame_idx, set()).add(obj_id)

    def new_anchors(self, frame_idx: int, obj_ids: Sequence[int]) -> dict[int, list[int]]:
        added = self._added.pop(frame_idx, set())
        anchors = {}
        for obj_id in obj_ids:
            if obj_id in added:
                state = self._state(obj_id)
                state.anchors.append(frame_idx)
                retired = state.anchors[: -self.settings.max_anchor_frames]
                del state.anchors[: len(retired)]
                anchors[obj_id] = retired
        return anchors

    def select(
        self,
        obj_id: int,
        frame_idx: int,
        bank: ObjectMemory,
        rules: MemoryRules,
        reverse: bool,
        num_frames: int | None = None,
    ) -> MemorySelection:
        if reverse and num_frames is None:
            raise ValueError("DAM4SAM tracks a stream forward only")
        self._pointer_reach = rules.pointer_reach
        self._reverse = reverse
        state = self._state(obj_id)
        conditioning = list(bank.conditioning)
        if not conditioning:
            raise ValueError("A frame with memory needs at least one conditioning frame (a prompt with encoded memory)")
        # Written for forward tracking; in reverse every frame index `f` is read as `last - f` (mirrored).
        last = (num_frames - 1) if reverse else 0
        mirror = (lambda f: last - f) if reverse else (lambda f: f)
        t, stride, visible = mirror(frame_idx), self.settings.recent_stride, state.visible
        anchors = {mirror(f) for f in state.anchors}
        stored = {mirror(f) for f in conditioning}
        held = {mirror(f) for f in bank.memory_frames}
        prompts = [mirror(f) for f in conditioning if mirror(f) not in anchors] or sorted(stored)

        def shown(f: int, default: bool = False) -> bool:
            return visible.get(mirror(f), default)

        # Distractor-resolving memory: the latest conditioning frame before the previous one, the first prompt,
        # then the nearest others, never the previous frame (it is the recent memory's first).
        ordered = [mirror(f) for f in conditioning]
        selected = []
        before = max((f for f in ordered if f < t - 1), default=None)
        if before is not None:
            selected.append(before)
        if min(prompts) not in selected:
            selected.append(min(prompts))
        nearest = sorted((f for f in ordered if f not in selected and f != t - 1), key=lambda f: abs(f - t))
        selected += nearest[: max(self.settings.max_anchor_frames - len(selected), 0)]

        # Recent-appearance memory: the previous frame where the object was visible, then visible frames on the
        # stride's grid below it, walking back over frames where it was not (never frame 0); ranked by recency.
        def usable(f: int) -> bool:
            return f in held and shown(f)

        recent, frame = [], t - 1
        for slot in range(rules.num_maskmem - len(selected)):
            step = 1 if slot == 0 else stride
            if slot == 0:  # the previous frame, conditioning or not
                found = (frame in stored or frame in held) and shown(frame, True) and frame not in selected
            elif frame >= 0:
                frame = _grid_below(frame, stride, mirror(0) if reverse else None)
                found = usable(frame)
            else:
                continue
            while not found:
                frame -= step
                if frame <= 0:
                    break
                found = usable(frame)
            if found:
                recent.append(frame)
        recent.sort()
        positions = [0] * len(selected) + list(range(rules.num_maskmem - len(recent), rules.num_maskmem))

        # Object pointers: the selected conditioning frames, then the visible frames just before.
        limit = min(t + 1, rules.max_pointers)  # the official tracker has seen t + 1 frames
        unselected = stored - set(selected)
        recent_pointers = {mirror(f) for f in bank.recent}
        pointers = [(t - f, f) for f in selected if f <= t or not rules.only_past_pointers]
        for offset in range(1, limit):
            f = t - offset
            if f < 0:
                break
            if (f in recent_pointers or f in unselected) and shown(f, True):
                pointers.append((offset, f))
        return MemorySelection(
            spatial_frames=tuple(mirror(f) for f in selected + recent),
            temporal_positions=tuple(positions),
            pointer_frames=tuple(mirror(f) for _, f in pointers),
            pointer_offsets=tuple(o for o, _ in pointers),
            max_pointer_offset=max(limit - 1, 1),
        )

    def kept_frames(self, obj_id: int, frame_idx: int, held: Collection[int]) -> set[int]:
        state = self._state(obj_id)
        reverse = self._reverse
        reach = self._pointer_reach
        state.visible = {f: v for f, v in state.visible.items() if f in held or abs(frame_idx - f) <= reach}
        shown = sorted((f for f in held if state.visible.get(f)), reverse=not reverse)
        # What any later frame's recent memory can read: the last visible frame and the grid frames before it.
        on_grid = [f for f in shown if f % self.settings.recent_stride == 0]
        return set(shown[:1]) | set(on_grid[: self.num_maskmem - 1])

    def forget(self, obj_id: int | None = None) -> None:
        if obj_id is None:
            self.states.clear()
            self._added.clear()
        else:
            self.states.pop(obj_id, None)
            for objects in self._added.values():
                objects.discard(obj_id)


STRATEGIES: dict[str, type[TrackingStrategy]] = {"sam2": TrackingStrategy, "samurai": Samurai, "dam4sam": Dam4Sam}


def make_strategy(strategy, image_size: int, num_maskmem: int) -> TrackingStrategy:
    """The strategy object a session runs for a model of `image_size` and `num_maskmem`, from a name or a settings
    object (`strategy_settings`)."""
    settings = strategy_settings(strategy)
    return STRATEGIES[settings.name](settings, image_size, num_maskmem)


__all__ = [
    "AnchorState",
    "CandidateChoice",
    "Dam4Sam",
    "Dam4SamSettings",
    "KalmanBoxFilter",
    "STRATEGY_NAMES",
    "Sam2Settings",
    "Samurai",
    "SamuraiSettings",
    "TrackingStrategy",
    "box_iou",
    "largest_component",
    "make_strategy",
    "mask_box",
    "strategy_settings",
    "vot_box_iou",
    "xyah_to_xyxy",
    "xyxy_to_xyah",
]
