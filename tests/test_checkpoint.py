"""Invariant 6: checkpoints are safetensors + JSON, validated, and never unpickled."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import tiny_generator
from texprod.engine.noise import NoiseField
from texprod.engine.render import render_reference
from texprod.errors import CheckpointError
from texprod.models import load_checkpoint, load_generator, save_generator

NAME = "psgan-nearest-d4-k3"


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    gen = tiny_generator(NAME)
    latents = {"brick": torch.linspace(-1, 1, gen.config.nz_global)}
    return save_generator(gen, tmp_path / "model", name="tiny", description="for tests",
                          provenance={"exemplars": [{"name": "brick.png", "sha256": "ab" * 32}]},
                          latents=latents)


def _render(gen, seed=1):
    field = NoiseField(gen.config, seed, waves=gen.waves)
    return render_reference(gen, field, 40, 30, output="float32")


def test_round_trip_keeps_weights_config_card_and_pixels(checkpoint):
    gen = tiny_generator(NAME)
    loaded = load_checkpoint(checkpoint)
    assert loaded.generator.config == gen.config
    for (k, a), (k2, b) in zip(gen.state_dict().items(), loaded.generator.state_dict().items(),
                               strict=True):
        assert k == k2
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(a, b), k
    assert np.array_equal(_render(gen), _render(loaded.generator))
    card = loaded.card
    assert card["provenance"]["name"] == "tiny"
    assert card["provenance"]["texprod_version"]
    assert card["provenance"]["created"]
    assert card["provenance"]["exemplars"][0]["name"] == "brick.png"
    assert torch.equal(loaded.latents["brick"], torch.linspace(-1, 1, gen.config.nz_global))
    assert len(loaded.digest) == 64
    # every way of naming the checkpoint loads it
    for path in (checkpoint, checkpoint / "model.json", checkpoint / "generator.safetensors"):
        assert load_generator(path).config == gen.config


def test_digest_follows_the_weights(tmp_path, checkpoint):
    other = save_generator(tiny_generator(NAME, seed=1), tmp_path / "other")
    again = save_generator(tiny_generator(NAME), tmp_path / "again")
    assert load_checkpoint(checkpoint).digest == load_checkpoint(again).digest
    assert load_checkpoint(checkpoint).digest != load_checkpoint(other).digest


def test_half_precision_checkpoint_loads_close_to_the_original(tmp_path):
    gen = tiny_generator(NAME)
    path = save_generator(gen, tmp_path / "fp16", dtype="float16")
    assert path.joinpath("generator.safetensors").stat().st_size < \
        save_generator(gen, tmp_path / "fp32").joinpath("generator.safetensors").stat().st_size
    assert np.abs(_render(load_generator(path)) - _render(gen)).max() < 0.02


def test_saving_never_overwrites_by_accident(checkpoint):
    with pytest.raises(CheckpointError, match="already exists"):
        save_generator(tiny_generator(NAME), checkpoint)
    save_generator(tiny_generator(NAME, seed=3), checkpoint, overwrite=True)
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["model"]  # no temp dirs left


def _rewrite_weights(checkpoint: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Replace the weights and record their true checksum, so only the content is wrong."""
    weights = checkpoint / "generator.safetensors"
    save_file(tensors, weights)
    card = json.loads((checkpoint / "model.json").read_text())
    card["weights"]["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (checkpoint / "model.json").write_text(json.dumps(card))


def _state(checkpoint):
    from safetensors.torch import load_file

    return load_file(checkpoint / "generator.safetensors")


def _edit_card(checkpoint: Path, edit) -> None:
    card = json.loads((checkpoint / "model.json").read_text())
    edit(card)
    (checkpoint / "model.json").write_text(json.dumps(card))


def test_truncated_weights(checkpoint):
    weights = checkpoint / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=r"generator.safetensors: truncated: the header "
                                              r"describes \d+ bytes of tensor data"):
        load_generator(checkpoint)


def test_weights_cut_inside_the_header(checkpoint):
    weights = checkpoint / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="not a safetensors file or truncated"):
        load_generator(checkpoint)


def test_wrong_shape(checkpoint):
    state = _state(checkpoint)
    key = "blocks.0.1.weight"
    state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])
    _rewrite_weights(checkpoint, state)
    with pytest.raises(CheckpointError, match=rf"{key}: got shape \[25, 12, 3, 3\], "
                                              r"expected \[24, 12, 3, 3\]"):
        load_generator(checkpoint)


