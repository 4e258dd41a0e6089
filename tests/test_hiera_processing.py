"""Hiera image/video processors and lazy video reading.

References: torchvision's transforms on PIL images (Meta's image notebook pipeline) and Meta's video notebook
steps (read frames, `/ 255`, every 4th of 64 frames, trilinear `F.interpolate`, mean/std), written out below.
"""

import re

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms

from hiera_hf import HieraImageProcessor, HieraVideoProcessor
from hiera_hf.video_io import FolderFrames, InMemoryFrames, PyAVFrames, open_video

# ------------------------------------------------------------------------------------------------ helpers


def meta_image_transform(size: int = 256, crop: int = 224) -> transforms.Compose:
    """Meta's notebook: Resize(int(256 / 224 * 224), BICUBIC), CenterCrop(224), ToTensor, Normalize."""
    return transforms.Compose(
        [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
        ]
    )


def photo_like(height: int, width: int, seed: int, channels: int = 3) -> np.ndarray:
    """Smooth gradients plus noise, uint8 (H, W, C): exercises both flat regions and edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * (c + 1) * 255 / width + y * 128 / height) % 256 for c in range(channels)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def meta_video_clip(frames_thwc: torch.Tensor, indices, size=(224, 224)) -> torch.Tensor:
    """Meta's notebook on one clip: float / 255, pick frames, (C, T, H, W), trilinear to (T, *size), normalise."""
    frames = frames_thwc.float() / 255
    clip = frames[list(indices)][None].permute(0, 4, 1, 2, 3).contiguous()
    clip = F.interpolate(clip, size=(len(indices), *size), mode="trilinear")
    clip = clip - torch.tensor([0.45, 0.45, 0.45]).view(1, -1, 1, 1, 1)
    clip = clip / torch.tensor([0.225, 0.225, 0.255]).view(1, -1, 1, 1, 1)
    return clip[0]


