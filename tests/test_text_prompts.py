"""Text prompts (`hiera_hf.sam2.text_prompts`): phrases, tiny random Grounding DINO and OWLv2 folders loaded as
transformers loads them, the offline message, matching and naming pinned with a stand-in detector (on a stand-in
session whose masks are the prompted boxes, and on a real SAM 2 session), and `segment`/`track --text` end to end."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from detector_helpers import FixedDetector, grounding_dino_folder, owlv2_folder
from PIL import Image

from hiera_hf.cli import main
from hiera_hf.sam2.text_prompts import (
    Detections,
    TextDetector,
    TextTracker,
    box_iou,
    mask_boxes,
    parse_phrases,
    unmatched,
)
from hiera_hf.sam2.video_tracking import Sam2VideoFrameResult

FRAMES, HEIGHT, WIDTH = 10, 48, 64


@pytest.fixture(scope="module")
def detector_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("detectors")
    return {"grounding-dino": grounding_dino_folder(root / "gdino"), "owlv2": owlv2_folder(root / "owlv2")}


def marked_frame(t: int) -> np.ndarray:
    """A `(HEIGHT, WIDTH, 3)` frame: noise, a bright square moving right, and `t` as the top-left red value (what
    `FixedDetector` reads)."""
    frame = np.random.default_rng(t).integers(0, 60, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frame[10:30, 8 + 2 * t : 28 + 2 * t] = 230
    frame[0, 0, 0] = t
    return frame


@pytest.fixture(scope="module")
def marked_frames(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("marked")
    for t in range(FRAMES):
        Image.fromarray(marked_frame(t)).save(folder / f"{t:05d}.png")
    return folder


def test_phrases_are_split_on_periods():
    assert parse_phrases("a dog. a cat.") == ["a dog", "a cat"]
    assert parse_phrases("  a   red mug .. a dog. a red mug") == ["a red mug", "a dog"]  # blanks and repeats go
    assert parse_phrases("person") == ["person"]
    assert parse_phrases(["a dog", " a  cat ", "a dog"]) == ["a dog", "a cat"]
    for text in ("", " . . ", None, [], ["", " "], ["a dog", 3]):
        with pytest.raises(ValueError, match="names no object|must be phrases"):
            parse_phrases(text)


def test_box_iou_mask_boxes_and_unmatched():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], np.float32)
    assert np.allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, 0.0]])
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 2:4, 1:6] = True
    assert mask_boxes(masks).tolist() == [[1, 2, 6, 4], [0, 0, 0, 0]]  # pixels 1..5 span x in [1, 6)
    assert mask_boxes(torch.from_numpy(masks)).tolist() == mask_boxes(masks).tolist()
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 6], [40, 40, 50, 50]], np.float32)
    found = Detections(boxes, np.array([0.9, 0.8, 0.7, 0.6], np.float32), ["a", "b", "c", "d"])
    # IoU with the tracked box [0, 0, 10, 10]: 1, 0.5 (matched: the threshold is inclusive), 0.6, 0
    assert unmatched(found, a, 0.5).labels == ["d"]
    assert unmatched(found, a, 0.55).labels == ["b", "d"]
    # without tracked boxes, a detection matching a better one is dropped: "b" and "c" overlap "a" by 0.5 and 0.6,
    # "c" overlaps "b" by 5/6
    assert unmatched(found, np.zeros((0, 4)), 0.5).labels == ["a", "d"]
    assert unmatched(found, np.zeros((0, 4)), 0.65).labels == ["a", "b", "d"]
    assert unmatched(found, np.zeros((0, 4)), 0.9).labels == ["a", "b", "c", "d"]


@pytest.mark.parametrize("kind", ["grounding-dino", "owlv2"])
def test_tiny_detectors_load_from_their_folder_as_the_pipeline_does(kind, detector_folders):
    from transformers import pipeline

    folder = detector_folders[kind]
    reference = pipeline("zero-shot-object-detection", model=str(folder))
    image = Image.fromarray(marked_frame(3))
    for threshold in (None, 0.0, 0.5):
        detector = TextDetector(folder, threshold)
        kwargs = {} if threshold is None else {"threshold": threshold}
        expected = reference(image, candidate_labels=["a dog", "a cat"], **kwargs)
        found = detector(image, "a dog. a cat.")
        kept = [
            item for item in expected
            if min(item["box"]["xmax"], WIDTH) > max(item["box"]["xmin"], 0)
            and min(item["box"]["ymax"], HEIGHT) > max(item["box"]["ymin"], 0)
        ]  # fmt: skip
        assert len(found) == len(kept) and found.labels == [item["label"] for item in kept]
        assert np.allclose(found.scores, [item["score"] for item in kept])
        assert np.all(np.diff(found.scores) <= 0)  # best first
        for box, item in zip(found.boxes, kept):
            b = item["box"]
            assert box.tolist() == [
                np.clip(b["xmin"], 0, WIDTH), np.clip(b["ymin"], 0, HEIGHT), np.clip(b["xmax"], 0, WIDTH),
                np.clip(b["ymax"], 0, HEIGHT),
            ]  # fmt: skip
        assert all(score >= (0.1 if threshold is None else threshold) for score in found.scores)
    assert len(TextDetector(folder, 0.0)(image, ["a dog"])) > 0  # random weights still find something


def test_detector_id_from_the_cache_offline_or_what_to_do(detector_folders, sam2_folder, tmp_path, monkeypatch,
                                                          capsys):
    """A Hub id loads from huggingface_hub's cache offline (conftest sets HF_HUB_OFFLINE); one not cached gets a
    one-line message naming the ways out."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read at import: patch it
    commit = "0123456789abcdef0123456789abcdef01234567"  # the layout huggingface_hub's cache has
    repo = tmp_path / "hub" / "models--someone--tiny-owlv2"
    shutil.copytree(detector_folders["owlv2"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    image = marked_frame(2)
    cached = TextDetector("someone/tiny-owlv2", 0.0)(image, "a dog")
    direct = TextDetector(detector_folders["owlv2"], 0.0)(image, "a dog")
    assert len(cached) > 0 and np.array_equal(cached.boxes, direct.boxes) and cached.labels == direct.labels
    with pytest.raises(ConnectionError, match="not in the Hugging Face cache") as error:
        TextDetector("someone/no-such-detector")
    assert "hf download someone/no-such-detector" in str(error.value) and "--detector DIR" in str(error.value)
    with pytest.raises(FileNotFoundError, match="No such detector folder"):
        TextDetector(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="is not a model folder"):
        TextDetector(tmp_path)
    with pytest.raises(ValueError, match="holds a 'hiera_hf_sam2' model, not a zero-shot-object-detection one"):
        TextDetector(sam2_folder)  # refused before anything is built
    image = tmp_path / "image.png"
    Image.fromarray(marked_frame(0)).save(image)
    argv = ["segment", str(image), "--model", str(tmp_path), "--out", str(tmp_path / "m.png"), "--quiet"]
    capsys.readouterr()
    assert main([*argv, "--text", "a dog", "--detector", "someone/no-such-detector"]) == 1
    err = capsys.readouterr().err
    assert "error: The detector someone/no-such-detector is not a local folder" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--text", "a dog"], "--text needs --detector"),
        (["--detector", "x"], "--detector goes with --text"),
        (["--threshold", "0.3"], "--threshold goes with --text"),
        (["--text", "a dog", "--detector", "x", "--box", "1,1,5,5"], "Give --text or prompts"),
        (["--text", " . ", "--detector", "x"], "names no object"),
    ],
)
def test_segment_text_usage_errors(extra, message, tmp_path, capsys):
    argv = ["segment", "image.png", "--model", "m", "--out", str(tmp_path / "m.png"), "--quiet", *extra]
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_track_text_usage_errors(tmp_path, capsys):
    argv = ["track", "video.mp4", "--model", "m", "--out", str(tmp_path / "out"), "--quiet"]
    assert main([*argv, "--detect-every", "2", "--point", "0,1,3,3"]) == 1
    assert "--detect-every goes with --text" in capsys.readouterr().err
    assert main([*argv, "--text", "a dog", "--detector", "x", "--point", "0,1,3,3"]) == 1
    assert "Give --text or prompts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--text", "a dog", "--detector", "x", "--detect-every", "0"])


