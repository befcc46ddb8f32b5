"""Training: a tiny configuration end to end on the CPU, resume, latents, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch
from safetensors.torch import load_file

from texprod.cli import main
from texprod.engine.noise import NoiseField
from texprod.engine.render import Renderer, render_canvas, render_reference
from texprod.engine.tiling import plan_tiles
from texprod.errors import TexprodError
from texprod.files import sha256_file
from texprod.models import load_checkpoint, load_generator
from texprod.training.trainer import STATE_FILE, TrainConfig, Trainer, train_model


def exemplar(tmp_path: Path, name: str = "stripes.png", size: int = 96, seed: int = 0,
             grey: bool = False) -> Path:
    """A structured colour texture: noisy diagonal stripes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    stripes = (np.sin((x + y) / 3.0 + seed) > 0).astype(np.float32)
    base = np.stack([stripes * 150 + 60, stripes * 80 + 90, 200 - stripes * 120], axis=-1)
    image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    if grey:
        image = image[..., :1]
    path = tmp_path / name
    pyvips.Image.new_from_array(image).pngsave(str(path))
    return path


def tiny(**changes) -> TrainConfig:
    options = dict(arch="sgan", filters=(16, 8), d_filters=(8, 16, 16, 16), crop_px=32,
                   batch=2, iters=4,
                   checkpoint_every=2, samples_every=2, nz_local=6, latent_steps=3)
    options.update(changes)
    return TrainConfig(**options)


def test_a_few_iterations_train_save_and_tile_exactly(tmp_path):
    out = tmp_path / "model"
    losses = []
    result = train_model([exemplar(tmp_path)], str(out), tiny(), device="cpu",
                         progress=lambda i, now, s: losses.append(dict(now)))
    assert result["iterations"] == 4 and len(losses) == 4
    assert all(np.isfinite(v) for entry in losses for v in entry.values())
    checkpoint = load_checkpoint(out)  # loads through the normal, validated path
    card = checkpoint.card["provenance"]
    assert card["exemplars"][0]["name"] == "stripes.png" and len(card["exemplars"][0]["sha256"]) == 64
    assert card["training"]["iterations"] == 4 and card["training"]["seconds"] > 0
    assert set(card["training"]["losses"]) == {"d", "g"}
    assert sorted(p.name for p in (out / "samples").iterdir()) == \
        ["iter-000002.png", "iter-000004.png"]
    # a loadable snapshot beside every sample grid; the last one is the final model
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["iter-000002", "iter-000004"]
    first, last = (load_checkpoint(out / "snapshots" / n) for n in ("iter-000002", "iter-000004"))
    final = load_checkpoint(out).generator.state_dict()
    assert all(torch.equal(v, final[k]) for k, v in last.generator.state_dict().items())
    assert not all(torch.equal(v, final[k]) for k, v in first.generator.state_dict().items())
    gen = checkpoint.generator
    bn = next(m for m in gen.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))  # trained
    # the engine's exactness survives training, BatchNorm statistics included
    field = NoiseField(gen.config, 3, waves=gen.waves)
    reference = render_reference(gen, field, 70, 45, x0=-5, y0=3, output="float32")
    renderer = Renderer(gen, "cpu")
    for tile in (8, 24):
        plan = plan_tiles(70, 45, 8, renderer.rf.halo, tile, x0=-5, y0=3)
        assert np.abs(render_canvas(renderer, field, plan, output="float32")
                      - reference).max() <= 1e-4


def test_resume_continues_with_the_same_optimiser_state(tmp_path):
    image = exemplar(tmp_path)
    straight = Trainer([image], tmp_path / "straight", tiny(iters=4), device="cpu")
    straight.run()
    interrupted = Trainer([image], tmp_path / "resumed", tiny(iters=2), device="cpu")
    interrupted.run()  # ... and the process dies after its checkpoint at iteration 2
    resumed = Trainer([image], tmp_path / "resumed", tiny(iters=4), device="cpu", resume=True)
    assert resumed.state.iteration == 2
    step = next(iter(resumed.opt_g.state.values()))["step"]
    assert float(step) == 2  # Adam's moments came back with it
    resumed.run()
    for (name, a), b in zip(straight.G.state_dict().items(),
                            resumed.G.state_dict().values(), strict=True):
        if not name.endswith("num_batches_tracked"):  # a counter, not saved or used
            assert torch.allclose(a.float(), b.float(), atol=1e-5), name
    for a, b in zip(straight.G_ema.parameters(), resumed.G_ema.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)  # the average resumes too
    history = json.loads((tmp_path / "resumed" / "training.json").read_text())["state"]["history"]
    assert [h["iteration"] for h in history] == [2, 4]