def write_video(path, frames: np.ndarray, fps: int = 10) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_all(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# Sizes chosen for a crop offset of 81.5 (300x454 -> 256x387: torchvision rounds to 82, transformers' crop
# floors to 81), portrait/landscape, Meta's dog.jpg geometry (500x331), and images smaller than the output.
IMAGE_SIZES = [(300, 454), (331, 500), (500, 333), (255, 300), (100, 120), (224, 224)]


# ------------------------------------------------------------------------------------------------ images


@pytest.fixture(scope="module")
def image_processor() -> HieraImageProcessor:
    return HieraImageProcessor()


def test_image_processor_equals_torchvision_on_pil(image_processor):
    images = [Image.fromarray(photo_like(h, w, seed)) for seed, (h, w) in enumerate(IMAGE_SIZES)]
    pixel_values = image_processor(images, return_tensors="pt").pixel_values
    reference = torch.stack([meta_image_transform()(image) for image in images])
    assert pixel_values.shape == (len(images), 3, 224, 224) and pixel_values.dtype == torch.float32
    # Same Pillow resize and crop: measured max abs error 0.0.
    torch.testing.assert_close(pixel_values, reference, atol=1e-6, rtol=0)


def test_image_processor_input_types(image_processor):
    array = photo_like(301, 457, seed=1)
    reference = meta_image_transform()(Image.fromarray(array))
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    inputs = {
        "numpy uint8 HWC": array,
        "numpy float HWC": array.astype(np.float64) / 255,
        "torch uint8 CHW": tensor,
        "torch float CHW": tensor.float() / 255,
    }
    for name, image in inputs.items():
        out = image_processor(image, return_tensors="pt").pixel_values
        torch.testing.assert_close(out[0], reference, atol=1e-6, rtol=0, msg=name)
    channels_first = image_processor(tensor.numpy(), input_data_format="channels_first", return_tensors="pt")
    torch.testing.assert_close(channels_first.pixel_values[0], reference, atol=1e-6, rtol=0)
    batched = {
        "numpy BHWC": np.stack([array, array]),
        "torch BCHW": torch.stack([tensor, tensor]),
        "mixed list": [Image.fromarray(array), tensor, array],
    }
    for name, images in batched.items():
        out = image_processor(images, return_tensors="pt").pixel_values
        torch.testing.assert_close(out, reference.expand(len(images), -1, -1, -1), atol=1e-6, rtol=0, msg=name)


def test_image_processor_grey_and_alpha_to_rgb(image_processor):
    grey = photo_like(150, 200, seed=2, channels=1)[..., 0]
    rgba = photo_like(150, 200, seed=3, channels=4)
    grey_reference = meta_image_transform()(Image.fromarray(grey).convert("RGB"))
    rgba_reference = meta_image_transform()(Image.fromarray(rgba).convert("RGB"))
    for image in (Image.fromarray(grey), grey, grey[..., None], torch.from_numpy(grey)):
        out = image_processor(image, return_tensors="pt").pixel_values[0]
        torch.testing.assert_close(out, grey_reference, atol=1e-6, rtol=0)
    for image in (Image.fromarray(rgba), rgba, torch.from_numpy(rgba).permute(2, 0, 1)):
        out = image_processor(image, return_tensors="pt").pixel_values[0]
        torch.testing.assert_close(out, rgba_reference, atol=1e-6, rtol=0)


def test_image_processor_other_sizes_follow_torchvision():
    """Crop larger than the resized image (torchvision zero-pads) and a 384 model's 438/384 recipe."""
    image = Image.fromarray(photo_like(180, 250, seed=4))
    for size, crop in ((200, 224), (int(256 / 224 * 384), 384)):
        processor = HieraImageProcessor(size={"shortest_edge": size}, crop_size={"height": crop, "width": crop})
        out = processor(image, return_tensors="pt").pixel_values[0]
        torch.testing.assert_close(out, meta_image_transform(size, crop)(image), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.zeros((10, 10, 5), np.uint8), ValueError, "C in (1, 3, 4)"),
        (np.zeros((10, 10, 3), np.int16), TypeError, "dtype int16"),
        (np.full((10, 10, 3), 2.0), ValueError, "values in [0, 1]"),
        (np.full((10, 10, 3), np.nan, np.float32), ValueError, "values in [0, 1]"),
        (torch.zeros(5, 10, 10), ValueError, "C in (1, 3, 4)"),
        ({"image": 1}, TypeError, "dict"),
        (None, TypeError, "NoneType"),
    ],
)
def test_image_processor_rejects_bad_input(image_processor, bad, error, message):
    with pytest.raises(error, match=re.escape(message)):
        image_processor(bad, return_tensors="pt")


# ------------------------------------------------------------------------------------------------ videos


@pytest.fixture(scope="module")
def video_thwc() -> torch.Tensor:
    """70 frames of 48x64 RGB."""
    return torch.from_numpy(np.stack([photo_like(48, 64, seed) for seed in range(70)]))


@pytest.fixture(scope="module")
def video_processor() -> HieraVideoProcessor:
    return HieraVideoProcessor()


def test_video_processor_equals_meta_notebook(video_processor, video_thwc):
    pixel_values = video_processor(video_thwc, return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, 16, 224, 224)
    reference = meta_video_clip(video_thwc, range(0, 64, 4))
    # Only rescaling differs (x * (1/255) vs x / 255): measured max abs error 9.5e-7.
    torch.testing.assert_close(pixel_values[0], reference, atol=1e-5, rtol=0)


def test_video_processor_input_types(video_processor, video_thwc, tmp_path):
    reference = meta_video_clip(video_thwc, range(0, 64, 4))
    frames = video_thwc.numpy()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"frame_{i}.png")  # unpadded numbers: order must be numeric
    inputs = {
        "numpy THWC": frames,
        "torch float THWC": video_thwc.float() / 255,
        "list of PIL": [Image.fromarray(frame) for frame in frames],
        "list of numpy": list(frames),
        "PNG folder": str(tmp_path),
        "VideoFrames": InMemoryFrames(frames),
    }
    for name, video in inputs.items():
        out = video_processor(video, return_tensors="pt").pixel_values
        torch.testing.assert_close(out[0], reference, atol=1e-5, rtol=0, msg=name)
    batch = video_processor([frames, str(tmp_path)], return_tensors="pt").pixel_values
    torch.testing.assert_close(batch, reference.expand(2, -1, -1, -1, -1), atol=1e-5, rtol=0)
    batch = video_processor(np.stack([frames, frames]), return_tensors="pt").pixel_values
    assert batch.shape == (2, 3, 16, 224, 224)


