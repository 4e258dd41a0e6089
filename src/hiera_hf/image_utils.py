"""Reading image files the way a user sees them: EXIF orientation applied, clear errors for what cannot be read."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from PIL import Image, ImageOps

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


def open_image(path: str | os.PathLike, max_pixels: int | None = -1) -> Image.Image:
    """The image file at `path`, fully decoded and turned upright by its EXIF orientation (phone photos store
    rotated pixels and an Orientation tag), as a PIL image.

    Args:
        path: an image file Pillow reads (JPEG, PNG, WebP, ...).
        max_pixels: refuse images of more than this many pixels (`None`: no limit); by default
            `max_image_pixels()`, which `$HIERA_HF_MAX_IMAGE_PIXELS` raises.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: naming the file, when it is not an image, is truncated or corrupt, or is larger than the limit
            (the message says how to raise it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No image file at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    limit = max_image_pixels() if max_pixels == -1 else max_pixels
    previous = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # the limit is checked here, with a message that says how to raise it
        with Image.open(path) as image:
            width, height = image.size
            if limit is not None and width * height > limit:
                raise ValueError(
                    f"{path} is {width}x{height} ({width * height:,} pixels), more than the limit of {limit:,} that "
                    f"guards against decompression bombs; if you trust the file, set {MAX_IMAGE_PIXELS_VARIABLE}="
                    f"{width * height} (or 0 for no limit)"
                )
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
    "max_image_pixels",
    "open_image",
    "upright_size",
]
