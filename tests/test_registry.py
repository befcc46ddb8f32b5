"""The model registry on a real S3 server (moto on loopback): push, list, pull, references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pyvips

from tests.s3_server import admin_client
from texprod import storage
from texprod.cli import main
from texprod.engine import GeneratorConfig, random_generator
from texprod.engine.noise import NoiseField
from texprod.engine.render import render_reference
from texprod.errors import CheckpointError, ConfigError
from texprod.models import load_checkpoint, registry, save_generator
from texprod.models.references import resolve_model

TINY = GeneratorConfig(nz_local=4, nz_global=4, nz_periodic=2, filters=(16, 8))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXPROD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny_ckpt(tmp_path):
    return save_generator(
        random_generator(TINY, 3), tmp_path / "tiny", name="tiny",
        provenance={"exemplars": ["s3://data/exemplars/bark.jpg",
                                  {"name": "moss.png", "sha256": "00"}]},
    )


def _render(path, seed: int = 11) -> np.ndarray:
    gen = load_checkpoint(path).generator
    return render_reference(gen, NoiseField(gen.config, seed, waves=gen.waves), 70, 45)


def test_push_list_pull_with_the_cli(s3_bucket, tiny_ckpt, cache, tmp_path, capsys):
    assert main(["models", "push", str(tiny_ckpt), "tiny@1.0", "--registry", s3_bucket]) == 0
    base = f"{s3_bucket}/models/tiny/1.0"
    assert capsys.readouterr().out.strip() == f"pushed tiny@1.0 to {base}"
    keys = storage.list_keys(base + "/")
    assert keys == [f"{base}/{n}" for n in ("generator.safetensors", "model.json",
                                            "preview.jpg")]
    card_meta = storage.head(f"{base}/model.json")["metadata"]
    card = json.loads((tiny_ckpt / "model.json").read_text())
    assert card_meta["name"] == "tiny" and card_meta["version"] == "1.0"
    assert card_meta["weights-sha256"] == card["weights"]["sha256"]
    assert storage.head(f"{base}/generator.safetensors")["metadata"]["sha256"] == \
        card["weights"]["sha256"]
    preview = pyvips.Image.new_from_buffer(storage.read_bytes(f"{base}/preview.jpg"), "")
    assert (preview.width, preview.height, preview.bands) == (512, 512, 3)
    assert preview.interpretation == "srgb"

    assert main(["models", "list", "--registry", s3_bucket]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "VERSION", "ARCHITECTURE", "SIZE", "CREATED",
                                "EXEMPLARS"]
    assert table[1].split()[:4] == ["tiny", "1.0", "psgan/tconv", "d3"]
    assert "kB" in table[1] and table[1].endswith("bark.jpg, moss.png")
    (model,) = registry.list_models(s3_bucket)
    assert model["size"] == (tiny_ckpt / "generator.safetensors").stat().st_size
    assert model["architecture"] == "psgan/tconv d3 k5"
    assert model["exemplars"] == ["bark.jpg", "moss.png"]
    assert model["created"] == card["provenance"]["created"]

    assert main(["models", "push", str(tiny_ckpt), "tiny@1.0", "--registry", s3_bucket]) == 2
    err = capsys.readouterr().err
    assert "texprod: error: tiny@1.0 already exists" in err and "--force" in err
    other = save_generator(random_generator(TINY, 4), tmp_path / "tiny-v2", name="tiny")
    assert main(["models", "push", str(other), "tiny@1.0", "--registry", s3_bucket,
                 "--force"]) == 0
    capsys.readouterr()

    out = tmp_path / "pulled"
    assert main(["models", "pull", "tiny@1.0", "--registry", s3_bucket, "--out",
                 str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"pulled tiny@1.0 to {out}"
    assert sorted(p.name for p in out.iterdir()) == ["generator.safetensors", "model.json"]
    np.testing.assert_array_equal(_render(out), _render(other))  # the replaced version
    assert main(["models", "pull", "tiny@1.0", "--registry", s3_bucket, "--out",
                 str(out)]) == 0  # the same model there already: fine
    capsys.readouterr()
    assert main(["models", "pull", "tiny@1.0", "--registry", s3_bucket, "--out",
                 str(tiny_ckpt)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_pull_renders_identically_and_uses_the_cache(s3_bucket, tiny_ckpt, cache):
    registry.push(tiny_ckpt, "tiny@2", s3_bucket)
    path = registry.pull("tiny@2", s3_bucket)
    assert path.is_relative_to(cache)
    np.testing.assert_array_equal(_render(path), _render(tiny_ckpt))
    assert load_checkpoint(path).digest == load_checkpoint(tiny_ckpt).digest
    assert registry.pull("tiny@2", s3_bucket) == path


def test_resolve_model_with_registry_refs_and_s3_uris(s3_bucket, tiny_ckpt, cache, monkeypatch):
    uri = registry.push(tiny_ckpt, "tiny@0.1-rc_1", s3_bucket)
    by_arg = resolve_model("tiny@0.1-rc_1", registry=s3_bucket)
    load_checkpoint(by_arg)
    with pytest.raises(ConfigError, match="no model registry: pass --registry"):
        resolve_model("tiny@0.1-rc_1")
    monkeypatch.setenv("TEXPROD_REGISTRY", s3_bucket + "/")
    assert resolve_model("tiny@0.1-rc_1") == by_arg
    assert resolve_model(uri) == by_arg
    assert resolve_model(uri + "/model.json") == by_arg
    assert main(["models", "list"]) == 0  # --registry from the environment


def test_incomplete_versions_are_invisible(s3_bucket, tiny_ckpt, cache, capsys):
    registry.push(tiny_ckpt, "tiny@1", s3_bucket)
    # an interrupted push: the weights went up, model.json (the commit marker) never did
    storage.upload_file(tiny_ckpt / "generator.safetensors",
                        f"{s3_bucket}/models/half/1.0/generator.safetensors")
    storage.upload_file(tiny_ckpt / "generator.safetensors",
                        f"{s3_bucket}/models/tiny/2/generator.safetensors")
    assert [(m["name"], m["version"]) for m in registry.list_models(s3_bucket)] == \
        [("tiny", "1")]
    with pytest.raises(registry.ModelNotFound, match="half@1.0 in s3://.* is incomplete"):
        registry.pull("half@1.0", s3_bucket)
    with pytest.raises(registry.ModelNotFound, match="no model tiny@3 in .*versions of tiny: 1"):
        registry.pull("tiny@3", s3_bucket)
    with pytest.raises(registry.ModelNotFound, match="no model named 'nothing'"):
        registry.pull("nothing@1", s3_bucket)
    assert main(["models", "pull", "half@1.0", "--registry", s3_bucket]) == 2
    assert "incomplete" in capsys.readouterr().err
    # pushing over an incomplete version needs no --force
    registry.push(tiny_ckpt, "half@1.0", s3_bucket)
    assert len(registry.list_models(s3_bucket)) == 2


def test_list_sorts_by_name_then_version(s3_bucket, tiny_ckpt, cache, capsys):
    for ref in ("b@1.10", "b@1.9", "a@2"):
        registry.push(tiny_ckpt, ref, s3_bucket)
    assert [f"{m['name']}@{m['version']}" for m in registry.list_models(s3_bucket)] == \
        ["a@2", "b@1.9", "b@1.10"]
    empty = f"{s3_bucket}/elsewhere"
    assert registry.list_models(empty) == []
    assert main(["models", "list", "--registry", empty]) == 0
    assert capsys.readouterr().out.strip() == f"no models in {empty}"


@pytest.mark.parametrize("ref", ["tiny", "tiny@", "@1", "a@b@c", "ti ny@1", "../x@1",
                                 "x@1/2", ".hidden@1", "x@" + "1" * 129])
def test_bad_references(ref):
    with pytest.raises(ConfigError, match="model reference"):
        registry.parse_ref(ref)


def test_bad_refs_and_registries_in_the_cli(s3_bucket, tiny_ckpt, capsys, monkeypatch):
    assert registry.parse_ref("packaging@1.0") == ("packaging", "1.0")
    assert main(["models", "push", str(tiny_ckpt), "tiny/1", "--registry", s3_bucket]) == 2
    assert "texprod: error: model reference: got 'tiny/1', expected NAME@VERSION" in \
        capsys.readouterr().err
    assert main(["models", "list", "--registry", "/tmp/models"]) == 2
    assert "registry: got '/tmp/models', must be s3://BUCKET[/prefix]" in capsys.readouterr().err
    monkeypatch.delenv("TEXPROD_REGISTRY", raising=False)
    assert main(["models", "pull", "tiny@1"]) == 2
    assert "no model registry" in capsys.readouterr().err


def test_push_checks_the_checkpoint_first(s3_bucket, tiny_ckpt):
    weights = tiny_ckpt / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError):
        registry.push(tiny_ckpt, "tiny@1", s3_bucket)
    bucket, _ = storage.split_s3(s3_bucket)
    assert "Contents" not in admin_client().list_objects_v2(Bucket=bucket)