# The stand-in session: each object's mask on every frame is the box it was prompted with ---------------------


class BoxSession:
    """What `TextTracker` uses of a `VideoSessionBase`, with masks that are the objects' prompted boxes (on every
    frame from the one prompted, forward and backward): matching is exact. `calls` lists the propagations."""

    num_frames = FRAMES
    video_height, video_width = HEIGHT, WIDTH

    def __init__(self):
        self.boxes: dict[int, tuple[int, list[float]]] = {}  # object -> (frame prompted, box)
        self.calls: list[tuple[int, bool, int | None]] = []

    @property
    def object_ids(self) -> list[int]:
        return list(self.boxes)

    def frame(self, frame_idx: int) -> np.ndarray:
        return marked_frame(frame_idx)

    def add_box(self, frame_idx: int, obj_id: int, box) -> Sam2VideoFrameResult:
        self.boxes[obj_id] = (frame_idx, list(box))
        return self.result(frame_idx)

    def result(self, frame_idx: int) -> Sam2VideoFrameResult:
        logits = np.full((len(self.boxes), HEIGHT, WIDTH), -1.0, np.float32)
        for index, (_, (x0, y0, x1, y1)) in enumerate(self.boxes.values()):
            logits[index, int(y0) : int(y1), int(x0) : int(x1)] = 1.0
        return Sam2VideoFrameResult(frame_idx, self.object_ids, logits, np.zeros(len(self.boxes), np.float32))

    def propagate(self, start_frame, reverse=False, max_frames=None):
        self.calls.append((start_frame, reverse, max_frames))
        step, last = (-1, 0) if reverse else (1, FRAMES - 1)
        end = last if max_frames is None else start_frame + step * (max_frames - 1)
        end = max(end, 0) if reverse else min(end, last)
        return (self.result(t) for t in range(start_frame, end + step, step))


