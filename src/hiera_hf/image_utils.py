"""Generic image helpers: validate one image (PIL, numpy or torch; grey, RGB or RGBA) and bring it to RGB, and read
image files the way a user sees them (EXIF orientation applied, clear errors for what cannot be read).

The processors of Hiera and SAM 2 and the video readers use them. `hiera.remote_code` ships this file beside
`image_processing_hiera.py` as remote code, so it has no relative imports; it imports only numpy and Pillow (torch
tensors are recognised by their type's module, never imported), so the torch-free ONNX runtime uses it too.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

_CHANNELS = (1, 3, 4)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb_layout(image, channels_first: bool = False) -> np.ndarray:
    """Validates the type and shape of one numpy array / torch tensor image and returns it as `(H, W, 3)` in its
    own dtype: `(H, W)`, `(H, W, C)` (or `(C, H, W)` with `channels_first=True`) with C in {1, 3, 4}; grey levels
    are repeated to RGB and an alpha channel is dropped (as `Image.convert("RGB")` does)."""
    if type(image).__module__.startswith("torch"):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"Unsupported image type {type(image).__name__}; expected a PIL image, a numpy array or a torch tensor"
        )
    shape, layout = tuple(image.shape), "(C, H, W)" if channels_first else "(H, W, C)"
    if image.ndim == 2:
        image = image[..., None]
    elif image.ndim == 3 and channels_first:
        image = np.moveaxis(image, 0, -1)
    if image.ndim != 3 or image.shape[-1] not in _CHANNELS or min(image.shape[:2]) < 1:
        raise ValueError(f"Image of shape {shape} is neither (H, W) nor {layout} with C in {_CHANNELS}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image[..., :3]


def to_rgb_array(image, channels_first: bool = False) -> np.ndarray:
    """Validates one image and returns it as an RGB `uint8` array `(H, W, 3)`.

    Accepts a PIL image (any mode; turned upright by `upright`), or a numpy array / torch tensor laid out as `to_rgb_layout` describes,
    holding `uint8` values in [0, 255] or floating-point values in [0, 1]. Floats are rounded to 8 bits, the
    precision of Meta's PIL pipeline, so `x / 255` gives exactly the result of `x`.
    """
    if isinstance(image, Image.Image):
        image = upright(image)
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    image = to_rgb_layout(image, channels_first)
    if np.issubdtype(image.dtype, np.floating):
        check_unit_range(image)
        image = np.rint(image * 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise TypeError(f"Unsupported image dtype {image.dtype}; use uint8 in [0, 255] or float in [0, 1]")
    return np.ascontiguousarray(image)


def check_unit_range(image: np.ndarray) -> None:
    """Floating-point images must be finite and in [0, 1]."""
    if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"Floating-point images must hold values in [0, 1], got [{image.min()}, {image.max()}]; "
            "pass uint8 arrays for values in [0, 255]"
        )


def is_channels_first(image, input_data_format=None) -> bool:
    """Whether an image's channels come first: as `input_data_format` says (transformers' `ChannelDimension` or its
    value, "channels_first" / "channels_last"), else True for torch tensors only."""
    if input_data_format is None:
        return type(image).__module__.startswith("torch")
    value = getattr(input_data_format, "value", input_data_format)
    if value not in ("channels_first", "channels_last"):
        raise ValueError(f"input_data_format must be 'channels_first' or 'channels_last', got {input_data_format!r}")
    return value == "channels_first"


def with_channel_axis(image):
    """transformers' batching only accepts 3-D arrays: give grey `(H, W)` arrays/tensors a channel axis."""
    if getattr(image, "ndim", None) != 2:
        return image
    return image[None] if type(image).__module__.startswith("torch") else image[..., None]


def to_rgb_float(image, channels_first: bool = False) -> np.ndarray:
    """One image -> float32 RGB array `(3, H, W)` in [0, 1] (a new, writable array).

    Accepts a PIL image (any mode, turned upright by `upright`; 16-bit grey `I;16*`/`I` modes keep their precision), or a numpy array / torch
    tensor `(H, W)`, `(H, W, C)` (`(C, H, W)` with `channels_first=True`), C in {1, 3, 4}, holding `uint8` (divided
    by 255, as Meta's `ToTensor`), `uint16` (divided by 65535) or floating-point values in [0, 1] (kept, as
    `ToTensor` keeps them). Grey levels are repeated to RGB, alpha is dropped; anything else raises.
    """
    if isinstance(image, Image.Image):
        image = upright(image)
        if image.mode in _SIXTEEN_BIT_MODES:
            image = np.asarray(image)
            if image.min() < 0 or image.max() > 65535:
                raise ValueError(f"32-bit integer images must hold 16-bit values, got [{image.min()}, {image.max()}]")
            image = image.astype(np.uint16)
        else:
            image = to_rgb_array(image)
    image = to_rgb_layout(image, channels_first)
    if image.dtype == np.uint8:
        scale = 255.0
    elif image.dtype == np.uint16:
        scale = 65535.0
    elif np.issubdtype(image.dtype, np.floating):
        check_unit_range(image)
        scale = None
    else:
        raise TypeError(
            f"Unsupported image dtype {image.dtype}; use uint8 in [0, 255], uint16 in [0, 65535] or float in [0, 1]"
        )
    pixels = np.array(image.transpose(2, 0, 1), dtype=np.float32)  # a copy: callers may wrap it in a tensor
    return pixels / np.float32(scale) if scale else pixels