def test_resume_with_a_lower_learning_rate_anneals_the_run(tmp_path, caplog):
    image = exemplar(tmp_path)
    Trainer([image], tmp_path / "run", tiny(iters=2), device="cpu").run()
    with caplog.at_level("INFO", logger="texprod.training.trainer"):
        annealed = Trainer([image], tmp_path / "run", tiny(iters=4, lr=5e-5), device="cpu",
                           resume=True)
    assert "learning rate 5e-05 (was 0.0002 before the resume)" in caplog.text
    for opt in (annealed.opt_g, annealed.opt_d):
        assert [g["lr"] for g in opt.param_groups] == [5e-5]
        assert float(next(iter(opt.state.values()))["step"]) == 2  # moments kept
    annealed.run()
    # a plain --resume keeps the annealed rate
    resumed = Trainer([image], tmp_path / "run", tiny(iters=6), device="cpu", resume=True)
    assert [g["lr"] for g in resumed.opt_d.param_groups] == [5e-5]
    resumed.run()
    history = json.loads((tmp_path / "run" / "training.json").read_text())["state"]["history"]
    assert [(h["iteration"], h["lr"]) for h in history] == [(2, 2e-4), (4, 5e-5), (6, 5e-5)]
    assert load_checkpoint(tmp_path / "run").card["provenance"]["training"]["lr"] == 5e-5


def test_the_saved_model_is_the_weight_average_with_its_own_statistics(tmp_path):
    image = exemplar(tmp_path)
    averaged = Trainer([image], tmp_path / "avg", tiny(iters=3, ema=0.5), device="cpu")
    averaged.run()
    raw, avg = averaged.G.state_dict(), averaged.G_ema.state_dict()
    saved = load_checkpoint(tmp_path / "avg").generator.state_dict()
    weights = [k for k in raw if k.endswith("weight")]
    assert all(torch.equal(saved[k], avg[k]) for k in saved  # the average is what is saved
               if not k.endswith("num_batches_tracked"))  # a counter, not saved or used
    assert not all(torch.equal(raw[k], avg[k]) for k in weights)
    means = [k for k in raw if k.endswith("running_mean")]
    assert not all(torch.allclose(raw[k], avg[k]) for k in means)  # measured, not copied
    plain = Trainer([image], tmp_path / "raw", tiny(iters=3, ema=0.0), device="cpu")
    plain.run()
    saved = load_checkpoint(tmp_path / "raw").generator.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in plain.G.state_dict().items()
               if not k.endswith("num_batches_tracked"))


