"""The engine: the SGAN / PSGAN generators (config, model, receptive field), the noise field
over global coordinates, tile plans and the renderer.

It owns the maths from noise to pixels and imports nothing of texprod but `errors` and
`files`; every other wing may import it.
"""

from __future__ import annotations

import torch

from texprod.engine.config import GeneratorConfig, make_config
from texprod.engine.model import Generator, fold_batchnorm, init_random, randomize_statistics
from texprod.engine.noise import NoiseField
from texprod.engine.receptive import ReceptiveField, receptive_field

__all__ = [
    "Generator",
    "GeneratorConfig",
    "ReceptiveField",
    "fold_batchnorm",
    "init_random",
    "make_config",
    "random_generator",
    "randomize_statistics",
    "receptive_field",
]


def random_generator(config: GeneratorConfig, seed: int = 0) -> Generator:
    """A randomly initialised generator with realistic, random BatchNorm statistics.

    The statistics are calibrated on the project's own noise field (so outputs are textures,
    not saturated tanh) and then perturbed; everything depends only on `seed`.
    """
    torch.manual_seed(seed)  # covers any module init that takes no generator
    generator = Generator(config)
    init_random(generator, seed)
    field = NoiseField(config, seed, waves=generator.waves)
    with torch.no_grad():
        calibration = field.windows([(0, 0), (40, -17)], 12, 12)  # (2, nz, 12, 12)
    randomize_statistics(generator, calibration, seed)
    return generator
