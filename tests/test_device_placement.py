"""Device placement on CUDA, checked without a GPU: the models, the video session and clip training run on a fake
CUDA device (`device_helpers.fake_cuda`), where mixing a host tensor into device work raises as on a GPU, float64
on the device is recorded, and so is every point where the host would wait for the device.

A session that waits for the device in the middle of a frame leaves the GPU idle while Python prepares the next
step; the tracked frames here make no such wait (prompts do: their labels are checked). The numbers themselves
are compared on a real GPU by `tests/test_cuda.py`.
"""

import numpy as np
import pytest
import torch
from device_helpers import fake_cuda, on_meta
from scipy import ndimage
from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError

from hiera_hf import (
    HieraBackbone,
    HieraConfig,
    HieraForImageClassification,
    HieraForPreTraining,
    Sam2Config,
    Sam2Model,
    Sam2VideoModel,
    Sam2VideoSession,
)
from hiera_hf.sam2 import frame_arithmetic
from hiera_hf.sam2.training import Sam2VideoModelForTraining, track_clips

pytestmark = pytest.mark.slow  # whole models and video sessions on a fake CUDA device

SAM2 = Sam2Config.from_preset("sam2.1_hiera_tiny", image_size=128)


def tensors(output) -> dict[str, torch.Tensor]:
    return {name: value for name, value in output.items() if isinstance(value, torch.Tensor)}


def test_fake_cuda_sees_what_a_gpu_would():
    """The harness itself: mixed devices raise, value reads and blocking copies are recorded, non-blocking copies
    to the device and device-made tensors are not."""
    with fake_cuda() as log:
        on_device = torch.ones(4, 4, device="cuda")
        with pytest.raises(FakeTensorDeviceMismatchError):
            on_device @ torch.ones(4, 4)
        assert (on_device + torch.tensor(2.0)).device.type == "cuda"  # a 0-d host tensor is a scalar, as on CUDA
        torch.zeros(3).to("cuda", non_blocking=True)
        torch.arange(5, device="cuda").sum()
        assert not log.waits
        on_device.sum().item()
        torch.zeros(3).to("cuda")
        on_device.cpu()
        torch.zeros(2, device="cuda", dtype=torch.float64)
    assert [wait.split()[0] for wait in log.waits] == ["_local_scalar_dense", "blocking", "device-to-host"]
    assert len(log.float64_on_device) == 1


@pytest.mark.parametrize(
    "model_class, preset, shape",
    [
        (HieraForImageClassification, "hiera_tiny_224", (2, 3, 224, 224)),
        (HieraForImageClassification, "hiera_base_16x224", (1, 3, 16, 224, 224)),
        (HieraBackbone, "hiera_tiny_224", (2, 3, 224, 224)),
        (HieraForPreTraining, "mae_hiera_tiny_224", (2, 3, 224, 224)),
        (HieraForPreTraining, "mae_hiera_base_16x224", (1, 3, 16, 224, 224)),
    ],
)
def test_hiera_runs_on_the_device_without_waiting(model_class, preset, shape):
    """Hiera forwards (MAE's random masks included) on the device: every output there, nothing read back, no
    float64."""
    extra = {"out_features": ["stage1", "stage4"]} if model_class is HieraBackbone else {}
    model = on_meta(model_class, HieraConfig.from_preset(preset, **extra))
    with fake_cuda() as log:
        model = model.to_empty(device="cuda").train(model_class is HieraForPreTraining)
        output = model(torch.randn(shape, device="cuda"), output_hidden_states=True)
    assert output and all(value.device.type == "cuda" for value in tensors(output).values())
    assert not log.waits and not log.float64_on_device, (log.waits, log.float64_on_device)


def test_sam2_image_model_runs_on_the_device():
    """`Sam2Model` with clicks, a box and a mask prompt on the device: every output there, no float64; a box alone
    is not read back (clicks are: their labels are checked)."""
    model = on_meta(Sam2Model, SAM2)
    with fake_cuda() as log:
        model = model.to_empty(device="cuda").eval()
        pixels = torch.randn(1, 3, 128, 128, device="cuda")
        box = torch.tensor([[[10.0, 10, 60, 60]]]).to("cuda", non_blocking=True)
        points = torch.tensor([[[[30.0, 40], [60, 70]]]]).to("cuda", non_blocking=True)
        labels = torch.tensor([[[1, 0]]]).to("cuda", non_blocking=True)
        with torch.no_grad():
            boxed = model(image_embeddings=model.get_image_embeddings(pixels), input_boxes=box)
            assert not log.waits, log.waits
            clicked = model(
                pixel_values=pixels,
                input_points=points,
                input_labels=labels,
                input_masks=torch.zeros(1, 1, 1, 32, 32, device="cuda"),
            )
    for output in (boxed, clicked):
        assert all(value.device.type == "cuda" for value in tensors(output).values())
    assert not log.float64_on_device


def frames(count: int = 6) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, 96, 128, 3), dtype=np.uint8)


