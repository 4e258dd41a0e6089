"""The arithmetic a SAM 2 video step does around the model's networks, written once for both runtimes: which of the
decoder's candidate masks an object keeps, the "no object" fill, hole filling, the mask-prompt resize, and the
assembly of a frame's result (resize to the video, non-overlap).

Every function takes numpy arrays (the ONNX Runtime session) or torch tensors on any device (the PyTorch session
and `Sam2VideoModel`) and returns the same kind. This module imports numpy only: a torch tensor is recognised by
its type's module and handled with the torch module it comes from. Nothing is read back to the host from a
device tensor, so a GPU never waits on these functions.
"""

from __future__ import annotations

import sys

import numpy as np

NO_OBJECT_SCORE = -1024.0  # mask logits and scores of objects predicted absent or without output (Meta's NO_OBJ_SCORE)
PREVIOUS_MASK_CLAMP = 32.0  # previous mask logits fed back with correction clicks are clamped to +-32 (Meta)
HOLE_LOGIT = 0.1  # logit given to filled holes (Meta's video predictor)
NON_OVERLAP_CAP = -10.0  # logits of pixels an object loses to another one are capped here (Meta)


# Array primitives: the few operations numpy and torch spell differently ------------------------------------------


def _torch(array):
    """The torch module if `array` is a torch tensor (then torch is imported already), else `None`."""
    return sys.modules["torch"] if type(array).__module__.startswith("torch") else None


def _arange(count: int, like):
    """`0..count-1` as int64, on `like`'s device."""
    torch = _torch(like)
    return np.arange(count) if torch is None else torch.arange(count, device=like.device)


def _full(shape: tuple[int, ...], value: float, like):
    """An array of `shape` filled with `value`, of `like`'s kind, dtype and device."""
    torch = _torch(like)
    if torch is None:
        return np.full(shape, value, dtype=like.dtype)
    return torch.full(shape, value, dtype=like.dtype, device=like.device)


def _where(condition, values, other):
    """`values` where `condition`, else `other` (an array, or a scalar taken in `values`' dtype)."""
    torch = _torch(values)
    if torch is None:
        return np.where(condition, values, other if isinstance(other, np.ndarray) else values.dtype.type(other))
    return torch.where(condition, values, other)


def _float32(array):
    """`array` (bool or float) as float32."""
    return array.astype(np.float32) if _torch(array) is None else array.float()


def _on_host(array) -> bool:
    """Whether reading `array`'s values costs no device synchronisation (numpy, or a CPU tensor)."""
    return _torch(array) is None or array.device.type == "cpu"


