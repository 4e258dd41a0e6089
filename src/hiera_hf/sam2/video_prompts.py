"""Prompts on a video as `hiera-hf track` and the app gather them, and how both hand them to a session, so that the
same prompts give the same masks from either: one object's clicks and box on a frame go to the session in one
`add_points` call (the box first), a mask alone in `add_mask`; objects in the order they were first prompted (the
session batches them in that order). Torch-free: any `VideoSessionBase` runtime takes them.

`PromptLog` does what the app does to a session (a click, a box, tracking, removing an object), step by step, and
keeps the steps; saved as a prompts file (`PromptLog.to_json`, the app's `prompts.json`), `hiera-hf track --prompts`
replays them (`read_prompts`, `PromptLog.replay`) into the same label maps, corrections on tracked frames included.
A prompts file is a JSON object::

    {"hiera_hf_prompts": 1,
     "video": {"width": 320, "height": 180, "frames": 3},
     "add_all_frames_to_correct_as_cond": true,
     "names": {"2": "red box"},
     "steps": [{"frame": 0, "object": 1, "click": [100.0, 90.0, 1]},
               {"frame": 0, "object": 2, "box": [200.0, 60.0, 300.0, 160.0]},
               {"track": "both", "frame": 0, "max_frames": null, "frames": 3},
               {"frame": 1, "object": 1, "click": [120.0, 95.0, 0]},
               {"frame": 1, "object": 1, "undo": 1},
               {"strategy": "samurai", "settings": {"kf_score_weight": 0.25, ...}},
               {"remove": 2}]}

in video pixels; a click's label is 1 (foreground) or 0 (background); a box replaces the object's box on that frame
and keeps its clicks there; an undo step takes back the object's last click or box on the frame; a track step goes
`track` ("forward", "backward" or "both") from `frame` over at most `max_frames` frames each way (null: all) and
stops after `frames` frames, as the app's Stop did; a strategy step tracks with that strategy and its settings from
then on (`tracking_strategies`); a remove step forgets an object (prompts, memory, masks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..image_utils import open_image
from .prompts import check_boxes, check_finite, check_index, check_labels
from .tracking_strategies import strategy_settings
from .video_output import LabelMapFolder
from .video_tracking import Sam2VideoFrameResult, VideoSessionBase

# The ways to track from a start frame, as `propagate`'s `reverse` argument.
DIRECTIONS = {"forward": False, "backward": True, "both": "both"}


@dataclass
class VideoPrompt:
    """One object's prompts on one frame, in video pixels: clicks `(x, y, label)` (label 1 foreground, 0
    background) and a box `(x0, y0, x1, y1)`, or a mask `(H, W)` bool alone."""

    clicks: list[tuple[float, float, int]] = field(default_factory=list)
    box: list[float] | None = None
    mask: np.ndarray | None = None


def read_mask(path: str | os.PathLike, obj_id: int) -> np.ndarray:
    """An object's mask prompt `(H, W)` bool from a PNG: its nonzero pixels, or for a label map (a palette PNG such
    as `video_output` writes) the pixels equal to `obj_id`. Read with `image_utils.open_image` (upright, within the
    pixel limit, `ValueError` naming a file that is not an image)."""
    image = open_image(path)
    palette_mode = image.mode == "P"
    values = np.asarray(image.convert("L") if image.mode not in ("P", "L", "1") else image)
    return values == obj_id if palette_mode else values > 0


def read_first_box(path: str | os.PathLike) -> list[float]:
    """The box `[x0, y0, x1, y1]` of the first line of a tracking benchmark's `groundtruth.txt` (LaSOT, GOT-10k,
    OTB: `x,y,w,h` in pixels, separated by commas, tabs or spaces). `ValueError` naming the file for anything else
    (not 4 finite numbers, no area)."""
    try:
        with open(path, encoding="utf-8") as file:
            line = file.readline().strip()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a text file of x,y,w,h boxes") from error
    fields = [field for field in line.replace(",", " ").replace("\t", " ").split(" ") if field]
    try:
        x, y, w, h = (float(field) for field in fields)
    except ValueError:
        raise ValueError(f"The first line of {path} is not x,y,w,h (4 numbers): {line[:80]!r}") from None
    if not all(np.isfinite((x, y, w, h))) or w <= 0 or h <= 0:
        raise ValueError(f"The first box of {path} ({line[:80]}) must be finite with a width and height above 0")
    return [x, y, x + w, y + h]


def apply_prompt(
    session: VideoSessionBase, frame_idx: int, obj_id: int, prompt: VideoPrompt
) -> Sam2VideoFrameResult:
    """Give the session an object's prompts on a frame (replacing its earlier ones there); returns the frame's
    masks."""
    if prompt.mask is not None:
        return session.add_mask(frame_idx, obj_id, prompt.mask)
    points = [click[:2] for click in prompt.clicks] or None
    labels = [click[2] for click in prompt.clicks] or None
    return session.add_points(frame_idx, obj_id, points, labels, box=prompt.box)


def apply_prompts(session: VideoSessionBase, prompts: Mapping[tuple[int, int], VideoPrompt]) -> None:
    """`apply_prompt` for each `(frame_idx, obj_id) -> VideoPrompt`, in the mapping's order."""
    for (frame_idx, obj_id), prompt in prompts.items():
        apply_prompt(session, frame_idx, obj_id, prompt)


