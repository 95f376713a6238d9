"""Which device the encoder runs on (extract.device: choices.DEVICES), and whether CUDA is there, asked of torch only
where it can be."""
from __future__ import annotations

import os
import sys

# What a GPU driver puts on a Linux machine, one of which torch.cuda.is_available() needs before it can be True: the
# NVIDIA kernel driver's control node and its /proc entry (desktops, servers, containers given a GPU: the CUDA
# driver library opens /dev/nvidiactl), WSL2's GPU (/dev/dxg), Jetson's (/dev/nvhost-ctrl-gpu, /dev/nvmap), and
# AMD's (/dev/kfd: a ROCm build of torch answers torch.cuda for AMD GPUs). Where none is there, CUDA cannot be, and
# importing torch to ask (seconds: stage one's process never needs torch otherwise on the CPU) is skipped.
GPU_DRIVER_PATHS = ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/dxg", "/dev/nvhost-ctrl-gpu", "/dev/nvmap",
                    "/dev/kfd")


def gpu_driver_present() -> bool:
    """False only where a GPU is surely absent: on Linux with none of GPU_DRIVER_PATHS. True elsewhere (another
    system, or a driver is there): then torch decides."""
    return sys.platform != "linux" or any(os.path.exists(p) for p in GPU_DRIVER_PATHS)


def cuda_available() -> bool:
    """Whether torch can run on CUDA here: torch.cuda.is_available(), not asked (torch not imported) where no GPU
    driver is present (gpu_driver_present)."""
    if not gpu_driver_present():
        return False
    import torch

    return torch.cuda.is_available()


def device_type(device: str, backend: str) -> str:
    """extract.device (auto | cpu | cuda) as the type of device the encoder runs on, "cuda" or "cpu": cuda when
    asked; auto is CUDA where torch has it, unless the backend runs on the CPU only (onnxruntime; auto picks torch
    on CUDA). (Whether a cuda asked for is there is checked where the encoder loads: load_encoder's ConfigError.)"""
    cuda = device == "cuda" or (device == "auto" and backend != "onnxruntime" and cuda_available())
    return "cuda" if cuda else "cpu"
