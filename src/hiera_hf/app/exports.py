"""What the app exports: an image's masks, and a video's masks in the files `hiera-hf track` writes
(`sam2.video_output`), so that the same prompts give the same files from either."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..io_utils import atomic_write
from ..sam2.video_output import FOLDERS, FORMATS, OVERLAY, mask_record, write_json, write_palette_png, write_tracking
from .image import ImageState
from .video import VideoState

IMAGE_FILES = ("masks.png", "objects.zip", "masks_coco.json")
VIDEO_FILES = ("tracking.zip", OVERLAY, "prompts.json")


def _zip(path: Path, members: dict[str, bytes | Path]) -> Path:
    """A zip at `path` (written atomically) of `name -> bytes or file`, in the order given."""

    def write(partial: str) -> None:
        with zipfile.ZipFile(partial, "w") as archive:
            for name, member in members.items():
                if isinstance(member, Path):
                    archive.write(member, name)
                else:
                    archive.writestr(name, member)

    return atomic_write(path, write)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "object"


def export_image(state: ImageState, folder: Path) -> list[Path]:
    """The image's `masks.png` (the label map as a palette PNG), `objects.zip` (one 0/255 PNG per object,
    `<id>_<name>.png`) and `masks_coco.json` (one COCO RLE record per object present, `video_output.mask_record`)
    in `folder`."""
    labels = state.labels()
    png, objects, coco = (folder / name for name in IMAGE_FILES)
    write_palette_png(labels, png)
    members = {}
    for obj_id, name in state.objects.names.items():
        buffer = io.BytesIO()
        Image.fromarray(((labels == obj_id) * 255).astype(np.uint8)).save(buffer, format="PNG")
        members[f"{obj_id:03d}_{_safe(name)}.png"] = buffer.getvalue()
    _zip(objects, members)
    names = state.objects.known_names()
    present = sorted(int(i) for i in np.unique(labels) if i)
    write_json([mask_record(labels == i, i, names.get(i)) for i in present], coco)
    return [png, objects, coco]


def export_video(video: VideoState, folder: Path) -> list[Path]:
    """The video's tracked frames as `hiera-hf track --format png,rle,objects,boxes,mp4` writes them: the folders
    in `tracking.zip` (`masks/00000.png`, ...), and `overlay.mp4`, in `folder`; with `prompts.json`, the prompts
    file from which `hiera-hf track --prompts` writes the same files (`video_prompts.PromptLog`)."""
    if not video.tracked_frames():
        raise ValueError("No masks yet: click on an object and track first")
    out, names = folder / "tracking", video.objects.known_names()
    # into the tab's own folder: an earlier export is replaced
    write_tracking(out, FORMATS, video.log.labels.items(), video.session.object_ids, video.frame,
                   video.session.fps, names, overwrite=True, prompts=video.log.prompts)  # fmt: skip
    folders = [out / FOLDERS[kind][0] for kind in FORMATS if kind in FOLDERS]
    members = {p.relative_to(out).as_posix(): p for f in folders for p in sorted(f.rglob("*")) if p.is_file()}
    archive = _zip(folder / VIDEO_FILES[0], members)
    overlay = folder / OVERLAY
    (out / OVERLAY).replace(overlay)
    return [archive, overlay, write_json(video.log.to_json(names), folder / VIDEO_FILES[2])]


__all__ = ["IMAGE_FILES", "VIDEO_FILES", "export_image", "export_video"]