def check_direction(direction: str) -> None:
    """`ValueError` unless `direction` is one of `DIRECTIONS`."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")


def _direction(session: VideoSessionBase, start_frame: int, direction: str) -> str:
    """`direction` (checked), but "both" from the first or the last frame: only the way that has frames."""
    check_direction(direction)
    if direction == "both" and start_frame in (0, session.num_frames - 1):
        return "forward" if start_frame == 0 else "backward"
    return direction


def propagate(
    session: VideoSessionBase, start_frame: int, direction: str = "both", max_frames: int | None = None
) -> Iterator[Sam2VideoFrameResult]:
    """`session.propagate` from `start_frame` one of the `DIRECTIONS` (checked at the call); "both" from the first
    or the last frame goes only the way that has frames, so that no frame comes twice."""
    return session.propagate(start_frame, DIRECTIONS[_direction(session, start_frame, direction)], max_frames)


def pass_directions(session: VideoSessionBase, start_frame: int, direction: str = "both") -> tuple[bool, ...]:
    """The passes (`reverse` flags, in order) that `propagate` makes from `start_frame` one of the `DIRECTIONS`."""
    direction = _direction(session, start_frame, direction)
    return (False, True) if direction == "both" else (DIRECTIONS[direction],)


PROMPTS_VERSION = 1
# The keys of each kind of step of a prompts file (the kind is the key that names it).
STEP_KEYS = {
    "click": ("frame", "object", "click"),
    "box": ("frame", "object", "box"),
    "track": ("track", "frame", "max_frames", "frames"),
    "undo": ("frame", "object", "undo"),
    "remove": ("remove",),
    "strategy": ("strategy", "settings"),
}


@dataclass
class PromptFile:
    """A prompts file, checked (`read_prompts`): the video it was made on, the session's setting, the objects' names
    and the steps."""

    width: int
    height: int
    num_frames: int
    add_all_frames_to_correct_as_cond: bool
    names: dict[int, str]
    steps: list[dict]


class PromptLog:
    """Prompts and tracking on a video session, done step by step and kept (`steps`, see the module docstring), with
    the latest label map of each frame computed in `labels`; `lock` (a context manager) is held around each model
    call. A step that the session refuses (`ValueError`) changes nothing and is not kept."""

    def __init__(self, session: VideoSessionBase, labels: LabelMapFolder, lock=None):
        self.session, self.labels = session, labels
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.prompts: dict[tuple[int, int], VideoPrompt] = {}  # (frame, object) -> its prompts there, accumulated
        self._earlier: dict[tuple[int, int], list[VideoPrompt]] = {}  # ... and what they were before each change
        self.steps: list[dict] = []

    def click(self, frame_idx: int, obj_id: int, click: tuple[float, float, int]) -> int:
        """Add a click (x, y, label) to an object's prompts on a frame; returns the frame index."""
        old = self.prompts.get((frame_idx, obj_id), VideoPrompt())
        prompt = VideoPrompt(clicks=[*old.clicks, tuple(click)], box=old.box)
        return self._prompt(frame_idx, obj_id, prompt, {"click": list(click)})

    def box(self, frame_idx: int, obj_id: int, box: list[float]) -> int:
        """Give an object a box (x0, y0, x1, y1) on a frame (its clicks there are kept); returns the frame index."""
        old = self.prompts.get((frame_idx, obj_id), VideoPrompt())
        prompt = VideoPrompt(clicks=list(old.clicks), box=list(box))
        return self._prompt(frame_idx, obj_id, prompt, {"box": list(box)})

    def _prompt(self, frame_idx: int, obj_id: int, prompt: VideoPrompt, step: dict) -> int:
        with self.lock:
            result = apply_prompt(self.session, frame_idx, obj_id, prompt)
        self._earlier.setdefault((frame_idx, obj_id), []).append(self.prompts.get((frame_idx, obj_id), VideoPrompt()))
        self.prompts[frame_idx, obj_id] = prompt
        self.steps.append({"frame": frame_idx, "object": obj_id, **step})
        return self.labels.write(result)

    def undo(self, frame_idx: int, obj_id: int) -> int:
        """Take back an object's last click or box on a frame: its earlier prompts there go to the session again
        (none left: they are cleared there, and an object left without prompts is removed, `remove`); returns the
        frame index. `ValueError` when it has none there."""
        earlier = self._earlier.get((frame_idx, obj_id))
        if not earlier:
            raise ValueError(f"Object {obj_id} has no click or box on frame {frame_idx} to take back")
        prompt = earlier[-1]
        given = bool(prompt.clicks) or prompt.box is not None
        if not given and not any(o == obj_id for f, o in self.prompts if f != frame_idx):
            self.remove(obj_id)
            self.steps[-1] = {"frame": frame_idx, "object": obj_id, "undo": 1}
            return frame_idx
        with self.lock:
            if given:
                result = apply_prompt(self.session, frame_idx, obj_id, prompt)
            else:
                result = self.session.clear_frame_prompts(frame_idx, obj_id)
        earlier.pop()
        if given:
            self.prompts[frame_idx, obj_id] = prompt
        else:
            del self.prompts[frame_idx, obj_id]
        self.steps.append({"frame": frame_idx, "object": obj_id, "undo": 1})
        return self.labels.write(result)

    def track(self, start_frame: int, direction: str = "both", max_frames: int | None = None) -> Iterator[int]:
        """`propagate` from `start_frame` (arguments checked at the call); yields each frame index once its label
        map is kept. The step counts the frames tracked, so that a replay stops where this one was stopped."""
        with self.lock:
            results = propagate(self.session, start_frame, direction, max_frames)
        step = {"track": direction, "frame": start_frame, "max_frames": max_frames, "frames": 0}
        self.steps.append(step)
        return self._track(results, step)

    def _track(self, results: Iterator[Sam2VideoFrameResult], step: dict) -> Iterator[int]:
        while True:
            with self.lock:
                result = next(results, None)
            if result is None:
                return
            self.labels.write(result)
            step["frames"] += 1
            yield result.frame_idx

    def strategy(self, strategy) -> None:
        """Track with another strategy from now on (`VideoSessionBase.set_strategy`: a name or a settings
        object)."""
        settings = strategy_settings(strategy)
        self.session.set_strategy(settings)
        self.steps.append({"strategy": settings.name, "settings": dataclasses.asdict(settings)})

    def remove(self, obj_id: int) -> None:
        """Forget an object (prompts and memory); its pixels are cleared from the label maps kept so far."""
        if obj_id in self.session.object_ids:
            self.session.remove_object(obj_id)
        self.labels.clear_object(obj_id)
        self.prompts = {key: value for key, value in self.prompts.items() if key[1] != obj_id}
        self._earlier = {key: value for key, value in self._earlier.items() if key[1] != obj_id}
        self.steps.append({"remove": obj_id})

    def replay(self, steps: list[dict], where: str = "prompts") -> None:
        """Do checked `steps` (`read_prompts`) again; a step the session refuses raises `ValueError` naming it."""
        for number, step in enumerate(steps, start=1):
            try:
                if "track" in step:
                    frames = self.track(step["frame"], step["track"], step["max_frames"])
                    for _ in itertools.islice(frames, step["frames"]):
                        pass
                elif "remove" in step:
                    self.remove(step["remove"])
                elif "strategy" in step:
                    self.strategy(strategy_settings(step["strategy"], step["settings"]))
                elif "undo" in step:
                    self.undo(step["frame"], step["object"])
                elif "click" in step:
                    self.click(step["frame"], step["object"], tuple(step["click"]))
                else:
                    self.box(step["frame"], step["object"], step["box"])
            except ValueError as error:
                raise ValueError(f"{where}: step {number} ({json.dumps(step)}): {error}") from None

    def to_json(self, names: Mapping[int, str] | None = None) -> dict:
        """The prompts file of what was done (see the module docstring); `names` of the objects where known."""
        session = self.session
        return {
            "hiera_hf_prompts": PROMPTS_VERSION,
            "video": {"width": session.video_width, "height": session.video_height, "frames": session.num_frames},
            "add_all_frames_to_correct_as_cond": bool(session.add_all_frames_to_correct_as_cond),
            "names": {str(obj_id): name for obj_id, name in (names or {}).items()},
            "steps": [dict(step) for step in self.steps],
        }


