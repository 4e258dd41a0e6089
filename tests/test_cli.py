"""The `hiera-hf` command: `classify` (the README's main job) on real media, its errors, the offline message, the
subcommand listing, the flags every command shares (--model as folder / variant / Hub id, --quiet, --overwrite,
--device, --version), `track`'s prompts and formats, the drawing helpers, and the light import. `convert` is tested
with the converters (test_hiera_conversion.py, test_sam2_conversion.py); `segment` and `generate-masks` with SAM 2's
mask generation (test_sam2_mask_generation.py).
"""

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import av
import hiera
import numpy as np
import pytest
import torch
from PIL import Image
from sam2_helpers import media

from hiera_hf import (
    HieraConfig,
    HieraForImageClassification,
    HieraForVideoClassification,
    HieraImageProcessor,
    HieraModel,
    HieraVideoProcessor,
    save_for_hub,
)
from hiera_hf.cli import SUBCOMMANDS, main

DOG, GOAT = Path(media("dog.jpg")), Path(media("goat.mp4"))
LABELS = {i: name for i, name in enumerate(["cat", "dog", "goat", "truck", "tench, Tinca tinca", "block", "a", "b"])}


def labelled(preset: str, **kwargs) -> HieraConfig:
    return HieraConfig.from_preset(
        preset, depths=(1, 1, 1, 1), num_labels=len(LABELS), id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()}, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = HieraForImageClassification(labelled("hiera_tiny_224")).eval()
    folder = save_for_hub(model, tmp_path_factory.mktemp("cli") / "image", image_processor=HieraImageProcessor())
    return folder, model


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = HieraForVideoClassification(labelled("hiera_base_16x224", image_size=(4, 64, 64))).eval()
    processor = HieraVideoProcessor(num_frames=4, size={"height": 64, "width": 64})
    folder = save_for_hub(model, tmp_path_factory.mktemp("cli") / "video", video_processor=processor)
    return folder, model, processor


def printed_top(capsys) -> list[tuple[float, str]]:
    """`(probability, label)` of the lines printed by `classify --quiet`."""
    lines = capsys.readouterr().out.splitlines()
    return [(float(p), label) for p, label in (line.split("  ", 1) for line in lines)]


def assert_top(printed: list[tuple[float, str]], logits: torch.Tensor, k: int = 5) -> None:
    expected = logits.softmax(-1)[0].topk(k)
    assert [label for _, label in printed] == [LABELS[i] for i in expected.indices.tolist()]
    # printed with 4 decimals
    assert all(abs(p - e) <= 5e-5 for (p, _), e in zip(printed, expected.values.tolist()))


