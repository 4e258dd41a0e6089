"""End-to-end tests of the app in a real headless Chromium (Debian's `chromium`, driven by the PyPI `playwright`
driver): open an image and click, a background click, open a clip, prompt two objects, track, correct, export,
and bad uploads. Masks are read back through the app's session state and its exported files, then compared with
what `ImageState` / `Sam2VideoSession` and the track writers give for the same prompts.

Set HIERA_HF_APP_LAYOUT=folder to save the screenshots of the page at laptop sizes there (the README's)."""

import copy
import io
import os
import socket
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from app_helpers import BOX_2, NUM_FRAMES, VIDEO_SIZE, assert_same_tracking, first_frames
from PIL import Image
from sam2_helpers import media

from hiera_hf.app import AppSession
from hiera_hf.app.views import TIMELINE_COLOURS, VIEW_MAX_SIDE
from hiera_hf.cli import main as cli_main
from hiera_hf.sam2 import Sam2VideoSession
from hiera_hf.sam2.video_output import label_map, write_palette_png
from hiera_hf.sam2.video_prompts import apply_prompts

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
TIMEOUT_MS = 120_000
LONG_CLIP = 24  # frames of the clip that Stop interrupts


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    return first_frames(tmp_path_factory.mktemp("long-clip"), LONG_CLIP, VIDEO_SIZE)


@pytest.fixture(scope="module")
def server(app_models):
    """The app served on a free local port; yields (blocks, url)."""
    from hiera_hf.app import build_app  # Gradio is in the test extra: missing, this fails (never skips)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    blocks = build_app(app_models)
    _, url, _ = blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield blocks, url
    blocks.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright  # in the test extra: missing, this fails (never skips)

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server, request, tmp_path_factory):
    """A tab on the app; when the test fails, its screenshot is saved (the path is printed)."""
    _, url = server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#image-status textarea")
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        path = tmp_path_factory.mktemp("failed") / f"{request.node.name}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot of the failed page: {path}")
    page.close()


# the Messages box of the tab shown (each tab has its own, beside its view)
SHOWN_STATUS = (
    "Array.from(document.querySelectorAll('#image-status textarea, #video-status textarea'))"
    ".find(box => box.offsetParent !== null)"
)


def _status(page) -> str:
    return page.evaluate(f"() => {SHOWN_STATUS}?.value ?? ''")


def _clear_status(page) -> None:
    """Empty the Messages box shown, so that the next message is known to be new."""
    page.evaluate(f"() => {{ {SHOWN_STATUS}.value = ''; }}")


def _wait_status(page, text: str, anywhere: bool = False) -> str:
    """Wait until the Messages box starts with `text` (holds it, with `anywhere`); returns its text."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    test = "includes" if anywhere else "startsWith"
    try:
        page.wait_for_function(
            f"text => ({SHOWN_STATUS}?.value || '').{test}(text)", arg=text
        )
    except PlaywrightTimeout:
        raise AssertionError(f"The page never said {text!r}; it says {_status(page)!r}") from None
    return _status(page)


def _session(blocks) -> AppSession:
    """The session of the page: the newest one (an earlier test's page may not be unloaded yet)."""
    return blocks.sessions.get(blocks.sessions.ids()[-1])


def _click_pixel(page, view: str, x: int, y: int, size: tuple[int, int]) -> None:
    """Click pixel (x, y) of the image shown in `#view` (`size` its (width, height) in pixels) once it is loaded."""
    box = _wait_loaded(page, view)
    position = {"x": (x + 0.5) * box["width"] / size[0], "y": (y + 0.5) * box["height"] / size[1]}
    page.locator(f"#{view} img").click(position=position)


def _wait_loaded(page, view: str) -> dict:
    """Wait until the image shown in `#view` is loaded (Gradio swaps the element when a new view arrives: a click
    on the old one is lost); returns its bounding box."""
    page.wait_for_function(
        "selector => { const image = document.querySelector(selector);"
        " return image !== null && image.complete && image.naturalWidth > 0; }",
        arg=f"#{view} img",
    )
    return page.locator(f"#{view} img").bounding_box()


def _drag(page, view: str, start: tuple[int, int], end: tuple[int, int], size: tuple[int, int]) -> None:
    """Press the mouse on pixel `start` of the image in `#view`, move to pixel `end` in a few steps, release."""
    box = _wait_loaded(page, view)

    def position(x: int, y: int) -> tuple[float, float]:
        return box["x"] + (x + 0.5) * box["width"] / size[0], box["y"] + (y + 0.5) * box["height"] / size[1]

    page.mouse.move(*position(*start))
    page.mouse.down()
    page.mouse.move(*position(*end), steps=5)
    page.mouse.up()


def _open_dog(page) -> None:
    page.locator("#image-file input[type=file]").set_input_files(media("dog.jpg"))
    _wait_status(page, "Opened a 500x331 image")


def _open_clip_and_click(page, clip: Path, frames: int) -> None:
    """Open the frame folder `clip` in the Video tab and click pixel (100, 90) of frame 0 (object 1)."""
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-path textarea").fill(str(clip))
    page.locator("#video-path textarea").press("Enter")
    _wait_status(page, f"Opened a video of {frames} frames")
    _click_pixel(page, "video-view", 100, 90, VIDEO_SIZE)
    _wait_status(page, "Foreground click (")


def _mode(page, tab: str, mode: str) -> None:
    page.locator(f"#{tab}-mode label", has_text=mode).click()


def _error_badges(page) -> int:
    """How many components show Gradio's red "Error" badge (an event that failed before our handler ran)."""
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('[data-testid=status-tracker]'))"
        ".filter(tracker => tracker.innerText.trim().startsWith('Error')).length"
    )


