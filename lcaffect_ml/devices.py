"""Which device a program runs on, and what it records about it.

``resolve_device`` turns the programs' ``device`` option into a device: ``auto`` says which it chose
and why; ``cuda`` where CUDA is not usable fails at once naming the torch build (never a silent CPU
run). ``runtime_info`` is what the training and features outputs record about where they ran.
"""

from __future__ import annotations

import logging

import torch

from .options import ConfigError

log = logging.getLogger(__name__)


class CudaUnavailableError(ConfigError):
    """A GPU was asked for (``device: cuda``, ``gpus`` >= 1) where this torch cannot use one."""


# What the training and features outputs record about where they ran (metrics.json, features.json,
# the assets' metadata).
RUNTIME_KEYS = ("device", "precision", "dtype", "torch_version", "cuda_version", "gpu_name")
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def torch_build() -> str:
    """This torch and what it finds, for messages: version, CUDA build or not, devices found."""
    cuda = torch.version.cuda
    kind = f"a CUDA {cuda} build" if cuda else "a CPU-only build"
    return (f"torch {torch.__version__} ({kind}, torch.version.cuda={cuda}), "
            f"{torch.cuda.device_count()} CUDA device(s) found")


def require_cuda(what: str) -> None:
    """Fail at once, naming the torch build, when ``what`` (e.g. "device cuda") needs CUDA and it is absent."""
    if not torch.cuda.is_available():
        raise CudaUnavailableError(
            f"{what} asks for a GPU but CUDA is not available: {torch_build()}; install a CUDA build of "
            "torch (README, 'Models and devices') or set gpus: 0 / device: cpu")


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA where available, else CPU, saying which and why; ``cuda``/``cuda:N`` fails
    where CUDA is not usable (never a silent CPU run). A bare ``cuda`` is this rank's GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        log.info("device auto -> %s: %s", device, f"CUDA available ({torch_build()})" if device == "cuda"
                 else f"CUDA not available ({torch_build()})")
    elif str(device).startswith("cuda"):
        require_cuda(f"device {device}")
    dev = torch.device(device)
    return torch.device("cuda", local_rank) if dev.type == "cuda" and dev.index is None else dev


def runtime_info(device: torch.device, precision: str) -> dict[str, str]:
    """Where a run ran (``RUNTIME_KEYS``): device, precision and its dtype, torch and CUDA versions
    ("none" on a CPU-only build) and the GPU's name on CUDA."""
    info = {"device": str(device), "precision": precision, "dtype": _DTYPES[precision],
            "torch_version": torch.__version__, "cuda_version": torch.version.cuda or "none"}
    if device.type == "cuda":
        info["gpu_name"] = torch.cuda.get_device_name(device)
    return info