DOG, CAT = (4, 4, 20, 20), (30, 4, 46, 20)
HALF_DOG = (4, 4, 20, 12)  # IoU 0.5 with DOG: the same object
NEAR_CAT = (30, 4, 46, 16)  # IoU 0.75 with CAT
MUG, MUG_2 = (4, 30, 20, 46), (40, 30, 60, 46)


def fixed_detector() -> FixedDetector:
    return FixedDetector(
        {
            0: [("a dog", DOG, 0.9), ("a cat", CAT, 0.8), ("a dog", NEAR_CAT, 0.7), ("a cat", MUG, 0.05)],
            3: [("a dog", HALF_DOG, 0.9), ("a red mug", MUG, 0.6), ("a red mug", NEAR_CAT, 0.5)],
            6: [("a dog", DOG, 0.9), ("a cat", CAT, 0.9), ("a red mug", MUG, 0.9)],
            9: [("a red mug", MUG_2, 0.3)],
        }
    )


def test_tracker_adds_named_objects_and_redetects_only_new_ones():
    session, detector = BoxSession(), fixed_detector()
    tracker = TextTracker(session, TextDetector(detector), "a dog. a cat. a red mug.", detect_every=3)
    assert tracker.detect(0) is not None
    # best first; NEAR_CAT matches CAT (0.75); MUG scores below the default threshold 0.1
    assert session.boxes == {1: (0, list(DOG)), 2: (0, list(CAT))}
    results = list(tracker.propagate(0, "forward"))
    assert [r.frame_idx for r in results] == list(range(FRAMES))  # every frame once
    assert detector.frames == [0, 3, 6, 9]
    # frame 3: HALF_DOG matches the dog (IoU 0.5), MUG is new; frame 6: all matched; frame 9: MUG_2 is new
    assert session.boxes == {1: (0, list(DOG)), 2: (0, list(CAT)), 3: (3, list(MUG)), 4: (9, list(MUG_2))}
    assert tracker.names == {1: "a dog", 2: "a cat", 3: "a red mug", 4: "a red mug"}
    assert [r.object_ids for r in results] == [[1, 2]] * 3 + [[1, 2, 3]] * 6 + [[1, 2, 3, 4]]
    # tracking went on from the frame after each addition; the last frame's addition needs no more
    assert session.calls == [(0, False, None), (4, False, None)]


