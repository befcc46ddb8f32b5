"""How much memory a render needs, known before it runs.

`render_bytes` runs a plan's network on an empty batch (every shape but the batch is the
real one, and nothing is computed: milliseconds; the meta device would do the same, but its
first convolution imports 1 s of symbolic-shape machinery) and follows every tensor it
makes, from its creation until its last reference goes, counting each at the size it has
in a real batch: the largest total alive at once is the batch's peak.

That is the tensors alone. The convolution libraries add their own buffers: on a 2-core
Xeon the process's heap (anonymous RSS) grew by 1.3-1.4x this figure for 1024-px tiles of
the reference generator (oneDNN's reordered copies), and cuDNN takes workspaces as well,
so callers compare it with what a device has as a lower bound, never as a promise.
"""

from __future__ import annotations

import copy
import weakref

import torch
from torch.overrides import TorchFunctionMode

from texprod.engine.render import Renderer, forward_interior, quantize
from texprod.engine.tiling import TilePlan


class _LiveTensors(TorchFunctionMode):  # a TorchDispatchMode would import dynamo: 1.5 s
    """Counts the bytes of the storages that are alive, and their peak, as ops run, each
    at its size in a batch of `batch` (the tensors themselves have an empty batch).

    A storage lives while any tensor viewing it does (a crop keeps its whole map), so the
    bytes are counted per storage and released when its last tensor is collected.
    """

    def __init__(self, batch: int):
        super().__init__()
        self.batch = batch
        self.bytes: dict[int, int] = {}  # storage id -> bytes
        self.views: dict[int, int] = {}  # storage id -> tensors alive on it
        self.now = 0
        self.peak = 0

    def track(self, tensor: torch.Tensor) -> None:
        key = tensor.untyped_storage()._cdata  # one id for a storage and all its views
        if key not in self.bytes:  # a new storage: this tensor is its whole extent
            size = tensor.shape.numel() if tensor.numel() else \
                self.batch * tensor.shape[1:].numel()  # (0, ...) stands for (batch, ...)
            self.bytes[key] = size * tensor.element_size()
            self.views[key] = 0
            self.now += self.bytes[key]
            self.peak = max(self.peak, self.now)
        self.views[key] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        self.views[key] -= 1
        if not self.views[key]:
            del self.views[key]
            self.now -= self.bytes.pop(key)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, tuple | list) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.track(tensor)
        return out


def render_bytes(renderer: Renderer, plan: TilePlan, batch: int, output: str = "uint8"
                 ) -> int:
    """Peak bytes of the tensors alive while `renderer` renders one batch of `plan` (the
    whole canvas for a one-pass plan): the noise windows, every layer's maps, the
    quantized pixels. Weights are left out (they are small and loaded once)."""
    one_pass = plan.one_pass
    model = copy.deepcopy(renderer.generator if one_pass else renderer.model).eval()
    model = model.to(device="cpu", dtype=renderer.dtype)  # shapes only: the CPU will do
    wy, wx = plan.window_cells
    live = _LiveTensors(1 if one_pass else min(batch, len(plan.tiles)))
    with torch.inference_mode(), live:
        z = torch.empty((0, renderer.generator.config.nz, wy, wx),
                        dtype=renderer.dtype)  # (B, nz, ty + 2H, tx + 2H), B = 0
        x = model(z) if one_pass else forward_interior(model.blocks, renderer.rf, z,
                                                      plan.tile_cells)
        pixels = quantize(x, output)  # (B, h, w, C)
        del z, x, pixels
    return live.peak
