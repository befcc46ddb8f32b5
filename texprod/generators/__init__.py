"""The SGAN / PSGAN generator family: config, model, receptive field, checkpoints."""

from __future__ import annotations

import torch

from texprod.generators.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_generator,
    save_generator,
)
from texprod.generators.config import GeneratorConfig, make_config
from texprod.generators.model import Generator, fold_batchnorm, init_random, randomize_statistics
from texprod.generators.receptive import ReceptiveField, receptive_field

__all__ = [
    "Checkpoint",
    "Generator",
    "GeneratorConfig",
    "ReceptiveField",
    "fold_batchnorm",
    "init_random",
    "load_checkpoint",
    "load_generator",
    "make_config",
    "random_generator",
    "randomize_statistics",
    "receptive_field",
    "save_generator",
]


def random_generator(config: GeneratorConfig, seed: int = 0) -> Generator:
    """A randomly initialised generator with realistic, random BatchNorm statistics.

    The statistics are calibrated on the project's own noise field (so outputs are textures,
    not saturated tanh) and then perturbed; everything depends only on `seed`.
    """
    from texprod.noise import NoiseField

    torch.manual_seed(seed)  # covers any module init that takes no generator
    generator = Generator(config)
    init_random(generator, seed)
    field = NoiseField(config, seed, waves=generator.waves)
    with torch.no_grad():
        calibration = field.windows([(0, 0), (40, -17)], 12, 12)  # (2, nz, 12, 12)
    randomize_statistics(generator, calibration, seed)
    return generator