def test_nan_weights(checkpoint):
    state = _state(checkpoint)
    state["blocks.1.1.weight"][0, 0, 0, 0] = float("nan")
    _rewrite_weights(checkpoint, state)
    with pytest.raises(CheckpointError, match=r"blocks.1.1.weight: 1 non-finite values"):
        load_generator(checkpoint)


def test_missing_and_unexpected_tensors(checkpoint):
    state = _state(checkpoint)
    state["extra.weight"] = state.pop("blocks.0.2.running_var")
    _rewrite_weights(checkpoint, state)
    with pytest.raises(CheckpointError, match=r"missing \['blocks.0.2.running_var'\], "
                                              r"unexpected \['extra.weight'\]"):
        load_generator(checkpoint)


def test_integer_weights_are_rejected(checkpoint):
    state = _state(checkpoint)
    state["blocks.0.1.weight"] = state["blocks.0.1.weight"].to(torch.int32)
    _rewrite_weights(checkpoint, state)
    with pytest.raises(CheckpointError, match="blocks.0.1.weight: dtype I32"):
        load_generator(checkpoint)


def test_checksum_mismatch(checkpoint):
    weights = checkpoint / "generator.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_generator(checkpoint)


class _Payload:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_renamed_to_safetensors_is_never_unpickled(checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    (checkpoint / "generator.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="is a pickle or PyTorch zip archive, not "
                                              "safetensors; texprod never unpickles"):
        load_generator(checkpoint)
    assert not marker.exists()


def test_torch_save_file_renamed_to_safetensors(checkpoint):
    torch.save(tiny_generator(NAME).state_dict(), checkpoint / "generator.safetensors")
    with pytest.raises(CheckpointError, match="pickle or PyTorch zip archive"):
        load_generator(checkpoint)


def test_header_that_is_not_json(checkpoint):
    header = b"{not json" + b" " * 7
    (checkpoint / "generator.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + b"\0" * 64)
    with pytest.raises(CheckpointError, match="header is not JSON"):
        load_generator(checkpoint)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["config"].update(kernal=5), r"config: .*unknown keys \['kernal'\]"),
    (lambda c: c.update(format_version=99), "format_version: got 99, this texprod reads version 1"),
    (lambda c: c.update(format="something-else"), "format: got 'something-else'"),
    (lambda c: c.update(extra=1), r"unknown keys \['extra'\]"),
    (lambda c: c["config"].update(kernel=4), "kernel: got 4, the nearest-upsample variant"),
    (lambda c: c["latents"].update(short=[0.5]), "latents.short: must be 4 finite numbers"),
    (lambda c: c.pop("config"), "config: missing"),
    # types and ranges, refused before any layer is built
    (lambda c: c["config"].update(filters="abc"), "filters: got 'abc', must be a list of whole"),
    (lambda c: c["config"].update(filters=[1e9, 1e9, 8]), "filters: got \\[1000000000.0"),
    (lambda c: c["config"].update(filters=[4096] * 4, kernel=5), "at most 1,073,741,824"),
    (lambda c: c["config"].update(filters=[2**40, 8, 8]), "between 1 and 4096"),
    (lambda c: c["config"].update(kernel=True), "kernel: got True, must be a whole number"),
    (lambda c: c["config"].update(nz_local="4"), "nz_local: got '4', must be a whole number"),
    (lambda c: c["config"].update(nz_global=10**6), "nz_global: got 1000000, must be <= 4096"),
    (lambda c: c["config"].update(affine="yes"), "affine: got 'yes', must be true or false"),
    (lambda c: c["config"].update(upsample=["tconv"]), "upsample: got \\['tconv'\\]"),
    (lambda c: c.update(latents=["brick"]), "latents: got list, expected an object"),
    (lambda c: c.update(provenance="me"), "provenance: got str, expected an object"),
    (lambda c: c["weights"].update(file="../../etc/passwd"), "weights.file: got '../../etc"),
    (lambda c: c["weights"].update(file=7), "weights.file: got 7,"),
    (lambda c: c["weights"].update(sha256=["x"]), "weights.sha256: got"),
])
def test_bad_model_cards(checkpoint, edit, message):
    _edit_card(checkpoint, edit)
    with pytest.raises(CheckpointError, match=message) as info:
        load_generator(checkpoint)
    assert "model.json" in str(info.value)