def test_image_click_shows_the_mask_and_a_background_click_changes_it(page, server, app_models):
    blocks, _ = server
    _open_dog(page)
    _click_pixel(page, "image-view", 250, 160, (500, 331))
    _wait_status(page, "Foreground click")
    state = _session(blocks).image
    ((x, y, label),) = state._prompts[1].clicks
    assert abs(x - 250) <= 1 and abs(y - 160) <= 1 and label == 1
    first = state.mask(1)
    reference = AppSession(app_models)  # the same click through the state logic directly
    reference.image.open(media("dog.jpg"))
    reference.image.click(x, y)
    np.testing.assert_array_equal(first, reference.image.mask())
    reference.close()
    assert first.any()

    _mode(page, "image", "background")
    _click_pixel(page, "image-view", 100, 60, (500, 331))
    _wait_status(page, "Background click")
    assert state.encoder_runs == 1
    assert not np.array_equal(state.mask(1), first)
    # the mask shown in the page is the state's: the image element holds the blended view
    page.locator("#image-export").click()
    _wait_status(page, "Exported")
    exported = np.asarray(Image.open(_session(blocks).folder / "exports" / "masks.png"))
    np.testing.assert_array_equal(exported, state.labels())
    page.wait_for_selector("#image-files a")


def test_image_drag_draws_a_box_and_a_short_press_stays_a_click(page, server, app_models):
    blocks, _ = server
    _open_dog(page)
    _drag(page, "image-view", (300, 250), (120, 60), (500, 331))  # any two opposite corners
    _wait_status(page, "Box (")
    state = _session(blocks).image
    prompt = state._prompts[1]
    assert prompt.clicks == []  # the release of a drag is not a click
    assert np.abs(np.subtract(prompt.box, [120, 60, 300, 250])).max() <= 1, prompt.box
    reference = AppSession(app_models)
    reference.image.open(media("dog.jpg"))
    reference.image.set_box(prompt.box)
    np.testing.assert_array_equal(state.mask(1), reference.image.mask())
    assert state.mask(1).any()
    _drag(page, "image-view", (200, 150), (201, 151), (500, 331))  # moved less than a drag: a click
    _wait_status(page, "Foreground click")
    assert len(prompt.clicks) == 1 and prompt.box is not None
    reference.image.click(*prompt.clicks[0][:2])
    np.testing.assert_array_equal(state.mask(1), reference.image.mask())
    reference.close()


def test_a_large_image_is_shown_scaled_down_and_clicks_land_on_its_pixels(page, server):
    blocks, _ = server
    page.locator("#image-file input[type=file]").set_input_files(media("truck.jpg"))
    _wait_status(page, "Opened a 1800x1200 image")
    _wait_loaded(page, "image-view")  # the message can come before the image is loaded
    assert page.locator("#image-view img").evaluate("image => [image.naturalWidth, image.naturalHeight]") == [
        VIEW_MAX_SIDE, 683
    ]
    _click_pixel(page, "image-view", 900, 600, (1800, 1200))
    _wait_status(page, "Foreground click")
    _drag(page, "image-view", (300, 200), (1500, 1000), (1800, 1200))
    _wait_status(page, "Box (")
    prompt = _session(blocks).image._prompts[1]
    step = 1800 / VIEW_MAX_SIDE  # frame pixels per view pixel: a position in the view is this precise
    assert np.abs(np.subtract(prompt.clicks[0][:2], (900, 600))).max() <= step, prompt.clicks
    assert np.abs(np.subtract(prompt.box, (300, 200, 1500, 1000))).max() <= step, prompt.box


