"""The Gradio page over `state`: an Image tab and a Video tab, each built by its class (`ImageTab`, `VideoTab`)
whose methods are the handlers of its events. Only wiring lives here; all logic is in `state` and below it.

Each browser tab gets its own `AppSession` (keyed by Gradio's session hash, freed when the tab is closed or
reloaded); the models are loaded once. Bad input is reported in the page ("Messages" box and a warning toast),
never as a traceback; unexpected errors are logged on the server and reported in one line.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import time
from pathlib import Path

import gradio as gr

from ..errors import USER_ERRORS, user_message
from ..sam2.mask_generation import Sam2AutomaticMaskGenerator
from ..sam2.video_prompts import DIRECTIONS
from .find import find_in_image, find_in_video
from .models import Models
from .objects import BACKGROUND, FOREGROUND
from .state import AppSession, Sessions

LOGGER = logging.getLogger(__name__)
CLICK_MODES = ["foreground", "background"]
VIEW_FORMAT = "jpeg"  # the views are sent as JPEG, much faster to encode than PNG/WebP (benchmarks/README)
TQDM_PROGRESS = gr.Progress(track_tqdm=True)  # shows the mask generator's tqdm bar in the page
AMG_DEFAULTS = {name: p.default for name, p in inspect.signature(Sam2AutomaticMaskGenerator).parameters.items()}
PLAYBACKS = 4  # playbacks of tracked frames served at once (more wait in the queue, and their tab says so)

HELP = """**Click on the image** to segment: a *foreground* click adds to the object, a *background* click removes
from it; **drag** to draw a box around it (kept with its clicks). Each object has its own colour; *New object*
starts another one."""

# Gradio's Image reports clicks only (`select`); this script, run once when the page loads, turns a drag on a view
# (#image-view, #video-view) into a box: it draws the rubber band and, on release, keeps "x0,y0,x1,y1" (view pixels,
# computed as Gradio computes a click's) in `window.hierahfBox` and clicks the hidden button #image-box / #video-box,
# whose event's `js` hands the box to the server as its last input. The click that ends a drag is swallowed; a
# press that moves less than MIN_DRAG CSS pixels stays a click.
DRAG_BOX_JS = (Path(__file__).parent / "drag_box.js").read_text()
# Keyboard shortcuts (not while typing in a box): each presses the button (or picks the click mode) of the tab shown.
SHORTCUTS_JS = (Path(__file__).parent / "shortcuts.js").read_text()
KEYS_HELP = (
    "Keys: **F** foreground, **B** background, **N** new object, **Z** undo the object's last click or box, **C** "
    "clear the object's clicks and box, **T** track, **S** stop, **P** play the tracked frames, **K** pause."
)
# The page's layout rules (`layout.css`), added by a script when the page loads (Gradio 6 takes CSS only in
# `launch`, which the caller of `build_app` runs): the views are kept short enough for the controls under them.
LAYOUT_JS = (
    "() => { if (document.getElementById('hierahf-layout')) return; const style = document.createElement('style');"
    f" style.id = 'hierahf-layout'; style.textContent = {json.dumps((Path(__file__).parent / 'layout.css').read_text())};"
    " document.head.appendChild(style); }"
)
SMALL_BUTTON = 100  # pixels: the narrowest a button of a row gets before the row wraps
UPLOAD_HEIGHT = 110  # pixels: the upload box is a strip, not a square that pushes the controls down


def _guarded(outputs_status):
    """Wrap a handler so that a user error (or any unexpected one) becomes a message in `outputs_status` and a
    warning toast instead of a traceback; the other outputs are left as they are. Works for generators too."""

    def decorate(fn):
        def report(error: Exception) -> dict:
            if isinstance(error, USER_ERRORS):
                message = user_message(error)
            else:
                LOGGER.exception("Unexpected error in %s", fn.__name__)
                message = f"Internal error ({type(error).__name__}: {error}); the server keeps running"
            gr.Warning(message)
            return {outputs_status: message}

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def generator(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as error:  # noqa: BLE001 - every error becomes a message in the page
                    yield report(error)

            return generator

        @functools.wraps(fn)
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - every error becomes a message in the page
                return report(error)

        return handler

    return decorate


def _object_choices(objects) -> list[tuple[str, int]]:
    return [(f"{obj_id}: {name}", obj_id) for obj_id, name in objects.names.items()]


def _found(objects, ids: list[int]) -> str:
    """"object 3 (a dog), object 4 (a cat)"."""
    return ", ".join(f"object {obj_id} ({objects.names[obj_id]})" for obj_id in ids)


def _selected(objects) -> int:
    """The object selected in the page; `ValueError` when there is none."""
    if objects.active is None:
        raise ValueError("No object selected: click on an object first")
    return objects.active


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _corners(box) -> str:
    return ", ".join(f"{v:.0f}" for v in box)


class _Tab:
    """A tab of the page: the view with `_below_view` under it, and beside it the tab's "Messages" box over its
    `_controls` (ids `<name>-...`); the help and the keys under both. `_wire` connects the events; `layout.css` (`LAYOUT_JS`) keeps
    the view, the controls under it and the top of the column beside it on one laptop screen."""

    def __init__(self, sessions: Sessions, name: str, labels: tuple[str, str], help_text: str, greeting: str):
        self.sessions = sessions
        label, view_label = labels  # of the tab and of its view
        with gr.Tab(label, elem_id=f"{name}-tab"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    self.view = gr.Image(  # no corner label nor buttons: they would cover clickable pixels
                        label=view_label, show_label=False, buttons=[], type="numpy", format=VIEW_FORMAT,
                        interactive=False, elem_id=f"{name}-view",
                    )  # fmt: skip
                    self._below_view()
                with gr.Column(scale=1, min_width=320):
                    self.status = gr.Textbox(
                        greeting, label="Messages", elem_id=f"{name}-status", interactive=False, lines=2, max_lines=3
                    )
                    self._controls()
            gr.Markdown(f"{help_text}\n\n{KEYS_HELP}", elem_classes="hierahf-help")
        self._wire()

    def _below_view(self) -> None:
        """Components under the view (none by default)."""

    def _controls(self) -> None:
        raise NotImplementedError

    def _wire(self) -> None:
        raise NotImplementedError

    def session(self, request: gr.Request) -> AppSession:
        return self.sessions.get(request.session_hash)

    def guarded(self, handler):
        """`handler` with its errors reported in the page (`_guarded`)."""
        return _guarded(self.status)(handler)

    def listen(self, event, handler, inputs, progress: str = "minimal", **options):
        """Run `handler` (`guarded`) on `event` with the tab's `outputs`. Its progress shows on the Messages box
        only, never over the view: the place in the queue while the request waits for another tab's, then the time
        it has run (`progress="full"`: a progress bar too; "hidden": nothing). Returns Gradio's dependency."""
        return event(
            self.guarded(handler), inputs, self.outputs, show_progress=progress, show_progress_on=[self.status],
            **options,
        )  # fmt: skip

    def open(self, source: str, shown: str, request: gr.Request) -> dict:
        """Open `source` (named `shown` in messages, as the person gave it); returns the tab's outputs."""
        raise NotImplementedError

    def _wire_open(self) -> None:
        """An upload opens the file uploaded, Enter in the path box the path typed: the most recent wins, and the
        other box is cleared. What belonged to the previous file (exports, the name being typed) is cleared too."""
        self.listen(self.file.upload, self.open_upload, self.file)
        self.listen(self.path.submit, self.open_path, self.path)

    def open_upload(self, file, request: gr.Request) -> dict:
        if not file:
            return {}
        return {**self._open(file, Path(file).name, request), self.path: ""}

    def open_path(self, path, request: gr.Request) -> dict:
        path = (path or "").strip()
        if not path:
            raise ValueError("Type the path of a file on the server, then Enter")
        return {**self._open(path, path, request), self.file: None}

    def _open(self, source: str, shown: str, request: gr.Request) -> dict:
        try:
            opened = self.open(source, shown, request)
        except USER_ERRORS as error:  # the file named as the person gave it, not by the server's path
            raise ValueError(user_message(error).replace(source, shown)) from None
        return {**opened, self.files: None, self.name: ""}

    def _open_controls(self, tab: str, what: str, path_label: str) -> None:
        """The upload of `what` and the path box (ids `<tab>-file`, `<tab>-path`)."""
        self.file = gr.File(label=f"Open {what}", height=UPLOAD_HEIGHT, elem_id=f"{tab}-file")
        self.path = gr.Textbox(label=path_label, elem_id=f"{tab}-path")

    def _object_controls(self, tab: str) -> None:
        """The controls of the objects both tabs have (ids `<tab>-mode` ...): the click mode, object picker, New /
        Remove / Undo / Clear buttons, rename and Find boxes, and the hidden button `<tab>-box` that a drag on the
        tab's view clicks (see `DRAG_BOX_JS`) with the textbox that carries the box to the server."""
        self.mode = gr.Radio(CLICK_MODES, value="foreground", label="A click adds", elem_id=f"{tab}-mode")
        self.box, self.box_value = gr.Button(visible="hidden", elem_id=f"{tab}-box"), gr.Textbox(visible=False)
        self.object = gr.Dropdown(label="Object", choices=[], elem_id=f"{tab}-object")
        with gr.Row():
            self.new = gr.Button("New object (N)", size="sm", min_width=SMALL_BUTTON, elem_id=f"{tab}-new")
            self.remove = gr.Button("Remove object", size="sm", min_width=SMALL_BUTTON, elem_id=f"{tab}-remove")
        with gr.Row():
            self.undo = gr.Button("Undo (Z)", size="sm", min_width=SMALL_BUTTON, elem_id=f"{tab}-undo")
            self.clear = gr.Button("Clear object (C)", size="sm", min_width=SMALL_BUTTON, elem_id=f"{tab}-clear")
        self.name = gr.Textbox(label="Rename the object (Enter)", elem_id=f"{tab}-name")
        self.find = gr.Textbox(label="Find objects by name: a dog. a red mug. (Enter)", elem_id=f"{tab}-find")


