"""Hostile and careless inputs (issue 11): every case ends in a clear error or a correct answer, never a traceback
for a user's mistake, a silent wrong answer, debris, or a deleted input.

The command-line cases are one table: arguments, expected exit status (2: refused while parsing the flags, 1: a
one-line `error:`), a fragment of the message, and the paths that must not exist afterwards. They run
`hiera_hf.cli.main` in-process on a random-weight SAM 2 tiny folder (128 px input) and a tiny Hiera folder.
The Python API and the folder writer have their own tables below.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import wave
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from sam2_helpers import media, write_mp4

from hiera_hf import (
    HieraConfig,
    HieraForImageClassification,
    HieraImageProcessor,
    Sam2Config,
    Sam2ImageProcessor,
    Sam2VideoModel,
    Sam2VideoSession,
    save_for_hub,
)
from hiera_hf.cli import main
from hiera_hf.image_utils import open_image
from hiera_hf.io_utils import atomic_write, remove_stale_staging, staged_folder
from hiera_hf.video_io import PyAVFrames, open_video

SIZE, HEIGHT, WIDTH, FRAMES = 128, 96, 128, 4


def _frames(count: int = FRAMES, height: int = HEIGHT, width: int = WIDTH) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((height, width, 3)) * 200 + 20).astype(np.uint8) for _ in range(count)]


def _write_mp4(path: Path, count: int, faststart: bool = False) -> Path:
    return write_mp4(path, _frames(count), {"movflags": "faststart"} if faststart else None)


def _copy_folder(source: Path, target: Path) -> Path:
    """A copy of a model folder whose weights are a link (cheap), for damaging its config."""
    target.mkdir()
    for entry in source.iterdir():
        (target / entry.name).symlink_to(entry) if entry.suffix == ".safetensors" else shutil.copy(entry, target)
    return target


class _Hostile:
    """Unpickles as a call of `os.system("true")`."""

    def __reduce__(self):
        return os.system, ("true",)


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> SimpleNamespace:
    """Every input the cases use, built once: model folders (good and damaged), images, videos, checkpoints."""
    root = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    config = Sam2Config.from_preset("sam2.1_hiera_tiny", image_size=SIZE, num_maskmem=3, max_obj_ptrs_in_encoder=4)
    sam = root / "sam"
    Sam2VideoModel(config).eval().save_pretrained(sam)
    hiera = save_for_hub(
        HieraForImageClassification(HieraConfig.from_preset("hiera_tiny_224", depths=(1, 1, 1, 1))).eval(),
        root / "hiera",
        image_processor=HieraImageProcessor(),
    )
    p = SimpleNamespace(root=root, sam=sam, hiera=hiera, dog=media("dog.jpg"))

    p.no_json = _copy_folder(sam, root / "no_json")
    (p.no_json / "config.json").write_text('{"model_type": "hiera_hf_sam2", ')
    p.list_json = _copy_folder(sam, root / "list_json")
    (p.list_json / "config.json").write_text("[1, 2]")
    p.tampered = _copy_folder(sam, root / "tampered")
    tampered = json.loads((sam / "config.json").read_text())
    tampered["decoder_mlp_dim"] = 1024  # the weights have 2048
    (p.tampered / "config.json").write_text(json.dumps(tampered))
    p.truncated_weights = root / "truncated_weights"
    p.truncated_weights.mkdir()
    shutil.copy(sam / "config.json", p.truncated_weights)
    with open(sam / "model.safetensors", "rb") as source:
        (p.truncated_weights / "model.safetensors").write_bytes(source.read(1 << 20))
    p.pickled = root / "pickled"
    p.pickled.mkdir()
    shutil.copy(sam / "config.json", p.pickled)
    torch.save({"w": torch.zeros(1)}, p.pickled / "pytorch_model.bin")
    p.no_config = root / "no_config"
    p.no_config.mkdir()
    weights = load_file(sam / "model.safetensors")
    first = next(iter(weights))
    for name, change in (("nan_weights", lambda t: t.index_fill(0, torch.tensor([0]), float("nan"))),
                         ("int8_weights", lambda t: t.to(torch.int8))):  # fmt: skip
        folder = root / name
        folder.mkdir()
        shutil.copy(sam / "config.json", folder)
        save_file({**weights, first: change(weights[first])}, folder / "model.safetensors", metadata={"format": "pt"})
        setattr(p, name, folder)
    del weights
    for name, model_type in (("type_int", 5), ("relabelled", "sam2"), ("as_hiera", "hiera_hf")):
        folder = _copy_folder(sam, root / name)
        relabelled = json.loads((sam / "config.json").read_text())
        relabelled["model_type"] = model_type
        (folder / "config.json").write_text(json.dumps(relabelled))
        setattr(p, name, folder)
    p.hostile_bin = root / "hostile_bin"
    p.hostile_bin.mkdir()
    shutil.copy(sam / "config.json", p.hostile_bin)
    torch.save({"w": _Hostile()}, p.hostile_bin / "pytorch_model.bin")
    p.hiera_tampered = _copy_folder(hiera, root / "hiera_tampered")
    tampered = json.loads((hiera / "config.json").read_text())
    tampered["embed_dim"] = 64  # the weights have 96
    (p.hiera_tampered / "config.json").write_text(json.dumps(tampered))
    p.hiera_nan = _copy_folder(hiera, root / "hiera_nan")
    weights = load_file(hiera / "model.safetensors")
    key = next(iter(weights))
    weights[key] = torch.full_like(weights[key], float("inf"))
    (p.hiera_nan / "model.safetensors").unlink()  # a link to the good weights
    save_file(weights, p.hiera_nan / "model.safetensors", metadata={"format": "pt"})

    p.zero = root / "zero.png"
    p.zero.write_bytes(b"")
    p.text = root / "text.png"
    p.text.write_text("not an image")
    p.cut_jpeg = root / "cut.jpg"
    p.cut_jpeg.write_bytes(Path(p.dog).read_bytes()[:4000])
    p.bomb = root / "bomb.png"
    Image.new("1", (14000, 14000)).save(p.bomb)  # 196 megapixels, a few kB
    p.no_images = root / "no_images"
    p.no_images.mkdir()
    (p.no_images / "notes.txt").write_text("not an image")
    p.bomb_folder = root / "bomb_folder"
    p.bomb_folder.mkdir()
    shutil.copy(p.bomb, p.bomb_folder)
    p.rotated = root / "rotated.jpg"  # stored 500x331, shown upright as 331x500 (EXIF orientation 6)
    exif = Image.Image().getexif()
    exif[0x0112] = 6
    with Image.open(p.dog) as dog:
        dog.save(p.rotated, exif=exif)

    p.clip = _write_mp4(root / "clip.mp4", FRAMES)
    p.cut_clip = root / "cut.mp4"
    data = _write_mp4(root / "long.mp4", 12, faststart=True).read_bytes()
    p.cut_clip.write_bytes(data[: len(data) // 2])
    p.noise_video = root / "noise.mp4"
    p.noise_video.write_bytes(np.random.default_rng(3).bytes(4000))  # the same bytes every run
    p.audio = root / "sound.wav"  # a media file without a video stream
    with wave.open(str(p.audio), "wb") as sound:
        sound.setnchannels(1), sound.setsampwidth(2), sound.setframerate(8000)
        sound.writeframes(bytes(1600))
    p.mixed = root / "mixed"
    p.mixed.mkdir()
    for t, frame in enumerate(_frames()):
        Image.fromarray(frame if t != 2 else frame[:64, :64]).save(p.mixed / f"{t:05d}.jpg")
    p.bad_frame = root / "bad_frame"
    p.bad_frame.mkdir()
    for t, frame in enumerate(_frames()):
        Image.fromarray(frame).save(p.bad_frame / f"{t:05d}.jpg")
    damaged = (p.bad_frame / "00002.jpg").read_bytes()
    (p.bad_frame / "00002.jpg").write_bytes(damaged[: len(damaged) // 2])  # the header is intact

    p.random_pt = root / "random.pt"
    p.random_pt.write_bytes(np.random.default_rng(1).bytes(5000))
    p.empty_pt = root / "empty.pt"
    p.empty_pt.write_bytes(b"")
    p.hostile_pt = root / "hostile.pt"
    torch.save({"model": _Hostile()}, p.hostile_pt)
    p.missing = root / "missing.mp4"
    return p


@dataclass
class Case:
    """One command line: `argv(paths, tmp)` -> arguments; the exit status; a fragment of stderr; `absent(tmp)`
    -> paths that must not exist afterwards; `env`: environment variables set during the run."""

    argv: object
    status: int
    message: str
    absent: object = None  # by default `tmp / "out"`: nothing written
    env: dict = field(default_factory=dict)


def seg(*extra, image="dog", model="sam"):
    return lambda p, tmp: ["segment", str(getattr(p, image)), "--model", str(getattr(p, model)),
                           "--out", str(tmp / "out" / "mask.png"), "--no-progress", *extra]  # fmt: skip


def track(*extra, video="clip", model="sam", out="out"):
    return lambda p, tmp: ["track", str(getattr(p, video)), "--model", str(getattr(p, model)),
                           "--out", str(tmp / out), "--quiet", *extra]  # fmt: skip


def into_user_folder(*extra):  # `u` holds a user's own overlay.mp4, masks/, rle/, objects/ and boxes/
    return track("--point", "0,1,30,60", *extra, out="u")


def classify(image="dog", model="hiera"):
    return lambda p, tmp: ["classify", str(getattr(p, image)), "--model", str(getattr(p, model)), "--quiet"]


def export(*extra, model="sam", output="out"):
    return lambda p, tmp: ["export-onnx", "--model", str(getattr(p, model)), "--output", str(tmp / output), "--quiet",
                           *(str(getattr(p, e[2:])) if e.startswith("p.") else e for e in extra)]  # fmt: skip


def convert(extra):
    return lambda p, tmp: ["convert", "--variant", "hiera_tiny_224", "--no-progress", "--no-verify", *extra(p, tmp)]


def convert_into_out(flag: str, source: str):
    return convert(lambda p, tmp: [flag, str(getattr(p, source)), "--output", str(tmp / "out")])


def nothing_written(tmp):
    return [tmp / "out"]


def keeps_out(tmp):  # `out` is the user's file
    return []


CLI_CASES = {
    # Prompts refused while parsing (exit 2): non-finite, negative, inverted or empty boxes, labels, ids
    "segment point nan": Case(seg("--point", "nan,nan"), 2, "is not a finite number"),
    "segment point inf": Case(seg("--point", "inf,3"), 2, "is not a finite number"),
    "segment point negative": Case(seg("--point=-5,10"), 2, "outside the image"),
    "segment point negative, separate value": Case(seg("--point", "-5,10"), 2, "--point -5,10: point"),
    "segment point -inf": Case(seg("--point", "-inf,10"), 2, "is not a finite number"),
    "segment box negative": Case(seg("--box", "-5,0,20,20"), 2, "outside the image"),
    "segment threshold nan": Case(seg("--point", "5,5", "--mask-threshold", "nan"), 2, "must be a finite number"),
    "segment hole area negative": Case(seg("--point", "5,5", "--max-hole-area", "-4"), 2, "must be at least 0"),
    "segment sprinkle area inf": Case(seg("--point", "5,5", "--max-sprinkle-area", "inf"), 2, "must be a finite"),
    "track frame negative": Case(track("--point", "-1,1,30,60"), 2, "frame must be at least 0, got -1"),
    "track mask bomb": Case(lambda p, tmp: [*track()(p, tmp), "--mask", f"0,1,{p.bomb}"], 1, "HIERA_HF_MAX_IMAGE_PIXELS=196000000"),  # fmt: skip
    "track mask not an image": Case(lambda p, tmp: [*track()(p, tmp), "--mask", f"0,1,{p.text}"], 1, "Cannot read the image"),  # fmt: skip
    "track box negative": Case(track("--box", "0,1,-20,0,20,20"), 2, "outside the image"),
    "segment box inverted": Case(seg("--box", "200,200,20,20"), 2, "x0 < x1 and y0 < y1"),
    "segment box empty": Case(seg("--box", "10,10,10,50"), 2, "x0 < x1 and y0 < y1"),
    "segment label padding": Case(seg("--point", "5,5", "--label", "-10"), 2, "--label must be 0"),
    "segment label fraction": Case(seg("--point", "5,5", "--label", "0.7"), 2, "--label must be 0"),
    "segment label 2": Case(seg("--point", "5,5", "--label", "2"), 2, "--label must be 0"),
    "track frame fraction": Case(track("--point", "2.9,1,30,60"), 2, "frame must be an integer"),
    "track object fraction": Case(track("--point", "0,1.5,30,60"), 2, "object id must be an integer"),  # fmt: skip
    "track object 0": Case(track("--point", "0,0,30,60"), 2, "object id must be 1..255"),
    "track label fraction": Case(track("--point", "0,1,30,60,0.7"), 2, "click labels must be 0"),
    "track point nan": Case(track("--point", "0,1,nan,60"), 2, "is not a finite number"),
    "track box inverted": Case(track("--box", "0,1,200,200,20,20"), 2, "x0 < x1"),
    # Prompts checked against the image once it is read (exit 1)
    "segment point outside": Case(seg("--point", "5000,5000"), 1, "outside the 500x331 image"),
    "segment box outside": Case(seg("--box", "0,0,600,100"), 1, "outside the 500x331 image"),
    "track point outside": Case(track("--point", "0,1,5000,5000"), 1, "outside the 128x96 image"),
    "track frame past the end": Case(track("--point", "9,1,30,60"), 1, "out of range"),
    "track max-frames 0": Case(track("--point", "0,1,30,60", "--max-frames", "0"), 2, "at least 1"),  # fmt: skip
    # Images that cannot be read
    "segment zero-byte image": Case(seg("--point", "5,5", image="zero"), 1, "cannot identify"),
    "segment text as png": Case(seg("--point", "5,5", image="text"), 1, "Cannot read the image"),
    "segment truncated jpeg": Case(seg("--point", "5,5", image="cut_jpeg"), 1, "truncated"),
    "segment image is a folder": Case(seg("--point", "5,5", image="root"), 1, "it is a folder"),
    "segment decompression bomb": Case(seg("--point", "5,5", image="bomb"), 1, "HIERA_HF_MAX_IMAGE_PIXELS=196000000"),  # fmt: skip
    "generate-masks over the pixel limit": Case(
        lambda p, tmp: ["generate-masks", p.dog, "--model", str(p.sam), "--out", str(tmp / "out"), "--no-progress"],
        1, "more than the limit of 1,000", env={"HIERA_HF_MAX_IMAGE_PIXELS": "1000"},
    ),  # fmt: skip
    "pixel limit not a number": Case(seg("--point", "5,5"), 1, "HIERA_HF_MAX_IMAGE_PIXELS must be a whole number",
                                     env={"HIERA_HF_MAX_IMAGE_PIXELS": "lots"}),  # fmt: skip
    "generate-masks zero-byte image": Case(
        lambda p, tmp: ["generate-masks", str(p.zero), "--model", str(p.sam), "--out", str(tmp / "out")],
        1, "cannot identify",
    ),  # fmt: skip
    # Model folders that are damaged or of the wrong kind
    "segment with a Hiera folder": Case(seg("--point", "5,5", model="hiera"), 1, "holds a Hiera model"),  # fmt: skip
    "track with a Hiera folder": Case(track("--point", "0,1,5,5", model="hiera"), 1, "holds a Hiera model"),  # fmt: skip
    "classify with a SAM 2 folder": Case(
        lambda p, tmp: ["classify", p.dog, "--model", str(p.sam), "--quiet"], 1, "holds a SAM 2 model"
    ),
    "non-JSON config": Case(seg("--point", "5,5", model="no_json"), 1, "no_json/config.json is not valid JSON"),  # fmt: skip
    "config not an object": Case(seg("--point", "5,5", model="list_json"), 1, "must hold a JSON object"),  # fmt: skip
    "config edited": Case(seg("--point", "5,5", model="tampered"), 1, "tampered/model.safetensors does not match"),  # fmt: skip
    "truncated safetensors": Case(seg("--point", "5,5", model="truncated_weights"), 1, "damaged or truncated"),  # fmt: skip
    "pickled weights": Case(seg("--point", "5,5", model="pickled"), 1, "pickled PyTorch weights"),
    "folder without config": Case(seg("--point", "5,5", model="no_config"), 1, "has no config.json"),  # fmt: skip
    "NaN weights": Case(seg("--point", "5,5", model="nan_weights"), 1, "holds NaN or infinite values"),
    "int8 weights": Case(track("--point", "0,1,5,5", model="int8_weights"), 1, "as int8, but the model's weights are float32"),  # fmt: skip
    "model_type a number": Case(seg("--point", "5,5", model="type_int"), 1, "has model_type 5 in its config.json"),  # fmt: skip
    "folder relabelled sam2": Case(seg("--point", "5,5", model="relabelled"), 1, "holds a transformers SAM 2 model"),  # fmt: skip
    "hostile pytorch_model.bin": Case(seg("--point", "5,5", model="hostile_bin"), 1, "pickled PyTorch weights"),  # fmt: skip
    # classify gives the messages segment gives
    "classify decompression bomb": Case(classify(image="bomb"), 1, "HIERA_HF_MAX_IMAGE_PIXELS=196000000"),
    "classify zero-byte image": Case(classify(image="zero"), 1, "cannot identify"),
    "classify truncated jpeg": Case(classify(image="cut_jpeg"), 1, "truncated"),
    "classify weights that do not fit": Case(classify(model="hiera_tampered"), 1, "hiera_tampered/model.safetensors does not match"),  # fmt: skip
    "classify NaN weights": Case(classify(model="hiera_nan"), 1, "holds NaN or infinite values"),
    # export-onnx: refused before anything is exported, one line, nothing written
    "export-onnx opset 99": Case(export("--opset", "99"), 1, "opset must be an int in 18..20"),
    "export-onnx opset 13": Case(export("--opset", "13"), 1, "opset must be an int in 18..20"),
    "export-onnx calibration without images": Case(export("--int8", "--calibration", "p.no_images"), 1, "holds no images"),  # fmt: skip
    "export-onnx calibration bomb": Case(export("--int8", "--calibration", "p.bomb_folder"), 1, "HIERA_HF_MAX_IMAGE_PIXELS=196000000"),  # fmt: skip
    "export-onnx calibration for Hiera": Case(export("--int8", "--calibration", "p.root", model="hiera"), 1, "SAM 2 image encoders only"),  # fmt: skip
    "export-onnx calibration without int8": Case(export("--calibration", "p.root"), 1, "--int8 only"),
    "export-onnx into a user folder": Case(export(output="d"), 1, "replace it with --overwrite", keeps_out),
    "export-onnx over a user folder": Case(export("--overwrite", output="d"), 1, "is not a folder hiera-hf wrote", keeps_out),  # fmt: skip
    "export-onnx into a file": Case(export("--overwrite", output="f"), 1, "is not a folder", keeps_out),
    "export-onnx NaN weights": Case(export(model="nan_weights"), 1, "holds NaN or infinite values"),
    "export-onnx int8 weights": Case(export(model="int8_weights"), 1, "as int8"),
    "export-onnx weights that do not fit": Case(export(model="tampered"), 1, "do not fit its config.json"),
    "export-onnx truncated weights": Case(export(model="truncated_weights"), 1, "damaged or truncated"),
    "export-onnx pickled weights": Case(export(model="hostile_bin"), 1, "pickled PyTorch weights"),
    "export-onnx SAM 2 weights labelled Hiera": Case(export(model="as_hiera"), 1, "holds a Sam2VideoModel"),
    "export-onnx Hiera NaN weights": Case(export(model="hiera_nan"), 1, "holds NaN or infinite values"),
    # Videos
    "track missing video": Case(track("--point", "0,1,5,5", video="missing"), 1, "No video file or frame folder"),  # fmt: skip
    "track a bomb image as the video": Case(track("--point", "0,1,5,5", video="bomb"), 1,
                                            "HIERA_HF_MAX_IMAGE_PIXELS=196000000"),  # fmt: skip
    "track a sound file": Case(track("--point", "0,1,5,5", video="audio"), 1, "sound.wav: it has no video stream"),  # fmt: skip
    "track noise as video": Case(track("--point", "0,1,5,5", video="noise_video"), 1, "Cannot read the video"),  # fmt: skip
    "track mixed frame sizes": Case(track("--point", "0,1,5,5", video="mixed"), 1,
                                    "00000.jpg is 128x96 but 00002.jpg is 64x64"),  # fmt: skip
    "track prompt past a cut": Case(track("--point", "8,1,5,5", video="cut_clip"), 1, "nothing was written"),  # fmt: skip
    "track unknown device": Case(track("--point", "0,1,5,5", "--device", "gpu7"), 1, "is not a torch device"),
    "track absent device": Case(track("--point", "0,1,5,5", "--device", "mps"), 1, "no mps device is available"),
    # Outputs
    "segment out under a file": Case(
        lambda p, tmp: ["segment", p.dog, "--model", str(p.sam), "--point", "5,5", "--out", str(tmp / "f" / "m.png")],
        1, "File exists",
    ),  # fmt: skip
    "track out is a file": Case(track("--point", "0,1,5,5", video="clip"), 1, "is not a folder", keeps_out),
    "track out under a file": Case(track("--point", "0,1,5,5", out="f/out"), 1, "f is not a folder; cannot write", keeps_out),  # fmt: skip
    "track over a user's overlay.mp4": Case(into_user_folder("--format", "mp4"), 1,
                                            "u/overlay.mp4 already exists; choose another output folder or replace it with --overwrite"),  # fmt: skip
    "track --overwrite over a user's overlay.mp4": Case(into_user_folder("--format", "mp4", "--overwrite"), 1,
                                                        "u/overlay.mp4 is not an overlay video hiera-hf wrote"),  # fmt: skip
    "track over a user's masks": Case(into_user_folder("--format", "png"), 1, "u/masks already exists"),
    "track --overwrite over a user's masks": Case(into_user_folder("--format", "png", "--overwrite"), 1,
                                                  "u/masks is not a folder hiera-hf wrote (it holds holiday.jpg)"),  # fmt: skip
    "track over a user's rle": Case(into_user_folder("--format", "rle"), 1, "u/rle already exists"),
    "track --overwrite over a user's rle": Case(into_user_folder("--format", "rle", "--overwrite"), 1,
                                                "u/rle is not a folder hiera-hf wrote (it holds notes.txt)"),  # fmt: skip
    "track over a user's objects": Case(into_user_folder("--format", "objects"), 1, "u/objects already exists"),
    "track --overwrite over a user's objects": Case(into_user_folder("--format", "objects", "--overwrite"), 1,
                                                    "u/objects is not a folder hiera-hf wrote (it holds 1)"),  # fmt: skip
    "track over a user's boxes": Case(into_user_folder("--format", "boxes"), 1, "u/boxes already exists"),
    "track --overwrite over a user's boxes": Case(into_user_folder("--format", "boxes", "--overwrite"), 1,
                                                  "u/boxes is not a folder hiera-hf wrote (it holds mine.csv)"),  # fmt: skip
    "track the overlay of the output folder": Case(
        track("--point", "0,1,30,60", "--overwrite", "--format", "mp4", video="user_overlay", out="u"), 1,
        "u/overlay.mp4 is the input video",
    ),  # fmt: skip
    "track a frame folder into itself": Case(
        track("--point", "0,1,30,60", "--overwrite", "--format", "png", video="user_frames", out="u"), 1,
        "u/masks holds the input",
    ),  # fmt: skip
    "track start frame past the end": Case(track("--point", "0,1,30,60", "--start-frame", "99", out="out/a/b"), 1,
                                           "out of range"),  # fmt: skip
    "track start frame negative": Case(track("--point", "0,1,30,60", "--start-frame", "-1", out="out/a"), 1,
                                       "--start-frame must be at least 0, got -1"),  # fmt: skip
    # Checkpoints for convert
    "convert into the input's folder": Case(
        convert(lambda p, tmp: ["--checkpoint", str(tmp / "d" / "ckpt.pth"), "--output", str(tmp / "d"),
                                "--overwrite"]),
        1, "holds the input",
    ),  # fmt: skip
    "convert over a user folder": Case(
        convert(lambda p, tmp: ["--checkpoint", str(p.random_pt), "--output", str(tmp / "d"), "--overwrite"]),
        1, "is not a folder hiera-hf wrote (it holds ckpt.pth, notes.txt)",
    ),  # fmt: skip
    "convert random bytes": Case(convert_into_out("--checkpoint", "random_pt"), 1,
                                 "random.pt is not a readable PyTorch checkpoint"),  # fmt: skip
    "convert empty checkpoint": Case(convert_into_out("--checkpoint", "empty_pt"), 1,
                                     "empty.pt is not a readable PyTorch checkpoint"),  # fmt: skip
    "convert hostile pickle": Case(convert_into_out("--checkpoint", "hostile_pt"), 1,
                                   "Python objects besides tensors"),  # fmt: skip
    "convert from a hiera-hf folder": Case(convert_into_out("--from-transformers", "sam"), 1,
                                           "holds a SAM 2 model, not the kind needed here: --from-transformers"),  # fmt: skip
    "convert from non-JSON transformers folder": Case(convert_into_out("--from-transformers", "no_json"), 1,
                                                      "config.json is not valid JSON"),  # fmt: skip
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_command_line(paths, tmp_path, capsys, monkeypatch, name):
    case = CLI_CASES[name]
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "f").write_text("a file where a folder is expected")
    (tmp_path / "d").mkdir()
    for inner in ("ckpt.pth", "notes.txt"):
        (tmp_path / "d" / inner).write_text(inner)
    if name == "track out is a file":
        (tmp_path / "out").write_text("mine")
    user = tmp_path / "u"  # a user's folder, named as track's outputs
    for inner in ("masks/holiday.jpg", "rle/notes.txt", "objects/1/x.png", "boxes/mine.csv"):
        (user / inner).parent.mkdir(parents=True, exist_ok=True)
        (user / inner).write_text(inner)
    shutil.copy(paths.clip, user / "overlay.mp4")  # a video of the user's own
    paths.user_overlay, paths.user_frames = user / "overlay.mp4", user / "masks"
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    try:
        status = main(case.argv(paths, tmp_path))
    except SystemExit as exit:
        status = exit.code
    err = capsys.readouterr().err
    assert status == case.status, err
    assert case.message in err
    assert "Traceback" not in err and "weights_only=False" not in err
    if status == 1:  # one line (after any progress bar of transformers' loading)
        assert err.endswith("\n") and err.splitlines()[-1].startswith("hiera-hf ") and err.count("error:") == 1
    for path in (case.absent or nothing_written)(tmp_path):
        assert not path.exists(), path
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["ckpt.pth", "notes.txt"]  # inputs untouched
    if status != 0:  # a refused run changes no file
        assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before
    assert not [p for p in tmp_path.rglob(".*") if "staging" in p.name]


def test_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    """User errors (ValueError, OSError such as a full disk) print one line; a TypeError or KeyError raised by
    our own code is a bug and propagates with its traceback."""
    import hiera_hf.cli as cli

    def raising(error):
        def run(args):
            raise error

        return run

    for error, status in ((OSError(28, "No space left on device", "/out/mask.png"), 1), (ValueError("a\nb"), 1)):
        monkeypatch.setitem(cli.SUBCOMMANDS, "segment", (*cli.SUBCOMMANDS["segment"][:2], raising(error)))
        assert main(["segment", "x.jpg", "--model", "m", "--out", "o.png", "--point", "1,1"]) == status
    assert capsys.readouterr().err.splitlines() == [
        "hiera-hf segment: error: No space left on device: /out/mask.png",
        "hiera-hf segment: error: a b",
    ]
    for bug in (TypeError("unsupported operand"), KeyError("stage")):
        monkeypatch.setitem(cli.SUBCOMMANDS, "segment", (*cli.SUBCOMMANDS["segment"][:2], raising(bug)))
        with pytest.raises(type(bug)):
            main(["segment", "x.jpg", "--model", "m", "--out", "o.png", "--point", "1,1"])


def test_output_inside_an_input_folder_is_allowed(tmp_path):
    """Only an output that is or holds an input is refused; writing beside or inside an input folder is fine."""
    source = tmp_path / "source"
    source.mkdir()
    with staged_folder(source / "converted", inputs=[source]) as staging:
        (staging / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds the input"):
        with staged_folder(tmp_path, overwrite=True, inputs=[source / "converted" / "config.json"]):
            pass
    assert (source / "converted" / "config.json").is_file()


def test_track_replaces_its_masks_and_keeps_what_a_cut_video_allowed(paths, tmp_path, capsys):
    """A second run replaces the first's outputs only with --overwrite, and then leaves no stale mask of the
    first; a video cut half-way keeps the masks of the frames it could decode, and the message says how many and
    what was written; a masks folder holding anything else is refused untouched."""
    out = tmp_path / "out"
    assert main(track("--point", "0,1,30,60")(paths, tmp_path)) == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{t:05d}.png" for t in range(FRAMES)]
    first = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main([*track("--point", "1,1,30,60")(paths, tmp_path), "--max-frames", "1"]) == 1
    assert "out/masks already exists; choose another output folder or replace it with --overwrite" in (
        capsys.readouterr().err
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    assert main([*track("--point", "1,1,30,60")(paths, tmp_path), "--max-frames", "1", "--overwrite"]) == 0
    names = sorted(p.name for p in (out / "masks").iterdir())
    assert "00001.png" in names and len(names) < FRAMES and "00003.png" not in names  # no stale frame 3

    cut = tmp_path / "cut"
    assert main(["track", str(paths.cut_clip), "--model", str(paths.sam), "--out", str(cut), "--quiet",
                 "--point", "0,1,30,60"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    readable = len(list((cut / "masks").iterdir()))
    assert 0 < readable < 12, err
    assert f"first {readable} of 12 frames" in err or f"ended after {readable} of its 12 frames" in err, err
    assert f"wrote {readable} frames (frames 0-{readable - 1})" in err and (cut / "overlay.mp4").is_file()

    bad = tmp_path / "bad"
    assert main(track("--point", "0,1,30,60", video="bad_frame")(paths, bad)) == 1
    err = capsys.readouterr().err
    assert "00002.jpg" in err and "wrote 2 frames (frames 0-1)" in err

    (out / "masks" / "holiday.jpg").write_text("mine")
    assert main(track("--point", "0,1,30,60", "--overwrite")(paths, tmp_path)) == 1
    assert "not a folder hiera-hf wrote" in capsys.readouterr().err
    assert (out / "masks" / "holiday.jpg").read_text() == "mine"


def test_pil_frames_are_upright(paths):
    """Frames given as PIL images are read as shown (EXIF orientation), sizes compared as shown."""
    with Image.open(paths.rotated) as photo:
        video = open_video([photo, np.asarray(open_image(paths.rotated))])
        assert video[0].shape == video[1].shape == (500, 331, 3)
        assert np.array_equal(video[0], video[1])


def test_reverse_tracking_from_the_first_frame_yields_it(paths, tmp_path, session):
    """Backward from the prompted frame 0 yields frame 0 (its prompted masks), in the session and in `track`; both
    ways from frame 0 yield it once (the forward pass), as Meta's forward then reverse calls do."""
    session.add_points(0, 1, [[30, 60]], [1])
    try:
        (prompted,) = [r.mask_logits for r in session.propagate(0, reverse=True, max_frames=5)]
        assert [r.frame_idx for r in session.propagate(0, reverse="both")] == [0, 1]
        (again,) = session.propagate(reverse=True)
        torch.testing.assert_close(again.mask_logits, prompted, rtol=0, atol=0)
    finally:
        session.remove_object(1)
    out = tmp_path / "out"
    assert main(track("--point", "0,1,30,60", "--direction", "backward", "--format", "png,rle")(paths, tmp_path)) == 0
    assert [p.name for p in (out / "masks").iterdir()] == ["00000.png"]
    assert [p.name for p in (out / "rle").iterdir()] == ["00000.json"]