MAX_IMAGE_PIXELS_VARIABLE = "HIERA_HF_MAX_IMAGE_PIXELS"
# Pillow's own refusal threshold (twice its warning threshold): larger images are refused unless raised.
DEFAULT_MAX_IMAGE_PIXELS = 2 * 89_478_485
ORIENTATION_TAG = 0x0112  # EXIF Orientation: 5-8 are rotations by 90 degrees


def max_image_pixels() -> int | None:
    """The largest image (width x height) `open_image` reads: `$HIERA_HF_MAX_IMAGE_PIXELS` (0 = no limit), else
    Pillow's decompression-bomb threshold (about 179 megapixels)."""
    text = os.environ.get(MAX_IMAGE_PIXELS_VARIABLE)
    if text is None or not text.strip():
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        limit = int(text)
    except ValueError:
        raise ValueError(
            f"{MAX_IMAGE_PIXELS_VARIABLE} must be a whole number of pixels (0: no limit), got {text!r}"
        ) from None
    if limit < 0:
        raise ValueError(f"{MAX_IMAGE_PIXELS_VARIABLE} must be at least 0 (0: no limit), got {limit}")
    return limit or None


def check_image_size(width: int, height: int, what: str = "The image") -> None:
    """`ValueError` when a `width` x `height` image has more pixels than `max_image_pixels()`: the message names
    `what` (a file, or "The image") and the setting that raises the limit."""
    limit = max_image_pixels()
    if limit is not None and width * height > limit:
        raise ValueError(
            f"{what} is {width}x{height} ({width * height:,} pixels), more than the limit of {limit:,} that guards "
            f"against decompression bombs; if you trust the file, set {MAX_IMAGE_PIXELS_VARIABLE}={width * height} "
            "(or 0 for no limit)"
        )


def upright(image: Image.Image) -> Image.Image:
    """A PIL image as it is shown: turned by its EXIF orientation when it has one (a photo opened with `Image.open`
    stores rotated pixels and an Orientation tag), else the image itself. Images larger than `max_image_pixels()`
    are refused (`check_image_size`), as `open_image` refuses their files."""
    check_image_size(*image.size)
    if image.getexif().get(ORIENTATION_TAG, 1) not in range(2, 9):
        return image
    return ImageOps.exif_transpose(image)


def open_image(path: str | os.PathLike) -> Image.Image:
    """The image file at `path`, fully decoded and turned upright by its EXIF orientation (phone photos store
    rotated pixels and an Orientation tag), as a PIL image.

    Args:
        path: an image file Pillow reads (JPEG, PNG, WebP, ...).

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: naming the file, when it is not an image, is truncated or corrupt, or is larger than the limit
            (the message says how to raise it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No image file at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    previous = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # the limit is checked here, with a message that says how to raise it
        with Image.open(path) as image:
            check_image_size(*image.size, what=str(path))
            image.load()
            return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, struct.error) as error:  # PIL's errors derive from these
        raise ValueError(f"Cannot read the image {path}: {error}") from error
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def upright_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image file at `path` as `open_image` returns it (EXIF rotations by 90 degrees swap
    them), read from its header only; `ValueError` naming the file when it is not an image."""
    previous = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # only the header is read; `open_image` applies the limit
        with Image.open(path) as image:
            width, height = image.size
            rotated = image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)
    except (OSError, SyntaxError, struct.error) as error:
        raise ValueError(f"Cannot read the image {path}: {error}") from error
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return (height, width) if rotated else (width, height)


__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_IMAGE_PIXELS_VARIABLE",
    "check_image_size",
    "check_unit_range",
    "is_channels_first",
    "max_image_pixels",
    "open_image",
    "to_rgb_array",
    "to_rgb_float",
    "to_rgb_layout",
    "upright",
    "upright_size",
    "with_channel_axis",
]
