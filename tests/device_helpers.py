"""A CUDA device on a machine without one, for the device-placement tests.

Under `fake_cuda()` tensors are PyTorch's fake tensors: they carry a device, a dtype and a shape but no data, and
every operation checks its inputs' devices as CUDA would. So code that mixes a CPU tensor into CUDA work, reads a
CUDA tensor's values or creates float64 on the device can be caught on a CPU machine. Reading values cannot be
answered without data: a read is answered as if every value were nonzero (True, 1, all indices for `nonzero`) and
recorded, as is every copy between the host and the device that makes the host wait for the device (a blocking
host-to-device copy synchronises the stream; device-to-host copies always wait for the data). Values are never
checked here: `tests/test_cuda.py` compares numbers on a real GPU.

No real CUDA call is made, so no backward pass (autograd's engine asks the driver for the device) and no CUDA
generator or autocast (off when torch sees no GPU).
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch._subclasses.fake_tensor as fake_tensor

aten = torch.ops.aten
VALUE_READS = {
    aten._local_scalar_dense.default,
    aten.item.default,
    aten.is_nonzero.default,
    aten.equal.default,
    aten.nonzero.default,
}


@dataclass
class DeviceLog:
    """What a `fake_cuda()` block did: each host wait as "what file:line" (the innermost hiera_hf frame), and the
    float64 tensors made on the device."""

    waits: list[str] = field(default_factory=list)
    float64_on_device: list[str] = field(default_factory=list)


def _where() -> str:
    frames = [f for f in traceback.extract_stack() if "hiera_hf" in f.filename or "/tests/test_" in f.filename]
    frame = frames[-1] if frames else traceback.extract_stack()[0]
    return f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"


def _device(value) -> torch.device | None:
    return value.device if isinstance(value, torch.Tensor) else None


class _FakeCuda(fake_tensor.FakeTensorMode):
    def __init__(self, log: DeviceLog):
        super().__init__(allow_non_fake_inputs=True)
        self.cache_enabled = False  # a cached composite would hide the value reads inside it
        self.log = log

    def dispatch(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in VALUE_READS:
            tensor = args[0]
            if tensor.device.type == "cuda":
                self.log.waits.append(f"{func.__name__.split('.')[0]} {_where()}")
            if func is aten.nonzero.default:
                shape = ([tensor.numel(), tensor.ndim],)
                return super().dispatch(aten.empty.memory_format, types, shape, {"dtype": torch.long,
                                                                                   "device": tensor.device})
            if func in (aten.equal.default, aten.is_nonzero.default) or tensor.dtype == torch.bool:
                return True
            return 1.0 if tensor.dtype.is_floating_point else 1
        if func is aten._to_copy.default and "device" in kwargs:
            source, target = args[0].device.type, torch.device(kwargs["device"]).type
            if (source, target) == ("cpu", "cuda") and not kwargs.get("non_blocking"):
                self.log.waits.append(f"blocking host-to-device copy {_where()}")
            if (source, target) == ("cuda", "cpu"):
                self.log.waits.append(f"device-to-host copy {_where()}")
        if func is aten.copy_.default and {_device(args[0]).type, _device(args[1]).type} == {"cpu", "cuda"}:
            self.log.waits.append(f"copy_ between host and device {_where()}")
        output = super().dispatch(func, types, args, kwargs)
        if isinstance(output, torch.Tensor) and output.device.type == "cuda" and output.dtype == torch.float64:
            self.log.float64_on_device.append(f"{func.__name__} {_where()}")
        return output


@contextlib.contextmanager
def fake_cuda() -> Iterator[DeviceLog]:
    """Run the block on a fake CUDA device (see the module docstring); yields its `DeviceLog`. Modules go there with
    `to_empty(device="cuda")` (build them on the meta device first)."""
    limit = fake_tensor.CONSTANT_NUMEL_LIMIT
    # Fake tensors of at most this many elements made from real data keep that data, and operations on them run
    # for real, which for a copy to "cuda" would call the driver: keep none.
    fake_tensor.CONSTANT_NUMEL_LIMIT = -1
    log = DeviceLog()
    try:
        with _FakeCuda(log):
            yield log
    finally:
        fake_tensor.CONSTANT_NUMEL_LIMIT = limit


def on_meta(model_class, config) -> torch.nn.Module:
    """`model_class(config)` built on the meta device (no memory, no initialisation), for `.to_empty(device="cuda")`
    inside `fake_cuda()`."""
    with torch.device("meta"):
        return model_class(config)
