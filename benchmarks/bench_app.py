"""The interactive app, measured in a real browser (headless Chromium driven by Playwright): click-to-mask latency
on an image whose embedding is cached (median, p95), and tracking throughput through the app versus
`Sam2VideoSession` alone on the same clip and prompt.

Click-to-mask is timed from the click in the page (a mouse press and release on the loaded view) to the moment the
page has loaded the new view and shows the new message: the whole round trip (the browser event, Gradio's queue,
prompt encoder + mask decoder, post-processing, the JPEG of the view, its transfer and decoding in the page).

    PYTHONPATH=src python benchmarks/bench_app.py --clicks 20 --frames 8
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

import av
import torch

from hiera_hf import Sam2Config, Sam2VideoModel, Sam2VideoSession
from hiera_hf.app import Models, build_app

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip


def media(name: str) -> Path:
    for folder in (MEDIA, Path("/work/shared/media")):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(name)


def frames_folder(folder: Path, count: int) -> Path:
    with av.open(str(media("blocks.mp4"))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            frame.to_image().save(folder / f"{index:05d}.jpg", quality=95)
            if index == count - 1:
                break
    return folder


def wait_status(page, start: str) -> None:
    page.wait_for_function(
        "start => (document.querySelector('#status textarea')?.value || '').startsWith(start)", arg=start
    )


def loaded_view(page, view: str) -> dict:
    """Wait until the image of `#view` is loaded (a click on an image being replaced is lost); its bounding box."""
    page.wait_for_function(
        "selector => { const image = document.querySelector(selector);"
        " return image !== null && image.complete && image.naturalWidth > 0; }",
        arg=f"#{view} img",
    )
    return page.locator(f"#{view} img").bounding_box()


def click_latencies(page, clicks: int) -> list[float]:
    """Seconds from each click (a mouse press and release on the shown view) to the new view loaded in the page
    and the new message shown (different pixels each time, so each message differs)."""
    page.locator("#image-file input[type=file]").set_input_files(str(media("truck.jpg")))
    wait_status(page, "Opened a 1800x1200 image")
    times = []
    for index in range(clicks):
        box = loaded_view(page, "image-view")
        x, y = 400 + 20 * index, 300 + 7 * index
        before = [page.locator("#image-view img").get_attribute("src"), page.locator("#status textarea").input_value()]
        start = time.perf_counter()
        page.mouse.click(box["x"] + (x + 0.5) * box["width"] / 1800, box["y"] + (y + 0.5) * box["height"] / 1200)
        page.wait_for_function(
            """([src, text]) => { const image = document.querySelector('#image-view img');
                return image !== null && image.src !== src && image.complete && image.naturalWidth > 0
                    && document.querySelector('#status textarea')?.value !== text; }""",
            arg=before,
        )
        times.append(time.perf_counter() - start)
    return times


def app_tracking(page, clip: Path, frames: int) -> float:
    """Frames per second of "Track" in the app (one object, one click on frame 0)."""
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-path textarea").fill(str(clip))
    page.locator("#video-path textarea").press("Enter")
    wait_status(page, f"Opened a video of {frames} frames")
    box = loaded_view(page, "video-view")
    page.mouse.click(box["x"] + 640.5 * box["width"] / 1280, box["y"] + 360.5 * box["height"] / 720)
    wait_status(page, "Foreground click")
    page.locator("#video-direction label", has_text="forward").click()
    start = time.perf_counter()
    page.locator("#video-track").click()
    wait_status(page, f"Tracked {frames} frames")
    return frames / (time.perf_counter() - start)


def session_tracking(model: Sam2VideoModel, clip: Path, frames: int) -> float:
    with Sam2VideoSession(model, str(clip), progress=False, add_all_frames_to_correct_as_cond=True) as session:
        session.add_points(0, 1, [(640.0, 360.0)], [1])
        start = time.perf_counter()
        for _ in session.propagate(0):
            pass
        return frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="sam2.1_hiera_tiny")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--frames", type=int, default=8, help="frames of blocks.mp4 to track (0: skip tracking)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    torch.manual_seed(0)
    model = Sam2VideoModel(Sam2Config.from_preset(args.variant, image_size=args.image_size)).eval()
    blocks = build_app(Models(model))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, url, _ = blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright, tempfile.TemporaryDirectory() as scratch:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            times = click_latencies(page, args.clicks)[1:]  # the first click warms up
            ordered = sorted(times)
            p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
            print(
                f"click-to-mask ({args.variant} @{args.image_size}, 1800x1200 image, embedding cached, "
                f"{len(times)} clicks): median {1000 * statistics.median(times):.0f} ms, p95 {1000 * p95:.0f} ms"
            )
            if args.frames:
                clip = frames_folder(Path(scratch), args.frames)
                app_fps = app_tracking(page, clip, args.frames)
                session_fps = session_tracking(model, clip, args.frames)
                print(
                    f"tracking {args.frames} frames (1280x720, 1 object): app {app_fps:.2f} frames/s, "
                    f"Sam2VideoSession {session_fps:.2f} frames/s ({app_fps / session_fps:.2f}x)"
                )
            browser.close()
    finally:
        blocks.close()


if __name__ == "__main__":
    main()