def _check_step(step) -> dict:
    """A step of a prompts file with its values checked as far as they can be without the video."""
    kind = next((kind for kind in STEP_KEYS if kind in step), None) if isinstance(step, dict) else None
    if kind is None or sorted(step) != sorted(STEP_KEYS[kind]):
        kinds = "; ".join("{" + ", ".join(keys) + "}" for keys in STEP_KEYS.values())
        raise ValueError(f"a step has the keys of one of {kinds}")
    checked = dict(step)
    if "object" in step:
        checked["object"] = check_index(step["object"], "object", 1, 255)
    if "remove" in step:
        checked["remove"] = check_index(step["remove"], "remove (an object id)", 1, 255)
    if "frame" in step:
        checked["frame"] = check_index(step["frame"], "frame")
    if kind == "click":
        values = step["click"]
        if not isinstance(values, list) or len(values) != 3:
            raise ValueError(f"click must be [x, y, label], got {values!r}")
        x, y = check_finite(values[:2], "click").tolist()
        checked["click"] = [x, y, int(check_labels(values[2:], "click label")[0])]
    elif kind == "box":
        checked["box"] = check_boxes(step["box"], None, None, "box").tolist()
        if len(checked["box"]) != 4:
            raise ValueError(f"box must be [x0, y0, x1, y1], got {step['box']!r}")
    elif kind == "strategy":
        if not isinstance(step["settings"], dict):
            raise ValueError(f"settings must map setting names to values, got {step['settings']!r}")
        strategy_settings(step["strategy"], step["settings"])
    elif kind == "undo" and step["undo"] != 1:
        raise ValueError(f"undo must be 1 (one click or box taken back), got {step['undo']!r}")
    elif kind == "track":
        check_direction(step["track"])
        limit = step["max_frames"]
        checked["max_frames"] = None if limit is None else check_index(limit, "max_frames", 1)
        checked["frames"] = check_index(step["frames"], "frames")
    return checked