@pytest.mark.parametrize("num_objects", [1, 3])
def test_video_session_tracks_frames_without_waiting_for_the_device(num_objects):
    """Tracked frames (forward, then backward) launch their work without waiting for the device: frames and
    memory selections go over in non-blocking copies and holes are filled on the device (`fill_hole_area` is the
    config's 8). Results are on the device; prompts of every kind run there."""
    model = on_meta(Sam2VideoModel, SAM2)
    with fake_cuda() as log:
        model = model.to_empty(device="cuda")
        session = Sam2VideoSession(model, frames(), progress=False)
        assert session.fill_hole_area == 8
        results = [session.add_points(2, 1, [[50, 40]], [1])]
        results += [session.add_box(2, obj_id, [10 * obj_id, 10, 60, 60]) for obj_id in range(2, num_objects + 1)]
        mask = np.zeros((96, 128), dtype=bool)
        mask[20:50, 30:70] = True
        results.append(session.add_mask(4, 1, mask))
        log.waits.clear()
        results += list(session.propagate(start_frame=2)) + list(session.propagate(start_frame=2, reverse=True))
    assert not log.waits, log.waits
    assert not log.float64_on_device, log.float64_on_device
    assert len(results) == num_objects + 1 + 4 + 3  # prompts, then frames 2-5 and 2-0
    assert all(result.mask_logits.device.type == "cuda" for result in results)
    assert all(result.mask_logits.shape == (num_objects, 96, 128) for result in results[-7:])


def test_offloaded_memory_stays_on_the_host():
    """`offload_memory_to_cpu=True`: the stored masks and spatial memories are on the CPU (the copies there are
    the frame's only waits), the results and the pointers on the device."""
    model = on_meta(Sam2VideoModel, SAM2)
    with fake_cuda() as log:
        model = model.to_empty(device="cuda")
        session = Sam2VideoSession(model, frames(4), offload_memory_to_cpu=True, progress=False)
        session.add_points(0, 1, [[50, 40]], [1])
        session.add_points(0, 2, [[90, 60]], [1])
        log.waits.clear()
        results = list(session.propagate())
    stored = [memory for state in session._objects.values() for memory in state.memory.recent.values()]
    assert stored and all(m.maskmem.device.type == m.pred_masks.device.type == "cpu" for m in stored)
    assert all(m.pointer.device.type == "cuda" for m in stored)
    assert all(result.mask_logits.device.type == "cuda" for result in results)
    assert log.waits and all(wait.startswith("device-to-host copy video_session.py") for wait in log.waits)


@pytest.mark.parametrize("prompt_type", ["point", "box", "mask"])
def test_clip_training_runs_on_the_device(prompt_type):
    """`track_clips` (the training forward) on the device with a seeded CPU generator: loss and outputs on the
    device, no float64. (The backward pass needs a real GPU: `tests/test_cuda.py`.)"""
    model = on_meta(Sam2VideoModelForTraining, SAM2)
    with fake_cuda() as log:
        model = model.to_empty(device="cuda").train()
        pixels = torch.randn(2, 3, 3, 128, 128, device="cuda")
        labels = (torch.randn(2, 3, 2, 32, 32, device="cuda") > 0).float()
        output = track_clips(model, pixels, labels, prompt_type, 3, 3, 1.0, generator=torch.Generator().manual_seed(1))
    assert output.loss.requires_grad
    assert all(value.device.type == "cuda" for value in tensors(output).values())
    assert not log.float64_on_device, log.float64_on_device


@pytest.mark.parametrize("kind", ["device", "cpu", "numpy"])
def test_small_regions_match_connected_components(kind, monkeypatch):
    """The hole filling of both sessions (`frame_arithmetic.small_regions`, array operations only) marks exactly
    the 8-connected components of at most `max_area` pixels that scipy labels, at every area and shape tried: with
    all its rounds as on a device (where it cannot stop early without waiting), on CPU tensors and numpy arrays
    (stopping once nothing changes)."""
    if kind == "device":
        monkeypatch.setattr(frame_arithmetic, "_on_host", lambda array: False)
    small_regions = frame_arithmetic.small_regions
    generator = torch.Generator().manual_seed(0)
    eight = np.ones((3, 3), dtype=int)
    for trial in range(60):
        height, width = [(48, 40), (7, 9), (64, 64), (1, 30)][trial % 4]
        region = torch.randn(3, height, width, generator=generator) > (trial % 7 - 3) * 0.3
        max_area = (1, 2, 3, 8, 25, 200, 4000)[trial % 7]
        expected = np.zeros(region.shape, dtype=bool)
        for index, mask in enumerate(region.numpy()):
            labels, _ = ndimage.label(mask, structure=eight)
            areas = np.bincount(labels.ravel())
            expected[index] = (areas <= max_area)[labels] & mask
        found = small_regions(region.numpy() if kind == "numpy" else region, max_area)
        assert np.array_equal(np.asarray(found), expected), (trial, max_area)