def test_video_two_objects_track_correct_and_export(page, server, app_models, app_model_folder, app_clip, tmp_path):
    blocks, _ = server
    _open_clip_and_click(page, app_clip, NUM_FRAMES)
    _mode(page, "video", "background")
    _click_pixel(page, "video-view", 60, 40, VIDEO_SIZE)
    _wait_status(page, "Background click (")
    page.locator("#video-new").click()
    _wait_status(page, "Object 2")
    _drag(page, "video-view", BOX_2[:2], BOX_2[2:], VIDEO_SIZE)
    _wait_status(page, "Box (")
    page.locator("#video-track").click()
    _wait_status(page, f"Tracked {NUM_FRAMES} frames")

    video = _session(blocks).require_video()
    prompts = {key: copy.deepcopy(value) for key, value in video.prompts.items()}
    assert sorted(prompts) == [(0, 1), (0, 2)]
    page.locator("#video-export").click()
    _wait_status(page, "Exported")
    with zipfile.ZipFile(_session(blocks).folder / "exports" / "tracking.zip") as archive:
        archive.extractall(tmp_path / "app")

    # the correction: a foreground click for object 2 on the last frame (shown after tracking), then track again
    _mode(page, "video", "foreground")
    _click_pixel(page, "video-view", 40, 150, VIDEO_SIZE)
    _wait_status(page, "Foreground click (")
    last = NUM_FRAMES - 1
    correction = video.prompts[last, 2].clicks
    page.locator("#video-direction label", has_text="forward").click()
    page.locator("#video-track").click()
    _wait_status(page, "Tracked 1 frames")

    expected = tmp_path / "expected"
    expected.mkdir()
    clip = str(app_clip)
    with Sam2VideoSession(app_models.video, clip, progress=False, add_all_frames_to_correct_as_cond=True) as session:
        apply_prompts(session, prompts)
        for result in session.propagate(reverse="both"):
            write_palette_png(label_map(result), expected / f"{result.frame_idx:05d}.png")
        for t in range(NUM_FRAMES):
            name = f"{t:05d}.png"
            assert (tmp_path / "app" / "masks" / name).read_bytes() == (expected / name).read_bytes(), name
        session.add_points(last, 2, [c[:2] for c in correction], [c[2] for c in correction])
        (result,) = session.propagate(last, reverse=False)
    np.testing.assert_array_equal(video.labels(last), label_map(result))
    assert {1, 2} <= set(np.unique(video.labels(0)))

    # the session as the page exports it (prompts.json), replayed by `hiera-hf track --prompts`: the same files
    page.locator("#video-export").click()
    _wait_status(page, "Exported")
    exports = _session(blocks).folder / "exports"
    with zipfile.ZipFile(exports / "tracking.zip") as archive:
        shown = {name: archive.read(name) for name in archive.namelist()}
    shown["overlay.mp4"] = (exports / "overlay.mp4").read_bytes()
    argv = ["track", str(app_clip), "--model", str(app_model_folder), "--out", str(tmp_path / "cli"), "--quiet"]
    assert cli_main([*argv, "--prompts", str(exports / "prompts.json"), "--format", "png,rle,objects,boxes,mp4"]) == 0
    cli = tmp_path / "cli"
    written = {p.relative_to(cli).as_posix(): p.read_bytes() for p in cli.rglob("*") if p.is_file()}
    assert_same_tracking(written, shown)