class ImageTab(_Tab):
    """The Image tab: open an image, click or drag a box to segment objects, pick a candidate mask, segment
    everything, export."""

    def __init__(self, sessions: Sessions):
        greeting = "Open an image (upload it, or type its path and Enter), then click on an object"
        super().__init__(sessions, "image", ("Image", "Image"), HELP, greeting)

    def _controls(self) -> None:
        self._open_controls("image", "an image", "...or a path on the server (Enter)")
        self._object_controls("image")
        self.candidate = gr.Radio([], label="Candidate masks (predicted IoU)", type="index", elem_id="image-candidate")
        self.everything = gr.Button("Segment everything", elem_id="image-everything")
        self.found = gr.Radio(
            [("become new objects", "add"), ("replace the objects", "replace")], value="add",
            label="The masks segment everything finds", elem_id="image-found",
        )  # fmt: skip
        with gr.Accordion("Segment everything: settings", open=False):
            self.grid = gr.Number(
                AMG_DEFAULTS["points_per_side"], label="Clicks per side of the grid", precision=0, minimum=1,
                elem_id="image-grid",
            )  # fmt: skip
            self.iou = gr.Slider(
                0, 1, value=AMG_DEFAULTS["pred_iou_thresh"], step=0.01, label="Keep masks of predicted IoU >=",
                elem_id="image-iou",
            )  # fmt: skip
            self.stability = gr.Slider(
                0, 1, value=AMG_DEFAULTS["stability_score_thresh"], step=0.01, label="...and stability >=",
                elem_id="image-stability",
            )  # fmt: skip
        self.export = gr.Button("Export masks", variant="primary", elem_id="image-export")
        self.files = gr.File(label="Exports", file_count="multiple", interactive=False, elem_id="image-files")

    def _wire(self) -> None:
        opened = {self.files, self.file, self.path, self.name}  # what opening a file clears
        self.outputs = {self.status, self.view, self.object, self.candidate, *opened}
        listen = self.listen
        self._wire_open()
        listen(self.view.select, self.click, self.mode)
        listen(self.box.click, self.set_box, self.box_value, js="() => [window.hierahfBox]")
        listen(self.new.click, self.new_object, None)
        listen(self.remove.click, self.remove_object, self.object)
        listen(self.undo.click, self.undo_prompt, None)
        listen(self.clear.click, self.clear_object, None)
        listen(self.object.input, self.select_object, self.object)
        listen(self.name.submit, self.rename_object, [self.object, self.name])
        listen(self.find.submit, self.find_objects, self.find)
        listen(self.candidate.input, self.select_candidate, self.candidate)
        everything = [self.found, self.grid, self.iou, self.stability]
        listen(self.everything.click, self.segment_everything, everything, progress="full")  # the generator's bar
        listen(self.export.click, self.export_masks, None)

    def panel(self, session: AppSession, message: str) -> dict:
        """The tab's outputs after a change: the message, the view, the objects and the candidates."""
        state = session.image
        scores = state.scores() if state.objects.active is not None else []
        choices = [f"{i + 1} ({score:.2f})" for i, score in enumerate(scores)]
        return {
            self.status: message,
            self.view: state.view(),
            self.object: gr.update(choices=_object_choices(state.objects), value=state.objects.active),
            self.candidate: gr.update(choices=choices, value=choices[state.selected()] if choices else None),
        }

    def open(self, source: str, shown: str, request: gr.Request) -> dict:
        session = self.session(request)
        session.image.open(source)
        height, width = session.image.size
        return self.panel(session, f"Opened a {width}x{height} image ({shown}): click on an object")

    def click(self, mode, evt: gr.SelectData, request: gr.Request):
        session = self.session(request)
        x, y = session.image.grid.from_view(*evt.index)
        obj_id = session.image.click(x, y, BACKGROUND if mode == "background" else FOREGROUND)
        return self.panel(session, f"{mode.capitalize()} click ({x:.0f}, {y:.0f}) on object {obj_id}")

    def set_box(self, box, request: gr.Request):
        session = self.session(request)
        box = session.image.grid.box_from_view(str(box).split(","))
        obj_id = session.image.set_box(box)
        return self.panel(session, f"Box ({_corners(box)}) for object {obj_id}")

    def new_object(self, request: gr.Request):
        session = self.session(request)
        obj_id = session.image.add_object()
        return self.panel(session, f"Object {obj_id}: click on it")

    def remove_object(self, obj_id, request: gr.Request):
        session = self.session(request)
        if obj_id is None:
            raise ValueError("No object to remove")
        session.image.remove_object(obj_id)
        return self.panel(session, f"Removed object {obj_id}")

    def undo_prompt(self, request: gr.Request):
        session = self.session(request)
        obj_id = session.image.undo(_selected(session.image.objects))
        return self.panel(session, f"Took back the last click or box of object {obj_id}")

    def clear_object(self, request: gr.Request):
        session = self.session(request)
        obj_id = session.image.clear_prompts(_selected(session.image.objects))
        return self.panel(session, f"Cleared the clicks and box of object {obj_id}")

    def select_object(self, obj_id, request: gr.Request):
        session = self.session(request)
        if session.image.image is None:
            return {}
        if obj_id is not None:
            session.image.objects.select(obj_id)
        return self.panel(session, "")

    def rename_object(self, obj_id, name, request: gr.Request):
        session = self.session(request)
        if obj_id is None:
            raise ValueError("Select an object to rename")
        session.image.objects.rename(obj_id, name)
        return self.panel(session, f"Object {obj_id} is now {session.image.objects.names[obj_id]!r}")

    def find_objects(self, text, request: gr.Request):
        session = self.session(request)
        found = find_in_image(session.image, session.models.detector, text)
        return self.panel(session, f"Found {_found(session.image.objects, found)}")

    def select_candidate(self, index, request: gr.Request):
        session = self.session(request)
        if index is None or session.image.objects.active is None:
            return {}
        session.image.select_candidate(index)
        return self.panel(session, f"Showing candidate {index + 1}")

    def segment_everything(self, found, grid, iou, stability, request: gr.Request, progress=TQDM_PROGRESS):
        session = self.session(request)
        if grid is None:
            raise ValueError("Give the number of clicks per side of the grid")
        settings = {"points_per_side": grid, "pred_iou_thresh": iou, "stability_score_thresh": stability}
        count = session.image.segment_everything(replace=found == "replace", **settings)
        if not count:
            return self.panel(session, "Found no mask (the objects are unchanged): lower the scores to keep more")
        added = "replacing the objects" if found == "replace" else "added as new objects"
        return self.panel(session, f"Found {_plural(count, 'mask')}, {added}")

    def export_masks(self, request: gr.Request):
        files = [str(path) for path in self.session(request).export_image()]
        return {self.status: "Exported the palette PNG, one PNG per object and COCO RLE JSON", self.files: files}


