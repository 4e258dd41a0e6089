"""Image processor for Hiera: Meta's evaluation preprocessing, bit-exact with torchvision on PIL images.

Meta's notebook applies `Resize(256, BICUBIC)`, `CenterCrop(224)`, `ToTensor()` and
`Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)` to a PIL image. torchvision resizes PIL images
with Pillow itself, so this processor resizes with Pillow as well (the tensor bicubic kernel differs by up
to one grey level) and rounds the crop offset the way torchvision does.

This module imports only transformers, numpy, Pillow and `hiera_hf.image_utils`, so that it can be shipped as remote
code (see `remote_code.py`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
)

from ..image_utils import is_channels_first, to_rgb_array, with_channel_axis


class HieraImageProcessor(PilBackend):
    r"""
    Hiera's image preprocessing (Meta's evaluation recipe): resize the shorter side to 256 with bicubic
    interpolation, center-crop 224x224, scale to [0, 1] and normalise with the ImageNet mean and std.

    Inputs: a PIL image (any mode), a numpy array `(H, W)` / `(H, W, C)` or a torch tensor `(H, W)` /
    `(C, H, W)` with C in {1, 3, 4}, either `uint8` in [0, 255] or floating-point in [0, 1]; or a list of
    these, or a batched array `(B, H, W, C)` / tensor `(B, C, H, W)`. Grey images are repeated to RGB and
    alpha channels dropped; floats are rounded to 8 bits. The result equals torchvision's pipeline on the
    equivalent PIL image exactly.

    Returns `pixel_values` of shape `(batch, 3, crop_height, crop_width)`.
    """

    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 256}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True

    def _prepare_images_structure(self, images, expected_ndims: int = 3) -> list:
        if isinstance(images, (list, tuple)):
            images = [with_channel_axis(image) for image in images]
        return super()._prepare_images_structure(with_channel_axis(images), expected_ndims=expected_ndims)

    def process_image(self, image, input_data_format: str | ChannelDimension | None = None, **kwargs) -> np.ndarray:
        """One input image -> RGB `uint8` array `(3, H, W)`. Arrays are read channels-last and tensors
        channels-first unless `input_data_format` says otherwise."""
        channels_first = is_channels_first(image, input_data_format)
        return np.moveaxis(to_rgb_array(image, channels_first=channels_first), -1, 0)

    def resize(self, image: np.ndarray, size: SizeDict, resample: int | None = None, **kwargs) -> np.ndarray:
        """Resizes a `(3, H, W)` image like torchvision's `Resize`: `shortest_edge` keeps the aspect ratio
        (the longer side is truncated to an int), `height`/`width` give the exact output size."""
        height, width = image.shape[-2:]
        if size.shortest_edge:
            short, long = sorted((height, width))
            new_short, new_long = size.shortest_edge, int(size.shortest_edge * long / short)
            new_size = (new_short, new_long) if height <= width else (new_long, new_short)
        elif size.height and size.width:
            new_size = (size.height, size.width)
        else:
            raise ValueError(f"size must have 'shortest_edge' or 'height' and 'width', got {dict(size)}")
        resample = PILImageResampling(self.resample if resample is None else resample)
        resized = Image.fromarray(np.moveaxis(image, 0, -1)).resize(new_size[::-1], resample)
        return np.moveaxis(np.asarray(resized), -1, 0)

    def center_crop(self, image: np.ndarray, size: SizeDict, **kwargs) -> np.ndarray:
        """torchvision's `CenterCrop` on a `(3, H, W)` image: zero-pads when the crop is larger than the image
        and rounds the offsets half to even (Pillow/torchvision), where transformers' crop floors them."""
        if not (size.height and size.width):
            raise ValueError(f"crop_size must have 'height' and 'width', got {dict(size)}")
        crop_h, crop_w = size.height, size.width
        height, width = image.shape[-2:]
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        if pad_h or pad_w:
            image = np.pad(image, ((0, 0), (pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2)))
            height, width = image.shape[-2:]
        top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
        return image[:, top : top + crop_h, left : left + crop_w]


__all__ = ["HieraImageProcessor"]