def test_segment_everything_shows_progress_and_exports_the_masks(page, server, app_models):
    blocks, _ = server
    _open_dog(page)
    page.get_by_text("Segment everything: settings").click()
    settings = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    for field, value in zip(("#image-grid input", "#image-iou input[type=number]",
                             "#image-stability input[type=number]"), settings.values()):  # fmt: skip
        page.locator(field).fill(str(value))
        page.locator(field).press("Enter")
    page.locator("#image-everything").click()
    page.wait_for_function(  # the generator's tqdm bar, shown in the page while it runs
        "() => Array.from(document.querySelectorAll('[data-testid=status-tracker]'))"
        ".some(tracker => tracker.innerText.includes('Generating masks'))"
    )
    message = _wait_status(page, "Found")
    count = int(message.split()[1])
    assert message == f"Found {count} mask{'' if count == 1 else 's'}, added as new objects"
    state = _session(blocks).image
    reference = AppSession(app_models)  # the generator through the state logic directly, with the same settings
    reference.image.open(media("dog.jpg"))
    assert reference.image.segment_everything(**settings, progress=False) == count > 0
    np.testing.assert_array_equal(state.labels(), reference.image.labels())
    reference.close()
    page.locator("#image-export").click()
    _wait_status(page, "Exported")
    exported = np.asarray(Image.open(_session(blocks).folder / "exports" / "masks.png"))
    np.testing.assert_array_equal(exported, state.labels())
    assert len(state.objects.names) == count and set(np.unique(exported)) - {0} <= set(state.objects.names)


def _shown(page, view: str) -> np.ndarray:
    """The image the page shows in `#view`, fetched from its URL `(H, W, 3)` uint8."""
    response = page.request.get(page.locator(f"#{view} img").get_attribute("src"))
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def test_tabs_used_at_once_each_get_their_own_masks(browser, server, app_models, app_clip):
    blocks, url = server
    # two tabs on the dog, one on the clip; pixels no other test clicks (a closed tab's session may linger a moment)
    clicks = {"first": (300, 120), "second": (120, 260), "video": (130, 70)}
    contexts = {name: browser.new_context(viewport={"width": 1400, "height": 1000}) for name in clicks}
    pages = {name: context.new_page() for name, context in contexts.items()}
    for name, page in pages.items():
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        if name == "video":
            page.get_by_role("tab", name="Video").click()
            page.locator("#video-path textarea").fill(str(app_clip))
            page.locator("#video-path textarea").press("Enter")
        else:
            page.locator("#image-file input[type=file]").set_input_files(media("dog.jpg"))
    for name, page in pages.items():
        _wait_status(page, f"Opened a video of {NUM_FRAMES} frames" if name == "video" else "Opened a 500x331 image")
    for name, page in pages.items():  # all clicks in flight at once: none waits for another's mask
        view, size = ("video-view", VIDEO_SIZE) if name == "video" else ("image-view", (500, 331))
        _click_pixel(page, view, *clicks[name], size)

    def near(prompt_clicks: list | None, name: str) -> bool:  # the session's first click is this tab's
        return bool(prompt_clicks) and np.abs(np.subtract(prompt_clicks[0][:2], clicks[name])).max() <= 1

    masks, views = {}, {}
    for name, page in pages.items():
        _wait_status(page, "Foreground click")
        sessions = [blocks.sessions.get(i) for i in blocks.sessions.ids()]
        if name == "video":
            prompted = [s.video for s in sessions if s.video is not None]
            (video,) = [v for v in prompted if near(getattr(v.prompts.get((0, 1)), "clicks", None), name)]
            click = video.prompts[0, 1].clicks[0][:2]
            with Sam2VideoSession(app_models.video, str(app_clip), progress=False) as alone:  # no correction
                result = alone.add_points(0, 1, [click], [1])
            np.testing.assert_array_equal(video.labels(0), label_map(result))
            continue
        (state,) = [s.image for s in sessions if near(getattr(s.image._prompts.get(1), "clicks", None), name)]
        assert len(state._prompts[1].clicks) == 1 and state.encoder_runs == 1
        reference = AppSession(app_models)
        reference.image.open(media("dog.jpg"))
        reference.image.click(*state._prompts[1].clicks[0][:2])
        np.testing.assert_array_equal(state.mask(1), reference.image.mask())
        reference.close()
        masks[name], views[name] = state.mask(1), state.view().astype(float)
    assert not np.array_equal(masks["first"], masks["second"])
    for name in masks:  # each page shows its own view (JPEG: nearest, not equal)
        _wait_loaded(pages[name], "image-view")
        shown = _shown(pages[name], "image-view").astype(float)
        errors = {other: np.abs(shown - view).mean() for other, view in views.items()}
        assert min(errors, key=errors.get) == name, errors
    for context in contexts.values():
        context.close()