class VideoTab(_Tab):
    """The Video tab: open a video, click or drag a box on any frame, track (and stop), correct, export."""

    def __init__(self, sessions: Sessions):
        help_text = HELP.replace("the image", "a frame") + " *Track* propagates all objects; *Stop* interrupts."
        greeting = "Open a video (upload it, or type the path of a video or frame folder and Enter)"
        super().__init__(sessions, "video", ("Video", "Frame"), help_text, greeting)

    def _below_view(self) -> None:
        self.frame = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="video-frame")
        # which frames have masks (upper band, blue) and prompts (lower band, yellow); a click shows that frame
        self.timeline = gr.Image(
            label="Timeline", show_label=False, buttons=[], type="numpy", format="png", interactive=False,
            elem_id="video-timeline",
        )  # fmt: skip
        with gr.Row():
            self.play_button = gr.Button("Play the tracked frames (P)", size="sm", elem_id="video-play")
            self.pause = gr.Button("Pause (K)", size="sm", elem_id="video-pause")

    def _controls(self) -> None:
        self._open_controls("video", "a video", "...or a video file / frame folder on the server (Enter)")
        with gr.Row():
            self.track_button = gr.Button("Track (T)", variant="primary", min_width=SMALL_BUTTON, elem_id="video-track")
            self.stop = gr.Button("Stop (S)", variant="stop", min_width=SMALL_BUTTON, elem_id="video-stop")
        self._object_controls("video")
        self.direction = gr.Radio(list(DIRECTIONS), value="both", label="Track direction", elem_id="video-direction")
        self.strategy = gr.Radio(
            [
                ("SAM 2", "sam2"),
                ("SAMURAI (Kalman filter, gated memory)", "samurai"),
                ("DAM4SAM (distractor-aware memory)", "dam4sam"),
            ],
            value="sam2",
            label="Tracking strategy (from the next Track)", elem_id="video-strategy",
        )  # fmt: skip
        self.max_frames = gr.Number(label="At most N frames each way (0: all)", precision=0, elem_id="video-max")
        self.export = gr.Button("Export masks", elem_id="video-export")
        self.files = gr.File(label="Exports", file_count="multiple", interactive=False, elem_id="video-files")

    def _wire(self) -> None:
        opened = {self.files, self.file, self.path, self.name}  # what opening a file clears
        self.outputs = {self.status, self.view, self.frame, self.timeline, self.object, *opened}
        listen, frame = self.listen, self.frame
        self._wire_open()
        # the frame under the slider as it is dragged (the latest position once the server is free) or typed;
        # unchecked by Gradio: a frame typed past the end is shown clamped (`show_frame`); Gradio's own check would
        # fail the event, and every later one reading the slider
        listen(frame.input, self.show_frame, frame, "hidden", preprocess=False, trigger_mode="always_last")
        listen(self.view.select, self.click, [frame, self.mode])
        listen(self.box.click, self.set_box, [frame, self.box_value], js="(frame) => [frame, window.hierahfBox]")
        listen(self.new.click, self.new_object, frame)
        listen(self.remove.click, self.remove_object, [frame, self.object])
        listen(self.undo.click, self.undo_prompt, frame)
        listen(self.clear.click, self.clear_object, frame)
        listen(self.object.input, self.select_object, [frame, self.object])
        listen(self.name.submit, self.rename_object, [frame, self.object, self.name])
        listen(self.find.submit, self.find_objects, [frame, self.find])
        tracking = listen(self.track_button.click, self.track, [frame, self.direction, self.max_frames, self.strategy])
        self.stop.click(self.stopped, None, {self.status}, cancels=[tracking])
        listen(self.timeline.select, self.jump, None)
        # playbacks only read what is drawn: several tabs play at once (one tab's never holds up the others')
        playing = listen(self.play_button.click, self.play, frame, concurrency_limit=PLAYBACKS)
        self.pause.click(self.paused, frame, {self.status}, cancels=[playing])
        listen(self.export.click, self.export_masks, None)

    def panel(self, session: AppSession, frame_idx: int, message: str) -> dict:
        """The tab's outputs after a change: the message, the frame's view, the slider and the objects."""
        video = session.require_video()
        frame_idx = video.frame_index(frame_idx)
        return {
            self.status: message,
            self.view: video.view(frame_idx),
            self.frame: gr.update(maximum=max(video.num_frames - 1, 1), value=frame_idx),
            self.timeline: video.timeline(frame_idx),
            self.object: gr.update(choices=_object_choices(video.objects), value=video.objects.active),
        }

    def open(self, source: str, shown: str, request: gr.Request) -> dict:
        session = self.session(request)
        video = session.open_video(source)
        return self.panel(session, 0, f"Opened a video of {video.num_frames} frames ({shown}): click on an object")

    def show_frame(self, frame_idx, request: gr.Request):
        session = self.session(request)
        if session.video is None:
            return {}
        shown = session.video.nearest_frame(frame_idx)
        message = "" if shown == frame_idx else f"There is no frame {frame_idx:.0f}: showing frame {shown}"
        return self.panel(session, shown, message)

    def click(self, frame_idx, mode, evt: gr.SelectData, request: gr.Request):
        session = self.session(request)
        video = session.require_video()
        frame_idx, (x, y) = video.frame_index(frame_idx), video.grid.from_view(*evt.index)
        obj_id = video.click(frame_idx, x, y, BACKGROUND if mode == "background" else FOREGROUND)
        message = f"{mode.capitalize()} click ({x:.0f}, {y:.0f}) on object {obj_id}, frame {frame_idx}"
        return self.panel(session, frame_idx, message)

    def set_box(self, frame_idx, box, request: gr.Request):
        session = self.session(request)
        video = session.require_video()
        frame_idx = video.frame_index(frame_idx)
        box = video.grid.box_from_view(str(box).split(","))
        obj_id = video.set_box(frame_idx, box)
        return self.panel(session, frame_idx, f"Box ({_corners(box)}) for object {obj_id} on frame {frame_idx}")

    def new_object(self, frame_idx, request: gr.Request):
        session = self.session(request)
        obj_id = session.require_video().add_object()
        return self.panel(session, frame_idx, f"Object {obj_id}: click on it")

    def remove_object(self, frame_idx, obj_id, request: gr.Request):
        session = self.session(request)
        if obj_id is None:
            raise ValueError("No object to remove")
        session.require_video().remove_object(obj_id)
        return self.panel(session, frame_idx, f"Removed object {obj_id}")

    def undo_prompt(self, frame_idx, request: gr.Request):
        session = self.session(request)
        video = session.require_video()
        frame_idx = video.frame_index(frame_idx)
        obj_id = video.undo(frame_idx, _selected(video.objects))
        message = f"Took back the last click or box of object {obj_id} on frame {frame_idx}"
        return self.panel(session, frame_idx, message)

    def clear_object(self, frame_idx, request: gr.Request):
        session = self.session(request)
        video = session.require_video()
        obj_id = video.clear_prompts(_selected(video.objects))
        return self.panel(session, frame_idx, f"Cleared the clicks and boxes of object {obj_id} on every frame")

    def select_object(self, frame_idx, obj_id, request: gr.Request):
        session = self.session(request)
        if obj_id is None or session.video is None:
            return {}
        session.video.objects.select(obj_id)
        return self.panel(session, frame_idx, "")

    def rename_object(self, frame_idx, obj_id, name, request: gr.Request):
        session = self.session(request)
        if obj_id is None:
            raise ValueError("Select an object to rename")
        objects = session.require_video().objects
        objects.rename(obj_id, name)
        return self.panel(session, frame_idx, f"Object {obj_id} is now {objects.names[obj_id]!r}")

    def find_objects(self, frame_idx, text, request: gr.Request):
        session = self.session(request)
        video = session.require_video()
        found = find_in_video(video, frame_idx, session.models.detector, text)
        return self.panel(session, frame_idx, f"Found {_found(video.objects, found)} on frame {frame_idx}")

    def track(self, frame_idx, direction, max_frames, strategy, request: gr.Request):
        session = self.session(request)
        limit = max_frames if max_frames else None  # empty or 0: all frames (the state checks the rest)
        frames = session.require_video().track(frame_idx, direction, limit, strategy)
        count = 0
        for count, tracked in enumerate(frames, start=1):
            yield self.panel(session, tracked, f"Tracking: frame {tracked} ({count} done)")
        yield {self.status: f"Tracked {count} frames"}

    def stopped(self) -> dict:
        return {self.status: "Stopped"}

    def jump(self, evt: gr.SelectData, request: gr.Request):
        session = self.session(request)
        frame_idx = session.require_video().timeline_frame(evt.index[0])
        return self.panel(session, frame_idx, f"Frame {frame_idx}")

    def play(self, frame_idx, request: gr.Request):
        """Show the tracked frames from the slider's on (`VideoState.playback`) at the video's rate, as drawn from the
        masks already computed; Pause cancels it."""
        session = self.session(request)
        video = session.require_video()
        frames = video.playback(video.nearest_frame(frame_idx))
        interval, due = 1 / video.playback_fps, time.monotonic()
        yield {self.status: f"Playing {_plural(len(frames), 'tracked frame')} from frame {frames[0]}"}
        for frame_idx in frames:
            yield {self.view: video.view(frame_idx), self.frame: frame_idx, self.timeline: video.timeline(frame_idx)}
            due += interval
            time.sleep(max(due - time.monotonic(), 0))
        yield {self.status: f"Played {_plural(len(frames), 'tracked frame')}, up to frame {frames[-1]}"}

    def paused(self, frame_idx) -> dict:
        return {self.status: f"Paused at frame {frame_idx:.0f}" if frame_idx is not None else "Paused"}

    def export_masks(self, request: gr.Request):
        files = [str(path) for path in self.session(request).export_video()]
        message = (
            "Exported the masks as hiera-hf track writes them (zip), the overlay video and prompts.json "
            "(hiera-hf track VIDEO --prompts prompts.json writes the same files)"
        )
        return {self.status: message, self.files: files}


