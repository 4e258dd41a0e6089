"""The interactive app's state logic (`hiera_hf.app.state`), without a browser: clicks give masks from the cached
embedding, objects, candidates, segment everything, tracking, corrections, exports identical to `hiera-hf track`,
and bad input refused with a short message."""

import argparse
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import (
    BOX_2,
    CLICK_2,
    CLICKS_1,
    CORRECTION,
    NUM_FRAMES,
    SIZE,
    VIDEO_SIZE,
    assert_same_tracking,
    first_frames,
)
from PIL import Image
from pycocotools import mask as coco_mask
from sam2_helpers import media

from hiera_hf import HieraConfig, Sam2Model, Sam2VideoSession
from hiera_hf.app import AppSession, Models, Sessions
from hiera_hf.app.views import (
    BOX_COLOUR,
    CLICK_COLOURS,
    TIMELINE_COLOURS,
    TIMELINE_ROWS,
    VIDEO_VIEW_MIN_SIDE,
    VIEW_MAX_SIDE,
    blend,
    object_colour,
    timeline,
    timeline_cell,
)
from hiera_hf.cli import add_app_arguments, run_app
from hiera_hf.cli import main as cli_main
from hiera_hf.sam2.video_output import label_map, write_palette_png


@pytest.fixture
def session(app_models):
    session = AppSession(app_models)
    yield session
    session.close()


def test_image_model_is_a_view_of_the_video_model(app_models, app_model_folder):
    video_params = {p.data_ptr() for p in app_models.video.parameters()}
    assert {p.data_ptr() for p in app_models.image.parameters()} <= video_params
    assert not any(p.is_meta for p in app_models.image.parameters())
    loaded = Sam2Model.from_pretrained(app_model_folder).eval()
    pixels = torch.randn(1, 3, SIZE, SIZE)
    points, labels = torch.tensor([[[[100.0, 80.0]]]]), torch.tensor([[[1]]])
    with torch.no_grad():
        ours = app_models.image(pixel_values=pixels, input_points=points, input_labels=labels)
        reference = loaded(pixel_values=pixels, input_points=points, input_labels=labels)
    torch.testing.assert_close(ours.pred_masks, reference.pred_masks, rtol=0, atol=0)


def test_click_gives_the_models_mask_from_the_cached_embedding(session, app_models):
    image = np.asarray(Image.open(media("dog.jpg")).convert("RGB"))
    state = session.image
    state.open(media("dog.jpg"))
    assert state.encoder_runs == 1 and state.size == image.shape[:2]
    obj_id = state.click(250, 160)
    first = state.mask()
    # the reference: the whole model (encoder included) on the same image and click, the best candidate
    inputs = app_models.processor(image, input_points=[[[[250, 160]]]], input_labels=[[[1]]])
    with torch.no_grad():
        output = app_models.image(**{k: v for k, v in inputs.items() if k != "original_sizes"}, multimask_output=True)
    masks = app_models.processor.post_process_masks(output.pred_masks, inputs["original_sizes"])[0][0]
    best = int(output.iou_scores[0, 0].argmax())
    np.testing.assert_array_equal(first, masks[best].numpy())
    assert first.any() and state.selected() == best
    assert [m.shape for m, _ in state.candidates()] == [image.shape[:2]] * 3
    assert state.scores() == [score for _, score in state.candidates()]

    state.click(100, 60, 0, obj_id)  # a background click changes the mask, without encoding the image again
    assert state.encoder_runs == 1
    assert not np.array_equal(state.mask(), first)
    other = (state.selected() + 1) % 3
    state.select_candidate(other)
    np.testing.assert_array_equal(state.mask(), state.candidates()[other][0])
    view = state.view()
    assert view.shape == image.shape and not np.array_equal(view, image)