def test_stop_interrupts_tracking_and_the_page_stays_usable(page, server, long_clip):
    blocks, _ = server
    _open_clip_and_click(page, long_clip, LONG_CLIP)
    page.locator("#video-direction label", has_text="forward").click()
    page.locator("#video-track").click()
    _wait_status(page, "Tracking: frame")
    page.locator("#video-stop").click()
    _wait_status(page, "Stopped")
    video = _session(blocks).require_video()
    time.sleep(1)  # a frame being computed when Stop came may still land; none after it
    tracked = video.tracked_frames()
    assert 1 <= len(tracked) < LONG_CLIP and tracked == list(range(len(tracked)))
    time.sleep(1)
    assert video.tracked_frames() == tracked
    # still usable: a click on a frame, then tracking two frames from it
    page.locator("#video-max input").fill("2")
    page.locator("#video-max input").press("Enter")
    frame = int(page.locator("#video-frame input[type=number]").input_value())
    _click_pixel(page, "video-view", 110, 95, VIDEO_SIZE)
    _wait_status(page, f"Foreground click (110, 95) on object 1, frame {frame}")
    page.locator("#video-track").click()
    _wait_status(page, "Tracked 2 frames")
    assert video.tracked_frames() == list(range(max(len(tracked), frame + 2)))


def _slider(page) -> int:
    return int(page.locator("#video-frame input[type=number]").input_value())


