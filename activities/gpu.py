"""This host's NVIDIA GPUs, as NVML lists them: none when NVML or its driver library is missing."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuDevice:
    index: int  # NVML's order, which need not be CUDA's: hand devices out by UUID
    uuid: str  # GPU-..., what CUDA_VISIBLE_DEVICES accepts whatever the enumeration order
    name: str  # e.g. NVIDIA A100-SXM4-80GB
    memory_mb: int


# What the local runtime asks for the host's devices; tests hand it a fixed list.
GpuDeviceList = Callable[[], list[GpuDevice]]


def load_nvml() -> ModuleType | None:
    # The module comes from nvidia-ml-py, NVIDIA's own bindings; where the old `pynvml` distribution (a
    # deprecated alias of it) is installed too, importing warns, which says nothing to our users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            import pynvml
        except ImportError:
            return None
    return pynvml


def nvml_text(value: str | bytes) -> str:
    # Older bindings return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else value


def nvml_devices() -> list[GpuDevice]:
    """Every GPU NVML sees now; an empty list when there is no driver, no library or no device."""
    nvml = load_nvml()
    if nvml is None:
        return []
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        logger.debug("NVML unavailable, so no GPUs: %s", exc)
        return []
    try:
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            devices.append(
                GpuDevice(
                    index=index,
                    uuid=nvml_text(nvml.nvmlDeviceGetUUID(handle)),
                    name=nvml_text(nvml.nvmlDeviceGetName(handle)),
                    memory_mb=int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // MIB,
                )
            )
        return devices
    except nvml.NVMLError as exc:
        # A device that fails to answer cannot be handed out safely; better none than a wrong one.
        logger.warning("NVML failed while listing GPUs, so none are handed out: %s", exc)
        return []
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            logger.debug("NVML shutdown failed: %s", exc)