def test_tracker_max_frames_both_directions_and_objects_already_there():
    session, detector = BoxSession(), fixed_detector()
    session.add_box(0, 1, MUG)  # an object the user prompted: kept, never renamed, its id never reused
    tracker = TextTracker(session, TextDetector(detector), ["a cat", "a red mug"], detect_every=3)
    assert tracker.detect(0, session.result(0)) is not None
    assert tracker.names == {2: "a cat"} and session.object_ids == [1, 2]
    assert [r.frame_idx for r in tracker.propagate(0, "forward", max_frames=5)] == [0, 1, 2, 3, 4]
    assert session.calls == [(0, False, 5)]  # frame 3 brought nothing new (MUG and NEAR_CAT are tracked)

    session, detector = BoxSession(), fixed_detector()
    tracker = TextTracker(session, TextDetector(detector), "a dog. a cat. a red mug.", detect_every=3)
    tracker.detect(6)
    assert tracker.names == {1: "a dog", 2: "a cat", 3: "a red mug"}
    frames = [r.frame_idx for r in tracker.propagate(6, "both", max_frames=4)]
    assert frames == [6, 7, 8, 9, 6, 5, 4, 3]  # forward then backward, start frame once per pass
    assert detector.frames == [6, 9, 3]  # 3 frames away from the start, each way
    assert tracker.names[4] == "a red mug" and session.boxes[4] == (9, list(MUG_2))
    assert session.calls == [(6, False, 4), (6, True, 4)]  # the addition on frame 9, the pass's last, ends it
    with pytest.raises(ValueError, match="detect_every must be at least 1"):
        TextTracker(session, TextDetector(detector), "a dog", detect_every=0)


# A real SAM 2 session ------------------------------------------------------------------------------------------


def test_objects_added_mid_video_leave_the_tracked_ones_unchanged(sam2_folder, marked_frames):
    """An object added on frame 2 of a real session (each detection is new with match_iou 1) is tracked from there,
    named, while object 1's masks stay those of a run without it."""
    from hiera_hf import Sam2VideoModel, Sam2VideoSession

    model = Sam2VideoModel.from_pretrained(sam2_folder)
    logits = {}
    for boxes in ({0: [("a dog", DOG, 0.9)]}, {0: [("a dog", DOG, 0.9)], 2: [("a cat", CAT, 0.9)]}):
        with Sam2VideoSession(model, marked_frames, progress=False) as session:
            tracker = TextTracker(session, TextDetector(FixedDetector(boxes)), "a dog. a cat.", 2, match_iou=1.0)
            tracker.detect(0)
            results = list(tracker.propagate(0, "forward", max_frames=5))
        assert [r.frame_idx for r in results] == [0, 1, 2, 3, 4]
        logits[len(tracker.names)] = [r.mask_logits for r in results]
    assert tracker.names == {1: "a dog", 2: "a cat"}
    assert [len(frame) for frame in logits[2]] == [1, 1, 2, 2, 2]
    for alone, joined in zip(logits[1], logits[2]):
        torch.testing.assert_close(joined[0], alone[0], rtol=0, atol=1e-4)


def test_segment_text_writes_named_records(sam2_folder, detector_folders, marked_frames, tmp_path):
    from pycocotools import mask as coco_mask

    from hiera_hf import Sam2ImageProcessor, Sam2Model

    image = marked_frames / "00003.png"
    out = tmp_path / "found.png"
    argv = ["segment", str(image), "--model", str(sam2_folder), "--out", str(out), "--quiet", "--text", "a dog."]
    argv += ["--mask-threshold", "-2", "--max-hole-area", "4"]
    assert main([*argv, "--detector", str(detector_folders["grounding-dino"]), "--threshold", "0.3"]) == 0
    records = json.loads(out.with_suffix(".json").read_text())
    detections = TextDetector(detector_folders["grounding-dino"], 0.3)(Image.open(image), "a dog")
    assert len(records) == len(detections) > 0
    model = Sam2Model.from_pretrained(sam2_folder).eval()
    processor = Sam2ImageProcessor(size={"height": 128, "width": 128})
    inputs = processor(np.asarray(Image.open(image)), input_boxes=[detections.boxes.tolist()])
    with torch.inference_mode():
        pred = model(**{k: v for k, v in inputs.items() if k != "original_sizes"}, multimask_output=False)
    expected = processor.post_process_masks(pred.pred_masks, inputs["original_sizes"], -2, 4)[0][:, 0].numpy()
    assert expected.any()
    with Image.open(out) as png:
        labels = np.asarray(png)
    for index, record in enumerate(records):
        assert record["id"] == index + 1 and record["name"] == "a dog"
        assert record["box"] == detections.boxes[index].tolist()
        assert record["score"] == pytest.approx(detections.scores[index])
        rle = {**record["segmentation"], "counts": record["segmentation"]["counts"].encode()}
        assert np.array_equal(coco_mask.decode(rle).astype(bool), expected[index])
        assert record["area"] == expected[index].sum()
        assert np.array_equal(labels == record["id"], expected[index] & ~np.isin(labels, range(1, index + 1)))
    assert out.with_name("found_overlay.png").is_file()