def test_video_processor_reads_files_with_pyav(video_processor, video_thwc, tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, video_thwc.numpy())
    decoded = torch.from_numpy(decode_all(path))  # the codec is lossy: the reference decodes the file itself
    out = video_processor(str(path), return_tensors="pt").pixel_values
    torch.testing.assert_close(out[0], meta_video_clip(decoded, range(0, 64, 4)), atol=1e-5, rtol=0)


def test_short_video_repeats_last_frame(video_processor, video_thwc):
    short = video_thwc[:10]
    indices = [0, 4, 8] + [9] * 13
    out = video_processor(short, return_tensors="pt").pixel_values
    torch.testing.assert_close(out[0], meta_video_clip(short, indices), atol=1e-5, rtol=0)
    custom = video_processor(video_thwc, num_frames=4, frame_stride=2, start_frame=5, size=(32, 40))
    torch.testing.assert_close(
        torch.as_tensor(custom.pixel_values[0]),
        meta_video_clip(video_thwc, [5, 7, 9, 11], (32, 40)),
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize(
    "video, kwargs, error, message",
    [
        (np.zeros((8, 8, 3), np.uint8), {}, ValueError, r"\(T, H, W, C\)"),
        (np.zeros((4, 8, 8, 3), np.uint8), {"fps": 2}, ValueError, "frame_stride instead of fps"),
        (np.zeros((4, 8, 8, 3), np.uint8), {"start_frame": 4}, ValueError, "past the end"),
        (np.zeros((4, 8, 8, 3), np.uint8), {"frame_stride": 0}, ValueError, "frame_stride >= 1"),
        (np.zeros((4, 8, 8, 3), np.int32), {}, TypeError, "dtype int32"),
        (np.zeros((4, 8, 8, 3), np.uint8), {"do_center_crop": True, "crop_size": 4}, ValueError, "without cropping"),
        (12, {}, TypeError, "Unsupported videos int"),
        ("/nonexistent/video.mp4", {}, FileNotFoundError, "No video file"),
    ],
)
def test_video_processor_rejects_bad_input(video_processor, video, kwargs, error, message):
    with pytest.raises(error, match=message):
        video_processor(video, return_tensors="pt", **kwargs)


# ------------------------------------------------------------------------------------------------ video_io


def test_pyav_frames_random_access(video_thwc, tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, video_thwc.numpy()[:25])
    decoded = decode_all(path)
    with open_video(path) as video:
        assert isinstance(video, PyAVFrames) and len(video) == 25 and video.fps == 10
        for index in (3, 7, 2, 24, -1, 0):  # forward, backward (restarts decoding), negative
            np.testing.assert_array_equal(video[index], decoded[index])
        np.testing.assert_array_equal(video.read([5, 1, 5]), decoded[[5, 1, 5]])
        with pytest.raises(IndexError, match="out of range"):
            video[25]


def test_folder_frames_order_and_errors(tmp_path):
    for number in (10, 2, 1):
        Image.fromarray(np.full((4, 4, 3), number, np.uint8)).save(tmp_path / f"{number}.jpg", quality=100)
    (tmp_path / "notes.txt").write_text("ignored")
    video = open_video(tmp_path)
    assert isinstance(video, FolderFrames) and len(video) == 3
    assert [int(np.round(frame.mean())) for frame in video] == [1, 2, 10]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="No .jpg"):
        open_video(empty)
    with pytest.raises(TypeError, match="Unsupported video source"):
        open_video(3.5)
    with pytest.raises(ValueError, match="at least one frame"):
        open_video([])
