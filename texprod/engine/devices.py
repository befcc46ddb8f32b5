"""Devices by index, and constant tensors kept on the devices that use them.

A copy from pageable host memory to a GPU waits until the GPU has finished all the work
queued there. Made once per batch, such copies leave the GPU idle while Python prepares
the next batch, so constants (noise keys, latents, colour tables) are copied to each
device once and kept.
"""

from __future__ import annotations

import torch


def indexed(device: torch.device | str) -> torch.device:
    """`device` with its index: a bare "cuda" is the current CUDA device."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


class DeviceCopies:
    """A constant CPU tensor and its copies on the devices it is used on, each made once
    (two threads asking first may both copy: one copy is kept, both are the same). No lock,
    so that what holds it (a noise field, a plan) still pickles and deep-copies."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor
        self._copies: dict[str, torch.Tensor] = {}

    def on(self, device: torch.device | str) -> torch.Tensor:
        device = indexed(device)  # "cuda" and "cuda:0": one copy
        copy = self._copies.get(str(device))
        if copy is None:
            copy = self._copies.setdefault(str(device), self.tensor.to(device))
        return copy