def test_redetection_adds_what_matches_no_tracked_mask(app_model_folder, marked_frames):
    """On a real session (objects kept present: their masks cover most of the frame), re-detecting every 3 frames:
    on each detection frame the objects added are exactly the detections whose box matches no tracked object's mask
    box there (the frame's result holds the tracked objects' masks as they were matched against)."""
    from hiera_hf import Sam2VideoModel, Sam2VideoSession

    frame_box = (0, 0, WIDTH, HEIGHT)
    detector = FixedDetector(
        {
            0: [("a dog", DOG, 0.9)],
            3: [("a dog", frame_box, 0.9), ("a cat", CAT, 0.8)],
            6: [("a dog", frame_box, 0.9), ("a cat", frame_box, 0.8), ("a cat", MUG, 0.7)],
        }
    )
    model = Sam2VideoModel.from_pretrained(app_model_folder)
    with Sam2VideoSession(model, marked_frames, progress=False) as session:
        tracker = TextTracker(session, TextDetector(detector), "a dog. a cat.", detect_every=3)
        tracker.detect(0)
        results = list(tracker.propagate(0, "forward", max_frames=7))
    assert detector.frames == [0, 3, 6] and [r.frame_idx for r in results] == list(range(7))
    known, matched = [1], 0
    for result in results:
        assert result.object_ids[: len(known)] == known
        new = result.object_ids[len(known) :]
        expected = []
        if result.frame_idx in (3, 6):
            detections = TextDetector(FixedDetector(detector.boxes))(marked_frame(result.frame_idx), "a dog. a cat.")
            tracked = mask_boxes(result.masks[: len(known)])
            expected = unmatched(detections, tracked).labels
            matched += len(detections) - len(expected)
        assert [tracker.names[i] for i in new] == expected
        assert new == list(range(len(known) + 1, len(known) + len(new) + 1))
        known += new
    assert tracker.names[1] == "a dog" and len(known) > 1 and matched > 0  # both branches: added and matched