def build_app(model, device: str | None = None, detector=None, threshold: float | None = None) -> gr.Blocks:
    """The app: `model` is a `Models` or a SAM 2 folder / variant name (loaded once on `device`); `detector` (a
    zero-shot-object-detection model id / folder or pipeline, scores kept from `threshold`) serves the "Find"
    boxes. Returns the `gr.Blocks` (call `.launch()`); `blocks.sessions` is the `Sessions` of the open tabs."""
    models = model if isinstance(model, Models) else Models.from_pretrained(model, device=device)
    if detector is not None:
        from ..sam2.text_prompts import TextDetector

        models.detector = TextDetector(detector, threshold, device=models.device)
    sessions = Sessions(models)

    def close_session(request: gr.Request) -> None:
        sessions.close(request.session_hash)

    with gr.Blocks(title="hiera-hf SAM 2") as blocks:
        gr.Markdown("### SAM 2 (hiera-hf): click to segment images and track objects through videos")
        ImageTab(sessions)
        VideoTab(sessions)
        blocks.unload(close_session)
        blocks.load(None, js=DRAG_BOX_JS)
        blocks.load(None, js=SHORTCUTS_JS)
        blocks.load(None, js=LAYOUT_JS)

    blocks.sessions = sessions
    blocks.models = models
    return blocks.queue(default_concurrency_limit=1)


def launch(
    model: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    device: str | None = None,
    detector=None,
    threshold: float | None = None,
) -> None:
    """Load the model (and the `detector` of the "Find" boxes) and serve the app at http://host:port (Gradio picks
    a free port from 7860 when `port` is None); blocks until interrupted."""
    port = port if port is not None else int(os.environ.get("GRADIO_SERVER_PORT", 0)) or None
    app = build_app(model, device=device, detector=detector, threshold=threshold)
    app.launch(server_name=host, server_port=port, show_error=False)


__all__ = ["ImageTab", "VideoTab", "build_app", "launch"]