def test_export_onnx_into_an_empty_folder_and_over_its_own_export(paths, tmp_path, capsys):
    """An empty folder is a valid output; an earlier export is replaced with --overwrite only, as a whole."""
    out = tmp_path / "onnx"
    out.mkdir()
    command = ["export-onnx", "--model", str(paths.hiera), "--output", str(out), "--quiet"]
    assert main(command) == 0
    written = sorted(p.name for p in out.iterdir())
    assert "model.onnx" in written and "config.json" in written
    assert main(command) == 1
    assert "replace it with --overwrite" in capsys.readouterr().err
    (out / "model_quantized.onnx").write_bytes(b"stale")  # an earlier --int8 export's: replaced as a whole
    assert main([*command, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]

    from hiera_hf.onnx.runtime import OnnxHieraClassifier

    classifier = OnnxHieraClassifier(out)
    assert classifier.predict(np.zeros((2, 3, 224, 224))).shape == (2, 1000)
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3, 224, 224\), got \(1, 3, 100, 100\)"):
        classifier.predict(np.zeros((1, 3, 100, 100)))
    with pytest.raises(ValueError, match=r"pixel_values\[0\]\[0\]\[0\]\[0\] = nan is not a finite number"):
        classifier.predict(np.full((1, 3, 224, 224), np.nan))
    (out / "config.json").write_text("[1]")
    with pytest.raises(ValueError, match="onnx/config.json must hold a JSON object"):
        OnnxHieraClassifier(out)
    (out / "config.json").write_text("{")
    with pytest.raises(ValueError, match="onnx/config.json is not valid JSON"):
        OnnxHieraClassifier(out)


