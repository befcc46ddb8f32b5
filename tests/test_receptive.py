"""The halo comes from the layers: perturbing one noise cell changes exactly its span."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import ARCHS, tiny_generator
from texprod.engine import (
    GeneratorConfig,
    fold_batchnorm,
    make_config,
    random_generator,
    receptive_field,
)
from texprod.engine.noise import NoiseField


def test_reference_generator_matches_the_published_figures():
    # FIELD-NOTES: one cell influences a 125-px span; a halo of 2 cells suffices.
    rf = receptive_field(random_generator(make_config(), 0).blocks)
    assert rf.cell_px == 32
    assert rf.span_px == 125
    assert rf.halo == 2


def _changed_span(gen, cell: int, n: int = 12) -> tuple[tuple[int, int], tuple[int, int]]:
    """Bounding box (rows, cols) of output pixels that change when one cell changes."""
    f = NoiseField(gen.config, 1, waves=gen.waves)
    with torch.no_grad():
        z = f.window(0, 0, n, n).double()[None]  # (1, nz, n, n)
        model = gen.double().eval()
        before = model(z)
        z[0, :, cell, cell] = torch.rand(gen.config.nz, generator=torch.Generator().manual_seed(4),
                                         dtype=torch.float64) * 2 - 1
        after = model(z)
    gen.float()
    changed = ((after - before).abs() > 1e-12).any(dim=1)[0].numpy()  # (n*S, n*S)
    rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
    return (rows.min(), rows.max()), (cols.min(), cols.max())


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_perturbing_one_cell_changes_exactly_the_computed_span(name):
    gen = random_generator(ARCHS[name], 0)  # a private copy: the test casts it to float64
    rf = receptive_field(gen.blocks)
    n, cell = 12, 6
    expected = (cell * rf.cell_px + rf.span[0], cell * rf.cell_px + rf.span[1])
    assert 0 <= expected[0] and expected[1] < n * rf.cell_px, "window too small for the span"
    rows, cols = _changed_span(gen, cell, n)
    assert rows == expected and cols == expected


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_halo_and_margins_agree_with_the_forward_span(name):
    """Cells whose span touches the pixels of cell 0 are exactly those the halo covers."""
    rf = receptive_field(tiny_generator(name).blocks)
    s = rf.cell_px
    touching = [c for c in range(-20, 21) if c * s + rf.span[0] <= s - 1 and c * s + rf.span[1] >= 0]
    left, right = rf.margins[0]
    assert (min(touching), max(touching)) == (-left, right)
    assert rf.halo == max(left, right)
    assert rf.margins[-1] == (0, 0)


def test_different_layouts_give_different_halos():
    small = receptive_field(random_generator(make_config(depth=3, kernel=3, filters=(8, 8)), 0).blocks)
    big = receptive_field(random_generator(make_config(depth=3, kernel=9, filters=(8, 8)), 0).blocks)
    assert small.span_px < big.span_px
    assert small.halo <= big.halo


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_folding_batchnorm_keeps_the_output(name):
    gen = tiny_generator(name)
    folded = fold_batchnorm(gen)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in gen.modules()) or \
        gen.config.depth == 1
    f = NoiseField(gen.config, 2, waves=gen.waves)
    with torch.no_grad():
        z = f.window(-3, 5, 6, 7)[None]
        torch.testing.assert_close(folded(z), gen(z), rtol=0, atol=1e-5)


def test_random_init_gives_textures_not_saturation():
    gen = tiny_generator("psgan-nearest-d4-k3")
    f = NoiseField(gen.config, 0, waves=gen.waves)
    with torch.no_grad():
        x = gen(f.window(0, 0, 8, 8)[None])
    assert 0.1 < x.std() < 0.9
    assert (x.abs() > 0.99).float().mean() < 0.05
    # BatchNorm statistics are not the identity
    bn = next(m for m in gen.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_config_rejects_bad_values():
    from texprod.errors import ConfigError

    with pytest.raises(ConfigError, match="kernel: got 4, the nearest-upsample variant"):
        GeneratorConfig(upsample="nearest", kernel=4)
    with pytest.raises(ConfigError, match="upsample: got 'bilinear'"):
        GeneratorConfig(upsample="bilinear")
    with pytest.raises(ConfigError, match="filters: got 3 widths"):
        make_config(depth=5, filters=(8, 8, 8))
    with pytest.raises(ConfigError, match="nz_global: got 4, an sgan"):
        make_config(arch="sgan", nz_global=4)