def read_prompts(path: str | os.PathLike) -> PromptFile:
    """A prompts file (the app's `prompts.json`, see the module docstring), checked: `ValueError` in one line naming
    the file (and the step) for anything else."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a prompts file (JSON text)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("hiera_hf_prompts") != PROMPTS_VERSION:
        raise ValueError(f'{path} is not a hiera-hf prompts file (a JSON object with "hiera_hf_prompts": 1)')
    video, names, steps = data.get("video"), data.get("names", {}), data.get("steps")
    try:
        if not isinstance(video, dict) or sorted(video) != ["frames", "height", "width"]:
            raise ValueError('"video" must be {"width": W, "height": H, "frames": N}')
        sizes = [check_index(video[key], f"video {key}", 1) for key in ("width", "height", "frames")]
        if not isinstance(names, dict) or not all(isinstance(name, str) for name in names.values()):
            raise ValueError('"names" must map object ids to names, e.g. {"2": "red box"}')
        named = {check_index(_integer(key), "an object id of names", 1, 255): name for key, name in names.items()}
        if not isinstance(steps, list) or not steps:
            raise ValueError('"steps" must be a list of one or more steps')
        condition = data.get("add_all_frames_to_correct_as_cond", False)
        if not isinstance(condition, bool):
            raise ValueError('"add_all_frames_to_correct_as_cond" must be true or false')
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    checked = []
    for number, step in enumerate(steps, start=1):
        try:
            checked.append(_check_step(step))
        except ValueError as error:
            raise ValueError(f"{path}: step {number} ({json.dumps(step)[:120]}): {error}") from None
    return PromptFile(*sizes, condition, named, checked)


def _integer(text: str):
    """A JSON object key as the integer it spells (else the text, refused by `check_index`)."""
    return int(text) if text.strip().isdigit() else text


__all__ = [
    "DIRECTIONS",
    "STEP_KEYS",
    "PromptFile",
    "PromptLog",
    "VideoPrompt",
    "apply_prompt",
    "apply_prompts",
    "check_direction",
    "pass_directions",
    "propagate",
    "read_mask",
    "read_prompts",
]