def test_convert_onto_a_full_disk(tmp_path, monkeypatch, capsys):
    """safetensors' write error (a full disk) is one line, and the staging folder is gone."""
    import transformers
    from safetensors import SafetensorError

    transformers.HieraModel(
        transformers.HieraConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), image_size=(64, 64))
    ).save_pretrained(tmp_path / "hf")

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    capsys.readouterr()
    command = ["convert", "--from-transformers", str(tmp_path / "hf"), "--output", str(tmp_path / "out"), "--quiet"]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out/model.safetensors: Error while serializing" in err and "No space left" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_segment_sees_photos_upright(paths, tmp_path):
    """A phone photo (EXIF orientation 6) is segmented as shown: the mask has the upright size."""
    out = tmp_path / "mask.png"
    assert main(["segment", str(paths.rotated), "--model", str(paths.sam), "--point", "300,100", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    with Image.open(out) as mask:
        assert mask.size == (331, 500)
    with Image.open(paths.rotated) as stored:
        upright = stored.transpose(Image.Transpose.ROTATE_270)  # orientation 6: turn 90 degrees clockwise
    assert np.array_equal(np.asarray(open_image(paths.rotated)), np.asarray(upright))
    with pytest.raises(ValueError, match="Cannot read the image .*cut.jpg: image file is truncated"):
        Sam2ImageProcessor()(str(paths.cut_jpeg))


# ---------------------------------------------------------------------------------------------------------------
# The Python API: one validation layer for prompts (sam2.prompts)
# ---------------------------------------------------------------------------------------------------------------

PROCESSOR_CASES = [
    ({"input_points": [[[[float("nan"), 3]]]], "input_labels": [[[1]]]}, "is not a finite number"),
    ({"input_points": [[[[3, float("inf")]]]], "input_labels": [[[1]]]}, "is not a finite number"),
    ({"input_points": [[[[3, 3]]]], "input_labels": [[[0.7]]]}, "= 0.7: click labels must be 0"),
    ({"input_boxes": [[[10, 10, 10, 20]]]}, "x0 < x1 and y0 < y1"),
    ({"input_boxes": [[[float("nan"), 10, 30, 20]]]}, "is not a finite number"),
]


@pytest.mark.parametrize("prompts, message", PROCESSOR_CASES)
def test_processor_refuses(prompts, message):
    with pytest.raises(ValueError, match=message):
        Sam2ImageProcessor().prepare_prompts([(331, 500)], **prompts)


@pytest.fixture(scope="module")
def session(paths):
    return Sam2VideoSession(Sam2VideoModel.from_pretrained(paths.sam), _frames(2), progress=False)


SESSION_CASES = [
    ("add_points", ([[float("nan"), 3]], [1]), "points\\[0\\]\\[0\\] = nan is not a finite number"),
    ("add_points", ([[200, 3]], [1]), "outside the 128x96 image"),
    ("add_points", ([[-1, 3]], [1]), "outside the 128x96 image"),
    ("add_points", ([[3, 3]], [0.5]), "click labels must be 0"),
    ("add_points", ([[3, 3]], [-10]), "click labels must be 0"),
    ("add_points", ([[3, 3], [4, 4]], [1]), "points must be \\(K, 2\\) and labels \\(K,\\)"),
    ("add_box", ([50, 50, 20, 20],), "x0 < x1 and y0 < y1"),
    ("add_box", ([0, 0, 300, 20],), "outside the 128x96 image"),
    ("add_mask", (np.ones((10, 10)),), "mask must be \\(height, width\\) = \\(96, 128\\)"),
    ("add_mask", (np.full((HEIGHT, WIDTH), np.nan),), "is not a finite number"),
]


@pytest.mark.parametrize("method, arguments, message", SESSION_CASES)
def test_session_refuses(session, method, arguments, message):
    with pytest.raises(ValueError, match=message):
        getattr(session, method)(0, 1, *arguments)
    assert session.object_ids == []  # nothing was added


ONNX_CASES = [
    ({"point_coords": [[float("nan"), 3]], "point_labels": [1]}, "point_coords\\[0\\]\\[0\\] = nan is not a finite number"),
    ({"point_coords": [[3, float("inf")]], "point_labels": [1]}, "is not a finite number"),
    ({"point_coords": [[5000, 5000]], "point_labels": [1]}, "point_coords\\[0\\] = \\(5000, 5000\\) lies outside the 128x96"),
    ({"point_coords": [[-1, 3]], "point_labels": [1]}, "outside the 128x96 image"),
    ({"point_coords": [[3, 3]], "point_labels": [2]}, "point_labels\\[0\\] = 2: click labels must be 0"),
    ({"point_coords": [[3, 3]], "point_labels": [0.5]}, "click labels must be 0"),
    ({"point_coords": [[3, 3], [4, 4]], "point_labels": [1]}, "point_coords must be \\(K, 2\\) and point_labels \\(K,\\)"),
    ({"point_coords": [3, 3], "point_labels": [1]}, "point_coords must be \\(K, 2\\)"),
    ({"point_coords": [[3, 3]]}, "point_coords and point_labels must be given together"),
    ({"point_coords": [["a", 3]], "point_labels": [1]}, "point_coords must be numbers"),
    ({"box": [50, 50, 20, 20]}, "box = \\(50, 50, 20, 20\\) must be \\(x0, y0, x1, y1\\) with x0 < x1 and y0 < y1"),
    ({"box": [10, 10, 10, 50]}, "x0 < x1 and y0 < y1"),
    ({"box": [0, 0, 300, 20]}, "outside the 128x96 image"),
    ({"box": [0, float("nan"), 30, 20]}, "is not a finite number"),
    ({"box": [1, 2, 3]}, "box must be \\(x0, y0, x1, y1\\)"),
    ({"mask_input": np.zeros((1, 256, 256))}, "mask_input must be one mask of low-resolution logits, shape \\(1, 32, 32\\)"),
    ({"mask_input": np.zeros((2, 32, 32))}, "mask_input must be one mask"),
    ({"mask_input": np.full((1, 32, 32), np.nan)}, "mask_input\\[0\\]\\[0\\]\\[0\\] = nan is not a finite number"),
    ({}, "Give point_coords"),
]  # fmt: skip


@pytest.fixture(scope="module")
def onnx_predictor(paths):
    """The ONNX image predictor of an image-only export of the SAM 2 folder, with a 128x96 image set."""
    from hiera_hf.onnx.runtime import Sam2OnnxImagePredictor

    main(["export-onnx", "--model", str(paths.sam), "--output", str(paths.root / "onnx"), "--quiet"])
    predictor = Sam2OnnxImagePredictor(paths.root / "onnx")
    predictor.set_image(_frames(1)[0])
    return predictor


@pytest.mark.parametrize("prompts, message", ONNX_CASES)
def test_onnx_predictor_refuses(onnx_predictor, prompts, message):
    """The ONNX runtime checks prompts with the rules (and messages) of the PyTorch paths."""
    with pytest.raises(ValueError, match=message):
        onnx_predictor.predict(**prompts)


def test_onnx_predictor_sees_photos_upright_and_keeps_the_pixel_limit(onnx_predictor, paths, monkeypatch):
    """`set_image` of a PIL image opened with `Image.open` (or of a path) is the upright photo, as the PyTorch
    processor sees it; images over the pixel limit are refused with the CLI's message."""
    with Image.open(paths.rotated) as photo:
        onnx_predictor.set_image(photo)
        assert onnx_predictor.original_size == (500, 331)
        assert Sam2ImageProcessor()(photo)["original_sizes"].tolist() == [[500, 331]]
    features = onnx_predictor._features
    onnx_predictor.set_image(paths.rotated)
    assert all(np.array_equal(features[name], onnx_predictor._features[name]) for name in features)
    masks, scores, _ = onnx_predictor.predict(point_coords=[[300, 100]], point_labels=[1])
    assert masks.shape == (3, 500, 331) and np.isfinite(scores).all()
    with pytest.raises(ValueError, match="bomb.png is 14000x14000 .* HIERA_HF_MAX_IMAGE_PIXELS=196000000"):
        onnx_predictor.set_image(paths.bomb)
    monkeypatch.setenv("HIERA_HF_MAX_IMAGE_PIXELS", "1000")
    with Image.open(paths.dog) as dog, pytest.raises(ValueError, match="more than the limit of 1,000 .* set "):
        onnx_predictor.set_image(dog)
    with Image.open(paths.dog) as dog, pytest.raises(ValueError, match="more than the limit of 1,000"):
        Sam2ImageProcessor()(dog)
    assert onnx_predictor.original_size == (500, 331)  # a refused image leaves the previous one set


PRETRAINED_CASES = [
    ("Sam2Model", "nan_weights", "nan_weights/model.safetensors holds NaN or infinite values in "),
    ("Sam2VideoModel", "int8_weights", "holds .* as int8, but the model's weights are float32"),
    ("Sam2Model", "type_int", "type_int has model_type 5 in its config.json, not the kind needed here: Sam2Model"),
    ("Sam2Model", "relabelled", "relabelled holds a transformers SAM 2 model, not the kind needed here"),
    ("Sam2Model", "hiera", "holds a Hiera model"),
    ("HieraForImageClassification", "sam", "holds a SAM 2 model"),
    ("HieraModel", "as_hiera", "as_hiera/config.json is not a valid Hiera \\(model_type 'hiera_hf'\\) config"),
    ("Sam2Model", "hostile_bin", "holds pickled PyTorch weights, not model.safetensors"),
    ("Sam2Model", "pickled", "holds pickled PyTorch weights"),
    ("Sam2VideoModel", "tampered", "The weights in .*tampered do not fit its config.json"),
    ("Sam2Model", "truncated_weights", "damaged or truncated"),
    ("HieraForImageClassification", "hiera_nan", "holds NaN or infinite values"),
    ("HieraForImageClassification", "hiera_tampered", "do not fit its config.json"),
    ("Sam2Model", "no_json", "is not valid JSON"),
    ("Sam2Model", "no_config", "has no config.json"),
]


@pytest.mark.parametrize("name, folder, message", PRETRAINED_CASES)
def test_from_pretrained_refuses(paths, name, folder, message):
    """`from_pretrained` of our classes runs the checks of the command line: a clear `ValueError` (or
    `FileNotFoundError`), never weights cast or loaded at random, and never advice to unpickle."""
    import hiera_hf

    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        getattr(hiera_hf, name).from_pretrained(getattr(paths, folder))
    assert "weights_only" not in str(error.value)


def test_transformers_keeps_loading_its_own_models(paths, tmp_path):
    """Our checks apply to our classes only: transformers' own SAM 2 still loads its folders through its class."""
    from transformers import Sam2Config as TransformersSam2Config
    from transformers import Sam2Model as TransformersSam2Model

    config = TransformersSam2Config()
    config.vision_config.backbone_config.embed_dim, config.vision_config.backbone_config.stages = 8, [1, 1, 1, 1]
    TransformersSam2Model(config).save_pretrained(tmp_path / "theirs")
    assert isinstance(TransformersSam2Model.from_pretrained(tmp_path / "theirs"), TransformersSam2Model)


def test_sessions_refuse_mixed_frame_sizes(paths):
    frames = _frames(3)
    frames[1] = frames[1][:50]
    with pytest.raises(ValueError, match="frame 0 is 128x96 but frame 1 is 128x50"):
        open_video(frames)
    with pytest.raises(ValueError, match="00000.jpg is 128x96 but 00002.jpg is 64x64"):
        open_video(paths.mixed)


def test_video_file_reads_backwards_like_forwards(paths, tmp_path):
    """Random access seeks to a keyframe: any order gives the frames of one forward pass (mpeg4 with keyframes
    every 12 frames and a cache of 3 frames, so backward reading crosses keyframes and refills the cache)."""
    path = write_mp4(tmp_path / "long.mp4", _frames(30), codec_options={"g": "12"})
    with PyAVFrames(path) as video:
        forward = [video[i] for i in range(len(video))]
    with PyAVFrames(path, cache_bytes=3 * WIDTH * HEIGHT * 3 // 2) as video:
        assert len(video._keyframes) > 1
        backward = [video[i] for i in reversed(range(len(video)))][::-1]
        jumps = [video[i] for i in (17, 3, 29, 0, 12, 11)]
    assert all(np.array_equal(a, b) for a, b in zip(forward, backward))
    assert all(np.array_equal(a, forward[i]) for a, i in zip(jumps, (17, 3, 29, 0, 12, 11)))


# ---------------------------------------------------------------------------------------------------------------
# Folder writing (io_utils.staged_folder): killed runs, concurrent writers, failures
# ---------------------------------------------------------------------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_staging_of_killed_runs_is_cleaned(tmp_path):
    target = tmp_path / "out"
    dead = tmp_path / f".out.hiera-hf-staging.{_dead_pid()}.abc"
    alive = tmp_path / ".out.hiera-hf-staging.1.abc"  # pid 1 runs: another writer, left alone
    foreign = tmp_path / ".out.other"
    for folder in (dead, alive, foreign):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"0" * 100)
    with staged_folder(target) as staging:
        (staging / "config.json").write_text("{}")
    assert not dead.exists() and alive.exists() and foreign.exists()
    assert remove_stale_staging(target) == []
    assert (target / "config.json").read_text() == "{}"


def test_concurrent_writers_end_with_one_complete_folder(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(FileExistsError, match="written by another process at the same time"):
        with staged_folder(target) as first:
            (first / "a.txt").write_text("first")
            with staged_folder(target) as second:
                (second / "b.txt").write_text("second")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in target.iterdir()] == ["b.txt"]


def test_failed_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / "out"
    with staged_folder(target) as staging:
        (staging / "config.json").write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with staged_folder(target, overwrite=True, is_replaceable=lambda folder: True) as staging:
            (staging / "config.json").write_text("new")
            raise OSError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (target / "config.json").read_text() == "old"


@pytest.mark.parametrize("writer", ["staged_folder", "atomic_write"])
def test_failed_write_leaves_no_folder_it_created(tmp_path, writer):
    """The folders a writer creates on the way to its target are removed again when the write fails; folders
    that were there before, and those another writer filled meanwhile, stay."""
    (tmp_path / "a").mkdir()
    target = tmp_path / "a" / "b" / "c" / "out"

    def fail(path):
        (tmp_path / "a" / "b" / "other").mkdir()  # another writer's, meanwhile
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        if writer == "staged_folder":
            with staged_folder(target) as staging:
                fail(staging)
        else:
            atomic_write(target, fail)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/b", "a/b/other"]


# The app through its state layer: what a page (or a client of its API) sends, one case per row: the action on a
# fresh tab's `AppSession` and a fragment of the one-line message. Nothing is left in the tab's folder, and the
# tab keeps working after the error.
NAN, INF = float("nan"), float("inf")


def _everything(**settings):
    def run(s, p):
        s.image.open(p.dog)
        s.image.segment_everything(**{"progress": False, **settings})

    return run


def _on_video(action):
    def run(s, p):
        action(s.open_video(str(p.clip)))

    return run


def _track_after_a_click(**arguments):
    def action(video):
        video.click(0, 30, 60)
        video.track(**arguments)

    return _on_video(action)


APP_CASES = {
    "grid too large": (_everything(points_per_side=3000), "points_per_side must be 1..64, got 3000"),
    "grid NaN": (_everything(points_per_side=NAN), "points_per_side must be an integer, got nan"),
    "grid infinite": (_everything(points_per_side=INF), "points_per_side must be an integer, got inf"),
    "grid 0": (_everything(points_per_side=0), "points_per_side must be 1..64, got 0"),
    "grid fraction": (_everything(points_per_side=2.5), "points_per_side must be an integer, got 2.5"),
    "grid as text": (_everything(points_per_side="lots"), "points_per_side must be an integer, got 'lots'"),
    "crop layers multiply the clicks": (_everything(points_per_side=64, crop_n_layers=1), "would click 20,480 times"),
    "crop layers too many": (_everything(points_per_side=4, crop_n_layers=9), "crop_n_layers must be 0..2, got 9"),
    "batch huge": (_everything(points_per_batch=10**9), "points_per_batch must be 1..256"),
    "IoU threshold NaN": (_everything(pred_iou_thresh=NAN), "pred_iou_thresh = nan is not a finite number"),
    "stability above 1": (_everything(stability_score_thresh=5), "stability_score_thresh must be a number in 0.0..1.0"),
    "overlap infinite": (_everything(crop_overlap_ratio=-INF), "crop_overlap_ratio = -inf is not a finite number"),
    "unknown setting": (_everything(output_mode="coco_rle"), "Segment everything has no setting 'output_mode'"),
    "decompression bomb": (lambda s, p: s.image.open(str(p.bomb)), "HIERA_HF_MAX_IMAGE_PIXELS=196000000"),
    "text as an image": (lambda s, p: s.image.open(str(p.text)), "Cannot read the image"),
    "zero-byte image": (lambda s, p: s.image.open(str(p.zero)), "cannot identify"),
    "truncated jpeg": (lambda s, p: s.image.open(str(p.cut_jpeg)), "truncated"),
    "folder as an image": (lambda s, p: s.image.open(str(p.root)), "it is a folder"),
    "noise as a video": (lambda s, p: s.open_video(str(p.noise_video)), "Cannot open the video"),
    "sound as a video": (lambda s, p: s.open_video(str(p.audio)), "sound.wav: it has no video stream"),
    "text as a video": (lambda s, p: s.open_video(str(p.text)), "Cannot open the video"),
    "missing video": (lambda s, p: s.open_video(str(p.missing)), "Cannot open the video"),
    "zero-frame folder": (lambda s, p: s.open_video(str(p.no_images)), "No .jpg/.jpeg/.png frames found"),
    "bomb frame": (lambda s, p: s.open_video(str(p.bomb_folder)), "HIERA_HF_MAX_IMAGE_PIXELS=196000000"),
    "bomb image as a video": (lambda s, p: s.open_video(str(p.bomb)), "Each frame of"),
    "mixed frame sizes": (lambda s, p: s.open_video(str(p.mixed)), "00000.jpg is 128x96 but 00002.jpg is 64x64"),
    "frame NaN": (_on_video(lambda v: v.click(NAN, 5, 5)), "Frame index must be an integer, got nan"),
    "frame infinite": (_on_video(lambda v: v.view(INF)), "Frame index must be an integer, got inf"),
    "frame fraction": (_on_video(lambda v: v.set_box(1.5, (1, 1, 20, 20))), "Frame index must be an integer"),
    "frame past the end": (_on_video(lambda v: v.click(99, 5, 5)), "Frame index 99 is out of range"),
    "click NaN": (_on_video(lambda v: v.click(0, NAN, 5)), "is not a finite number"),
    "max frames NaN": (_track_after_a_click(max_frames=NAN), "max_frames must be an integer, got nan"),
    "max frames infinite": (_track_after_a_click(max_frames=INF), "max_frames must be an integer, got inf"),
    "max frames negative": (_track_after_a_click(max_frames=-3), "max_frames must be at least 1, got -3"),
    "track from frame NaN": (_track_after_a_click(start_frame=NAN), "Frame index must be an integer, got nan"),
    "object id a list": (lambda s, p: (s.image.open(p.dog), s.image.click(5, 5, obj_id=[1])), "An object id must be an integer"),  # fmt: skip
    "object id 0": (lambda s, p: (s.image.open(p.dog), s.image.click(5, 5, obj_id=0)), "An object id must be 1..255, got 0"),  # fmt: skip
    "name too long": (lambda s, p: (s.image.open(p.dog), s.image.add_object("x" * 10**6)), "1 to 100 characters, got 1000000"),  # fmt: skip
    "name empty": (lambda s, p: (s.image.open(p.dog), s.image.objects.rename(s.image.add_object(), " ")), "1 to 100 characters, got 0"),  # fmt: skip
    "export without a video": (lambda s, p: s.export_video(), "Open a video first"),
    "export before tracking": (lambda s, p: (s.open_video(str(p.clip)), s.export_video()), "No masks yet"),
    "export without an image": (lambda s, p: s.export_image(), "Open an image first"),
}


@pytest.fixture(scope="module")
def app_models(paths):
    from hiera_hf.app import Models

    return Models.from_pretrained(paths.sam, device="cpu")


@pytest.mark.parametrize("name", list(APP_CASES))
def test_app_refuses(app_models, paths, name):
    from hiera_hf.app import AppSession
    from hiera_hf.errors import USER_ERRORS, user_message

    action, message = APP_CASES[name]
    inputs = {p: p.read_bytes() for p in sorted(paths.root.rglob("*")) if p.is_file() and p.suffix != ".safetensors"}
    session = AppSession(app_models)
    try:
        with pytest.raises(USER_ERRORS) as error:
            action(session, paths)
        assert message in user_message(error.value) and "\n" not in user_message(error.value)
        assert not isinstance(error.value, (TypeError, KeyError, OverflowError))
        video = session.video.folder if session.video is not None else None
        left = [p for p in session.folder.rglob("*") if video not in (p, *p.parents)]
        assert not left  # nothing but an open video's own folder
        session.image.open(paths.dog)  # the tab still works
        assert session.image.click(30, 60) == 1 and session.image.mask() is not None
    finally:
        session.close()
    after = {p: p.read_bytes() for p in sorted(paths.root.rglob("*")) if p.is_file() and p.suffix != ".safetensors"}
    assert after == inputs


def test_app_video_that_fails_to_open_leaves_nothing_and_keeps_the_open_one(app_models, paths):
    """A file that is not a video leaves no folder behind and keeps the video already open; exporting again
    replaces the tab's own earlier export; exports survive a cleaned temporary folder."""
    from hiera_hf.app import AppSession

    session = AppSession(app_models)
    try:
        video = session.open_video(str(paths.clip))
        before = sorted(session.folder.iterdir())
        with pytest.raises(ValueError, match="Cannot open the video"):
            session.open_video(str(paths.noise_video))
        assert session.video is video and sorted(session.folder.iterdir()) == before
        video.click(0, 30, 60)
        assert list(video.track(max_frames=2)) == [0, 1]
        exports = [session.export_video() for _ in range(2)]  # the second replaces the first
        assert exports[0] == exports[1] and all(path.is_file() for path in exports[1])
        with zipfile.ZipFile(exports[1][0]) as archive:
            assert sorted(name for name in archive.namelist() if name.startswith("masks/")) == [
                "masks/00000.png", "masks/00001.png"
            ]
        session.image.open(paths.dog)
        session.image.click(30, 60)
        shutil.rmtree(session.folder)  # the system cleaned the temporary files: exports still work
        assert all(path.is_file() for path in session.export_image())
    finally:
        session.close()


def test_app_sessions_are_capped_and_expire(app_models):
    """At most `max_sessions` tabs hold memory (the least recently used is freed), and a tab idle longer than
    `idle_seconds` is freed at the next request of any tab, tabs that never send their unload included."""
    from hiera_hf.app import Sessions

    now = [0.0]
    sessions = Sessions(app_models, max_sessions=2, idle_seconds=60, clock=lambda: now[0])
    first, second = sessions.get("a"), sessions.get("b")
    now[0] = 10
    assert sessions.get("a") is first  # "a" is now the most recently used
    third = sessions.get("c")
    assert sessions.ids() == ["a", "c"] and not second.folder.exists() and first.folder.exists()
    for tab in range(50):  # a client inventing ids never holds more than the cap
        sessions.get(f"bot-{tab}")
    assert len(sessions) == 2 and not first.folder.exists() and not third.folder.exists()
    now[0] = 100
    kept = sessions.get("bot-49")
    assert sessions.ids() == ["bot-49"] and kept.folder.exists()  # bot-48 expired
    now[0] = 200
    fresh = sessions.get("a")  # a freed tab's next request starts afresh
    assert fresh is not first and sessions.ids() == ["a"] and not kept.folder.exists()
    sessions.close("a")
    assert len(sessions) == 0 and not fresh.folder.exists()
    with pytest.raises(ValueError, match="max_sessions >= 1"):
        Sessions(app_models, max_sessions=0)
