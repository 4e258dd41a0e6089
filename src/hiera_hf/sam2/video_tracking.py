"""What a SAM 2 video session does apart from running the model: frames, prompts, the objects' memory banks and the
order of the work, for any runtime (imports numpy and Pillow, never torch).

`VideoSessionBase` reproduces the bookkeeping of Meta's `SAM2VideoPredictor` (the per-object version of sam2
1.1.0); a runtime subclasses it with the model's steps (`_encode_frame`, `_predict`, `_encode_memories`,
`_result`): `video_session.Sam2VideoSession` on PyTorch, `hiera_hf.onnx.video_session.Sam2OnnxVideoSession` on
ONNX Runtime. Which stored memories a frame attends to is `memory_bank`'s, shared by both.

- Prompts (clicks, a box, a mask) on a frame give an output right away; their memories are encoded when
  propagation starts, with the masks of all objects of the frame in one batch (Meta's "consolidation").
- A prompt on a frame the object was tracked on is a correction: the frame is predicted from the object's memory
  with the clicks and its previous mask logits (clamped to +-32).
- Propagation runs every tracked object of a frame as one batch (objects whose memories differ in layout, e.g.
  prompted on different frames, form separate batches); frames prompted for an object return the stored prompt
  output for that object.

Differences from Meta, by design:

- Memory is bounded. Per object the session keeps the conditioning (prompted) frames, and, around the last frame
  processed and the start frame of the last propagation, the spatial memories and low-resolution masks of the
  `num_maskmem` nearest frames and the pointers of the `max_obj_ptrs_in_encoder - 1` nearest ones. A propagation
  that starts far from both (e.g. again from the middle of an already tracked video) therefore begins from the
  conditioning frames, where Meta would reuse outputs it stored from an earlier pass; so does a correction click
  on such a frame (no previous mask is fed back).
- An open stream (`source=None`, frames given with `push_frame`) has no known length: object-pointer distances are
  normalised by `max_obj_ptrs_in_encoder - 1` (Meta uses `min(num_frames, max_obj_ptrs_in_encoder) - 1`).
- Unknown object ids raise instead of being created (Meta creates one on `clear_all_prompts_in_frame`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..image_utils import to_rgb_array
from ..video_io import VideoFrames, open_video
from .frame_arithmetic import frame_logits, resize, to_host
from .memory_bank import MemoryRules, MemorySelection, ObjectMemory, StoredMemory
from .prompts import BOX_LABELS, check_box, check_clicks, check_mask
from .tracking_strategies import CandidateChoice, make_strategy


def resize_video_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Meta's video predictor (`load_video_frames`): an RGB `uint8` frame `(H, W, 3)` stretched to `size`
    `(height, width)` by Pillow with its default filter (bicubic) in 8 bits, then divided by 255: float32
    `(3, height, width)` in [0, 1]."""
    resized = np.asarray(Image.fromarray(frame).resize(size[::-1])) / 255.0
    return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32)


