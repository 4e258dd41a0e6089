"""An interactive SAM 2 app (Gradio): click on an image or any video frame, see the mask at once, track objects
through the video, correct, export. The logic has no UI code: `models` (loaded once), `objects` (ids, names, the
checks of clicks and boxes), `views` (drawing), `image` and `video` (what a tab segments and tracks), `exports`
and `state` (one `AppSession` per tab, the registry); `ui` builds the Gradio page over it (needs
`pip install "hiera-hf[app]"`)."""

from .image import ImageState
from .models import Models
from .state import AppSession, Sessions
from .video import VideoState


def build_app(model, device: str | None = None, detector=None, threshold: float | None = None):
    """The app's `gradio.Blocks` over `model` (a `Models`, or a SAM 2 folder / variant name) with the `detector` of
    the "Find" boxes; see `ui.build_app`."""
    from .ui import build_app as build

    return build(model, device=device, detector=detector, threshold=threshold)


def launch(model: str, host: str = "127.0.0.1", port: int | None = None, device: str | None = None, **detector) -> None:
    """Start the app on http://host:port (blocks until stopped); `detector=`, `threshold=`: see `ui.launch`."""
    from .ui import launch as run

    run(model, host=host, port=port, device=device, **detector)


__all__ = ["AppSession", "ImageState", "Models", "Sessions", "VideoState", "build_app", "launch"]
