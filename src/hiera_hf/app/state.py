"""The app's state, as plain Python (no UI code): the session registry, one `AppSession` per browser tab holding
an image being segmented (`image.ImageState`), a video being tracked (`video.VideoState`) and a temporary folder for
masks and exports (`exports`), all sharing the `models.Models` loaded once.

Every method that a person's input reaches raises `ValueError` with a short message for bad input; the UI shows it.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..io_utils import created_folder
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
        folder = tempfile.mkdtemp(prefix="video-", dir=self._folder())
        try:
            video = VideoState(self.models, source, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.close_video()
        self.video = video
        return video

    def require_video(self) -> VideoState:
        if self.video is None:
            raise ValueError("Open a video first")
        return self.video

    def _folder(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)  # again if the system's temporary files were cleaned
        return self.folder

    def export_image(self) -> list[Path]:
        """The image's exports (`exports.export_image`) in the tab's `exports` folder."""
        with created_folder(self._folder() / "exports") as folder:  # none is left if the export fails
            return export_image(self.image, folder)

    def export_video(self) -> list[Path]:
        """The video's exports, the files `hiera-hf track` writes (`exports.export_video`), in the tab's `exports`
        folder."""
        with created_folder(self._folder() / "exports") as folder:
            return export_video(self.require_video(), folder)

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
    """The sessions of the open tabs, by id; `close(id)` when a tab is closed or reloaded. Memory stays bounded
    whatever clients do (tabs that never send their unload, clients that invent ids): a session unused for
    `idle_seconds` is closed, and at most `max_sessions` are open (the least recently used is closed to make
    room). A closed tab's next request starts a fresh session."""

    def __init__(
        self,
        models: Models,
        max_sessions: int = 16,
        idle_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_sessions < 1 or not idle_seconds > 0:
            raise ValueError(f"Sessions need max_sessions >= 1 and idle_seconds > 0, got {max_sessions}, {idle_seconds}")
        self.models, self.max_sessions, self.idle_seconds, self._clock = models, max_sessions, idle_seconds, clock
        self._sessions: dict[str, AppSession] = {}  # least recently used first
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str) -> AppSession:
        """The tab's session (a new one for a new id); closes the expired ones and, when full, the least recently
        used."""
        with self._lock:
            now = self._clock()
            session = self._sessions.pop(session_id, None)
            expired = [i for i in self._sessions if now - self._used[i] > self.idle_seconds]
            kept = [i for i in self._sessions if i not in expired]  # least recently used first
            closing = [self._pop(i) for i in expired + kept[: max(len(kept) + 1 - self.max_sessions, 0)]]
            self._sessions[session_id] = session = session or AppSession(self.models)
            self._used[session_id] = now
        for old in closing:
            old.close()
        return session

    def _pop(self, session_id: str) -> AppSession:
        del self._used[session_id]
        return self._sessions.pop(session_id)

    def close(self, session_id: str) -> None:
        with self._lock:
            session = self._pop(session_id) if session_id in self._sessions else None
        if session is not None:
            session.close()

    def __len__(self) -> int:
        return len(self._sessions)

    def ids(self) -> list[str]:
        return list(self._sessions)


__all__ = ["AppSession", "Sessions"]
