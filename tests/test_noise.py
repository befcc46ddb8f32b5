"""Invariant 1: the noise field is a function of (seed, channel, y, x) alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import tiny_generator
from texprod.engine import GeneratorConfig
from texprod.engine.noise import NoiseField, channel_key, global_latent, hash_uniform, mix32
from texprod.errors import ConfigError

PSGAN = "psgan-nearest-d4-k3"


def field(seed=3, period=None, name=PSGAN):
    gen = tiny_generator(name)
    return NoiseField(gen.config, seed, waves=gen.waves, period=period)


def window(f, *args):
    with torch.no_grad():
        return f.window(*args)


def test_mix32_is_the_same_on_python_ints_and_int64_tensors():
    values = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1, 0xDEADBEEF]
    as_tensor = mix32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert as_tensor == [mix32(v) for v in values]
    assert all(0 <= v < 2**32 for v in as_tensor)
    assert len(set(as_tensor)) == len(values)  # a bijection keeps them distinct


def test_local_noise_is_uniform_and_decorrelated():
    keys = [channel_key(1, 1, c) for c in range(4)]
    ys = torch.arange(-100, 100)
    xs = torch.arange(-50, 250)
    u = hash_uniform(keys, ys, xs).numpy()  # (4, 200, 300)
    assert u.min() >= -1.0 and u.max() < 1.0
    assert abs(u.mean()) < 0.01
    assert abs(u.std() - 1 / math.sqrt(3)) < 0.01
    counts, _ = np.histogram(u, bins=16, range=(-1, 1))
    expected = u.size / 16
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 60, f"chi-square {chi2:.1f} over 15 degrees of freedom"
    flat = u.reshape(4, -1)
    for a, b in [(u[0, :, :-1], u[0, :, 1:]), (u[0, :-1], u[0, 1:]), (flat[0], flat[1])]:
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.02


def test_values_are_exact_multiples_of_2_to_the_minus_23():
    u = hash_uniform([channel_key(0, 1, 0)], torch.arange(50), torch.arange(50)).double()
    scaled = (u + 1) * 2**23
    assert torch.equal(scaled, scaled.round())


@pytest.mark.parametrize("period", [None, (5, 7)])
def test_any_window_equals_the_same_cells_of_a_larger_window(period):
    f = field(period=period)
    big = window(f, -20, -30, 40, 50)
    for y0, x0, h, w in [(-20, -30, 1, 1), (-3, 11, 7, 5), (0, 0, 9, 13), (13, -30, 7, 50)]:
        small = window(f, y0, x0, h, w)
        expected = big[:, y0 + 20: y0 + 20 + h, x0 + 30: x0 + 30 + w]
        n_local = f.config.nz_local + f.config.nz_global
        assert torch.equal(small[:n_local], expected[:n_local])  # hashed and global: bitwise
        torch.testing.assert_close(small, expected, rtol=0, atol=1e-6)


def test_batched_windows_equal_single_windows():
    f = field()
    with torch.no_grad():
        batch = f.windows([(0, 0), (-7, 19), (100, -100)], 6, 9)
    for b, (y, x) in enumerate([(0, 0), (-7, 19), (100, -100)]):
        torch.testing.assert_close(batch[b], window(f, y, x, 6, 9), rtol=0, atol=1e-6)


def test_seed_changes_every_kind_of_channel():
    a, b = window(field(seed=1), 0, 0, 16, 16), window(field(seed=2), 0, 0, 16, 16)
    cfg = field().config
    local = slice(0, cfg.nz_local)
    glob = slice(cfg.nz_local, cfg.nz_local + cfg.nz_global)
    periodic = slice(cfg.nz_local + cfg.nz_global, cfg.nz)
    assert (a[local] == b[local]).float().mean() < 0.01
    assert not torch.equal(a[glob], b[glob])
    assert not torch.allclose(a[periodic], b[periodic], atol=1e-3)
    assert torch.equal(window(field(seed=1), 0, 0, 16, 16), a)  # and is deterministic


def test_global_channels_are_the_seed_latent_everywhere():
    f = field(seed=9)
    cfg = f.config
    z = window(f, -4, 8, 5, 6)[cfg.nz_local: cfg.nz_local + cfg.nz_global]
    latent = global_latent(9, cfg.nz_global)
    assert torch.equal(z, latent[:, None, None].expand_as(z))


def test_periodic_channels_are_sinusoids_of_global_coordinates():
    f = field(seed=4)
    cfg = f.config
    z = window(f, -10, -10, 30, 30)[cfg.nz_local + cfg.nz_global:]  # (P, 30, 30)
    with torch.no_grad():
        k = f.wave_vectors(global_latent(4, cfg.nz_global)[None])[0]  # (P, 2)
    ys, xs = torch.meshgrid(torch.arange(-10, 20.0), torch.arange(-10, 20.0), indexing="ij")
    # each channel must be sin(kx x + ky y + phase) for one unknown phase
    for c in range(cfg.nz_periodic):
        kx, ky = k[c].double()
        assert (kx == 0) != (ky == 0), "axis-aligned waves have one non-zero component"
        arg = kx * xs.double() + ky * ys.double()
        # sin(arg + p) = sin(arg) cos(p) + cos(arg) sin(p): least squares for (cos p, sin p)
        basis = torch.stack([torch.sin(arg).ravel(), torch.cos(arg).ravel()], dim=1)
        coef = torch.linalg.lstsq(basis, z[c].double().ravel()[:, None]).solution
        fit = (basis @ coef).ravel()
        assert torch.allclose(fit, z[c].double().ravel(), atol=1e-5)
        assert abs(coef.norm().item() - 1.0) < 1e-5


def test_repeat_mode_wraps_every_channel_with_the_period():
    period = (6, 10)
    f = field(period=period)
    base = window(f, 0, 0, 6, 10)
    for dy, dx in [(6, 0), (0, 10), (-12, 30), (60, -70)]:
        shifted = window(f, dy, dx, 6, 10)
        assert torch.equal(shifted, base)
    with torch.no_grad():
        k = f.wave_vectors(global_latent(3, f.config.nz_global)[None])[0]  # (P, 2)
    cycles = k * torch.tensor([period[1], period[0]]) / (2 * math.pi)
    torch.testing.assert_close(cycles, cycles.round(), rtol=0, atol=1e-4)


def test_bad_seed_and_period_are_rejected():
    gen = tiny_generator(PSGAN)
    with pytest.raises(ConfigError, match="seed: got -1"):
        NoiseField(gen.config, -1, waves=gen.waves)
    with pytest.raises(ConfigError, match="period: got"):
        NoiseField(gen.config, 0, waves=gen.waves, period=(0, 4))
    with pytest.raises(ConfigError, match="waves"):
        NoiseField(GeneratorConfig(nz_local=2, nz_global=2, nz_periodic=2, filters=(4,)), 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.cuda
def test_noise_is_bitwise_identical_on_cuda():
    keys = [channel_key(5, 1, c) for c in range(8)]
    ys, xs = torch.arange(-300, 300), torch.arange(-1000, 1000, 3)
    cpu = hash_uniform(keys, ys, xs)
    gpu = hash_uniform(keys, ys.cuda(), xs.cuda()).cpu()
    assert torch.equal(cpu, gpu)
    f = field()
    gen = tiny_generator(PSGAN)
    from texprod.engine.render import field_on

    with torch.no_grad():
        on_gpu = field_on(f, torch.device("cuda")).window(-7, 3, 20, 30, "cuda").cpu()
    n = gen.config.nz_local + gen.config.nz_global
    assert torch.equal(on_gpu[:n], window(f, -7, 3, 20, 30)[:n])
    torch.testing.assert_close(on_gpu, window(f, -7, 3, 20, 30), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------ quilt field


def _quilt(block=8, transition=4, period_blocks=None, seed=5, nz=3):
    from texprod.engine.noise import QuiltField

    return QuiltField(nz, seed, block, transition, period_blocks)


def _sample(field, y0, x0, h, w):
    ys = torch.arange(y0, y0 + h)[None]
    xs = torch.arange(x0, x0 + w)[None]
    return field.sample(ys, xs)[0]  # (nz, h, w)


def test_quilt_blocks_hold_their_own_latent_away_from_borders():
    from texprod.engine.noise import STREAM_QUILT

    field = _quilt(block=8, transition=4)
    z = _sample(field, -16, -16, 48, 48)  # blocks -2 .. 3 on both axes
    keys = [channel_key(5, STREAM_QUILT, c) for c in range(3)]
    for by in range(-2, 4):
        for bx in range(-2, 4):
            own = hash_uniform(keys, torch.tensor([by]), torch.tensor([bx]))[:, 0, 0]
            # cells whose centres are at least T/2 from every border: exactly the block latent
            core = z[:, by * 8 + 16 + 2: by * 8 + 16 + 6, bx * 8 + 16 + 2: bx * 8 + 16 + 6]
            assert torch.equal(core, own[:, None, None].expand_as(core))


def test_quilt_transition_has_the_requested_width_and_is_smooth():
    for transition in (2, 4, 6):
        field = _quilt(block=8, transition=transition)
        row = _sample(field, 4, -8, 1, 32)[:, 0]  # (nz, 32): crosses borders at x = 0, 8, 16
        blocks = [row[:, 8 * i + 4] for i in range(4)]  # block centres
        mixed = [x for x in range(32) if not any(torch.equal(row[:, x], b) for b in blocks)]
        for border in (8, 16, 24):
            around = [x for x in mixed if abs(x + 0.5 - border) <= transition / 2 + 1]
            assert abs(len(around) - transition) <= 1, (transition, border, around)
        # across each border the latent moves monotonically from one block's to the next's
        for i in range(3):
            segment = row[:, 8 * i + 4: 8 * i + 13]  # block i centre .. block i+1 centre
            lo = torch.minimum(blocks[i], blocks[i + 1])[:, None] - 1e-6
            hi = torch.maximum(blocks[i], blocks[i + 1])[:, None] + 1e-6
            assert ((segment >= lo) & (segment <= hi)).all()
            direction = torch.sign(blocks[i + 1] - blocks[i])[:, None]
            assert ((segment[:, 1:] - segment[:, :-1]) * direction >= -1e-6).all()


def test_quilt_windows_agree_and_wrap_with_their_period():
    field = _quilt(block=6, transition=3, period_blocks=(2, 3))
    big = _sample(field, -12, -18, 36, 54)
    assert torch.equal(_sample(field, 1, 5, 7, 9), big[:, 13:20, 23:32])
    # period: 2 x 6 = 12 cells down, 3 x 6 = 18 cells across
    assert torch.equal(_sample(field, -12, -18, 12, 18), _sample(field, 0, 0, 12, 18))
    assert torch.equal(_sample(field, 5, 7, 10, 10), _sample(field, 5 + 24, 7 - 36, 10, 10))


def test_quilt_rejects_a_transition_wider_than_a_block():
    with pytest.raises(ConfigError, match="quilt transition: got 9 cells"):
        _quilt(block=8, transition=9)