def test_training_into_a_used_directory_needs_resume(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(TexprodError, match="exists and is not empty; pass --resume"):
        Trainer([exemplar(tmp_path)], out, tiny(), device="cpu")


def test_several_exemplars_give_a_psgan_named_latents(tmp_path):
    images = [exemplar(tmp_path, "brick.png", seed=0), exemplar(tmp_path, "wave.png", seed=3)]
    config = tiny(arch="psgan", nz_local=4, nz_global=4, nz_periodic=2, iters=2, crop_px=96)
    result = train_model(images, str(tmp_path / "m"), config, device="cpu")
    assert result["latents"] == ["brick", "wave"]
    checkpoint = load_checkpoint(tmp_path / "m")
    assert set(checkpoint.latents) == {"brick", "wave"}
    assert all(v.shape == (4,) and v.abs().max() <= 1 for v in checkpoint.latents.values())


def test_an_sgan_warm_starts_a_psgan_that_first_draws_its_texture(tmp_path):
    image = exemplar(tmp_path)
    train_model([image], str(tmp_path / "sgan"), tiny(iters=2), device="cpu")
    sgan = load_checkpoint(tmp_path / "sgan").generator
    config = tiny(arch="psgan", nz_global=4, nz_periodic=0, iters=2,
                  init=str(tmp_path / "sgan"))
    psgan = Trainer([image, exemplar(tmp_path, "other.png", seed=3)], tmp_path / "psgan",
                    config, device="cpu")
    assert psgan.G.config.nz == 6 + 4
    # before training: the SGAN's output whatever the global latent
    z_local = torch.rand(2, 6, 7, 7) * 2 - 1
    z_global = (torch.rand(2, 4, 1, 1) * 2 - 1).expand(-1, -1, 7, 7)
    with torch.no_grad():
        warm = psgan.G_ema.eval()(torch.cat([z_local, z_global], 1))
        assert torch.equal(warm, sgan.eval()(z_local))
    psgan.run()
    card = load_checkpoint(tmp_path / "psgan").card["provenance"]["training"]
    assert card["init"] == str(tmp_path / "sgan")
    assert card["init_digest"] == load_checkpoint(tmp_path / "sgan").digest
    # the global channels' weights learned something
    first = psgan.G.blocks[0][0].weight  # (C_in, C_out, k, k)
    assert first[6:].abs().max() > 0


def test_warm_start_from_a_missing_model_is_refused(tmp_path):
    with pytest.raises(TexprodError, match="--init bundled:nope: .*no such bundled model"):
        Trainer([exemplar(tmp_path)], tmp_path / "new", tiny(init="bundled:nope"), device="cpu")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("change, message", [
    (dict(filters=(16, 4)), "filters is \\(16, 8\\), this training's is \\(16, 4\\)"),
    (dict(nz_local=5), "6 local noise channels, this training has 5; pass --nz-local 6"),
])
def test_warm_start_from_a_different_generator_is_refused(tmp_path, change, message):
    image = exemplar(tmp_path)
    train_model([image], str(tmp_path / "sgan"), tiny(iters=1), device="cpu")
    with pytest.raises(TexprodError, match=message):
        Trainer([image], tmp_path / "new", tiny(init=str(tmp_path / "sgan"), **change),
                device="cpu")


def test_the_discriminator_warm_starts_from_a_training_run(tmp_path):
    image = exemplar(tmp_path)
    train_model([image], str(tmp_path / "run"), tiny(), device="cpu")
    saved = {k[2:]: v for k, v in load_file(tmp_path / "run" / STATE_FILE).items()
             if k.startswith("D.")}
    trainer = Trainer([image], tmp_path / "new",
                      tiny(init=str(tmp_path / "run"), init_discriminator=str(tmp_path / "run")),
                      device="cpu")
    for key, value in trainer.D.state_dict().items():
        assert torch.equal(value, saved[key]), key
    trainer.run()
    training = load_checkpoint(tmp_path / "new").card["provenance"]["training"]
    assert training["init_discriminator_digest"] == sha256_file(tmp_path / "run" / STATE_FILE)
    # a fresh run without it starts from random weights
    fresh = Trainer([image], tmp_path / "fresh", tiny(), device="cpu")
    assert not torch.equal(fresh.D.net[0].weight, saved["net.0.weight"])


@pytest.mark.parametrize("source, message", [
    ("empty", "no training_state.safetensors there"),
    ("wider", r"its discriminator has widths \[16, 16, 16, 16\], this training's \[8, 16, 16, 16\]"),
])
def test_a_discriminator_warm_start_that_cannot_fit_is_refused(tmp_path, source, message):
    image = exemplar(tmp_path)
    run = tmp_path / source
    if source == "empty":
        run.mkdir()
    else:
        train_model([image], str(run), tiny(iters=1, d_filters=(16, 16, 16, 16)), device="cpu")
    with pytest.raises(TexprodError, match=f"--init-discriminator {run}: {message}"):
        Trainer([image], tmp_path / "new", tiny(init_discriminator=str(run)), device="cpu")
    assert not (tmp_path / "new").exists()


def test_grey_exemplars_are_converted_to_rgb(tmp_path):
    trainer = Trainer([exemplar(tmp_path, "grey.png", grey=True)], tmp_path / "m", tiny(),
                      device="cpu")
    assert trainer.exemplars[0].shape == (96, 96, 3)


@pytest.mark.parametrize("kind, message", [
    ("missing", "nope.png"),
    ("unreadable", "not-an-image.png"),
    ("small", "smaller than the training crop of 32 px"),
])
def test_bad_exemplars_are_rejected_clearly(tmp_path, kind, message):
    if kind == "missing":
        path = tmp_path / "nope.png"
    elif kind == "unreadable":
        path = tmp_path / "not-an-image.png"
        path.write_text("hello")
    else:
        path = exemplar(tmp_path, "tiny.png", size=20)
    with pytest.raises(TexprodError, match=message):
        Trainer([path], tmp_path / "m", tiny(), device="cpu")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--iters", "0", "--iters: got 0, must be at least 1"),
    ("--batch", "0", "--batch: got 0, must be at least 1"),
    ("--samples-every", "0", "--samples-every: got 0, must be at least 1"),
    ("--checkpoint-every", "-1", "--checkpoint-every: got -1, must be at least 1"),
    ("--latent-steps", "-2", "--latent-steps: got -2, must be at least 0"),
    ("--lr", "-1", "--lr: got -1.0, must be between 0 and 1"),
])
def test_bad_training_numbers_are_refused_before_any_work(tmp_path, capsys, option, value,
                                                           message):
    out = tmp_path / "m"
    assert main(["train", str(exemplar(tmp_path)), "--out", str(out), "--device", "cpu",
                 option, value]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not out.exists()


def test_a_psgan_with_crops_too_small_for_its_latents_is_refused_before_training(tmp_path,
                                                                                  capsys):
    out = tmp_path / "m"
    assert main(["train", str(exemplar(tmp_path)), "--out", str(out), "--device", "cpu",
                 "--arch", "psgan", "--filters", "16,8", "--size", "64", "--iters", "1"]) == 2
    assert "--size: got 64 px crops; a psgan's named latents are fitted on texture " \
        "statistics, which need crops of at least 80 px" in capsys.readouterr().err
    assert not out.exists()


def test_an_out_under_a_file_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["train", str(exemplar(tmp_path)), "--out", str(blocker / "m"), "--device",
                 "cpu", "--iters", "1"]) == 2
    assert f"--out: got '{blocker / 'm'}', but {blocker} is a file, not a directory" \
        in capsys.readouterr().err