def test_card_that_is_not_json(checkpoint):
    (checkpoint / "model.json").write_text('{"format": "texprod-generator",\n  oops}')
    with pytest.raises(CheckpointError, match="model.json: invalid JSON at line 2"):
        load_generator(checkpoint)


def test_missing_files_and_uris(tmp_path, checkpoint):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_generator(tmp_path / "nope")
    (checkpoint / "generator.safetensors").unlink()
    with pytest.raises(CheckpointError, match="generator.safetensors: missing"):
        load_generator(checkpoint)
    (checkpoint / "model.json").unlink()
    with pytest.raises(CheckpointError, match="model.json: missing"):
        load_generator(checkpoint)
    with pytest.raises(CheckpointError, match="only local checkpoint paths"):
        load_generator("s3://bucket/models/x")


def _rewrite_header(checkpoint: Path, edit) -> None:
    """Replace the weights file's header by `edit(header)`, keeping the tensor bytes."""
    path = checkpoint / "generator.safetensors"
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    edit(header)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + length:])
    _edit_card(checkpoint, lambda c: c["weights"].update(
        sha256=hashlib.sha256(path.read_bytes()).hexdigest()))


def _first_tensor(header: dict) -> str:
    return next(k for k in header if k != "__metadata__")


@pytest.mark.parametrize("edit, message", [
    (lambda h: h.update({_first_tensor(h): "not an object"}), "got str, expected an object"),
    (lambda h: h.update({_first_tensor(h): [1, 2]}), "got list, expected an object"),
    (lambda h: h[_first_tensor(h)].update(dtype=7), "dtype: got 7,"),
    (lambda h: h[_first_tensor(h)].update(shape="big"), "shape: got 'big'"),
    (lambda h: h[_first_tensor(h)].update(shape=[10**9, 10**9]), "needs 4000000000000000000"),
    (lambda h: h[_first_tensor(h)].update(shape=[-1]), "shape: got \\[-1\\]"),
    (lambda h: h[_first_tensor(h)].update(data_offsets=[5]), "data_offsets: got \\[5\\]"),
    (lambda h: h[_first_tensor(h)].update(data_offsets=["0", "4"]), "data_offsets: got"),
    (lambda h: h[_first_tensor(h)].update(data_offsets=[9, 1]), "data_offsets: got \\[9, 1\\]"),
])
def test_malformed_safetensors_headers_name_the_entry(checkpoint, edit, message):
    _rewrite_header(checkpoint, edit)
    with pytest.raises(CheckpointError, match=message) as info:
        load_generator(checkpoint)
    assert "generator.safetensors: header entry" in str(info.value)


def test_header_shapes_are_checked_against_the_config_before_building(checkpoint):
    import time

    # a card claiming a 3.3 GB generator (building it takes about 7 s here) over small
    # weights: the shapes are compared on the meta device, nothing of that size is built
    _edit_card(checkpoint, lambda c: c["config"].update(filters=[4096, 4096, 16], kernel=7))
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="expected \\[4096, ") as info:
        load_generator(checkpoint)
    assert "for this architecture" in str(info.value)
    assert time.perf_counter() - started < 2


def test_checkpoints_get_normal_modes_for_workers_of_other_users(tmp_path, s3_bucket):
    import os
    import stat

    from texprod.cli import main
    from texprod.models import registry

    def modes(directory: Path) -> set[tuple[str, int]]:
        return {(p.name, stat.S_IMODE(p.stat().st_mode))
                for p in [directory, *directory.iterdir()]}

    old = os.umask(0o022)
    try:
        saved = save_generator(tiny_generator(NAME), tmp_path / "saved")
        assert main(["models", "init", "--out", str(tmp_path / "init"), "--depth", "3",
                     "--filters", "8,8", "--kernel", "3"]) == 0
        assert registry.push(saved, "tiny@1", s3_bucket).endswith("models/tiny/1")
        pulled = registry.pull("tiny@1", s3_bucket)  # the digest-keyed cache
        copied = registry.pull("tiny@1", s3_bucket, tmp_path / "copy")
        for directory in (saved, tmp_path / "init", pulled, copied):
            found = modes(directory)
            assert (directory.name, 0o755) in found
            assert all(mode == 0o644 for name, mode in found if name != directory.name), found
    finally:
        os.umask(old)
