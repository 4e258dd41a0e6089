"""Writing tracking results: the one output layer of `hiera-hf track` and the app's video export.

A tracked frame is a label map `(H, W)` uint8: at each pixel the id (1..255) of the object with the highest positive
logit, else 0. An object's mask on a frame is its pixels of the label map, so every format says the same thing.
`write_tracking` writes, in a folder, what `formats` ask (torch-free: results may come from any runtime):

- "png": `masks/00000.png ...`, the label maps as palette PNGs;
- "rle": `rle/00000.json ...`, per frame one COCO RLE record per object (`mask_record`);
- "objects": `objects/OBJ/00000.png ...`, per object and frame a 0/255 PNG;
- "boxes": `boxes/OBJ.txt`, per object one `x,y,w,h` line per frame (pixels; line N is frame N, as LaSOT's
  ground truth), `0,0,0,0` where the object is absent or the frame was not tracked;
- "mp4": `overlay.mp4`, the tracked frames with their label maps blended in (50%) and, on prompted frames, the
  prompts (clicks green / red, boxes in their object's colour), as `hiera-hf segment`'s overlay marks them.

Every file is written through `hiera_hf.io_utils.atomic_write` and every folder is staged (`staged_folder`), so an
interrupted run never leaves a truncated file, nor a folder that mixes two runs, nor an empty output folder. What is
already there is replaced only with `overwrite` (`--overwrite`), and only when an earlier run wrote it: a folder
holding only the names this module writes, an `overlay.mp4` carrying its mark (`OVERLAY_MARK`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..io_utils import atomic_write, check_replaceable, created_folder, staged_folder
from ..visualization import blend_labels, mark_prompts, palette
from .video_tracking import Sam2VideoFrameResult

FORMATS = ("png", "rle", "objects", "boxes", "mp4")
# The folder of each format but "mp4", and the names in it that `write_tracking` writes (an earlier run's folder
# holds only these, and is then replaced as a whole).
FOLDERS = {
    "png": ("masks", re.compile(r"\d{5}\.png")),
    "rle": ("rle", re.compile(r"\d{5}\.json")),
    "objects": ("objects", re.compile(r"\d{1,3}/\d{5}\.png")),
    "boxes": ("boxes", re.compile(r"\d{1,3}\.txt")),
}
OVERLAY = "overlay.mp4"
OVERLAY_MARK = "written by hiera-hf track"  # the overlay's "comment" metadata: an earlier run's, replaceable
_EXISTS = "{path} already exists; choose another output folder or replace it with --overwrite (overwrite=True in Python)"


def label_map(result: Sam2VideoFrameResult) -> np.ndarray:
    """`(H, W)` uint8 map of a frame: at each pixel the id of the object with the highest positive logit, else 0.
    The logits `(N, H, W)` may be a torch tensor on any device (reduced there) or a numpy array."""
    if any(not 1 <= i <= 255 for i in result.object_ids):
        raise ValueError(f"Object ids must be in 1..255 to be written as palette PNGs, got {result.object_ids}")
    logits = result.mask_logits
    best = (logits.argmax(0) + 1) * (logits > 0).any(0)  # 1 + the object's index; 0 where no logit is positive
    best = best.cpu().numpy() if hasattr(best, "cpu") else best
    return np.array([0, *result.object_ids], dtype=np.uint8)[best]


def write_palette_png(labels: np.ndarray, path: str | os.PathLike) -> None:
    """Save a `(H, W)` uint8 label map as a palette PNG."""
    image = Image.fromarray(labels, mode="P")
    image.putpalette(palette().ravel().tolist())
    atomic_write(path, lambda partial: image.save(partial, format="PNG"))


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """The `(H, W)` uint8 label map of a palette PNG (`write_palette_png`)."""
    with Image.open(path) as image:
        return np.asarray(image)


class LabelMapFolder:
    """The latest label map of each frame of a video, as palette PNGs `00000.png ...` in `folder` (created): what the
    app keeps on disk and `hiera-hf track --prompts` replays into. A frame computed again replaces its earlier map."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, frame_idx: int) -> Path:
        return self.folder / f"{frame_idx:05d}.png"

    def write(self, result: Sam2VideoFrameResult) -> int:
        """Keep a frame's result (`label_map`); returns its frame index."""
        write_palette_png(label_map(result), self.path(result.frame_idx))
        return result.frame_idx

    def read(self, frame_idx: int) -> np.ndarray | None:
        """The frame's `(H, W)` uint8 label map, `None` before any mask was computed on it."""
        path = self.path(frame_idx)
        return read_label_map(path) if path.is_file() else None

    def frames(self) -> list[int]:
        """The indices of the frames with a label map, in order."""
        return sorted(int(path.stem) for path in self.folder.glob("*.png"))

    def items(self) -> Iterator[tuple[int, np.ndarray]]:
        """`(frame_idx, label map)` of each frame with one, in order (read as they are asked for)."""
        return ((frame_idx, read_label_map(self.path(frame_idx))) for frame_idx in self.frames())

    def clear_object(self, obj_id: int) -> None:
        """Set an object's pixels to 0 (background) in every label map."""
        for frame_idx, labels in self.items():
            if (labels == obj_id).any():
                write_palette_png(np.where(labels == obj_id, 0, labels).astype(np.uint8), self.path(frame_idx))