def resize_taps(in_size: int, out_size: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation taps of one axis: input indices and weights, both `(out_size, taps)` (weights float32; unused
    taps have weight 0).

    Without antialiasing: linear interpolation at source position `(i + 0.5) * in / out - 0.5` (clamped at 0),
    computed in float32 like torch's kernel. With it (torch's and PIL's triangle filter): output pixel `i` averages
    the inputs within `max(scale, 1)` of its centre `(i + 0.5) * scale` with weights `1 - |distance| / max(scale,
    1)`, normalised; `scale = in / out`.
    """
    scale = in_size / out_size
    rows = np.arange(out_size)
    if not antialias:
        half = np.float32(0.5)
        source = np.maximum((rows.astype(np.float32) + half) * np.float32(scale) - half, np.float32(0))
        low = np.floor(source).astype(np.int64)
        fraction = source - low.astype(np.float32)
        indices = np.stack((low, np.minimum(low + 1, in_size - 1)), axis=1)
        return indices, np.stack((1 - fraction, fraction), axis=1).astype(np.float32)
    support = max(scale, 1.0)
    centres = (rows + 0.5) * scale
    starts = np.maximum((centres - support + 0.5).astype(np.int64), 0)
    stops = np.minimum((centres + support + 0.5).astype(np.int64), in_size)
    taps = int((stops - starts).max())
    indices = starts[:, None] + np.arange(taps)[None]
    weights = np.clip(1.0 - np.abs((indices - centres[:, None] + 0.5) / support), 0.0, None)
    weights[indices >= stops[:, None]] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    return np.minimum(indices, in_size - 1), weights.astype(np.float32)


def _resize_axis(array: np.ndarray, size: int, axis: int, antialias: bool) -> np.ndarray:
    indices, weights = resize_taps(array.shape[axis], size, antialias)
    shape = [1] * array.ndim
    shape[axis] = size
    output = np.zeros(array.shape[:axis] + (size,) + array.shape[axis + 1 :], dtype=np.float32)
    for tap in range(indices.shape[1]):
        output += np.take(array, indices[:, tap], axis=axis) * weights[:, tap].reshape(shape)
    return output


def resize(array, size: tuple[int, int], antialias: bool = False):
    """Bilinear resize (`align_corners=False`) of the last two axes of `array` `(..., H, W)` to `size` = (height,
    width), float32. A tensor goes through torch's `F.interpolate`; numpy arrays get the same weights, over the
    rows, then the columns, each output a weighted sum of a few input taps."""
    torch = _torch(array)
    if torch is not None:
        batch = array.shape[:-2]
        flat = array.reshape(-1, 1, *array.shape[-2:])
        flat = torch.nn.functional.interpolate(
            flat, size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias
        )
        return flat.reshape(*batch, *flat.shape[-2:])
    rows = _resize_axis(np.asarray(array, dtype=np.float32), size[0], array.ndim - 2, antialias)
    return _resize_axis(rows, size[1], array.ndim - 1, antialias)


# The decoder's candidates ----------------------------------------------------------------------------------------


def fill_absent(mask_logits, object_score_logits, threshold: float = 0.0):
    """Mask logits `(N, C, h, w)` with every candidate of an object predicted absent (`object_score_logits`
    `(N, 1)` <= `threshold`, 0 in SAM 2) set to `NO_OBJECT_SCORE` (Meta's `_forward_sam_heads` with
    `pred_obj_scores`)."""
    return _where(object_score_logits[..., None, None] > threshold, mask_logits, NO_OBJECT_SCORE)


def best_candidates(iou_scores, multimask: bool):
    """The candidate each object keeps, `(N,)` int64: the highest predicted IoU among `iou_scores` `(N, C)` when
    the decoder gave several masks (`multimask`), else the first (Meta's choice)."""
    return (iou_scores if multimask else iou_scores[:, :1]).argmax(-1)


def take_candidates(values, best):
    """Each object's chosen candidate `(N, ...)` of `values` `(N, C, ...)`, with `best` `(N,)` from
    `best_candidates` (a single candidate is taken as it is)."""
    if values.shape[1] == 1:
        return values[:, 0]
    return values[_arange(values.shape[0], best), best]


def candidate_boxes(mask_logits, image_size: int):
    """Boxes `(N, C, 4)` (x0, y0, x1, y1, corner pixels inclusive, float32) of candidate masks `(N, C, h, w)`
    upsampled to `image_size` pixels (bilinear) where the logit is > 0; (0, 0, 0, 0) for an empty mask (SAMURAI's
    boxes)."""
    xp = np if _torch(mask_logits) is None else _torch(mask_logits)
    inside = resize(mask_logits, (image_size, image_size)) > 0
    edges = []
    for lines in (inside.any(-2), inside.any(-1)):  # columns (x), rows (y): (N, C, image_size)
        index = _arange(image_size, lines)
        edges.append((xp.amin(_where(lines, index, image_size), -1), xp.amax(_where(lines, index, -1), -1)))
    (x0, x1), (y0, y1) = edges
    boxes = _float32(xp.stack([x0, y0, x1, y1], -1))
    return _where(inside.any(-1).any(-1)[..., None], boxes, 0.0)


def to_host(arrays: list) -> list[np.ndarray]:
    """numpy copies of arrays (of one runtime's kind); device tensors come back in one transfer, as float32 (the
    one wait for the device a strategy may cost a frame)."""
    torch = _torch(arrays[0])
    if torch is None:
        return [np.asarray(array) for array in arrays]
    flat = torch.cat([array.reshape(-1).float() for array in arrays]).cpu().numpy()
    sizes = np.cumsum([array.numel() for array in arrays])[:-1]
    return [part.reshape(tuple(array.shape)) for part, array in zip(np.split(flat, sizes), arrays)]


def to_host_with_masks(arrays: list, masks) -> tuple[list[np.ndarray], np.ndarray]:
    """`to_host` of float arrays together with a boolean array `masks`, in one transfer (the masks as bytes, not
    as float32): (the float32 arrays, the masks as a bool array)."""
    torch = _torch(masks)
    if torch is None:
        return [np.asarray(array, dtype=np.float32) for array in arrays], np.asarray(masks, dtype=bool)
    values = torch.cat([array.reshape(-1).float() for array in arrays])
    flat = torch.cat([values.view(torch.uint8), masks.reshape(-1).to(torch.uint8)]).cpu().numpy()
    numbers = flat[: values.numel() * 4].view(np.float32)  # the floats first: aligned at the start
    sizes = np.cumsum([array.numel() for array in arrays])[:-1]
    parts = [part.reshape(tuple(array.shape)) for part, array in zip(np.split(numbers, sizes), arrays)]
    return parts, flat[values.numel() * 4 :].reshape(tuple(masks.shape)).astype(bool)


def from_host(array: np.ndarray, like):
    """A numpy array as an array of `like`'s kind and device (a non-blocking copy to a device)."""
    torch = _torch(like)
    return array if torch is None else torch.from_numpy(array).to(like.device, non_blocking=True)


# Masks -------------------------------------------------------------------------------------------------------------


def mask_prompt(mask, image_size: int):
    """A mask prompt `(H, W)` (> 0.5 inside; float) as the model input `(1, 1, image_size, image_size)` float32: an
    antialiased bilinear resize thresholded at 0.5 when the sizes differ (Meta's `add_new_mask`)."""
    mask = mask.reshape(1, 1, *mask.shape[-2:])
    if tuple(mask.shape[-2:]) == (image_size, image_size):
        return mask
    return _float32(resize(mask, (image_size, image_size), antialias=True) >= 0.5)


def _window(labels, fill, reduce):
    """The `reduce` (a pairwise minimum or maximum) of each pixel's 3x3 neighbourhood of `labels` `(N, H, W)`,
    itself included, with `fill` beyond the edges."""
    padded = _full((labels.shape[0], labels.shape[1] + 2, labels.shape[2] + 2), fill, labels)
    padded[:, 1:-1, 1:-1] = labels
    rows = reduce(reduce(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
    return reduce(reduce(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


def small_regions(region, max_area: float):
    """The pixels of `region` `(N, H, W)` bool in 8-connected components of at most `max_area` pixels (what
    OpenCV's `connectedComponentsWithStats` finds), with array operations alone.

    Every region pixel takes the smallest pixel index of its 3x3 neighbourhood within the region, repeatedly:
    after `max_area - 1` rounds each component of at most `max_area` pixels carries one label (on the host the
    rounds stop early once nothing changes). A label is a whole component when no region pixel next to one of its
    pixels carries another label (in a connected component, a part that is not all of it borders the rest)."""
    torch = _torch(region)
    xp = np if torch is None else torch
    batch, height, width = region.shape
    pixels = height * width
    if max_area <= 0 or pixels == 0:
        return _full(region.shape, False, region)
    outside = batch * pixels  # labels are pixel indices over the whole batch; `outside` marks the background
    index = _arange(outside, region).reshape(batch, height, width)
    labels = _where(region, index, outside)
    on_host = _on_host(region)
    for _ in range(max(0, int(min(max_area, pixels)) - 1)):
        spread = _where(region, _window(labels, outside, xp.minimum), outside)
        if on_host and bool((spread == labels).all()):
            break
        labels = spread
    lowest = _window(labels, outside, xp.minimum)
    highest = _window(_where(region, labels, -1), -1, xp.maximum)
    borders = (region & ((lowest != labels) | (highest != labels))).reshape(-1)
    flat = labels.reshape(-1)
    if torch is None:
        sizes = np.bincount(flat, minlength=outside + 1)
        is_open = np.bincount(flat, weights=borders, minlength=outside + 1)
    else:  # scatter_add: `bincount` on a device reads the largest label back first
        zeros = _full((outside + 1,), 0, flat)
        sizes = zeros.scatter_add(0, flat, region.reshape(-1).to(flat.dtype))
        is_open = zeros.scatter_add(0, flat, borders.to(flat.dtype))
    small = (sizes <= max_area) & (is_open == 0)  # the background's label is dropped by `& region`
    return small[labels] & region


def fill_holes(mask_logits, max_area: float):
    """Mask logits `(N, 1, h, w)` with background components (logit <= 0, 8-connected) of at most `max_area`
    pixels set to `HOLE_LOGIT` (Meta's video predictor's `fill_holes_in_mask_scores`); 0 disables it."""
    if max_area <= 0:
        return mask_logits
    holes = small_regions(mask_logits[:, 0] <= 0, max_area)
    return _where(~holes[:, None], mask_logits, HOLE_LOGIT)


def non_overlap(mask_logits):
    """Keep each pixel only for the object with the highest logit; the others are capped at `NON_OVERLAP_CAP`
    (Meta's `_apply_non_overlapping_constraints`). `mask_logits` `(N, ...)`."""
    if mask_logits.shape[0] < 2:
        return mask_logits
    winner = mask_logits.argmax(0)[None]
    objects = _arange(mask_logits.shape[0], winner).reshape(-1, *[1] * (mask_logits.ndim - 1))
    return _where(winner == objects, mask_logits, mask_logits.clip(max=NON_OVERLAP_CAP))


# A frame's result --------------------------------------------------------------------------------------------------


def frame_logits(
    masks: list, scores: list, like, low_res: tuple[int, int], size: tuple[int, int], non_overlap_masks: bool
):
    """The mask logits `(N, H, W)` at the video's `size` and object-score logits `(N,)` of a frame's `N` objects,
    from each object's low-resolution mask `(1, *low_res)` and score `(1,)`, `None` for an object without output
    on the frame (`NO_OBJECT_SCORE` everywhere); `like` is an array of the runtime's kind, dtype and device."""
    logits = _full((len(masks), 1, *low_res), NO_OBJECT_SCORE, like)
    object_scores = _full((len(masks),), NO_OBJECT_SCORE, like)
    for index, (mask, score) in enumerate(zip(masks, scores)):
        if mask is not None:
            logits[index] = mask
            object_scores[index : index + 1] = score.reshape(1)
    logits = resize(logits, size)
    if non_overlap_masks:
        logits = non_overlap(logits)
    return logits[:, 0], object_scores


__all__ = [
    "HOLE_LOGIT",
    "NON_OVERLAP_CAP",
    "NO_OBJECT_SCORE",
    "PREVIOUS_MASK_CLAMP",
    "best_candidates",
    "candidate_boxes",
    "fill_absent",
    "fill_holes",
    "frame_logits",
    "from_host",
    "mask_prompt",
    "non_overlap",
    "resize",
    "small_regions",
    "take_candidates",
    "to_host",
    "to_host_with_masks",
]