def test_playback_plays_the_tracked_frames_pauses_and_the_timeline_jumps(page, server, app_clip, monkeypatch):
    """Play (key P) shows the tracked frames one after the other (slowed to 1 a second here), the slider following;
    Pause (key K) stops it where it is; a click on the timeline's cell of a frame shows that frame, its timeline marked."""
    from hiera_hf.app.video import VideoState

    blocks, _ = server
    monkeypatch.setattr(VideoState, "playback_fps", property(lambda self: 1.0))
    _open_clip_and_click(page, app_clip, NUM_FRAMES)
    timeline = _shown(page, "video-timeline")
    cell = timeline.shape[1] // NUM_FRAMES
    assert timeline.shape[0] == 24 and [tuple(timeline[8, t * cell + cell // 2]) for t in range(NUM_FRAMES)] == [
        TIMELINE_COLOURS["tracked"], TIMELINE_COLOURS["empty"], TIMELINE_COLOURS["empty"]
    ]  # fmt: skip
    page.locator("#video-track").click()
    _wait_status(page, f"Tracked {NUM_FRAMES} frames")
    video = _session(blocks).require_video()
    views = {t: video.view(t) for t in range(NUM_FRAMES)}
    page.keyboard.press("p")  # the Play button's key
    _wait_status(page, f"Playing {NUM_FRAMES} tracked frames from frame 0")  # the slider was on the last frame
    page.wait_for_function("() => document.querySelector('#video-frame input[type=number]').value === '1'")
    page.keyboard.press("k")  # Pause's
    _wait_status(page, "Paused at frame 1")
    time.sleep(2.5)  # past the end of the playback, had it gone on
    assert _slider(page) == 1 and _status(page) == "Paused at frame 1"
    _wait_loaded(page, "video-view")
    shown = _shown(page, "video-view").astype(float)  # JPEG: the nearest of the frames' views
    distances = {t: np.abs(shown - view).mean() for t, view in views.items()}
    assert min(distances, key=distances.get) == 1, distances

    _click_pixel(page, "video-timeline", 2 * cell + cell // 2, 12, timeline.shape[1::-1])
    _wait_status(page, "Frame 2")
    assert _slider(page) == 2 and tuple(_shown(page, "video-timeline")[1, 2 * cell + cell // 2]) == (255, 255, 255)
    assert [tuple(_shown(page, "video-timeline")[8, t * cell + cell // 2]) for t in range(NUM_FRAMES)] == [
        TIMELINE_COLOURS["tracked"]
    ] * NUM_FRAMES
    assert _error_badges(page) == 0


def test_dragging_the_slider_shows_the_frames_under_it(page, server, long_clip):
    """While the slider's knob is held and moved, the view follows it (the frame under the knob once the server is
    free), before the button is released."""
    blocks, _ = server
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-path textarea").fill(str(long_clip))
    page.locator("#video-path textarea").press("Enter")
    _wait_status(page, f"Opened a video of {LONG_CLIP} frames")
    _wait_loaded(page, "video-view")
    first = page.locator("#video-view img").get_attribute("src")
    track = page.locator("#video-frame input[type=range]").bounding_box()
    y = track["y"] + track["height"] / 2
    page.mouse.move(track["x"] + 2, y)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] * 0.6, y, steps=8)
    page.wait_for_function(  # a new view, loaded, while the button is still down
        "first => { const image = document.querySelector('#video-view img');"
        " return image.getAttribute('src') !== first && image.complete && image.naturalWidth > 0; }",
        arg=first,
    )
    time.sleep(1.5)  # the request of the knob's latest position answered
    shown_frame = _slider(page)
    assert 0 < shown_frame < LONG_CLIP
    video = _session(blocks).require_video()
    shown = _shown(page, "video-view").astype(float)  # JPEG: the nearest of the frames' views
    distances = {t: np.abs(shown - video.view(t)).mean() for t in range(LONG_CLIP)}
    page.mouse.up()
    assert min(distances, key=distances.get) == shown_frame, distances
    assert _error_badges(page) == 0


@pytest.mark.parametrize("size", [(1366, 768), (1440, 900)], ids=["1366x768", "1440x900"])
def test_the_view_its_controls_track_and_messages_fit_a_laptop_screen(browser, server, size, tmp_path):
    """On a laptop's window the video's view, the slider, timeline and Play / Pause under it, and Track / Stop and
    the Messages beside it are all on the screen at once, and pressing Track does not scroll the page (nor does a
    click in the image's view). HIERA_HF_APP_LAYOUT=folder saves the screenshots (the README's)."""
    width, height = size
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(server[1])
        page.wait_for_selector("#image-status textarea")
        _open_dog(page)
        _click_pixel(page, "image-view", 250, 160, (500, 331))
        _wait_status(page, "Foreground click")
        _assert_on_screen(page, size, ["#image-view img", "#image-status", "#image-object", "#image-undo"])
        _save_layout(page, f"app-image-{width}x{height}.jpg")
        page.get_by_role("tab", name="Video").click()
        clip = first_frames(tmp_path, 2, (1280, 720))  # a video as large as most: the view is scaled to fit
        page.locator("#video-path textarea").fill(str(clip))
        page.locator("#video-path textarea").press("Enter")
        _wait_status(page, "Opened a video of 2 frames")
        _click_pixel(page, "video-view", 530, 330, (1280, 720))
        _wait_status(page, "Foreground click")
        page.locator("#video-track").click()
        _wait_status(page, "Tracked 2 frames")
        shown = ["#video-view img", "#video-frame", "#video-timeline", "#video-play", "#video-pause", "#video-track",
                 "#video-stop", "#video-status"]  # fmt: skip
        _assert_on_screen(page, size, shown)
        _save_layout(page, f"app-video-{width}x{height}.jpg")
    finally:
        page.close()


def _assert_on_screen(page, size: tuple[int, int], selectors: list[str]) -> None:
    """Every element of `selectors` lies whole inside the window of `size` (width, height), the page unscrolled."""
    assert page.evaluate("() => window.scrollY") == 0
    for selector in selectors:
        box = page.locator(selector).bounding_box()
        inside = box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= size[0]
        assert inside and box["y"] + box["height"] <= size[1], (selector, box, size)


def _save_layout(page, name: str) -> None:
    folder = os.environ.get("HIERA_HF_APP_LAYOUT")
    if folder:
        page.screenshot(path=str(Path(folder) / name), type="jpeg", quality=85)


def test_a_waiting_tab_shows_its_place_in_the_queue(browser, server):
    """While another tab's request holds the model, a tab's click waits in the queue, and its Messages box says so
    (Gradio's "queue: 1/1"), not over its view; once the model is free both get their masks."""
    blocks, url = server
    pages = [browser.new_page(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    try:
        for page in pages:
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            _open_dog(page)
        with blocks.models.lock:  # the first tab's click runs and waits for the model; the second's is queued
            _click_pixel(pages[0], "image-view", 250, 160, (500, 331))
            pages[0].wait_for_function(
                "() => (document.querySelector('#image-status [data-testid=status-tracker]')?.innerText || '')"
                ".includes('processing')"
            )
            _click_pixel(pages[1], "image-view", 250, 160, (500, 331))
            pages[1].wait_for_function(
                "() => (document.querySelector('#image-status [data-testid=status-tracker]')?.innerText || '')"
                ".includes('queue: 1/1')"
            )
            view_tracker = pages[1].locator("#image-view [data-testid=status-tracker]")
            assert view_tracker.count() == 0 or "queue" not in view_tracker.first.inner_text()
        for page in pages:
            _wait_status(page, "Foreground click (250, 160) on object 1")
    finally:
        for page in pages:
            page.close()


def test_bad_uploads_show_a_message(page, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    page.locator("#image-file input[type=file]").set_input_files(str(text))
    assert "notes.txt: cannot identify image file" in _wait_status(page, "Cannot read the image")
    page.locator("#image-export").click()
    _wait_status(page, "Open an image first")
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-track").click()
    _wait_status(page, "Open a video first")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 512)
    page.locator("#video-file input[type=file]").set_input_files(str(broken))
    _wait_status(page, "Cannot open the video")
    assert "Traceback" not in page.content()


def test_user_errors_are_one_line_messages_and_the_page_keeps_working(page, tmp_path):
    """A decompression bomb (as an image and as a video) and a grid too large for "segment everything" are each
    one line in the Messages box (never "Internal error"), and the page keeps working after each."""
    bomb = tmp_path / "bomb.png"
    Image.new("1", (14000, 14000)).save(bomb)  # 196 megapixels, a few kB
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-file input[type=file]").set_input_files(str(bomb))
    messages = [_wait_status(page, "Cannot open the video", anywhere=True)]
    page.get_by_role("tab", name="Image").click()
    page.locator("#image-file input[type=file]").set_input_files(str(bomb))
    messages.append(_wait_status(page, "set HIERA_HF_MAX_IMAGE_PIXELS=196000000", anywhere=True))
    page.locator("#image-file button[aria-label=Clear]").click()  # the upload box again
    _open_dog(page)
    page.get_by_text("Segment everything: settings").click()
    page.locator("#image-grid input").fill("3000")
    page.locator("#image-grid input").press("Enter")
    page.locator("#image-everything").click()
    messages.append(_wait_status(page, "points_per_side must be 1..64, got 3000", anywhere=True))
    _click_pixel(page, "image-view", 250, 160, (500, 331))
    _wait_status(page, "Foreground click")
    assert all("\n" not in message and "Internal error" not in message for message in messages), messages
    assert "Traceback" not in page.content()


def test_a_frame_past_the_end_shows_the_last_and_the_page_keeps_working(page, server, app_clip):
    blocks, _ = server
    _open_clip_and_click(page, app_clip, NUM_FRAMES)
    number = page.locator("#video-frame input[type=number]")
    number.fill("999")
    number.press("Tab")  # the page sends a typed frame when the box loses the focus
    _wait_status(page, f"There is no frame 999: showing frame {NUM_FRAMES - 1}")
    assert number.input_value() == str(NUM_FRAMES - 1)
    _click_pixel(page, "video-view", 120, 95, VIDEO_SIZE)
    _wait_status(page, f"Foreground click (120, 95) on object 1, frame {NUM_FRAMES - 1}")
    assert _error_badges(page) == 0 and "Traceback" not in page.content()
    assert (NUM_FRAMES - 1, 1) in _session(blocks).require_video().prompts


def test_the_most_recent_of_upload_and_typed_path_opens(page):
    _open_dog(page)  # an upload, then a path typed: the path opens, the upload box is cleared
    page.locator("#image-path textarea").fill(media("truck.jpg"))
    page.locator("#image-path textarea").press("Enter")
    _wait_status(page, f"Opened a 1800x1200 image ({media('truck.jpg')})")
    page.wait_for_selector("#image-file input[type=file]", state="attached")
    page.locator("#image-file input[type=file]").set_input_files(media("dog.jpg"))  # then an upload again
    _wait_status(page, "Opened a 500x331 image (dog.jpg)")
    assert page.locator("#image-path textarea").input_value() == ""


def test_opening_another_video_clears_what_belonged_to_the_last(page, app_clip, long_clip, tmp_path):
    _open_clip_and_click(page, app_clip, NUM_FRAMES)
    page.locator("#video-track").click()
    _wait_status(page, f"Tracked {NUM_FRAMES} frames")
    page.locator("#video-export").click()
    _wait_status(page, "Exported")
    page.wait_for_selector("#video-files a")
    page.locator("#video-name textarea").fill("cup")  # typed, not given
    page.locator("#video-path textarea").fill(str(long_clip))
    page.locator("#video-path textarea").press("Enter")
    _wait_status(page, f"Opened a video of {LONG_CLIP} frames")
    assert page.locator("#video-files a").count() == 0
    assert page.locator("#video-name textarea").input_value() == ""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 512)
    page.locator("#video-file input[type=file]").set_input_files(str(broken))
    message = _wait_status(page, "Cannot open the video")
    assert "broken.mp4" in message and str(broken.parent) not in message and "gradio" not in message, message


def test_keyboard_shortcuts_undo_and_clear(page, server):
    """The keys listed in the page pick the click mode, undo, clear and start a new object (not while typing)."""
    blocks, _ = server
    assert "Keys: F foreground, B background, N new object, Z undo" in page.locator("#image-tab").inner_text()
    _open_dog(page)
    _click_pixel(page, "image-view", 250, 160, (500, 331))
    _wait_status(page, "Foreground click")
    page.keyboard.press("b")
    _click_pixel(page, "image-view", 100, 60, (500, 331))
    _wait_status(page, "Background click")
    state = _session(blocks).image
    page.keyboard.press("z")
    _wait_status(page, "Took back the last click or box of object 1")
    assert [label for _, _, label in state._prompts[1].clicks] == [1]
    page.locator("#image-name textarea").press("z")  # typed in a box: not a shortcut
    time.sleep(1)
    assert len(state._prompts[1].clicks) == 1 and page.locator("#image-name textarea").input_value() == "z"
    page.locator("#image-clear").click()
    _wait_status(page, "Cleared the clicks and box of object 1")
    assert state.mask(1) is None
    page.keyboard.press("n")
    _wait_status(page, "Object 2")
    page.keyboard.press("f")
    _click_pixel(page, "image-view", 250, 160, (500, 331))
    _wait_status(page, "Foreground click (250, 160) on object 2")
    assert _error_badges(page) == 0


def test_the_corners_of_the_view_are_clickable(page, server):
    """Nothing covers the view (Gradio's corner label and buttons are off): clicks at the corners of an image as wide
    as the view reach it."""
    blocks, _ = server
    page.locator("#image-file input[type=file]").set_input_files(media("truck.jpg"))
    _wait_status(page, "Opened a 1800x1200 image")
    corners = ((4, 4), (1795, 4), (4, 1195), (1795, 1195))
    for x, y in corners:
        _click_pixel(page, "image-view", x, y, (1800, 1200))
        _wait_status(page, "Foreground click")
        _clear_status(page)
    clicks = _session(blocks).image._prompts[1].clicks
    # the browser reports a click at whole CSS pixels and the page rounds it to a view pixel: off by at most one CSS
    # pixel of the image as shown and half a view pixel, in frame pixels
    shown = _wait_loaded(page, "image-view")["width"]
    tolerance = 1800 / shown + 1800 / VIEW_MAX_SIDE / 2
    assert np.abs(np.subtract([c[:2] for c in clicks], corners)).max() <= tolerance, clicks


def test_a_small_video_is_shown_scaled_up_and_clicks_land_on_its_pixels(page, server, tmp_path):
    blocks, _ = server
    clip = first_frames(tmp_path, 1, (256, 144))
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-path textarea").fill(str(clip))
    page.locator("#video-path textarea").press("Enter")
    _wait_status(page, "Opened a video of 1 frames")
    assert _shown(page, "video-view").shape == (432, 768, 3)  # 3 times the frame
    assert _wait_loaded(page, "video-view")["width"] > 600  # and shown that large
    for x, y in ((100, 90), (1, 1), (254, 142)):
        _clear_status(page)
        _click_pixel(page, "video-view", x, y, (256, 144))
        _wait_status(page, f"Foreground click ({x}, {y}) on object 1, frame 0")
    clicks = _session(blocks).require_video().prompts[0, 1].clicks
    assert np.abs(np.subtract([c[:2] for c in clicks], [(100, 90), (1, 1), (254, 142)])).max() <= 1 / 3, clicks


def test_closing_the_tab_frees_its_session(browser, server):
    blocks, url = server
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    _open_dog(page)
    session_id = blocks.sessions.ids()[-1]
    folder = blocks.sessions.get(session_id).folder
    assert folder.is_dir()
    page.close()
    deadline = time.monotonic() + 60
    while session_id in blocks.sessions.ids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_id not in blocks.sessions.ids() and not folder.exists()