def resize_video_frame_antialiased(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """DAM4SAM's preprocessing: an RGB `uint8` frame `(H, W, 3)` divided by 255 in float32, then stretched to
    `size` `(height, width)` by antialiased bilinear interpolation (torchvision's `resize` of a float tensor):
    float32 `(3, height, width)`."""
    pixels = frame.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(resize(pixels, size, antialias=True), dtype=np.float32)


@dataclass
class Sam2VideoFrameResult:
    """The masks of all objects on one frame (torch tensors from `Sam2VideoSession`, numpy arrays from the ONNX
    Runtime session).

    Attributes:
        frame_idx: index of the frame in the video.
        object_ids: the objects, in the order of the first dimension below.
        mask_logits: `(num_objects, height, width)` float32 logits at the video's resolution (`-1024` for objects
            predicted absent or without output on this frame).
        object_score_logits: `(num_objects,)` logits that each object is visible (`-1024` without output).
    """

    frame_idx: int
    object_ids: list[int]
    mask_logits: Any
    object_score_logits: Any

    @property
    def masks(self):
        """`(num_objects, height, width)` bool masks (`mask_logits > 0`)."""
        return self.mask_logits > 0


@dataclass
class TrackedSpan:
    """Frames `first..last` (inclusive) were tracked by one propagation pass in one direction."""

    first: int
    last: int
    reverse: bool


@dataclass
class ObjectTrack:
    """One object's prompts, tracked spans and memory bank. Clicks are kept as float32 `(K, 2)` coordinates in
    model-input pixels with int64 `(K,)` labels (box corners first, labels 2 and 3)."""

    obj_id: int
    points: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    mask_frames: set[int] = field(default_factory=set)
    memory: ObjectMemory = field(default_factory=ObjectMemory)
    pending: dict[int, tuple[bool, StoredMemory]] = field(default_factory=dict)  # prompted, memory not yet encoded
    tracked: list[TrackedSpan] = field(default_factory=list)

    def tracked_reverse(self, frame_idx: int) -> bool | None:
        """Direction of the latest pass that tracked `frame_idx` (`None` if none did)."""
        for span in reversed(self.tracked):
            if span.first <= frame_idx <= span.last:
                return span.reverse
        return None

    def mark_tracked(self, frame_idx: int, reverse: bool) -> None:
        last = self.tracked[-1] if self.tracked else None
        if last is not None and last.reverse == reverse and frame_idx in (last.first - 1, last.last + 1):
            last.first, last.last = min(last.first, frame_idx), max(last.last, frame_idx)
        else:
            self.tracked.append(TrackedSpan(frame_idx, frame_idx, reverse))

    def untrack(self, frame_idx: int) -> None:
        spans = []
        for span in self.tracked:
            if span.first <= frame_idx <= span.last:
                if span.first < frame_idx:
                    spans.append(TrackedSpan(span.first, frame_idx - 1, span.reverse))
                if frame_idx < span.last:
                    spans.append(TrackedSpan(frame_idx + 1, span.last, span.reverse))
            else:
                spans.append(span)
        self.tracked = spans

    def previous_output(self, frame_idx: int, is_conditioning: bool) -> StoredMemory | None:
        """The object's latest output on a frame (Meta's lookup: prompt output, conditioning, tracked)."""
        pending = self.pending.get(frame_idx)
        if pending is not None and pending[0] == is_conditioning:
            return pending[1]
        return self.memory.get(frame_idx)


class VideoSessionBase:
    """Track objects through a video; the runtime-independent half of a session (see the module docstring).

    Args:
        config: the model's configuration (`Sam2Config`, or its `config.json` fields as an object with attributes).
        source: a video file (PyAV), a folder of JPEG/PNG frames, a list of PIL images / `(H, W, 3)` arrays, a
            `(T, H, W, 3)` array, a `VideoFrames`; or `None` for an open stream fed with `push_frame`.
        fill_hole_area: fill background holes of at most this many low-resolution pixels (default: the config's).
        non_overlap_masks: make the returned masks disjoint (default: the config's).
        max_conditioning_frames: attend to at most this many prompted frames per object, the closest ones (Meta's
            `max_cond_frames_in_attn`, at least 2; default: the config's, -1 = all).
        add_all_frames_to_correct_as_cond: keep corrected frames as conditioning frames. Meta's default (False)
            keeps them as ordinary memories that the next propagation through them overwrites (facebookresearch/sam2
            #719, #731); set True to make corrections stick.
        read_ahead: while propagating through a video, decode and resize the next frame in a reader thread during
            the current frame's work (pays when the model runs on an accelerator and the host would otherwise sit
            idle; on the CPU it competes with the model for the cores).
        progress: show a progress bar while propagating.
        strategy: the tracking strategy: `"sam2"` (Meta's, the default), `"samurai"`, `"dam4sam"`, or a settings
            object such as `SamuraiSettings(kf_score_weight=0.3)` (see `tracking_strategies`: what each changes and
            costs).

    Frames are decoded when needed and only the frame being processed is kept (with the image features of
    frames that have prompts not yet propagated, and the frame read ahead). Results are yielded, never stored.

    Subclasses implement the model's steps:

    - `_encode_frame(frame_idx)`: the image features of a frame (a tuple of arrays, cached by the session);
    - `_predict(features, tracks, selections, ...)`: the objects' outputs on a frame as `StoredMemory`s;
    - `_encode_memories(features, outputs)`: the spatial memories of prompted outputs;
    - `_to_device(array)`: a stored array where the runtime computes (default: as it is);

    and set `_array_kind`, an empty float32 array of the runtime's kind on its device. What a step does around the
    networks (candidate choice, hole filling, the frame's result) is `frame_arithmetic`'s, shared by both runtimes.
    """

    def __init__(
        self,
        config,
        source=None,
        *,
        fill_hole_area: int | None = None,
        non_overlap_masks: bool | None = None,
        max_conditioning_frames: int | None = None,
        add_all_frames_to_correct_as_cond: bool = False,
        read_ahead: bool = False,
        progress: bool = True,
        strategy="sam2",
    ):
        self.image_size = int(config.image_size)
        self.fill_hole_area = config.fill_hole_area if fill_hole_area is None else int(fill_hole_area)
        self.non_overlap_masks = config.non_overlap_masks if non_overlap_masks is None else bool(non_overlap_masks)
        if max_conditioning_frames is not None:
            max_conditioning_frames = int(max_conditioning_frames)
        self.memory_rules = MemoryRules.from_config(config, max_conditioning_frames=max_conditioning_frames)
        self.set_strategy(strategy)
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.read_ahead = bool(read_ahead)
        self.progress = progress

        self._video: VideoFrames | None = None
        self._video_lock = threading.Lock()  # video readers are not thread-safe; the reader thread shares them
        self._reader: ThreadPoolExecutor | None = None
        self._reads: dict[int, Future] = {}  # frame index -> its pixels, read ahead during propagation
        self._held: dict[int, np.ndarray] = {}  # stream frames not yet tracked, and the last one pushed
        self._pushed = 0
        self.video_height: int | None = None
        self.video_width: int | None = None
        if source is not None:
            self._video = _open(source)
            self.video_height, self.video_width = self._video[0].shape[:2]
        self._objects: dict[int, ObjectTrack] = {}
        self._features: dict[int, tuple] = {}
        self._anchor: int | None = None  # start frame of the last propagation
        self._tracked_upto: int | None = None  # last frame tracked in a stream

    # The model's steps (implemented by each runtime) ---------------------------------------------------------

    def _no_grad(self) -> contextlib.AbstractContextManager:
        """The context the model's steps run in (PyTorch: inference mode)."""
        return contextlib.nullcontext()

    def _encode_frame(self, frame_idx: int) -> tuple:
        """The image features of a frame, batch 1 (for `_predict` and `_encode_memories`)."""
        raise NotImplementedError

    def _predict(
        self,
        features: tuple,
        tracks: list[ObjectTrack],
        selections: list[MemorySelection] | None,
        points: tuple[np.ndarray, np.ndarray] | None = None,
        mask: np.ndarray | None = None,
        previous_masks: Any = None,
        encode_memory: bool = False,
        choice: CandidateChoice | None = None,
    ) -> list[StoredMemory]:
        """One step of the objects `tracks` on a frame, as the session keeps its outputs (holes filled in the masks,
        spatial memories in bfloat16 precision). `selections` (one per object, one layout) say what they attend to,
        `None` on a frame without memory. Prompts are for one object: `points` (coordinates `(K, 2)` in model-input
        pixels, labels `(K,)`) with optionally its `previous_masks` (a stored `pred_masks`, clamped here to
        +-`frame_arithmetic.PREVIOUS_MASK_CLAMP`), or a `mask` `(H, W)` float32 at the video's size; without prompts the frame is
        tracked (and its memory encoded with `encode_memory`). `choice` is the tracking strategy's candidate choice
        (`None`: SAM 2's)."""
        raise NotImplementedError

    def _encode_memories(self, features: tuple, outputs: list[StoredMemory]) -> list:
        """The spatial memories (bfloat16 precision) of prompted outputs on one frame, one batch."""
        raise NotImplementedError

    def _to_device(self, array):
        """A stored array (a memory bank's) on the device the runtime computes on."""
        return array

    def _result(self, frame_idx: int, outputs: list[StoredMemory | None]) -> Sam2VideoFrameResult:
        """Masks of all objects at the video's resolution (`NO_OBJECT_SCORE` where an object has no output)."""
        outputs = [o if o is not None and o.pred_masks is not None else None for o in outputs]
        masks, scores = frame_logits(
            [None if o is None else self._to_device(o.pred_masks) for o in outputs],
            [None if o is None else o.object_score for o in outputs],
            self._array_kind,
            (self.image_size // 4,) * 2,
            (self.video_height, self.video_width),
            self.non_overlap_masks,
        )
        return Sam2VideoFrameResult(frame_idx, self.object_ids, masks, scores)

    # Frames ----------------------------------------------------------------------------------------------------

    @property
    def num_frames(self) -> int | None:
        """Number of frames of the video; `None` for a stream."""
        return None if self._video is None else len(self._video)

    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    def push_frame(self, frame) -> int:
        """Append a frame (PIL image or `(H, W, 3)` array) to an open stream; returns its index."""
        if self._video is not None:
            raise ValueError("push_frame is for sessions opened on a stream (source=None)")
        array = to_rgb_array(frame)
        if self.video_height is None:
            self.video_height, self.video_width = array.shape[:2]
        elif array.shape[:2] != (self.video_height, self.video_width):
            raise ValueError(
                f"Stream frames must all be {self.video_height}x{self.video_width}, got {array.shape[0]}x"
                f"{array.shape[1]}"
            )
        if self._tracked_upto is not None:  # tracked frames are dropped once a newer one arrives
            self._held = {t: held for t, held in self._held.items() if t > self._tracked_upto}
        index = self._pushed
        self._held[index] = array
        self._pushed += 1
        return index

    def _check_frame(self, frame_idx: int) -> int:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise TypeError(f"Frame indices must be integers, got {type(frame_idx).__name__}")
        frame_idx = int(frame_idx)
        if self._video is not None:
            if not 0 <= frame_idx < len(self._video):
                raise ValueError(f"Frame index {frame_idx} is out of range for a video of {len(self._video)} frames")
        elif not 0 <= frame_idx < self._pushed:
            raise ValueError(f"Frame {frame_idx} has not been pushed yet ({self._pushed} frames pushed so far)")
        elif frame_idx not in self._held:
            raise ValueError(
                f"Frame {frame_idx} of the stream is no longer held; prompt frames not yet tracked or the last one "
                f"pushed ({self._pushed - 1})"
            )
        return frame_idx

    @property
    def fps(self) -> float | None:
        """Frame rate of the video when known."""
        return None if self._video is None else self._video.fps

    def frame(self, frame_idx: int) -> np.ndarray:
        """The RGB `uint8` frame `(H, W, 3)` (decoded again from a file or folder)."""
        frame_idx = self._check_frame(frame_idx)
        if self._video is None:
            return self._held[frame_idx]
        with self._video_lock:
            return self._video[frame_idx]

    def _frame_pixels(self, frame_idx: int) -> np.ndarray:
        """A frame as the model reads it before normalisation: float32 `(3, S, S)` in [0, 1] (`resize_video_frame`),
        from the reader thread when it was read ahead."""
        read = self._reads.pop(frame_idx, None)
        if read is not None:
            return read.result()
        return self._resize_frame(self.frame(frame_idx))

    def _resize_frame(self, frame: np.ndarray) -> np.ndarray:
        """A frame's pixels resized to the model input, as the tracking strategy reads frames."""
        resize_frame = resize_video_frame_antialiased if self.strategy.antialiased_frames else resize_video_frame
        return resize_frame(frame, (self.image_size, self.image_size))

    @property
    def _hole_area(self) -> int:
        """The hole-filling area the model's steps apply (0 under a strategy that never fills holes)."""
        return self.fill_hole_area if self.strategy.fills_holes else 0

    def _prefetch(self, frame_idx: int, upcoming: int | None) -> None:
        """Before tracking `frame_idx`: keep its read if one was started, and start reading the `upcoming` frame's
        pixels in the reader thread (decoding and resizing free the GIL), so they are ready when it comes."""
        self._reads = {t: read for t, read in self._reads.items() if t == frame_idx}
        if upcoming is None or self._video is None or not self.read_ahead:
            return
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hiera-hf-frames")
        self._reads[upcoming] = self._reader.submit(lambda: self._resize_frame(self.frame(upcoming)))

    def _frame_features(self, frame_idx: int) -> tuple:
        """The features of a frame (`_encode_frame`), computed once and cached while prompts on it are pending."""
        if frame_idx not in self._features:
            features = self._encode_frame(frame_idx)
            keep = {t for track in self._objects.values() for t in track.pending}
            self._features = {t: v for t, v in self._features.items() if t in keep}
            self._features[frame_idx] = features
        return self._features[frame_idx]

    # Prompts -----------------------------------------------------------------------------------------------------

    def _object(self, obj_id: int, create: bool = False) -> ObjectTrack:
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
            raise TypeError(f"Object ids must be integers, got {type(obj_id).__name__}")
        obj_id = int(obj_id)
        if obj_id not in self._objects:
            if not create:
                raise ValueError(f"Unknown object id {obj_id}; objects: {self.object_ids}")
            self._objects[obj_id] = ObjectTrack(obj_id)
        return self._objects[obj_id]

    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points,
        labels,
        clear_old: bool = True,
        box: Sequence[float] | None = None,
    ) -> Sam2VideoFrameResult:
        """Clicks `(K, 2)` as (x, y) in video pixels with labels `(K,)` (1 foreground, 0 background) for an object
        on a frame, added to its earlier clicks there unless `clear_old`; `box` (x0, y0, x1, y1) goes first (it
        needs `clear_old`). Coordinates must lie within the frame and boxes have x0 < x1, y0 < y1 (see
        `sam2.prompts`). Returns the masks of all objects on the frame."""
        frame_idx = self._check_frame(frame_idx)
        if points is None and box is None:
            raise ValueError("Give clicks (points and labels), a box, or both")
        coords, point_labels = check_clicks(points, labels, self.video_width, self.video_height)
        if box is not None:
            if not clear_old:
                raise ValueError("A box must come before any click: use clear_old=True with box")
            corners = check_box(box, self.video_width, self.video_height)
            coords = np.concatenate([corners.reshape(2, 2), coords])
            point_labels = np.concatenate([np.asarray(BOX_LABELS, dtype=np.int64), point_labels])
        scale = np.asarray([self.video_width, self.video_height], dtype=np.float32)
        coords = coords / scale * np.float32(self.image_size)
        if box is not None and len(coords) == 2 and self.strategy.box_as_mask:
            return self.add_mask(frame_idx, obj_id, self._box_mask(frame_idx, (coords, point_labels)))
        track = self._object(obj_id, create=True)
        if not clear_old and frame_idx in track.points:
            old_coords, old_labels = track.points[frame_idx]
            coords, point_labels = np.concatenate([old_coords, coords]), np.concatenate([old_labels, point_labels])
        track.points[frame_idx] = (coords, point_labels)
        track.mask_frames.discard(frame_idx)
        return self._prompt(track, frame_idx, points=(coords, point_labels))

    def add_box(self, frame_idx: int, obj_id: int, box, points=None, labels=None) -> Sam2VideoFrameResult:
        """A box (x0, y0, x1, y1) in video pixels, optionally with clicks, replacing the object's prompts on the
        frame (see `add_points`). Under DAM4SAM a box alone is first turned into a mask prompt, as its tracker
        initialises (`tracking_strategies`)."""
        return self.add_points(frame_idx, obj_id, points, labels, clear_old=True, box=box)

    def add_mask(self, frame_idx: int, obj_id: int, mask) -> Sam2VideoFrameResult:
        """A mask `(H, W)` at the frame's size (bool, or > 0.5 inside) for an object on a frame, replacing its
        prompts there; resized to the model input with antialiased bilinear interpolation and thresholded at 0.5
        like Meta's."""
        frame_idx = self._check_frame(frame_idx)
        mask = check_mask(mask, self.video_width, self.video_height)
        track = self._object(obj_id, create=True)
        track.points.pop(frame_idx, None)
        track.mask_frames.add(frame_idx)
        return self._prompt(track, frame_idx, mask=mask)

    def _box_mask(self, frame_idx: int, box: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """A box prompt (corners in model-input pixels, labels 2 and 3) turned into a mask `(H, W)` at the video's
        size as DAM4SAM initialises: the decoder's mask on the frame without memory, whatever the object score,
        resized to the video and thresholded at 0."""
        with self._no_grad():
            features = self._frame_features(frame_idx)
            (output,) = self._predict(features, [ObjectTrack(-1)], None, box, choice=self.strategy.box_choice())
            logits, _ = frame_logits(
                [output.pred_masks],
                [output.object_score],
                self._array_kind,
                (self.image_size // 4,) * 2,
                (self.video_height, self.video_width),
                False,
            )
        (mask,) = to_host([logits[0] > 0])
        return mask > 0

    def _prompt(
        self,
        track: ObjectTrack,
        frame_idx: int,
        points: tuple[np.ndarray, np.ndarray] | None = None,
        mask: np.ndarray | None = None,
    ) -> Sam2VideoFrameResult:
        """Predict one object on a prompted frame (memory encoding deferred to propagation)."""
        reverse = track.tracked_reverse(frame_idx)
        is_conditioning = reverse is None or self.add_all_frames_to_correct_as_cond
        selections, previous_masks = None, None
        if reverse is not None and mask is None:  # a correction: memory of the object, previous mask
            if track.memory.conditioning:
                selections = [self._selection(track, frame_idx, reverse)]
            previous = track.previous_output(frame_idx, is_conditioning)
            if previous is not None and previous.pred_masks is not None:
                previous_masks = previous.pred_masks
        choice = self.strategy.prompt_choice(frame_idx, [track.obj_id])
        with self._no_grad():
            features = self._frame_features(frame_idx)
            (output,) = self._predict(features, [track], selections, points, mask, previous_masks, choice=choice)
        track.pending[frame_idx] = (is_conditioning, output)
        return self._prompt_result(frame_idx, is_conditioning)

    def _prompt_result(self, frame_idx: int, is_conditioning: bool) -> Sam2VideoFrameResult:
        outputs = [track.previous_output(frame_idx, is_conditioning) for track in self._objects.values()]
        with self._no_grad():
            return self._result(frame_idx, outputs)

    def clear_frame_prompts(self, frame_idx: int, obj_id: int) -> Sam2VideoFrameResult:
        """Remove an object's prompts on a frame; a prompted frame's output becomes an ordinary memory."""
        frame_idx = self._check_frame(frame_idx)
        track = self._object(obj_id)
        track.points.pop(frame_idx, None)
        track.mask_frames.discard(frame_idx)
        track.pending.pop(frame_idx, None)
        output = track.memory.conditioning.pop(frame_idx, None)
        if output is not None:
            track.memory.recent[frame_idx] = output
            track.untrack(frame_idx)
        is_conditioning = any(t.pending.get(frame_idx, (False,))[0] for t in self._objects.values())
        return self._prompt_result(frame_idx, is_conditioning)

    def set_strategy(self, strategy) -> None:
        """Track with another strategy (a name or a settings object, see `tracking_strategies`) from now on; its
        state (e.g. SAMURAI's Kalman filters and memory gates) starts afresh, the memories already made stay."""
        self.strategy = make_strategy(strategy, self.image_size, self.memory_rules.num_maskmem)

    def remove_object(self, obj_id: int) -> None:
        """Forget an object: its prompts, memories and id."""
        self._object(obj_id)
        del self._objects[int(obj_id)]
        self.strategy.forget(int(obj_id))

    def reset(self) -> None:
        """Forget all objects, prompts and memories (the video stays open)."""
        self._objects.clear()
        self._features.clear()
        self._anchor = None
        self.strategy.forget()

    def close(self) -> None:
        """Release the video file (after any frame being read ahead) and the reader thread."""
        if self._reader is not None:
            self._reader.shutdown(wait=True, cancel_futures=True)
            self._reader, self._reads = None, {}
        if self._video is not None:
            self._video.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Memory bank -------------------------------------------------------------------------------------------------

    def _consolidate(self) -> None:
        """Encode the memories of prompted frames (all objects of a frame in one batch) and move them into the
        bank, as Meta does before propagating."""
        if not self._objects:
            raise ValueError("Add prompts (add_points, add_box or add_mask) before propagating")
        frames = sorted({t for track in self._objects.values() for t in track.pending})
        for frame_idx in frames:
            owners = [track for track in self._objects.values() if frame_idx in track.pending]
            outputs = [track.pending[frame_idx][1] for track in owners]
            with self._no_grad():
                maskmem = self._encode_memories(self._frame_features(frame_idx), outputs)
            for track, output, features in zip(owners, outputs, maskmem):
                is_conditioning, _ = track.pending.pop(frame_idx)
                output.maskmem = features
                bank = track.memory
                (bank.conditioning if is_conditioning else bank.recent)[frame_idx] = output
        for track in self._objects.values():
            if not track.memory.conditioning:
                raise ValueError(f"Object {track.obj_id} has no prompt on any frame; add one or remove the object")
            for frame_idx in track.memory.conditioning:
                track.memory.recent.pop(frame_idx, None)

    def _selection(self, track: ObjectTrack, frame_idx: int, reverse: bool) -> MemorySelection:
        """What an object attends to on a frame, from the memories the session still holds."""
        bank = track.memory
        selection = self.strategy.select(track.obj_id, frame_idx, bank, self.memory_rules, reverse, self.num_frames)
        if selection is not None:
            return selection
        recent = self.strategy.recent_frames(track.obj_id, frame_idx, bank.memory_frames, reverse, self.num_frames)
        return bank.select(frame_idx, self.memory_rules, reverse, self.num_frames, recent)

    def _anchor_frame(self, frame_idx: int, features: tuple, batch: list[ObjectTrack]) -> None:
        """Make the tracked frame a conditioning frame of the objects the strategy names (DAM4SAM's anchors): their
        memories encoded again, in one batch, from the binarised masks as a prompt's; anchors they no longer need
        are dropped."""
        anchors = self.strategy.new_anchors(frame_idx, [track.obj_id for track in batch])
        owners = [track for track in batch if track.obj_id in anchors]
        if not owners:
            return
        outputs = [track.memory.recent.pop(frame_idx) for track in owners]
        with self._no_grad():
            maskmem = self._encode_memories(features, outputs)
        for track, output, memory in zip(owners, outputs, maskmem):
            output.maskmem = memory
            track.memory.conditioning[frame_idx] = output
            for retired in anchors[track.obj_id]:
                track.memory.conditioning.pop(retired, None)

    def _prune(self, frame_idx: int) -> None:
        """Drop what no later frame can attend to: keep memories near the current frame and the last start."""
        anchors = [frame_idx] + ([self._anchor] if self._anchor is not None else [])
        for track in self._objects.values():
            keep = self.strategy.kept_frames(track.obj_id, frame_idx, track.memory.memory_frames)
            track.memory.prune(anchors, self.memory_rules, keep)

    def memory_footprint(self) -> tuple[int, int]:
        """(number of arrays, bytes) held by the session's memory bank, prompts, caches and held frames."""
        arrays = [array for features in self._features.values() for array in _flatten(features)]
        for track in self._objects.values():
            arrays += [array for pair in track.points.values() for array in pair]
            bank = track.memory
            outputs = [*bank.conditioning.values(), *bank.recent.values(), *(o for _, o in track.pending.values())]
            for output in outputs:
                arrays += [value for value in vars(output).values() if value is not None]
        arrays += self._held.values()
        arrays += [read.result() for read in self._reads.values() if read.done() and not read.exception()]
        return len(arrays), sum(int(array.nbytes) for array in arrays)

    # Propagation -------------------------------------------------------------------------------------------------

    def propagate(
        self, start_frame: int | None = None, reverse: bool | str = False, max_frames: int | None = None
    ) -> Iterator[Sam2VideoFrameResult]:
        """Track all objects from `start_frame` (default: the earliest prompted frame), forward, backward
        (`reverse=True`) or forward then backward (`"both"`; the start frame comes once per direction, except frame
        0, which the forward pass alone yields, as Meta's forward then reverse calls do), over at most `max_frames`
        frames per direction; each pass yields its start frame first (Meta's reverse pass from frame 0 yields
        nothing; ours yields frame 0). Returns a generator of one `Sam2VideoFrameResult` per frame; the arguments
        are checked and the prompts' memories encoded right away.

        On a stream, tracks the pushed frames not tracked yet, forward only."""
        if reverse not in (False, True, "both"):
            raise ValueError(f"reverse must be False, True or 'both', got {reverse!r}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        if self._video is None and reverse is not False:
            raise ValueError("A stream can only be tracked forward")
        self._consolidate()
        if self._video is not None:
            first_prompt = min(t for track in self._objects.values() for t in track.memory.conditioning)
            start_frame = first_prompt if start_frame is None else self._check_frame(start_frame)
        elif start_frame is not None:
            raise ValueError("A stream is tracked from the first frame not tracked yet; do not give start_frame")
        elif self._tracked_upto is not None:
            start_frame = self._tracked_upto + 1
        else:
            start_frame = min(t for track in self._objects.values() for t in track.memory.conditioning)
            for t in [t for t in self._held if t < start_frame]:
                del self._held[t]
        if reverse == "both":
            directions = (False, True) if start_frame > 0 else (False,)
        else:
            directions = (bool(reverse),)
        return (result for backward in directions for result in self._pass(start_frame, backward, max_frames))

    def _pass(self, start: int, reverse: bool, max_frames: int | None) -> Iterator[Sam2VideoFrameResult]:
        if reverse:  # from frame 0, that frame alone (Meta's `propagate_in_video` yields nothing there)
            end = 0 if max_frames is None else max(start - max_frames + 1, 0)
            order = range(start, end - 1, -1)
        else:
            last = (self._pushed if self._video is None else len(self._video)) - 1
            end = last if max_frames is None else min(start + max_frames - 1, last)
            order = range(start, end + 1)
        self._anchor = start
        for position, frame_idx in enumerate(tqdm(order, desc="tracking", disable=not self.progress, leave=False)):
            self._prefetch(frame_idx, order[position + 1] if position + 1 < len(order) else None)
            with self._no_grad():
                result = self._track_frame(frame_idx, reverse)
            if self._video is None:
                self._tracked_upto = frame_idx
                if frame_idx != self._pushed - 1:
                    del self._held[frame_idx]
            yield result

    def _track_frame(self, frame_idx: int, reverse: bool) -> Sam2VideoFrameResult:
        tracks = list(self._objects.values())
        outputs: list[StoredMemory | None] = [track.memory.conditioning.get(frame_idx) for track in tracks]
        groups: dict[tuple, list[int]] = {}  # objects whose memories share a layout run as one batch
        selections = {}
        for index, track in enumerate(tracks):
            if outputs[index] is None:
                selections[index] = self._selection(track, frame_idx, reverse)
                groups.setdefault(selections[index].layout, []).append(index)
        for indices in groups.values():
            features = self._frame_features(frame_idx)
            batch = [tracks[i] for i in indices]
            video_size = (self.video_height, self.video_width)
            choice = self.strategy.choice(frame_idx, [track.obj_id for track in batch], video_size)
            batch_selections = [selections[i] for i in indices]
            stored = self._predict(features, batch, batch_selections, encode_memory=True, choice=choice)
            for index, output in zip(indices, stored):
                outputs[index] = tracks[index].memory.recent[frame_idx] = output
            self._anchor_frame(frame_idx, features, batch)
        for track in tracks:
            track.mark_tracked(frame_idx, reverse)
        self._prune(frame_idx)
        return self._result(frame_idx, outputs)


def _flatten(values) -> list:
    """The arrays of nested tuples / lists of arrays."""
    if isinstance(values, (tuple, list)):
        return [array for value in values for array in _flatten(value)]
    return [values]


def _open(source) -> VideoFrames:
    """`open_video` with PyAV's errors for unreadable files turned into `ValueError`."""
    try:
        video = open_video(source)
    except (FileNotFoundError, TypeError, ValueError):
        raise
    except Exception as error:  # PyAV raises its own error types for files it cannot decode
        raise ValueError(f"Cannot read the video {os.fspath(source)!r}: {error}") from error
    if len(video) == 0:
        video.close()
        raise ValueError(f"The video {source!r} has no frames")
    return video


__all__ = [
    "ObjectTrack",
    "Sam2VideoFrameResult",
    "TrackedSpan",
    "VideoSessionBase",
    "resize_video_frame",
    "resize_video_frame_antialiased",
]