def test_training_to_s3_uploads_a_loadable_model(s3_bucket, tmp_path, monkeypatch):
    from texprod.storage import download_file, list_keys

    monkeypatch.setenv("TEXPROD_CACHE", str(tmp_path / "cache"))
    result = train_model([exemplar(tmp_path)], f"{s3_bucket}/models/m", tiny(), device="cpu")
    assert result["uri"] == f"{s3_bucket}/models/m"
    keys = list_keys(f"{s3_bucket}/models/m/")
    assert {"model.json", "generator.safetensors"} <= {k.rsplit("/", 1)[-1] for k in keys}
    copy = tmp_path / "copy"
    for name in ("model.json", "generator.safetensors"):
        download_file(f"{s3_bucket}/models/m/{name}", copy / name)
    assert load_checkpoint(copy).card["provenance"]["training"]["iterations"] == 4


def test_an_s3_destination_that_cannot_be_reached_fails_before_training(tmp_path, monkeypatch):
    import socket

    from texprod import storage

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "k",
                        "AWS_SECRET_ACCESS_KEY": "s", "TEXPROD_S3_MAX_ATTEMPTS": "1",
                        "TEXPROD_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(name, value)
    storage.clear_client_cache()
    iterations = []
    with pytest.raises(storage.EndpointUnreachable, match="to write the model to "
                                                          "s3://bucket/models/m/model.json"):
        train_model([exemplar(tmp_path)], "s3://bucket/models/m", tiny(), device="cpu",
                    progress=lambda *step: iterations.append(step))
    assert iterations == []
    assert not (tmp_path / "cache").exists()  # no local training directory either
    storage.clear_client_cache()


def test_train_command(tmp_path, capsys):
    out = tmp_path / "cli-model"
    assert main(["train", str(exemplar(tmp_path)), "--out", str(out), "--filters", "16,8",
                 "--size", "32", "--iters", "2", "--batch", "2", "--samples-every", "1",
                 "--checkpoint-every", "1", "--device", "cpu", "--name", "stripes"]) == 0
    assert "2 iterations" in capsys.readouterr().out
    assert load_generator(out).config.filters == (16, 8)
    assert len(list((out / "samples").iterdir())) == 2
    # a second run warm-started from the first, generator and discriminator
    again = tmp_path / "cli-again"
    assert main(["train", str(exemplar(tmp_path)), "--out", str(again), "--filters", "16,8",
                 "--size", "32", "--iters", "1", "--batch", "2", "--device", "cpu",
                 "--init", str(out), "--init-discriminator", str(out)]) == 0
    training = load_checkpoint(again).card["provenance"]["training"]
    assert training["init_discriminator"] == str(out)
    assert training["init_digest"] == load_checkpoint(out).digest