def write_mask_png(mask: np.ndarray, path: str | os.PathLike) -> None:
    """Save a `(H, W)` bool mask as a black (0) and white (255) PNG."""
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    atomic_write(path, lambda partial: image.save(partial, format="PNG"))


def mask_box(mask: np.ndarray) -> list[int]:
    """`[x, y, w, h]` (pixels) of the bounding box of a `(H, W)` bool mask; `[0, 0, 0, 0]` when it is empty."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return [0, 0, 0, 0]
    return [int(columns[0]), int(rows[0]), int(columns[-1] - columns[0] + 1), int(rows[-1] - rows[0] + 1)]


def mask_record(mask: np.ndarray, obj_id: int, name: str | None = None, frame_idx: int | None = None) -> dict:
    """The COCO RLE record of an object's `(H, W)` bool mask: `id`, `name` (when known), `frame_idx` (on a video),
    `area` (pixels), `bbox` (`mask_box`) and `segmentation` (compressed RLE, pycocotools' string form)."""
    from .amg import coco_encode_rle, mask_to_rle  # numpy functions, in a module that imports torch

    record = {"id": int(obj_id)}
    if name is not None:
        record["name"] = name
    if frame_idx is not None:
        record["frame_idx"] = int(frame_idx)
    return {
        **record,
        "area": int(mask.sum()),
        "bbox": mask_box(mask),
        "segmentation": coco_encode_rle(mask_to_rle(mask)),
    }


def write_json(value, path: str | os.PathLike) -> Path:
    """`value` as JSON (one item per line for a list of records) with a final line break."""
    text = json.dumps(value, indent=1) + "\n"
    return atomic_write(path, lambda partial: Path(partial).write_text(text))


def _written_by_us(kind: str) -> Callable[[Path], bool]:
    """Whether a folder holds only what `write_tracking` writes for `kind` (`00012.png`, ...)."""
    pattern = FOLDERS[kind][1]

    def check(folder: Path) -> bool:
        entries = [p for p in folder.rglob("*") if p.is_file() or not any(p.iterdir())]
        return all(p.is_file() and pattern.fullmatch(p.relative_to(folder).as_posix()) for p in entries)

    return check


def check_formats(formats: Sequence[str]) -> None:
    """`ValueError` unless `formats` is one or more names out of `FORMATS`."""
    unknown = [kind for kind in formats if kind not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown format {', '.join(unknown)!r}; choose from {', '.join(FORMATS)}")


def _is_our_overlay(path: Path) -> bool:
    """Whether `path` is an overlay video that `write_overlay_video` wrote (its mark in the metadata)."""
    import av

    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment") == OVERLAY_MARK
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return False


def check_output(
    out: str | os.PathLike, formats: Sequence[str], overwrite: bool = False, inputs: Iterable[str | os.PathLike] = ()
) -> None:
    """Refuse (`ValueError`, `FileExistsError`) before any work what `write_tracking(out, formats, overwrite=...)`
    could not write: an unknown format, `out` a file or under one; a format's folder or `overlay.mp4` that exists
    (but an empty folder) unless `overwrite`, and then unless an earlier run wrote it; an output that is or holds
    one of `inputs` (the video, the mask prompts)."""
    out = Path(out)
    check_formats(formats)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    above = next((path for path in out.parents if os.path.lexists(path)), None)
    if above is not None and not above.is_dir():
        raise FileExistsError(f"{above} is not a folder; cannot write {out} in it")
    for kind in formats:
        if kind in FOLDERS:
            folder = out / FOLDERS[kind][0]
            empty = folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir())
            check_replaceable(folder, overwrite or empty, _written_by_us(kind), inputs, what="output folder")
    overlay = out / OVERLAY
    if "mp4" in formats and os.path.lexists(overlay):
        if any(os.path.lexists(source) and overlay.resolve() == Path(source).resolve() for source in inputs):
            raise ValueError(f"{overlay} is the input video; choose another output folder")
        if not overwrite:
            raise FileExistsError(_EXISTS.format(path=overlay))
        if overlay.is_symlink() or not overlay.is_file() or not _is_our_overlay(overlay):
            raise FileExistsError(
                f"{overlay} is not an overlay video hiera-hf wrote; refusing to replace it: remove it yourself or "
                "choose another output folder"
            )


def write_tracking(
    out: str | os.PathLike,
    formats: Sequence[str],
    frames: Iterable[tuple[int, np.ndarray]],
    object_ids: Iterable[int] | Callable[[], Iterable[int]],
    read_frame: Callable[[int], np.ndarray],
    fps: float | None = None,
    names: Mapping[int, str] | None = None,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    prompts: Mapping[tuple[int, int], Any] | None = None,
) -> list[int]:
    """Write the label maps `frames` (`(frame_idx, (H, W) uint8)` pairs, in any order) of the objects `object_ids`
    into the folder `out` as `formats` ask (see the module docstring); `object_ids` may be a function giving them,
    read again at each frame (objects added during tracking, e.g. `lambda: session.object_ids`, are written from the
    frame they appear on; the boxes files give `0,0,0,0` before it); `names` are the objects' names where known,
    `read_frame(t)` gives frame `t` `(H, W, 3)` uint8 for the overlay, played at `fps` (default 24). With
    `overwrite`, each folder replaces an earlier run's once every frame is written (`check_output(out, formats,
    overwrite, inputs)` tells beforehand whether it may). A failure (in `frames` too) leaves no folder it created.
    `prompts` (`(frame_idx, obj_id) -> video_prompts.VideoPrompt`: its `clicks` (x, y, label) and `box`) are drawn
    on their frames of the overlay. Returns the indices of the frames written, in order."""
    inputs = list(inputs)
    check_output(out, formats, overwrite, inputs)
    out, names = Path(out), names or {}
    fixed_ids = None if callable(object_ids) else list(object_ids)
    current = object_ids if fixed_ids is None else lambda: fixed_ids
    boxes: dict[int, dict[int, list[int]]] = {}  # frame -> object -> its box
    with contextlib.ExitStack() as stack:
        stack.enter_context(created_folder(out))
        staging = {
            kind: stack.enter_context(
                staged_folder(out / FOLDERS[kind][0], True, _written_by_us(kind), inputs)
            )
            for kind in formats
            if kind in FOLDERS
        }
        if "mp4" in formats and "png" not in formats:  # the overlay reads the label maps back
            staging["png"] = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=out, prefix=".labels.")))
        for frame_idx, labels in frames:
            name, object_ids = f"{frame_idx:05d}", sorted(set(current()))
            masks = [labels == obj_id for obj_id in object_ids]
            boxes[frame_idx] = {obj_id: mask_box(mask) for obj_id, mask in zip(object_ids, masks)}
            if "png" in staging:
                write_palette_png(labels, staging["png"] / f"{name}.png")
            if "rle" in staging:
                records = [mask_record(m, i, names.get(i), frame_idx) for i, m in zip(object_ids, masks)]
                write_json(records, staging["rle"] / f"{name}.json")
            for obj_id, mask in zip(object_ids, masks) if "objects" in staging else ():
                write_mask_png(mask, staging["objects"] / str(obj_id) / f"{name}.png")
        order = sorted(boxes)
        span = range(order[-1] + 1) if order else range(0)
        every_id = sorted({obj_id for frame_boxes in boxes.values() for obj_id in frame_boxes} | set(current()))
        for obj_id in every_id if "boxes" in staging else ():
            lines = [",".join(map(str, boxes.get(t, {}).get(obj_id, [0] * 4))) for t in span]
            text = "".join(f"{line}\n" for line in lines)
            atomic_write(staging["boxes"] / f"{obj_id}.txt", lambda partial, text=text: Path(partial).write_text(text))
        if "mp4" in formats:
            (out / OVERLAY).unlink(missing_ok=True)  # an earlier run's (checked), about to be stale
            label_maps = (read_label_map(staging["png"] / f"{t:05d}.png") for t in order)
            marks = (_marks(prompts or {}, t) for t in order)
            write_overlay_video((read_frame(t) for t in order), label_maps, out / OVERLAY, fps or 24.0, marks)
    return order


