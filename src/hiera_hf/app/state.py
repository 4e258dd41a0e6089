"""The app's state, as plain Python (no UI code): the session registry, one `AppSession` per browser tab holding
an image being segmented (`image.ImageState`), a video being tracked (`video.VideoState`) and a temporary folder for
masks and exports (`exports`), all sharing the `models.Models` loaded once.

Every method that a person's input reaches raises `ValueError` with a short message for bad input; the UI shows it.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from .exports import export_image, export_video
from .image import ImageState
from .models import Models
from .video import VideoState


class AppSession:
    """What one browser tab holds: an image, a video and a temporary folder for masks and exports."""

    def __init__(self, models: Models):
        self.models = models
        self.folder = Path(tempfile.mkdtemp(prefix="hiera-hf-app-"))
        self.image = ImageState(models)
        self.video: VideoState | None = None

    def open_video(self, source) -> VideoState:
        """Open a video file or frame folder (decoded lazily); replaces the previous video."""
        video = VideoState(self.models, source, tempfile.mkdtemp(prefix="video-", dir=self.folder))
        self.close_video()
        self.video = video
        return video

    def require_video(self) -> VideoState:
        if self.video is None:
            raise ValueError("Open a video first")
        return self.video

    def _exports(self) -> Path:
        folder = self.folder / "exports"
        folder.mkdir(exist_ok=True)
        return folder

    def export_image(self) -> list[Path]:
        """The image's exports (`exports.export_image`)."""
        return export_image(self.image, self._exports())

    def export_video(self) -> list[Path]:
        """The video's exports, the files `hiera-hf track` writes (`exports.export_video`)."""
        return export_video(self.require_video(), self._exports())

    def close_video(self) -> None:
        if self.video is not None:
            self.video.close()
            shutil.rmtree(self.video.folder, ignore_errors=True)
            self.video = None

    def close(self) -> None:
        """Free everything the tab held (video file, masks, exports)."""
        self.close_video()
        shutil.rmtree(self.folder, ignore_errors=True)


class Sessions:
    """The sessions of the open tabs, by id; `close(id)` when a tab is closed or reloaded."""

    def __init__(self, models: Models):
        self.models = models
        self._sessions: dict[str, AppSession] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str) -> AppSession:
        with self._lock:
            if session_id not in self._sessions:
                self._sessions[session_id] = AppSession(self.models)
            return self._sessions[session_id]

    def close(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is not None:
            session.close()

    def __len__(self) -> int:
        return len(self._sessions)

    def ids(self) -> list[str]:
        return list(self._sessions)


__all__ = ["AppSession", "Sessions"]
