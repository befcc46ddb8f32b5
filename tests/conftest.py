"""Shared fixtures: tiny seeded generators (random weights and BatchNorm statistics)."""

from __future__ import annotations

import functools

import pytest
import torch

from tests.prefect_server import prefect_api, prefect_server  # noqa: F401
from tests.s3_server import s3_bucket, s3_server  # noqa: F401
from texprod.engine import GeneratorConfig, random_generator

torch.set_num_threads(2)

# Architectures the exactness properties are proven on: both upsampling variants,
# depth 3-6, kernels 3-7 (and an even one), with and without global / periodic channels.
ARCHS: dict[str, GeneratorConfig] = {
    "sgan-tconv-d3-k5": GeneratorConfig(nz_local=8, nz_global=0, nz_periodic=0,
                                        upsample="tconv", kernel=5, filters=(16, 8)),
    "psgan-nearest-d4-k3": GeneratorConfig(nz_local=4, nz_global=4, nz_periodic=4,
                                           upsample="nearest", kernel=3, filters=(24, 16, 8)),
    "psgan-affine-tconv-d5-k7": GeneratorConfig(nz_local=4, nz_global=6, nz_periodic=2,
                                                affine=True, wave_hidden=8, upsample="tconv",
                                                kernel=7, filters=(16, 12, 8, 8)),
    "psgan-const-waves-nearest-d6-k5": GeneratorConfig(nz_local=4, nz_global=0, nz_periodic=2,
                                                       upsample="nearest", kernel=5,
                                                       filters=(8, 8, 8, 8, 8)),
    "psgan-tconv-d4-k4": GeneratorConfig(nz_local=3, nz_global=3, nz_periodic=2,
                                         upsample="tconv", kernel=4, filters=(16, 8, 8)),
}


@functools.cache
def tiny_generator(name: str, seed: int = 0):
    return random_generator(ARCHS[name], seed)


@pytest.fixture(params=sorted(ARCHS))
def arch(request) -> str:
    return request.param
