"""The Gradio page over `state`: an Image tab and a Video tab. Only wiring lives here; all logic is in `state`.

Each browser tab gets its own `AppSession` (keyed by Gradio's session hash, freed when the tab is closed or
reloaded); the models are loaded once. Bad input is reported in the page ("Messages" box and a warning toast),
never as a traceback; unexpected errors are logged on the server and reported in one line.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os

import gradio as gr

from ..sam2.mask_generation import Sam2AutomaticMaskGenerator
from .state import BACKGROUND, DIRECTIONS, FOREGROUND, AppSession, Models, Sessions

LOGGER = logging.getLogger(__name__)
USER_ERRORS = (ValueError, TypeError, KeyError, IndexError, FileNotFoundError)
CLICK_MODES = ["foreground", "background"]
VIEW_FORMAT = "jpeg"  # the views are sent as JPEG: PNG/WebP encoding of a large frame takes 10-40x longer
TQDM_PROGRESS = gr.Progress(track_tqdm=True)  # shows the mask generator's tqdm bar in the page
AMG_DEFAULTS = {name: p.default for name, p in inspect.signature(Sam2AutomaticMaskGenerator).parameters.items()}
CLICK_PROGRESS = "minimal"  # no overlay over the view while a click is decoded: the next click can come at once

HELP = """**Click on the image** to segment: a *foreground* click adds to the object, a *background* click removes
from it; **drag** to draw a box around it (kept with its clicks). Each object has its own colour; *New object*
starts another one."""

# Gradio's Image reports clicks only (`select`); this script, run once when the page loads, turns a drag on a view
# (#image-view, #video-view) into a box: it draws the rubber band and, on release, keeps "x0,y0,x1,y1" (view pixels,
# computed as Gradio computes a click's) in `window.hierahfBox` and clicks the hidden button #image-box / #video-box,
# whose event's `js` hands the box to the server as its last input. The click that ends a drag is swallowed; a
# press that moves less than MIN_DRAG CSS pixels stays a click.
DRAG_BOX_JS = """
() => {
  if (window.hierahfDragBox) return;
  window.hierahfDragBox = true;
  const MIN_DRAG = 5;
  const style = document.createElement("style");
  style.textContent = "#image-view img, #video-view img { touch-action: none; -webkit-user-drag: none; }"
    + " .hierahf-rubber { position: fixed; z-index: 1000; pointer-events: none;"
    + " border: 2px dashed #ffd400; background: rgba(255, 212, 0, 0.15); }";
  document.head.appendChild(style);
  let drag = null;
  let swallow = false;
  const viewOf = (target) => {
    const view = target instanceof Element ? target.closest("#image-view, #video-view") : null;
    const image = view && view.querySelector(".image-frame img");
    return image && image.complete && image.naturalWidth && image.contains(target) ? { view, image } : null;
  };
  const pixel = (image, event) => {
    const rect = image.getBoundingClientRect();
    const scale = Math.min(rect.width / image.naturalWidth, rect.height / image.naturalHeight, 1);
    const x = (event.clientX - rect.left - (rect.width - image.naturalWidth * scale) / 2) / scale;
    const y = (event.clientY - rect.top - (rect.height - image.naturalHeight * scale) / 2) / scale;
    const clamp = (v, size) => Math.min(Math.max(Math.round(v), 0), size - 1);
    return [clamp(x, image.naturalWidth), clamp(y, image.naturalHeight)];
  };
  const end = () => {
    if (drag && drag.rubber) drag.rubber.remove();
    drag = null;
  };
  window.addEventListener("pointerdown", (event) => {
    end();
    swallow = false;
    const found = event.button === 0 ? viewOf(event.target) : null;
    if (!found) return;
    event.preventDefault();
    drag = { ...found, x: event.clientX, y: event.clientY, start: pixel(found.image, event), rubber: null };
  }, true);
  window.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const width = Math.abs(event.clientX - drag.x), height = Math.abs(event.clientY - drag.y);
    if (!drag.rubber && Math.max(width, height) < MIN_DRAG) return;
    if (!drag.rubber) {
      drag.rubber = document.createElement("div");
      drag.rubber.className = "hierahf-rubber";
      document.body.appendChild(drag.rubber);
    }
    Object.assign(drag.rubber.style, {
      left: `${Math.min(event.clientX, drag.x)}px`, top: `${Math.min(event.clientY, drag.y)}px`,
      width: `${width}px`, height: `${height}px`,
    });
  }, true);
  window.addEventListener("pointerup", (event) => {
    if (!drag) return;
    const { view, image, start, rubber } = drag;
    end();
    if (!rubber) return;
    window.hierahfBox = [...start, ...pixel(image, event)].join(",");
    document.querySelector(`#${view.id.replace("-view", "-box")}`).click();
    swallow = true;  // the click the browser dispatches right after this release, in the same task
    setTimeout(() => { swallow = false; }, 0);
  }, true);
  window.addEventListener("pointercancel", end, true);
  window.addEventListener("click", (event) => {
    if (!swallow) return;
    swallow = false;
    event.stopImmediatePropagation();
    event.preventDefault();
  }, true);
}
"""


def _guarded(outputs_status):
    """Wrap a handler so that a user error (or any unexpected one) becomes a message in `outputs_status` and a
    warning toast instead of a traceback; the other outputs are left as they are. Works for generators too."""

    def decorate(fn):
        def report(error: Exception) -> dict:
            if isinstance(error, USER_ERRORS):
                message = str(error.args[0] if isinstance(error, KeyError) and error.args else error)
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


def _corners(box) -> str:
    return ", ".join(f"{v:.0f}" for v in box)


def _source(file: str | None, path: str | None, what: str) -> str:
    """The uploaded file, else the path typed in."""
    source = file or (path or "").strip()
    if not source:
        raise ValueError(f"Choose {what} or give a path")
    return source


def _object_controls(tab: str) -> tuple:
    """The click mode, object picker, New / Remove buttons and rename box of a tab (ids `<tab>-mode` ...), and the
    hidden button `<tab>-box` that a drag on the tab's view clicks (see `DRAG_BOX_JS`) with the textbox that
    carries the box to the server."""
    mode = gr.Radio(CLICK_MODES, value="foreground", label="A click adds", elem_id=f"{tab}-mode")
    box = gr.Button(visible="hidden", elem_id=f"{tab}-box"), gr.Textbox(visible=False)
    picker = gr.Dropdown(label="Object", choices=[], elem_id=f"{tab}-object")
    with gr.Row():
        new = gr.Button("New object", elem_id=f"{tab}-new")
        remove = gr.Button("Remove object", elem_id=f"{tab}-remove")
    name = gr.Textbox(label="Rename the object (Enter)", elem_id=f"{tab}-name")
    return mode, box, picker, new, remove, name


def build_app(model, device: str | None = None) -> gr.Blocks:
    """The app: `model` is a `Models` or a SAM 2 folder / variant name (loaded once on `device`). Returns the
    `gr.Blocks` (call `.launch()`); `blocks.sessions` is the `Sessions` of the open tabs."""
    models = model if isinstance(model, Models) else Models.from_pretrained(model, device=device)
    sessions = Sessions(models)

    def session_of(request: gr.Request) -> AppSession:
        return sessions.get(request.session_hash)

    with gr.Blocks(title="hiera-hf SAM 2") as blocks:
        gr.Markdown("## SAM 2 (hiera-hf): click to segment images and track objects through videos")
        status = gr.Textbox(label="Messages", elem_id="status", interactive=False, max_lines=2)

        # Image tab ---------------------------------------------------------------------------------------------
        with gr.Tab("Image", elem_id="image-tab"):
            gr.Markdown(HELP)
            with gr.Row():
                with gr.Column(scale=3):
                    image_view = gr.Image(
                        label="Image", type="numpy", format=VIEW_FORMAT, interactive=False, elem_id="image-view"
                    )
                with gr.Column(scale=1):
                    image_file = gr.File(label="Open an image", elem_id="image-file")
                    image_path = gr.Textbox(label="...or a path on the server (Enter)", elem_id="image-path")
                    image_mode, (image_box, image_box_value), image_object, image_new, image_remove, image_name = (
                        _object_controls("image")
                    )
                    image_candidate = gr.Radio(
                        [], label="Candidate masks (predicted IoU)", type="index", elem_id="image-candidate"
                    )
                    image_everything = gr.Button("Segment everything", elem_id="image-everything")
                    with gr.Accordion("Segment everything: settings", open=False):
                        image_grid = gr.Number(
                            AMG_DEFAULTS["points_per_side"], label="Clicks per side of the grid", precision=0,
                            minimum=1, elem_id="image-grid",
                        )  # fmt: skip
                        image_iou = gr.Slider(
                            0, 1, value=AMG_DEFAULTS["pred_iou_thresh"], step=0.01,
                            label="Keep masks of predicted IoU >=", elem_id="image-iou",
                        )  # fmt: skip
                        image_stability = gr.Slider(
                            0, 1, value=AMG_DEFAULTS["stability_score_thresh"], step=0.01,
                            label="...and stability >=", elem_id="image-stability",
                        )  # fmt: skip
                    image_export = gr.Button("Export masks", variant="primary", elem_id="image-export")
                    image_files = gr.File(
                        label="Exports", file_count="multiple", interactive=False, elem_id="image-files"
                    )
        image_outputs = {status, image_view, image_object, image_candidate, image_files}

        def image_panel(session: AppSession, message: str) -> dict:
            state = session.image
            scores = state.scores() if state.objects.active is not None else []
            choices = [f"{i + 1} ({score:.2f})" for i, score in enumerate(scores)]
            return {
                status: message,
                image_view: state.view(),
                image_object: gr.update(choices=_object_choices(state.objects), value=state.objects.active),
                image_candidate: gr.update(choices=choices, value=choices[state.selected()] if choices else None),
            }

        @_guarded(status)
        def open_image(file, path, request: gr.Request):
            session = session_of(request)
            session.image.open(_source(file, path, "an image file"))
            height, width = session.image.size
            return image_panel(session, f"Opened a {width}x{height} image: click on an object")

        @_guarded(status)
        def click_image(mode, evt: gr.SelectData, request: gr.Request):
            session = session_of(request)
            state = session.image
            x, y = state.grid.from_view(*evt.index)
            label = BACKGROUND if mode == "background" else FOREGROUND
            obj_id = state.click(x, y, label)
            return image_panel(session, f"{mode.capitalize()} click ({x:.0f}, {y:.0f}) on object {obj_id}")

        @_guarded(status)
        def box_image(box, request: gr.Request):
            session = session_of(request)
            box = session.image.grid.box_from_view(box.split(","))
            obj_id = session.image.set_box(box)
            return image_panel(session, f"Box ({_corners(box)}) for object {obj_id}")

        @_guarded(status)
        def new_image_object(request: gr.Request):
            session = session_of(request)
            obj_id = session.image.add_object()
            return image_panel(session, f"Object {obj_id}: click on it")

        @_guarded(status)
        def remove_image_object(obj_id, request: gr.Request):
            session = session_of(request)
            if obj_id is None:
                raise ValueError("No object to remove")
            session.image.remove_object(obj_id)
            return image_panel(session, f"Removed object {obj_id}")

        @_guarded(status)
        def select_image_object(obj_id, request: gr.Request):
            session = session_of(request)
            if obj_id is not None and session.image.image is not None:
                session.image.objects.select(obj_id)
            return image_panel(session, "") if session.image.image is not None else {}

        @_guarded(status)
        def rename_image_object(obj_id, name, request: gr.Request):
            session = session_of(request)
            if obj_id is None:
                raise ValueError("Select an object to rename")
            session.image.objects.rename(obj_id, name)
            return image_panel(session, f"Object {obj_id} is now {name.strip()!r}")

        @_guarded(status)
        def select_candidate(index, request: gr.Request):
            session = session_of(request)
            if index is None or session.image.objects.active is None:
                return {}
            session.image.select_candidate(index)
            return image_panel(session, f"Showing candidate {index + 1}")

        @_guarded(status)
        def segment_everything(grid, iou, stability, request: gr.Request, progress=TQDM_PROGRESS):
            session = session_of(request)
            if grid is None:
                raise ValueError("Give the number of clicks per side of the grid")
            settings = {"points_per_side": int(grid), "pred_iou_thresh": iou, "stability_score_thresh": stability}
            count = session.image.segment_everything(**settings)
            return image_panel(session, f"Found {count} masks")

        @_guarded(status)
        def export_image(request: gr.Request):
            files = [str(path) for path in session_of(request).export_image()]
            return {status: "Exported the palette PNG, one PNG per object and COCO RLE JSON", image_files: files}

        gr.on([image_file.upload, image_path.submit], open_image, [image_file, image_path], image_outputs)
        image_view.select(click_image, image_mode, image_outputs, show_progress=CLICK_PROGRESS)
        image_box.click(
            box_image, image_box_value, image_outputs, js="() => [window.hierahfBox]", show_progress=CLICK_PROGRESS
        )
        image_new.click(new_image_object, None, image_outputs)
        image_remove.click(remove_image_object, image_object, image_outputs)
        image_object.input(select_image_object, image_object, image_outputs)
        image_name.submit(rename_image_object, [image_object, image_name], image_outputs)
        image_candidate.input(select_candidate, image_candidate, image_outputs)
        image_everything.click(segment_everything, [image_grid, image_iou, image_stability], image_outputs)
        image_export.click(export_image, None, image_outputs)

        # Video tab ---------------------------------------------------------------------------------------------
        with gr.Tab("Video", elem_id="video-tab"):
            gr.Markdown(HELP.replace("the image", "a frame") + " *Track* propagates all objects; *Stop* interrupts.")
            with gr.Row():
                with gr.Column(scale=3):
                    video_view = gr.Image(
                        label="Frame", type="numpy", format=VIEW_FORMAT, interactive=False, elem_id="video-view"
                    )
                    video_frame = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="video-frame")
                with gr.Column(scale=1):
                    video_file = gr.File(label="Open a video", elem_id="video-file")
                    video_path = gr.Textbox(
                        label="...or a video file / frame folder on the server (Enter)", elem_id="video-path"
                    )
                    video_mode, (video_box, video_box_value), video_object, video_new, video_remove, video_name = (
                        _object_controls("video")
                    )
                    video_direction = gr.Radio(
                        list(DIRECTIONS), value="both", label="Track direction", elem_id="video-direction"
                    )
                    video_max = gr.Number(
                        label="At most N frames each way (0: all)", precision=0, elem_id="video-max"
                    )
                    with gr.Row():
                        video_track = gr.Button("Track", variant="primary", elem_id="video-track")
                        video_stop = gr.Button("Stop", variant="stop", elem_id="video-stop")
                    video_export = gr.Button("Export masks", elem_id="video-export")
                    video_files = gr.File(
                        label="Exports", file_count="multiple", interactive=False, elem_id="video-files"
                    )
        video_outputs = {status, video_view, video_frame, video_object, video_files}

        def video_panel(session: AppSession, frame_idx: int, message: str) -> dict:
            video = session.require_video()
            return {
                status: message,
                video_view: video.view(frame_idx),
                video_frame: gr.update(maximum=max(video.num_frames - 1, 1), value=frame_idx),
                video_object: gr.update(choices=_object_choices(video.objects), value=video.objects.active),
            }

        @_guarded(status)
        def open_video(file, path, request: gr.Request):
            session = session_of(request)
            video = session.open_video(_source(file, path, "a video file"))
            return video_panel(session, 0, f"Opened a video of {video.num_frames} frames: click on an object")

        @_guarded(status)
        def show_frame(frame_idx, request: gr.Request):
            session = session_of(request)
            if session.video is None:
                return {}
            return video_panel(session, int(frame_idx), "")

        @_guarded(status)
        def click_video(frame_idx, mode, evt: gr.SelectData, request: gr.Request):
            session = session_of(request)
            video = session.require_video()
            frame_idx, (x, y) = int(frame_idx), video.grid.from_view(*evt.index)
            label = BACKGROUND if mode == "background" else FOREGROUND
            obj_id = video.click(frame_idx, x, y, label)
            message = f"{mode.capitalize()} click ({x:.0f}, {y:.0f}) on object {obj_id}, frame {frame_idx}"
            return video_panel(session, frame_idx, message)

        @_guarded(status)
        def box_video(frame_idx, box, request: gr.Request):
            session = session_of(request)
            video, frame_idx = session.require_video(), int(frame_idx)
            box = video.grid.box_from_view(box.split(","))
            obj_id = video.set_box(frame_idx, box)
            return video_panel(session, frame_idx, f"Box ({_corners(box)}) for object {obj_id} on frame {frame_idx}")

        @_guarded(status)
        def new_video_object(frame_idx, request: gr.Request):
            session = session_of(request)
            obj_id = session.require_video().add_object()
            return video_panel(session, int(frame_idx), f"Object {obj_id}: click on it")

        @_guarded(status)
        def remove_video_object(frame_idx, obj_id, request: gr.Request):
            session = session_of(request)
            if obj_id is None:
                raise ValueError("No object to remove")
            session.require_video().remove_object(obj_id)
            return video_panel(session, int(frame_idx), f"Removed object {obj_id}")

        @_guarded(status)
        def select_video_object(frame_idx, obj_id, request: gr.Request):
            session = session_of(request)
            if obj_id is None or session.video is None:
                return {}
            session.video.objects.select(obj_id)
            return video_panel(session, int(frame_idx), "")

        @_guarded(status)
        def rename_video_object(frame_idx, obj_id, name, request: gr.Request):
            session = session_of(request)
            if obj_id is None:
                raise ValueError("Select an object to rename")
            session.require_video().objects.rename(obj_id, name)
            return video_panel(session, int(frame_idx), f"Object {obj_id} is now {name.strip()!r}")

        @_guarded(status)
        def track(frame_idx, direction, max_frames, request: gr.Request):
            session = session_of(request)
            video = session.require_video()
            limit = int(max_frames) if max_frames else None  # empty or 0: all frames
            frames = video.track(int(frame_idx), direction, limit)
            count = 0
            for count, tracked in enumerate(frames, start=1):
                yield video_panel(session, tracked, f"Tracking: frame {tracked} ({count} done)")
            yield {status: f"Tracked {count} frames"}

        @_guarded(status)
        def export_video(request: gr.Request):
            files = [str(path) for path in session_of(request).export_video()]
            message = "Exported the palette PNGs (zip), the overlay video and COCO RLE JSON"
            return {status: message, video_files: files}

        gr.on([video_file.upload, video_path.submit], open_video, [video_file, video_path], video_outputs)
        video_frame.release(show_frame, video_frame, video_outputs)
        video_view.select(click_video, [video_frame, video_mode], video_outputs, show_progress=CLICK_PROGRESS)
        video_box.click(
            box_video,
            [video_frame, video_box_value],
            video_outputs,
            js="(frame) => [frame, window.hierahfBox]",
            show_progress=CLICK_PROGRESS,
        )
        video_new.click(new_video_object, video_frame, video_outputs)
        video_remove.click(remove_video_object, [video_frame, video_object], video_outputs)
        video_object.input(select_video_object, [video_frame, video_object], video_outputs)
        video_name.submit(rename_video_object, [video_frame, video_object, video_name], video_outputs)
        # progress = the frames and the message as they come; no spinner for the page to repaint meanwhile
        tracking = video_track.click(
            track, [video_frame, video_direction, video_max], video_outputs, show_progress="hidden"
        )
        video_stop.click(lambda: {status: "Stopped"}, None, {status}, cancels=[tracking])
        video_export.click(export_video, None, video_outputs)

        def close_session(request: gr.Request) -> None:
            sessions.close(request.session_hash)

        blocks.unload(close_session)
        blocks.load(None, js=DRAG_BOX_JS)

    blocks.sessions = sessions
    blocks.models = models
    return blocks.queue(default_concurrency_limit=1)


def launch(model: str, host: str = "127.0.0.1", port: int | None = None, device: str | None = None) -> None:
    """Load the model and serve the app at http://host:port (Gradio picks a free port from 7860 when `port` is
    None); blocks until interrupted."""
    port = port if port is not None else int(os.environ.get("GRADIO_SERVER_PORT", 0)) or None
    build_app(model, device=device).launch(server_name=host, server_port=port, show_error=False)


__all__ = ["build_app", "launch"]