@pytest.mark.parametrize("kind", ["grounding-dino", "owlv2"])
def test_track_text_end_to_end(kind, sam2_folder, detector_folders, marked_frames, tmp_path):
    out = tmp_path / "out"
    folder = detector_folders[kind]
    argv = ["track", str(marked_frames), "--model", str(sam2_folder), "--out", str(out), "--quiet"]
    argv += ["--text", "a dog. a cat.", "--detector", str(folder), "--detect-every", "3", "--threshold", "0.2"]
    assert main([*argv, "--max-frames", "7"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["masks", "overlay.mp4", "rle"]  # rle: the names
    assert sorted(p.stem for p in (out / "masks").iterdir()) == [f"{t:05d}" for t in range(7)]
    records = [json.loads((out / "rle" / f"{t:05d}.json").read_text()) for t in range(7)]
    first = unmatched(TextDetector(folder, 0.2)(marked_frame(0), "a dog. a cat."), np.zeros((0, 4)))
    assert [(r["id"], r["name"]) for r in records[0]] == [(i + 1, name) for i, name in enumerate(first.labels)]
    names = {}
    for t, frame_records in enumerate(records):
        assert [r["frame_idx"] for r in frame_records] == [t] * len(frame_records)
        ids = [r["id"] for r in frame_records]
        assert ids[: len(names)] == list(names) and ids == list(range(1, len(ids) + 1))  # none lost, new ones after
        assert t % 3 == 0 or len(ids) == len(names)  # objects are added on detection frames only
        for record in frame_records:
            assert names.setdefault(record["id"], record["name"]) == record["name"]  # never renamed
    assert set(names.values()) <= {"a dog", "a cat"}


# The app's "Find" boxes ------------------------------------------------------------------------------------------


def test_app_find_adds_named_objects_on_the_image_and_a_video_frame(app_model_folder, marked_frames, tmp_path):
    from hiera_hf.app import ImageState, Models, VideoState
    from hiera_hf.app.find import find_in_image, find_in_video

    models = Models.from_pretrained(app_model_folder, device="cpu")
    detector = TextDetector(fixed_detector())
    image = ImageState(models)
    image.open(marked_frame(0))
    with pytest.raises(ValueError, match="hiera-hf app --detector"):
        find_in_image(image, None, "a dog")
    assert find_in_image(image, detector, "a dog. a cat.") == [1, 2]  # NEAR_CAT matches the cat: not added
    assert image.objects.names == {1: "a dog", 2: "a cat"}
    assert [image._prompts[i].box for i in (1, 2)] == [list(DOG), list(CAT)]
    assert all(image.mask(i) is not None for i in (1, 2))
    with pytest.raises(ValueError, match="Found nothing new for 'a red mug'"):
        find_in_image(image, detector, "a red mug")

    video = VideoState(models, marked_frames, tmp_path / "video")
    try:
        assert find_in_video(video, 3, detector, "a red mug. a dog.") == [1, 2, 3]
        assert video.objects.names == {1: "a dog", 2: "a red mug", 3: "a red mug"}
        boxes = [video.prompts[3, i].box for i in (1, 2, 3)]
        assert boxes == [list(HALF_DOG), list(MUG), list(NEAR_CAT)]
        assert set(np.unique(video.labels(3))) <= {0, 1, 2, 3} and video.labels(3).any()
        assert list(video.track(3, "forward", 2)) == [3, 4]
    finally:
        video.close()


def test_app_find_boxes_report_what_they_added(app_model_folder, marked_frames):
    """The "Find" handlers of both tabs (`ui`), called as Gradio calls them: the objects added, named, in the
    message; without a detector, the way to give one."""
    from types import SimpleNamespace

    from hiera_hf.app import Models, build_app

    models = Models.from_pretrained(app_model_folder, device="cpu")
    assert models.detector is None

    def handlers(blocks) -> list:
        return [f.fn for f in blocks.fns.values() if getattr(f.fn, "__name__", "") == "find_objects"]

    request = SimpleNamespace(session_hash="tab")
    blocks = build_app(models)
    blocks.sessions.get("tab").image.open(marked_frame(0))
    image_find, video_find = handlers(blocks)
    assert "hiera-hf app --detector" in next(v for v in image_find("a dog", request).values() if isinstance(v, str))

    blocks = build_app(models, detector=fixed_detector(), threshold=0.55)
    assert isinstance(models.detector, TextDetector) and models.detector.threshold == 0.55
    session = blocks.sessions.get("tab")
    session.image.open(marked_frame(0))
    session.open_video(marked_frames)
    image_find, video_find = handlers(blocks)
    messages = [v for v in image_find("a dog. a cat.", request).values() if isinstance(v, str)]
    assert messages == ["Found object 1 (a dog), object 2 (a cat)"]
    messages = [v for v in video_find(3, "a red mug", request).values() if isinstance(v, str)]
    assert messages == ["Found object 1 (a red mug) on frame 3"]  # MUG scores 0.6, NEAR_CAT 0.5: below 0.55
    blocks.sessions.close("tab")


def test_tracking_output_takes_objects_added_during_tracking(tmp_path):
    from hiera_hf.sam2.video_output import write_tracking

    ids = [1]
    labels = np.zeros((2, 6, 8), np.uint8)
    labels[0, 1:3, 1:4] = 1
    labels[1, 1:3, 1:4], labels[1, 4:6, 5:8] = 1, 2

    def frames():
        for t in range(2):
            if t == 1:
                ids.append(2)  # object 2 appears on frame 1
            yield t, labels[t]

    names = {1: "a dog", 2: "a cat"}
    order = write_tracking(tmp_path, ("rle", "boxes"), frames(), lambda: ids, None, names=names)
    assert order == [0, 1]
    records = [json.loads((tmp_path / "rle" / f"{t:05d}.json").read_text()) for t in range(2)]
    assert [[(r["id"], r["name"], r["bbox"]) for r in frame] for frame in records] == [
        [(1, "a dog", [1, 1, 3, 2])],
        [(1, "a dog", [1, 1, 3, 2]), (2, "a cat", [5, 4, 3, 2])],
    ]
    assert (tmp_path / "boxes" / "1.txt").read_text() == "1,1,3,2\n1,1,3,2\n"
    assert (tmp_path / "boxes" / "2.txt").read_text() == "0,0,0,0\n5,4,3,2\n"