def test_classify_image_prints_the_top_5_of_a_direct_call(image_folder, capsys):
    folder, model = image_folder
    assert main(["classify", str(DOG), "--model", str(folder), "--quiet"]) == 0
    printed = printed_top(capsys)
    assert len(printed) == 5
    with Image.open(DOG) as image, torch.no_grad():
        logits = model(HieraImageProcessor()(image, return_tensors="pt").pixel_values).logits
    assert_top(printed, logits)

    assert main(["classify", str(DOG), "--model", str(folder), "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Top 2 labels for") and len(out) == 3


def test_classify_video(video_folder, capsys):
    folder, model, processor = video_folder
    assert main(["classify", str(GOAT), "--model", str(folder), "--quiet"]) == 0
    with torch.no_grad():
        logits = model(processor(str(GOAT), return_tensors="pt").pixel_values).logits
    assert_top(printed_top(capsys), logits)


def test_classify_errors(image_folder, video_folder, tmp_path, capsys):
    image_model, video_model = str(image_folder[0]), str(video_folder[0])
    HieraModel(labelled("hiera_tiny_224")).save_pretrained(tmp_path / "headless")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    capsys.readouterr()
    cases = [
        ([str(DOG), "--model", video_model], "is a video model; give it a video file"),
        ([str(GOAT), "--model", image_model], "is an image model; give it an image"),
        ([str(DOG), "--model", str(tmp_path / "headless")], "without a classification head"),
        ([str(tmp_path / "broken.jpg"), "--model", image_model], "Cannot read the image"),
        ([str(tmp_path / "broken.mp4"), "--model", video_model], "broken.mp4"),
        ([str(tmp_path / "missing.jpg"), "--model", image_model], "No such image or video"),
        ([str(DOG), "--model", image_model, "--top-k", "0"], "--top-k must be at least 1"),
        ([str(DOG), "--model", "hiera_nano"], "neither an existing folder nor a known Hiera variant"),
        ([str(DOG), "--model", str(tmp_path / "nope_dir")], "No such model folder"),
    ]
    for arguments, message in cases:
        assert main(["classify", *arguments]) == 1, arguments
        err = capsys.readouterr().err
        assert "hiera-hf classify: error: " in err and message in err, (arguments, err)
        assert "Traceback" not in err


def test_classify_offline_names_the_folder_alternative(tmp_path, monkeypatch, capsys, no_network):
    monkeypatch.setenv("HIERA_HF_CACHE", str(tmp_path / "cache"))
    assert main(["classify", str(DOG), "--model", "hiera_tiny_224", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "hiera_tiny_224 is not in the cache" in err and "--model DIR" in err
    drop_in = tmp_path / "cache" / "checkpoints" / "hiera_tiny_224.pth"  # the README's offline fix, named
    assert f"copy it to {drop_in} " in err and "--checkpoint" not in err  # classify has no --checkpoint
    assert no_network == ["https://dl.fbaipublicfiles.com/hiera/hiera_tiny_224.pth"]


def python(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (this one has long imported transformers)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)


def test_import_and_help_do_not_import_torch():
    run = python(
        "import sys, hiera_hf, hiera_hf.cli\n"
        "from hiera_hf import SAM2_PRESETS\n"
        "assert 'sam2.1_hiera_tiny' in SAM2_PRESETS\n"
        "heavy = {'torch', 'transformers', 'numpy', 'PIL'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "track = ['track', 'clip.mp4', '--model', 'x', '--out', 'o']\n"
        "for argv in (['--version'], [*track, '--point', '1,2'], [*track, '--format', 'png,gif'], ['--help']):\n"
        "    try:\n"
        "        hiera_hf.cli.main(argv)\n"
        "    except SystemExit as exit:\n"
        "        print('exit', exit.code)\n"
        "assert not {'torch', 'transformers'} & set(sys.modules)"
    )
    assert "hiera-hf 0.1.0" in run.stdout and "--point must be 4 or 5 comma-separated numbers" in run.stderr
    assert "unknown format 'gif'" in run.stderr  # checked by the output layer, torch-free
    assert run.stdout.count("exit 0") == 2 and run.stdout.count("exit 2") == 2 and "COMMAND" in run.stdout


@pytest.mark.parametrize(
    "imports",
    ["import hiera_hf\nimport transformers", "import transformers\nimport hiera_hf", "from hiera_hf import HieraConfig"],
    ids=["hiera_hf_first", "transformers_first", "a_class_first"],
)
def test_import_registers_the_auto_classes(image_folder, imports):
    """`import hiera_hf` then `AutoModel...from_pretrained(folder)` loads our classes, whatever was imported first."""
    folder = str(image_folder[0])
    code = (
        f"{imports}\nfrom transformers import AutoImageProcessor, AutoModelForImageClassification\n"
        f"model = AutoModelForImageClassification.from_pretrained({folder!r})\n"
        f"processor = AutoImageProcessor.from_pretrained({folder!r})\n"
        "print(type(model).__module__, type(processor).__module__)"
    )
    assert python(code).stdout.split() == ["hiera_hf.hiera.modeling_hiera", "hiera_hf.hiera.image_processing_hiera"]


def test_help_lists_every_subcommand():
    run = subprocess.run(
        [sys.executable, "-m", "hiera_hf.cli", "--help"], capture_output=True, text=True, timeout=300, check=True
    )
    assert set(SUBCOMMANDS) >= {"convert", "classify"}
    for name, (summary, _, _) in SUBCOMMANDS.items():
        assert name in run.stdout and summary in run.stdout


def test_model_as_hub_repo_id_cached_and_offline(image_folder, tmp_path, monkeypatch, capsys):
    """`--model owner/name`: the snapshot in huggingface_hub's cache when offline (conftest sets HF_HUB_OFFLINE),
    and a message naming the ways out when it is not cached."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read at import: patch it
    assert main(["classify", str(DOG), "--model", "someone/hiera-tiny-test", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "someone/hiera-tiny-test is not a local folder" in err and "not in the Hugging Face cache" in err
    assert "hf download someone/hiera-tiny-test" in err and "--model DIR" in err and "Traceback" not in err

    commit = "0123456789abcdef0123456789abcdef01234567"  # the layout huggingface_hub's cache has
    repo = tmp_path / "hub" / "models--someone--hiera-tiny-test"
    shutil.copytree(image_folder[0], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert main(["classify", str(DOG), "--model", "someone/hiera-tiny-test", "--quiet"]) == 0
    expected = capsys.readouterr().out
    assert main(["classify", str(DOG), "--model", str(image_folder[0]), "--quiet"]) == 0
    assert capsys.readouterr().out == expected and len(expected.splitlines()) == 5


def test_quiet_prints_only_results_and_device_is_checked(image_folder, capfd):
    folder = str(image_folder[0])
    assert main(["classify", str(DOG), "--model", folder, "--quiet", "--top-k", "1", "--device", "cpu"]) == 0
    out, err = capfd.readouterr()
    assert len(out.splitlines()) == 1 and err == ""  # no "Loading weights" bar
    assert main(["classify", str(DOG), "--model", folder, "--device", "gpu0"]) == 1
    assert "--device 'gpu0' is not a torch device" in capfd.readouterr().err


@pytest.fixture(scope="module")
def meta_tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("meta") / "hiera_tiny_224.pth"
    torch.save({"model_state": hiera.hiera_tiny_224().state_dict()}, path)
    return path


def test_convert_names_the_variant_a_checkpoint_matches(meta_tiny_checkpoint, tmp_path, capsys):
    argv = ["convert", "--checkpoint", str(meta_tiny_checkpoint), "--output", str(tmp_path / "out"), "--quiet"]
    assert main([*argv, "--variant", "hiera_small_224", "--no-verify"]) == 1
    err = capsys.readouterr().err
    assert "does not hold a hiera_small_224 but matches hiera_tiny_224: pass --variant hiera_tiny_224" in err
    assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    assert main([*argv, "--variant", "hiera_tiny_224"]) == 1
    assert f"{tmp_path / 'out'} exists; pass --overwrite to replace it" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# track: prompts, start frame, direction, formats
# ---------------------------------------------------------------------------------------------------------------

FRAMES, HEIGHT, WIDTH = 4, 48, 64


@pytest.fixture(scope="module")
def frames_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for t in range(FRAMES):
        frame = rng.integers(0, 60, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        frame[10:30, 8 + 4 * t : 28 + 4 * t] = 230  # a bright square moving right
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    return folder


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_track_mask_prompt_start_frame_direction_and_formats(sam2_folder, frames_folder, tmp_path):
    from pycocotools import mask as coco_mask

    square = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    square[10:30, 16:36] = 255
    Image.fromarray(square).save(tmp_path / "square.png")
    out = tmp_path / "out"
    argv = ["track", str(frames_folder), "--model", str(sam2_folder), "--out", str(out), "--quiet"]
    prompts = ["--mask", f"2,3,{tmp_path / 'square.png'}", "--point", "2,5,50,40"]
    assert main([*argv, *prompts, "--direction", "backward", "--format", "rle,objects,png,boxes,mp4"]) == 0
    names = [f"{t:05d}" for t in range(3)]  # from frame 2 (the first prompt) back to 0
    assert sorted(p.stem for p in (out / "masks").iterdir()) == names
    assert sorted(p.stem for p in (out / "rle").iterdir()) == names
    assert sorted(p.name for p in (out / "objects").iterdir()) == ["3", "5"]
    assert sorted(p.name for p in (out / "boxes").iterdir()) == ["3.txt", "5.txt"]
    for t, name in enumerate(names):
        records = json.loads((out / "rle" / f"{name}.json").read_text())
        assert [(r["id"], r["frame_idx"]) for r in records] == [(3, t), (5, t)]
        with Image.open(out / "masks" / f"{name}.png") as png:
            labels = np.asarray(png)
        for record in records:
            rle = {**record["segmentation"], "counts": record["segmentation"]["counts"].encode()}
            decoded = coco_mask.decode(rle).astype(bool)
            with Image.open(out / "objects" / str(record["id"]) / f"{name}.png") as png:
                assert np.array_equal(np.asarray(png) > 0, decoded)
            assert decoded.sum() == record["area"] and decoded.shape == (HEIGHT, WIDTH)
            assert np.array_equal(decoded, labels == record["id"])  # the label map's pixels are the object's
            box = (out / "boxes" / f"{record['id']}.txt").read_text().splitlines()[t]
            assert [int(v) for v in box.split(",")] == record["bbox"]
    with av.open(str(out / "overlay.mp4")) as container:  # the click is marked on its frame (2), in green
        overlay = [frame.to_ndarray(format="rgb24").astype(int) for frame in container.decode(video=0)]
    centre = [frame[38:43, 48:53].mean(axis=(0, 1)) for frame in overlay]
    assert centre[2][1] > 150 and centre[2][0] < 80 and centre[2][2] < 80, centre[2]
    assert all(abs(c[1] - c[0]) < 60 for c in centre[:2]), centre[:2]  # frames 0 and 1 carry no mark there
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {mode(p) for p in files if p.suffix in (".json", ".txt") or p.parent.parent.name == "objects"} == {0o644}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no scratch left behind

    # From a later start frame, forward only, RLE and boxes only: frames 1..3, nothing else written; line N of a
    # boxes file is frame N, 0,0,0,0 on frames not tracked (and where the object is absent).
    other = tmp_path / "other"
    argv = ["track", str(frames_folder), "--model", str(sam2_folder), "--out", str(other), "--quiet", *prompts]
    assert main([*argv, "--start-frame", "1", "--direction", "forward", "--format", "rle,boxes"]) == 0
    assert sorted(p.name for p in other.iterdir()) == ["boxes", "rle"]
    assert sorted(p.stem for p in (other / "rle").iterdir()) == ["00001", "00002", "00003"]
    for obj in (3, 5):
        lines = (other / "boxes" / f"{obj}.txt").read_text().splitlines()
        records = [json.loads((other / "rle" / f"{t:05d}.json").read_text())[obj == 5] for t in range(1, FRAMES)]
        assert lines == ["0,0,0,0"] + [",".join(map(str, r["bbox"])) for r in records]


def test_label_maps_boxes_and_records_of_the_output_layer():
    from pycocotools import mask as coco_mask

    from hiera_hf.sam2 import Sam2VideoFrameResult
    from hiera_hf.sam2.video_output import label_map, mask_box, mask_record

    logits = np.full((2, 4, 5), -1.0, dtype=np.float32)
    logits[0, 1:3, 1:4] = 2.0  # object 7
    logits[1, 2:4, 3:5] = 3.0  # object 3: the higher logit where they overlap
    expected = np.zeros((4, 5), dtype=np.uint8)
    expected[1:3, 1:4] = 7
    expected[2:4, 3:5] = 3
    for values in (logits, torch.from_numpy(logits)):  # ONNX Runtime's results are numpy, PyTorch's tensors
        labels = label_map(Sam2VideoFrameResult(0, [7, 3], values, None))
        assert labels.dtype == np.uint8 and np.array_equal(labels, expected)
    assert mask_box(labels == 7) == [1, 1, 3, 2] and mask_box(labels == 9) == [0, 0, 0, 0]
    record = mask_record(labels == 7, 7, frame_idx=4)
    assert list(record) == ["id", "frame_idx", "area", "bbox", "segmentation"] and record["area"] == 5
    rle = {**record["segmentation"], "counts": record["segmentation"]["counts"].encode()}
    assert np.array_equal(coco_mask.decode(rle).astype(bool), labels == 7)
    assert list(mask_record(labels == 3, 3, "cup")) == ["id", "name", "area", "bbox", "segmentation"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mask", "0,1"], "--mask must be FRAME,OBJ,FILE.png"),
        (["--mask", "0,1,missing.png"], "no such file missing.png"),
        (["--point", "0,1,5,5", "--format", "png,gif"], "unknown format 'gif'"),
        (["--point", "0,1,5,5", "--direction", "sideways"], "invalid choice: 'sideways'"),
        (["--point", "0,1,5,5", "--max-frames", "0"], "must be at least 1"),
    ],
)
def test_track_usage_errors(extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["track", "clip.mp4", "--model", "unused", "--out", str(tmp_path / "out"), *extra])
    assert exit.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_track_box_file_is_the_first_groundtruth_box(sam2_folder, frames_folder, tmp_path):
    """`--box-file` (a LaSOT / GOT-10k groundtruth.txt: x,y,w,h per line) prompts object 1 on frame 0 with the first
    box, exactly as the same `--box` does; then a file that is not boxes is refused by name."""
    (tmp_path / "groundtruth.txt").write_text("10,8,30,24\n12,9,30,24\n")
    argv = ["track", str(frames_folder), "--model", str(sam2_folder), "--quiet", "--format", "png,boxes"]
    assert main([*argv, "--out", str(tmp_path / "file"), "--box-file", str(tmp_path / "groundtruth.txt")]) == 0
    assert main([*argv, "--out", str(tmp_path / "flag"), "--box", "0,1,10,8,40,32"]) == 0
    for name in ["boxes/1.txt", *(f"masks/{t:05d}.png" for t in range(FRAMES))]:
        assert (tmp_path / "file" / name).read_bytes() == (tmp_path / "flag" / name).read_bytes(), name
    (tmp_path / "tabs.txt").write_text("10\t8\t30\t24\n")
    assert main([*argv, "--out", str(tmp_path / "tabs"), "--box-file", str(tmp_path / "tabs.txt")]) == 0
    assert (tmp_path / "tabs" / "boxes/1.txt").read_bytes() == (tmp_path / "flag" / "boxes/1.txt").read_bytes()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"10,8,30\n", "is not x,y,w,h"),
        (b"10,8,0,24\n", "width and height above 0"),
        (b"nan,8,3,24\n", "must be finite"),
        (b"\xff\xfe\x00\x01", "not a text file"),
        (b"", "is not x,y,w,h"),
    ],
)
def test_track_refuses_a_bad_box_file(content, message, frames_folder, tmp_path, capsys):
    (tmp_path / "groundtruth.txt").write_bytes(content)
    argv = ["track", str(frames_folder), "--model", "unused", "--out", str(tmp_path / "out")]
    assert main([*argv, "--box-file", str(tmp_path / "groundtruth.txt")]) == 1
    error = capsys.readouterr().err
    assert message in error and "groundtruth.txt" in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def test_track_mask_with_clicks_on_the_same_object_is_refused(frames_folder, tmp_path, capsys):
    Image.fromarray(np.full((HEIGHT, WIDTH), 255, dtype=np.uint8)).save(tmp_path / "m.png")
    argv = ["track", str(frames_folder), "--model", "unused", "--out", str(tmp_path / "out")]
    assert main([*argv, "--mask", f"0,1,{tmp_path / 'm.png'}", "--point", "0,1,5,5"]) == 1
    assert "give a --mask or clicks and a box, not both" in capsys.readouterr().err


def test_segment_and_generate_masks_refuse_existing_outputs_before_loading(tmp_path, capsys):
    (tmp_path / "mask.png").write_bytes(b"keep")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "masks.json").write_text("[]")
    model = str(tmp_path / "no_model_here")  # never loaded: the outputs are checked first
    assert main(["segment", str(DOG), "--model", model, "--point", "1,2", "--out", str(tmp_path / "mask.png")]) == 1
    assert "mask.png exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert main(["generate-masks", str(DOG), "--model", model, "--out", str(tmp_path / "out")]) == 1
    assert "masks.json exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert (tmp_path / "mask.png").read_bytes() == b"keep"
    assert main(["segment", str(tmp_path / "no.jpg"), "--model", model, "--point", "1,2", "--out", "x.png"]) == 1
    assert "No image file at" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Drawing helpers
# ---------------------------------------------------------------------------------------------------------------


def test_draw_masks_points_and_boxes():
    from hiera_hf.visualization import BACKGROUND, FOREGROUND, blend_labels, draw, palette

    image = np.full((40, 60, 3), 100, dtype=np.uint8)
    first, second = np.zeros((40, 60), dtype=bool), np.zeros((40, 60), dtype=bool)
    first[:20] = True
    second[10:30] = True
    drawn = np.asarray(draw(Image.fromarray(image), np.stack([first, second]), alpha=0.5))
    colours = palette()
    assert np.array_equal(drawn[0, 0], np.rint(50 + colours[1] / 2).astype(np.uint8))
    assert np.array_equal(drawn[15, 0], np.rint(50 + colours[2] / 2).astype(np.uint8))  # later masks on top
    assert np.array_equal(drawn[35, 0], image[35, 0])
    marked = np.asarray(draw(image, points=[[10, 10], [40, 30]], labels=[1, 0], boxes=[[2, 2, 57, 37]]))
    assert tuple(marked[10, 10]) == FOREGROUND and tuple(marked[30, 40]) == BACKGROUND
    assert tuple(marked[2, 30]) == tuple(colours[1]) and tuple(marked[20, 20]) == (100, 100, 100)
    labels = np.zeros((40, 60), dtype=np.uint8)
    labels[:20] = 1
    assert np.array_equal(blend_labels(image, labels), np.asarray(draw(image, first)))
    with pytest.raises(ValueError, match="one label per point"):
        draw(image, points=[[1, 1]], labels=[1, 0])
    with pytest.raises(ValueError, match="must match the image"):
        blend_labels(image, labels[:10])


def prompts_file(path: Path, steps, **fields) -> Path:
    """A prompts file (the app's prompts.json) of `steps` for the frames folder, `fields` replacing the others."""
    data = {"hiera_hf_prompts": 1, "video": {"width": WIDTH, "height": HEIGHT, "frames": FRAMES}, "steps": steps}
    path.write_text(json.dumps({**data, **fields}))
    return path


CLICK_STEP = {"frame": 0, "object": 1, "click": [20.0, 20.0, 1]}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON: Expecting property name"),
        ("[1, 2]", 'is not a hiera-hf prompts file (a JSON object with "hiera_hf_prompts": 1)'),
        ({"video": {"width": 64}}, '"video" must be {"width": W, "height": H, "frames": N}'),
        ({"steps": []}, '"steps" must be a list of one or more steps'),
        ({"names": {"x": "cup"}}, "an object id of names must be an integer, got 'x'"),
        ({"steps": [{"frame": 0, "object": 1, "tap": [1, 2]}]}, "step 1 ({\"frame\": 0, \"object\": 1, \"tap\""),
        ({"steps": [CLICK_STEP, {"frame": 0, "object": 300, "box": [1, 2, 3, 4]}]}, "step 2 ("),
        ({"steps": [{**CLICK_STEP, "click": [1, 2, 7]}]}, "click label"),
        ({"steps": [{"frame": 0, "object": 1, "box": [5, 5, 5, 9]}]}, "x0 < x1"),
        ({"steps": [{"track": "sideways", "frame": 0, "max_frames": None, "frames": 1}]}, "direction must be one of"),
    ],
)
def test_track_refuses_a_bad_prompts_file_in_one_line(content, message, frames_folder, tmp_path, capsys):
    path = tmp_path / "prompts.json"
    if isinstance(content, str):
        path.write_text(content)
    else:
        fields = dict(content)
        prompts_file(path, fields.pop("steps", [CLICK_STEP]), **fields)
    argv = ["track", str(frames_folder), "--model", "unused", "--out", str(tmp_path / "out")]
    assert main([*argv, "--prompts", str(path)]) == 1  # checked before the model is looked for
    error = capsys.readouterr().err
    assert message in error and "prompts.json" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_track_prompts_goes_alone_and_fits_its_video(sam2_folder, frames_folder, tmp_path, capsys):
    argv = ["track", str(frames_folder), "--model", str(sam2_folder), "--quiet", "--out", str(tmp_path / "out")]
    path = prompts_file(tmp_path / "prompts.json", [CLICK_STEP])
    assert main([*argv, "--prompts", str(path), "--point", "0,1,5,5"]) == 1
    assert "--prompts replays a session of the app, its tracking included: give no --point" in capsys.readouterr().err
    other = prompts_file(tmp_path / "other.json", [CLICK_STEP], video={"width": 320, "height": 180, "frames": 3})
    assert main([*argv, "--prompts", str(other)]) == 1
    assert "other.json was made on a video of 320x180 pixels and 3 frames" in capsys.readouterr().err
    outside = prompts_file(tmp_path / "outside.json", [{**CLICK_STEP, "click": [99.0, 5.0, 1]}])
    assert main([*argv, "--prompts", str(outside)]) == 1
    error = capsys.readouterr().err
    assert "outside.json: step 1 (" in error and "outside" in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()
    # a click only: the frame it is on, no tracking
    assert main([*argv, "--prompts", str(path), "--format", "png"]) == 0
    assert [p.name for p in (tmp_path / "out" / "masks").iterdir()] == ["00000.png"]