def _marks(prompts: Mapping[tuple[int, int], Any], frame_idx: int) -> dict:
    """The clicks and boxes of a frame's prompts, as `visualization.mark_prompts` takes them."""
    on_frame = [(obj_id, prompt) for (t, obj_id), prompt in prompts.items() if t == frame_idx]
    clicks = [click for _, prompt in on_frame for click in prompt.clicks]
    boxed = [(obj_id, prompt.box) for obj_id, prompt in on_frame if prompt.box is not None]
    return {
        "points": [click[:2] for click in clicks],
        "labels": [click[2] for click in clicks],
        "boxes": [box for _, box in boxed],
        "box_colours": [obj_id for obj_id, _ in boxed],
    }


def write_overlay_video(
    frames: Iterable[np.ndarray],
    labels: Iterable[np.ndarray],
    path: str | os.PathLike,
    fps: float = 24.0,
    marks: Iterable[dict] | None = None,
) -> None:
    """Encode RGB frames `(H, W, 3)` with their label maps blended in (50%), and per frame the prompt `marks` (the
    keyword arguments of `visualization.mark_prompts`), as an H.264 (or MPEG-4) video."""
    import av

    def encode(partial: str) -> None:
        with av.open(partial, "w", format="mp4") as container:
            container.metadata["comment"] = OVERLAY_MARK
            stream = None
            for frame, label, mark in zip(frames, labels, marks if marks is not None else itertools.repeat({})):
                height, width = (frame.shape[0] // 2) * 2, (frame.shape[1] // 2) * 2  # yuv420p needs even sizes
                blended = blend_labels(frame, label)
                if mark.get("points") or mark.get("boxes"):
                    blended = np.asarray(mark_prompts(blended, **mark))
                blended = blended[:height, :width]
                if stream is None:
                    stream = _video_stream(container, fps, width, height)
                packets = stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(blended), format="rgb24"))
                container.mux(packets)
            if stream is not None:
                container.mux(stream.encode())

    atomic_write(path, encode)


def _video_stream(container, fps: float, width: int, height: int):
    from fractions import Fraction

    rate = Fraction(fps).limit_denominator(1000)
    try:
        stream = container.add_stream("libx264", rate=rate)
    except Exception:  # FFmpeg builds without libx264
        stream = container.add_stream("mpeg4", rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    return stream


__all__ = [
    "FORMATS",
    "LabelMapFolder",
    "OVERLAY_MARK",
    "check_formats",
    "check_output",
    "label_map",
    "mask_box",
    "mask_record",
    "palette",
    "read_label_map",
    "write_json",
    "write_mask_png",
    "write_overlay_video",
    "write_palette_png",
    "write_tracking",
]