def test_views_of_large_images_are_scaled_down_and_clicks_map_back(session):
    state = session.image
    state.open(media("dog.jpg"))  # small enough: the view is the image itself
    assert state.grid.size == (331, 500) and not state.grid.scaled
    state.click(250, 160)
    assert state.grid.from_view(250, 160) == (250.0, 160.0)
    np.testing.assert_array_equal(state.view(), blend(state.image, state.labels(), [(250, 160, 1)]))

    state.open(media("truck.jpg"))  # 1800x1200: the view is 1024x683
    grid = state.grid
    assert grid.size == (683, VIEW_MAX_SIDE) and grid.scaled
    assert np.allclose(grid.from_view(*grid.to_view(900.0, 600.0)), (900.0, 600.0))
    assert grid.from_view(0, 0)[0] > 0 and grid.from_view(1023, 682) < (1800 - 1, 1200 - 1)  # inside the frame
    assert grid.box_from_view([0, 0, 1023, 682]) == [*grid.from_view(0, 0), *grid.from_view(1023, 682)]
    state.click(*grid.from_view(512, 341))
    view, labels = state.view(), state.labels()
    assert view.shape == (683, 1024, 3)
    plain = np.asarray(Image.open(media("truck.jpg")).convert("RGB").resize((1024, 683), Image.Resampling.BILINEAR))
    sampled = labels[(np.arange(683) * 1200 + 600) // 683][:, (np.arange(1024) * 1800 + 900) // 1024]
    tinted = np.any(view != plain, axis=2)
    tinted[334:349, 505:520] = False  # the click's disc
    sampled[334:349, 505:520] = 0
    np.testing.assert_array_equal(tinted, sampled > 0)  # the mask, sampled at the view's pixel centres
    with pytest.raises(ValueError, match="A box is 4 numbers"):
        grid.box_from_view(["1", "2", "3"])
    state.set_box(grid.box_from_view([100, 80, 400, 300]))  # the box is outlined in the view
    view = state.view()
    for y, x in ((80, 250), (81, 250), (300, 250), (200, 100), (200, 400)):
        assert tuple(view[y, x]) == BOX_COLOUR, (y, x)

    # masks filled half with their colour and outlined in it; clicks as discs ringed in white, of every object
    labels = np.zeros((40, 40), dtype=np.uint8)
    labels[10:30, 10:30] = 3
    drawn = blend(np.zeros((40, 40, 3), dtype=np.uint8), labels, [(20, 20, 0), (12, 25, 1)])
    assert tuple(drawn[10, 15]) == object_colour(3) and tuple(drawn[29, 15]) == object_colour(3)
    assert tuple(drawn[15, 15]) == tuple(c // 2 for c in object_colour(3)) and not drawn[5, 5].any()
    assert tuple(drawn[20, 20]) == CLICK_COLOURS[0] and tuple(drawn[20, 24]) == (255, 255, 255)
    assert tuple(drawn[25, 12]) == CLICK_COLOURS[1]
    state.open(media("dog.jpg"))
    state.click(100, 100)
    state.add_object()
    state.click(300, 200)
    view = state.view()
    assert tuple(view[100, 100]) == CLICK_COLOURS[1] and tuple(view[200, 300]) == CLICK_COLOURS[1]


def test_views_of_small_videos_are_scaled_up_and_clicks_map_back(session, tmp_path):
    clip = first_frames(tmp_path, 1, (256, 144))  # shown 3 times larger: 768x432
    video = session.open_video(str(clip))
    grid = video.grid
    assert VIDEO_VIEW_MIN_SIDE == 768 and grid.size == (432, 768) and grid.scaled
    assert np.allclose(grid.from_view(*grid.to_view(100.0, 90.0)), (100.0, 90.0))
    assert grid.from_view(1, 1) == (0.0, 0.0) and grid.from_view(766, 430) == (255.0, 143.0)  # pixel centres
    assert grid.box_from_view([1, 4, 766, 430]) == [0.0, 1.0, 255.0, 143.0]
    obj_id = video.click(0, *grid.from_view(301, 271))  # view pixel (301, 271): frame pixel (100, 90)
    assert video.prompts[0, obj_id].clicks == [(100.0, 90.0, 1)]
    view, labels = video.view(0), video.labels(0)
    assert view.shape == (432, 768, 3) and labels.shape == (144, 256)
    plain = np.asarray(Image.fromarray(video.frame(0)).resize((768, 432), Image.Resampling.BILINEAR))
    sampled = labels.repeat(3, axis=0).repeat(3, axis=1)  # each frame pixel, 3x3 view pixels
    tinted = np.any(view != plain, axis=2)
    tinted[261:282, 291:312] = sampled[261:282, 291:312] = 0  # the click's disc
    np.testing.assert_array_equal(tinted, sampled > 0)
    (tmp_path / "large").mkdir()
    large = session.open_video(str(first_frames(tmp_path / "large", 1, (800, 450))))  # between the two: as it is
    assert large.grid.size == (450, 800) and not large.grid.scaled


def test_objects_labels_and_image_exports(session, tmp_path):
    state = session.image
    state.open(media("dog.jpg"))
    one = state.click(250, 160)
    two = state.add_object("grass")
    assert state.set_box((200, 320, 10, 250)) == two  # any two opposite corners
    assert state._prompts[two].box == [10, 250, 200, 320]
    labels = state.labels()
    assert set(np.unique(labels)) <= {0, one, two} and {one, two} <= set(np.unique(labels))
    np.testing.assert_array_equal(labels == two, state.mask(two))  # the later object is drawn on top
    np.testing.assert_array_equal(labels == one, state.mask(one) & ~state.mask(two))
    state.objects.rename(one, "dog")
    assert state.objects.names == {one: "dog", two: "grass"}

    png, objects, coco = session.export_image()
    assert [png.name, objects.name, coco.name] == ["masks.png", "objects.zip", "masks_coco.json"]
    np.testing.assert_array_equal(np.asarray(Image.open(png)), labels)
    records = json.loads(coco.read_text())
    assert [(r["id"], r["name"]) for r in records] == [(one, "dog"), (two, "grass")]
    for record in records:
        decoded = coco_mask.decode({**record["segmentation"], "counts": record["segmentation"]["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), labels == record["id"])
        assert record["area"] == int((labels == record["id"]).sum())
        assert record["bbox"] == list(coco_mask.toBbox(coco_mask.encode(np.asfortranarray(decoded))).astype(int))
    with zipfile.ZipFile(objects) as archive:
        assert archive.namelist() == ["001_dog.png", "002_grass.png"]
        with archive.open("002_grass.png") as member:
            np.testing.assert_array_equal(np.asarray(Image.open(member)) > 0, labels == two)

    state.remove_object(one)
    assert one not in set(np.unique(state.labels())) and state.objects.active == two


def test_segment_everything_adds_or_replaces_and_keeps_the_objects_when_it_finds_none(session):
    state = session.image
    state.open(media("dog.jpg"))
    state.click(250, 160)
    mine = state.mask(1)
    settings = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "progress": False}
    count = state.segment_everything(**settings)  # added as new objects: the clicked one stays
    assert 0 < count == len(state.objects.names) - 1 and state.objects.names[2] == "mask 1"
    np.testing.assert_array_equal(state.mask(1), mine)
    assert set(np.unique(state.labels())) - {0} <= set(state.objects.names)
    assert state.segment_everything(replace=True, **settings) == count == len(state.objects.names)
    assert state.objects.names[1] == "mask 1"
    names = dict(state.objects.names)
    assert state.segment_everything(**{**settings, "pred_iou_thresh": 1.0, "stability_score_thresh": 1.0}) == 0
    assert state.objects.names == names  # found nothing: nothing replaced


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def unzip_export(files: list[Path], folder: Path) -> Path:
    """The app's video export (`tracking.zip`, `overlay.mp4`, `prompts.json`) as `hiera-hf track` writes it."""
    archive, overlay, prompts = files
    assert (archive.name, overlay.name, prompts.name) == ("tracking.zip", "overlay.mp4", "prompts.json")
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(folder)
    shutil.copy(overlay, folder / "overlay.mp4")
    return folder


EVERY_FORMAT = ["--format", "png,rle,objects,boxes,mp4"]


def test_tracking_exports_the_files_of_hiera_hf_track_and_corrections_retrack(
    session, app_clip, app_models, app_model_folder, tmp_path
):
    video = session.open_video(str(app_clip))
    assert video.num_frames == NUM_FRAMES
    one, two = video.add_object(), video.add_object()
    # object 1 by clicks, then object 2 by a box and a click: `hiera-hf track` takes its flags in the same order
    for x, y, label in CLICKS_1:
        video.click(0, x, y, label, obj_id=one)
    video.set_box(0, BOX_2, obj_id=two)
    video.click(0, *CLICK_2, obj_id=two)
    assert list(video.track(0, "both")) == list(range(NUM_FRAMES))  # backward from frame 0 tracks nothing
    shown = files_under(unzip_export(session.export_video(), tmp_path / "app"))
    archive = session.folder / "exports" / "tracking.zip"

    # the same prompts through `hiera-hf track`, every format: the same files, byte for byte
    points = [f"0,1,{x},{y},{label}" for x, y, label in CLICKS_1]
    flags = [arg for p in points for arg in ("--point", p)] + ["--box", "0,2,{},{},{},{}".format(*BOX_2)]
    flags += ["--point", "0,2,{},{},{}".format(*CLICK_2)]
    cli = tmp_path / "cli"
    argv = ["track", str(app_clip), "--model", str(app_model_folder), "--quiet"]
    assert cli_main([*argv, "--out", str(cli), *flags, *EVERY_FORMAT]) == 0
    expected = files_under(cli)
    names = [f"{t:05d}" for t in range(NUM_FRAMES)]
    assert sorted(expected) == sorted(
        ["overlay.mp4", "boxes/1.txt", "boxes/2.txt"]
        + [f"{folder}/{name}.{ext}" for folder, ext in (("masks", "png"), ("rle", "json")) for name in names]
        + [f"objects/{obj}/{name}.png" for obj in (1, 2) for name in names]
    )
    assert_same_tracking(shown, expected)
    assert {1, 2} <= set(np.unique(np.asarray(Image.open(cli / "masks" / f"{names[-1]}.png"))))  # both tracked
    # the order matters (the session batches objects in the order first prompted): object 2's flags first differ
    swapped = flags[len(points) * 2 :] + flags[: len(points) * 2]
    assert cli_main([*argv, "--out", str(tmp_path / "swapped"), *swapped, "--format", "png"]) == 0
    assert any(
        (tmp_path / "swapped" / "masks" / f"{n}.png").read_bytes() != expected[f"masks/{n}.png"] for n in names
    )

    # what the files say: each format is the label map's pixels of the object
    for t, name in enumerate(names):
        labels = np.asarray(Image.open(cli / "masks" / f"{name}.png"))
        records = json.loads((cli / "rle" / f"{name}.json").read_text())
        assert [(r["id"], r["frame_idx"]) for r in records] == [(1, t), (2, t)]
        for record in records:
            rle = {**record["segmentation"], "counts": record["segmentation"]["counts"].encode()}
            decoded = coco_mask.decode(rle).astype(bool)
            np.testing.assert_array_equal(decoded, labels == record["id"])
            object_png = Image.open(cli / "objects" / str(record["id"]) / f"{name}.png")
            np.testing.assert_array_equal(np.asarray(object_png) > 0, decoded)
            assert record["area"] == decoded.sum() and "name" not in record
            assert record["bbox"] == list(coco_mask.toBbox(rle).astype(int))
            box_line = (cli / "boxes" / f"{record['id']}.txt").read_text().splitlines()[t]
            assert box_line == ",".join(map(str, record["bbox"]))

    video.objects.rename(two, "red box")  # a name given in the app goes into its records
    session.export_video()
    with zipfile.ZipFile(archive) as opened:
        records = json.loads(opened.read("rle/00000.json"))
    assert [r.get("name") for r in records] == [None, "red box"]

    # a correction on a tracked frame, then track again from there: as the session does it
    video.objects.select(one)
    video.click(1, *CORRECTION)
    assert list(video.track(1, "forward")) == list(range(1, NUM_FRAMES))
    reference = tmp_path / "reference"
    reference.mkdir()
    clip = str(app_clip)
    with Sam2VideoSession(app_models.video, clip, progress=False, add_all_frames_to_correct_as_cond=True) as direct:
        direct.add_points(0, 1, [c[:2] for c in CLICKS_1], [c[2] for c in CLICKS_1])
        direct.add_points(0, 2, [CLICK_2[:2]], [CLICK_2[2]], box=BOX_2)
        list(direct.propagate(reverse="both"))
        direct.add_points(1, 1, [CORRECTION[:2]], [CORRECTION[2]])
        for result in direct.propagate(1, reverse=False):
            write_palette_png(label_map(result), reference / f"{result.frame_idx:05d}.png")
    for name in names[1:]:
        assert (video.masks / f"{name}.png").read_bytes() == (reference / f"{name}.png").read_bytes(), name
    assert any(shown[f"masks/{n}.png"] != (video.masks / f"{n}.png").read_bytes() for n in names[1:])  # it changed

    video.remove_object(two)
    assert all(two not in np.unique(video.labels(t)) for t in range(NUM_FRAMES))
    assert video.session.object_ids == [one]


def test_track_prompts_replays_an_app_session_byte_for_byte(session, app_clip, app_model_folder, tmp_path):
    """Everything done in the app (clicks, a box, tracking, corrections on a tracked frame, tracking again, a stopped
    tracking, a removed object, a name) is in its `prompts.json`; `hiera-hf track --prompts` replays it into the
    files the app exported, byte for byte, in every format."""
    video = session.open_video(str(app_clip))
    one, two = video.add_object(), video.add_object()
    video.click(0, *CLICKS_1[0], obj_id=one)
    video.set_box(0, BOX_2, obj_id=two)
    assert list(video.track(0, "forward")) == list(range(NUM_FRAMES))
    before = [video.labels(t) for t in range(NUM_FRAMES)]
    video.click(1, *CORRECTION, obj_id=one)  # corrections on a tracked frame (each sees the one before)
    video.click(1, *CLICKS_1[1], obj_id=one)
    video.click(1, *CLICKS_1[2], obj_id=one)
    video.undo(1, one)  # the last taken back
    assert video.prompts[1, one].clicks == [CORRECTION, CLICKS_1[1]]
    assert list(video.track(1, "forward", max_frames=2)) == [1, 2]
    three = video.add_object()
    video.click(2, *CLICK_2, obj_id=three)
    stopped = video.track(2, "backward")
    assert next(stopped) == 2  # as the page's Stop leaves it: one frame tracked, the rest never asked for
    del stopped
    video.remove_object(two)
    video.objects.rename(one, "left block")
    exported = session.export_video()
    shown = files_under(unzip_export(exported, tmp_path / "app"))
    assert any(not np.array_equal(video.labels(t), before[t]) for t in range(NUM_FRAMES))  # the corrections count
    recorded = json.loads(exported[2].read_text())
    kinds = [next(k for k in ("undo", "click", "box", "track", "remove") if k in step) for step in recorded["steps"]]
    expected_kinds = ["click", "box", "track", "click", "click", "click", "undo", "track", "click", "track", "remove"]
    assert kinds == expected_kinds
    assert recorded["steps"][9]["frames"] == 1 and recorded["names"] == {"1": "left block"}

    out = tmp_path / "cli"
    argv = ["track", str(app_clip), "--model", str(app_model_folder), "--quiet", "--out", str(out)]
    assert cli_main([*argv, "--prompts", str(exported[2]), *EVERY_FORMAT]) == 0
    expected = files_under(out)
    assert "boxes/3.txt" in expected and "boxes/2.txt" not in expected
    assert_same_tracking(shown, expected)


def test_undo_and_clear_take_back_prompts(session, app_clip):
    state = session.image
    state.open(media("dog.jpg"))
    obj_id = state.click(250, 160)
    one_click = state.mask()
    state.set_box((100, 50, 400, 300))
    state.click(100, 60, 0)
    state.undo()
    assert state._prompts[obj_id].clicks == [(250.0, 160.0, 1)] and state._prompts[obj_id].box is not None
    state.undo()
    np.testing.assert_array_equal(state.mask(), one_click)  # as it was after the first click
    state.undo()
    assert state.mask() is None and state.scores() == []
    with pytest.raises(ValueError, match="has no click or box to take back"):
        state.undo()
    state.click(250, 160)
    assert state.clear_prompts() == obj_id and state.mask() is None and obj_id in state.objects.names

    video = session.open_video(str(app_clip))
    one = video.add_object()
    video.click(0, *CLICKS_1[0], obj_id=one)
    first = video.labels(0)
    video.click(0, *CLICKS_1[2], obj_id=one)
    video.undo(0, one)
    np.testing.assert_array_equal(video.labels(0), first)
    video.undo(0, one)  # its last prompt: the object leaves the session, its masks are cleared, it stays listed
    assert video.session.object_ids == [] and not video.labels(0).any() and one in video.objects.names
    with pytest.raises(ValueError, match="no click or box on frame 0 to take back"):
        video.undo(0, one)
    with pytest.raises(ValueError, match="Nothing to track"):
        video.track()
    video.click(0, *CLICKS_1[0], obj_id=one)
    video.click(1, *CLICKS_1[1], obj_id=one)
    video.undo(1, one)  # its only prompt on frame 1: cleared there, the object keeps frame 0's
    assert list(video.prompts) == [(0, one)] and video.session.object_ids == [one] and not video.labels(1).any()
    video.click(1, *CLICKS_1[1], obj_id=one)
    assert video.clear_prompts(one) == one and video.prompts == {} and one in video.objects.names
    assert not any(video.labels(t).any() for t in video.tracked_frames())


def _timeline_cells(strip: np.ndarray, num_frames: int) -> dict[str, list[str]]:
    """Per band of a timeline, each frame's colour name (`TIMELINE_COLOURS`), read at the centre of its cell."""
    cell, names = timeline_cell(num_frames), {colour: name for name, colour in TIMELINE_COLOURS.items()}
    centres = np.arange(num_frames) * cell + cell // 2
    rows = {band: (r.start + r.stop) // 2 for band, r in TIMELINE_ROWS.items()}
    return {band: [names.get(tuple(strip[row, x]), "other") for x in centres] for band, row in rows.items()}


def test_the_timeline_shows_prompted_and_tracked_frames_and_maps_clicks_to_frames(session, app_clip):
    video = session.open_video(str(app_clip))
    assert video.timeline(0).shape == (24, NUM_FRAMES * (1024 // NUM_FRAMES), 3)
    cells = _timeline_cells(video.timeline(0), NUM_FRAMES)
    assert cells == {"masks": ["empty"] * 3, "prompts": ["empty"] * 3, "shown": ["shown", "other", "other"]}
    with pytest.raises(ValueError, match="Nothing to play"):
        video.playback(0)
    one = video.add_object()
    video.click(1, *CLICKS_1[0], obj_id=one)  # the clicked frame has masks at once
    cells = _timeline_cells(video.timeline(2), NUM_FRAMES)
    assert cells["masks"] == ["empty", "tracked", "empty"] and cells["prompts"] == ["empty", "prompted", "empty"]
    assert cells["shown"] == ["other", "other", "shown"]
    list(video.track(1, "forward"))
    assert _timeline_cells(video.timeline(), NUM_FRAMES)["masks"] == ["empty", "tracked", "tracked"]
    video.undo(1, one)  # no prompt left
    assert _timeline_cells(video.timeline(), NUM_FRAMES)["prompts"] == ["empty"] * 3
    # a click on the timeline -> the frame under it; outside -> the nearest frame
    cell = timeline_cell(NUM_FRAMES)
    assert [video.timeline_frame(x) for x in (0, cell - 1, cell, 2.5 * cell, 3 * cell, -5)] == [0, 0, 1, 2, 2, 0]
    with pytest.raises(ValueError, match="A position"):
        video.timeline_frame("nan")
    # long videos: a pixel per frame, the frame shown marked 3 pixels wide
    long = timeline(5000, range(0, 5000, 2), [7], shown=10)
    assert long.shape == (24, 5000, 3) and tuple(long[20, 7]) == BOX_COLOUR and tuple(long[20, 8]) != BOX_COLOUR
    assert tuple(long[8, 0]) == TIMELINE_COLOURS["tracked"] and tuple(long[8, 1]) == TIMELINE_COLOURS["empty"]
    assert [tuple(long[1, x]) == TIMELINE_COLOURS["shown"] for x in range(8, 13)] == [False, True, True, True, False]


def test_playback_shows_the_tracked_frames_without_running_the_model(session, app_clip, monkeypatch):
    video = session.open_video(str(app_clip))
    video.click(0, *CLICKS_1[0], obj_id=video.add_object())
    assert video.playback(0) == [0]  # only the clicked frame has masks yet
    list(video.track(0, "forward", max_frames=2))
    assert video.tracked_frames() == [0, 1]
    views = {t: video.view(t) for t in range(NUM_FRAMES)}

    def no_model(*args, **kwargs):
        raise AssertionError("playback ran the model")

    monkeypatch.setattr(torch.nn.Module, "__call__", no_model)
    monkeypatch.setattr(Sam2VideoSession, "propagate", no_model)
    monkeypatch.setattr(video.log, "track", no_model)
    assert video.playback(0) == [0, 1] and video.playback(1) == [0, 1]  # from the last: from the start again
    assert video.playback(2) == [0, 1]
    for t in video.playback(0):
        np.testing.assert_array_equal(video.view(t), views[t])
        assert video.labels(t).any()  # drawn from the masks tracked
    assert video.playback_fps == 24.0  # a frame folder: no rate of its own
    monkeypatch.setattr(Sam2VideoSession, "fps", property(lambda self: 60.0))
    assert video.playback_fps == 30.0  # capped


def test_bad_input_gets_a_short_message(session, app_models, app_clip, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="Cannot read the image .*notes.txt"):
        session.image.open(str(text))
    with pytest.raises(ValueError, match="Open an image first"):
        session.image.click(1, 1)
    session.image.open(media("dog.jpg"))
    with pytest.raises(ValueError, match="outside the 500x331 image"):
        session.image.click(500.5, 10)
    with pytest.raises(ValueError, match="outside"):
        session.image.click(-1, 10)
    with pytest.raises(ValueError, match="no object 7"):
        session.image.click(5, 5, obj_id=7)
    for box, message in (((1, 2, 3), "A box is 4 numbers"), (["1", "2", "x", "4"], "A box must be numbers"),
                         (None, "A box.* is not a finite number"), ((5, 5, 5, 20), "x0 < x1")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            session.image.set_box(box)
    with pytest.raises(ValueError, match="outside the 500x331 image"):
        session.image.set_box((10, 10, 600, 20))

    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\x00" * 1000)
    empty = tmp_path / "empty"
    empty.mkdir()
    for source in (garbage, empty, tmp_path / "missing.mp4", text):
        with pytest.raises(ValueError, match="Cannot open the video"):
            session.open_video(str(source))
    with pytest.raises(ValueError, match="Open a video first"):
        session.require_video()
    video = session.open_video(str(app_clip))
    with pytest.raises(ValueError, match="Nothing to track"):
        video.track()
    with pytest.raises(ValueError, match=f"Frame index {NUM_FRAMES} is out of range"):
        video.click(NUM_FRAMES, 10, 10)
    with pytest.raises(ValueError, match="Frame index 9 is out of range"):
        video.view(9)
    with pytest.raises(ValueError, match="outside the 320x180 image"):
        video.click(0, 10, 181)
    with pytest.raises(ValueError, match="click labels must be 0"):
        video.click(0, 10, 10, label=2)
    with pytest.raises(ValueError, match="direction"):
        video.track(direction="sideways")

    hiera = tmp_path / "hiera"
    HieraConfig().save_pretrained(hiera)
    with pytest.raises(ValueError, match="not the kind needed here: the app needs a SAM 2 folder"):
        Models.from_pretrained(hiera)
    with pytest.raises(FileNotFoundError, match="No such model folder"):
        Models.from_pretrained(tmp_path / "nothing-here")


def test_sessions_are_separate_and_freed(app_models, app_clip):
    sessions = Sessions(app_models)
    first, second = sessions.get("tab-1"), sessions.get("tab-2")
    assert first is not second and sessions.get("tab-1") is first and len(sessions) == 2
    first.open_video(str(app_clip)).click(0, 100, 90)
    second.image.open(media("dog.jpg"))
    assert second.video is None and first.image.image is None
    folder = first.folder
    sessions.close("tab-1")
    assert not folder.exists() and sessions.ids() == ["tab-2"]
    sessions.close("tab-2")
    sessions.close("tab-2")  # closing twice is harmless
    assert len(sessions) == 0


def test_app_flags():
    parser = argparse.ArgumentParser()
    add_app_arguments(parser)
    args = parser.parse_args([])
    assert (args.model, args.host, args.port, args.device, args.quiet) == ("sam2.1_hiera_tiny", "127.0.0.1", None, None, False)
    args = parser.parse_args(["--model", "folder", "--host", "0.0.0.0", "--port", "8000", "--device", "cpu"])
    assert (args.model, args.host, args.port, args.device) == ("folder", "0.0.0.0", 8000, "cpu")
    with pytest.raises(ValueError, match="--port must be in 1..65535"):
        run_app(parser.parse_args(["--port", "70000"]))


def test_tracking_strategy_is_a_replayed_step(session, app_model_folder, tmp_path):
    """Tracking with SAMURAI in the app (the strategy of Track) is a step of its prompts file: `hiera-hf track
    --prompts` replays it into the same files; going back to SAM 2 is a step too. 8 frames: SAMURAI's memory differs
    from SAM 2's from frame 3 on (frames 0 and 1 never enter it), so its masks do too."""
    folder = tmp_path / "clip"
    folder.mkdir()
    clip = first_frames(folder, 8, VIDEO_SIZE)
    video = session.open_video(str(clip))
    one = video.add_object()
    video.click(0, *CLICKS_1[0], obj_id=one)
    assert list(video.track(0, "forward", strategy="samurai")) == list(range(8))
    assert video.session.strategy.name == "samurai" and video.session.strategy.kalman
    samurai = [video.labels(t) for t in range(8)]
    assert list(video.track(0, "forward", max_frames=2, strategy="sam2")) == [0, 1]
    exported = session.export_video()
    steps = json.loads(exported[2].read_text())["steps"]
    assert [step.get("strategy") for step in steps if "strategy" in step] == ["samurai", "sam2"]
    assert steps[1]["settings"]["stable_frames_threshold"] == 15
    shown = files_under(unzip_export(exported, tmp_path / "app"))
    out = tmp_path / "cli"
    argv = ["track", str(clip), "--model", str(app_model_folder), "--quiet", "--out", str(out)]
    assert cli_main([*argv, "--prompts", str(exported[2]), *EVERY_FORMAT]) == 0
    assert_same_tracking(shown, files_under(out))
    # SAM 2 alone gives other masks on these frames (so the replay above used the strategy).
    plain = session.open_video(str(clip))
    plain.click(0, *CLICKS_1[0], obj_id=plain.add_object())
    list(plain.track(0, "forward"))
    assert any(not np.array_equal(plain.labels(t), samurai[t]) for t in range(2, 8))
    # The strategy comes from the file: a --strategy beside --prompts is refused.
    assert cli_main([*argv[:-1], str(tmp_path / "other"), "--prompts", str(exported[2]), "--strategy", "samurai"]) == 1
