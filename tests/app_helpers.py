"""Shared app test helpers: the app's tiny SAM 2 (random weights, objects kept present), the clip and the prompts
that `test_app_state` and `test_app_browser` give it (their fixtures are `conftest.py`'s)."""

import io
from pathlib import Path

import numpy as np
import torch
from sam2_helpers import media, meta_model, write_folder

SIZE = 256  # model input: small to keep the tests fast
VIDEO_SIZE = (320, 180)
OBJECT_SCORE_SHIFT = 20.0
NUM_FRAMES = 3

# Objects on the clip: object 1 by clicks (one background), object 2 by a box and a click, both on frame 0.
CLICKS_1 = [(100, 90, 1), (140, 100, 1), (60, 40, 0)]
BOX_2, CLICK_2 = (200, 60, 300, 160), (250, 110, 1)
CORRECTION = (120, 95, 0)  # a background click on object 1, frame 1


def converted_tiny(path: Path, image_size: int, score_shift: float) -> Path:
    """A converted random-weight SAM 2.1 tiny at `image_size` (Meta's model, saved and converted like the other
    tests), its object-score bias raised by `score_shift` so that tracked objects stay present (random weights
    predict them absent)."""
    meta = meta_model("sam2.1_hiera_tiny", image_size=image_size)
    with torch.no_grad():
        meta.sam_mask_decoder.pred_obj_score_head.layers[2].bias.add_(score_shift)
    return write_folder(meta, "sam2.1_hiera_tiny", path, image_size=image_size)[0]


def first_frames(folder: Path, count: int, size: tuple[int, int]) -> Path:
    """The first `count` frames of the shared blocks.mp4 resized to `size` (width, height), as PNGs in `folder`."""
    import av

    with av.open(media("blocks.mp4")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            frame.to_image().resize(size).save(folder / f"{index:05d}.png")
            if index == count - 1:
                break
    return folder


def _decoded(video: bytes) -> list[np.ndarray]:
    import av

    with av.open(io.BytesIO(video)) as container:
        return [frame.to_ndarray(format="rgb24").astype(np.int16) for frame in container.decode(video=0)]


def assert_same_tracking(shown: dict[str, bytes], expected: dict[str, bytes]) -> None:
    """Two tracking outputs (relative path -> bytes) hold the same files, byte for byte, but `overlay.mp4`: the
    H.264 bytes of the same frames vary from run to run with this FFmpeg build (measured: in one process, the same
    frames and label maps in, two different files out, 0.8-1.4 grey levels apart on average, even with one encoder
    thread), so its frames are compared decoded; the masks themselves are compared exactly in the other files."""
    assert sorted(shown) == sorted(expected)
    for name, content in expected.items():
        if name.endswith(".mp4") and shown[name] != content:
            ours, theirs = _decoded(shown[name]), _decoded(content)
            assert len(ours) == len(theirs), name
            assert max(float(np.abs(a - b).mean()) for a, b in zip(ours, theirs)) < 3, name
        else:
            assert shown[name] == content, name
