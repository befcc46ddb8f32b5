"""The model registry: versioned generator checkpoints on S3.

Layout::

    s3://BUCKET[/prefix]/models/NAME/VERSION/
        generator.safetensors   the weights
        preview.jpg             a 512 x 512 sRGB render of the model (seed 0)
        model.json              the model card, uploaded LAST: it commits the version

A version without model.json is an interrupted push: `list_models` ignores it and `pull`
refuses it. Models are referred to as ``NAME@VERSION`` (letters, digits, ``.``, ``_``, ``-``);
the registry is an argument or the environment variable ``TEXPROD_REGISTRY``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

from texprod import storage
from texprod.engine import GeneratorConfig
from texprod.engine.noise import NoiseField
from texprod.engine.render import Renderer, render_canvas
from texprod.errors import CheckpointError, ConfigError
from texprod.files import atomic_directory, sha256_file
from texprod.models import load_checkpoint
from texprod.models.cache import fetch_model
from texprod.models.card import (
    CARD_FILE,
    model_digest,
    parse_card,
    publish_order,
    read_card,
    weights_file,
)

log = logging.getLogger(__name__)

REGISTRY_ENV = "TEXPROD_REGISTRY"
MODELS_DIR = "models"
PREVIEW_FILE = "preview.jpg"
PREVIEW_PX = 512
PREVIEW_SEED = 0
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_PART_RE = re.compile(rf"^{_PART}$")
_REF_RE = re.compile(rf"^({_PART})@({_PART})$")


class ModelNotFound(storage.StorageError):
    """A NAME@VERSION the registry does not have (or has only partly: an interrupted push)."""


class ModelExists(storage.StorageError):
    """Pushing a version that exists, without force."""


def is_ref(text: str) -> bool:
    """Whether `text` looks like a registry reference NAME@VERSION."""
    return isinstance(text, str) and _REF_RE.match(text) is not None


def parse_ref(ref: str) -> tuple[str, str]:
    """``"packaging@1.2"`` -> ("packaging", "1.2"), with errors naming what is wrong."""
    allowed = "letters, digits, '.', '_' and '-', starting with a letter or digit, " \
              "at most 128 characters"
    if not isinstance(ref, str) or ref.count("@") != 1:
        raise ConfigError(f"model reference: got {ref!r}, expected NAME@VERSION "
                          "(e.g. packaging@1.0)")
    name, version = ref.split("@")
    for what, value in (("name", name), ("version", version)):
        if not _PART_RE.match(value):
            raise ConfigError(f"model reference {ref!r}: {what} {value!r} is not valid; "
                              f"use {allowed}")
    return name, version


def resolve_registry(registry: str | None = None) -> str:
    """The registry root URI: `registry`, else env TEXPROD_REGISTRY; normalised, checked."""
    value = registry or os.environ.get(REGISTRY_ENV)
    if not value:
        raise ConfigError(f"no model registry: pass --registry s3://BUCKET[/prefix] or set "
                          f"{REGISTRY_ENV}")
    if not storage.is_s3(value):
        raise ConfigError(f"registry: got {value!r}, must be s3://BUCKET[/prefix]")
    storage.split_s3(value)  # validates the bucket name
    return value.rstrip("/")


def version_uri(ref: str, registry: str | None = None) -> str:
    """``s3://BUCKET[/prefix]/models/NAME/VERSION`` for a reference."""
    name, version = parse_ref(ref)
    return f"{resolve_registry(registry)}/{MODELS_DIR}/{name}/{version}"


def architecture(config: dict[str, Any]) -> str:
    """A short description of a card's config, e.g. ``psgan/tconv d5 k5``."""
    try:
        c = GeneratorConfig.from_dict(config)
    except Exception:  # noqa: BLE001 - a card this texprod cannot read
        return "unknown"
    return f"{c.arch}/{c.upsample} d{c.depth} k{c.kernel}" + (" affine" if c.affine else "")


def render_preview(generator: Any, size: int = PREVIEW_PX, seed: int = PREVIEW_SEED) -> bytes:
    """A `size` x `size` sRGB JPEG of the texture of `seed` (one pass of the network)."""
    renderer = Renderer(generator, device="auto")
    field = NoiseField(generator.config, seed, waves=generator.waves)
    pixels = render_canvas(renderer, field, renderer.plan(size, size, 0))
    if pixels.shape[2] == 1:  # (H, W, 1) grey
        pixels = np.repeat(pixels, 3, axis=2)
    image = pyvips.Image.new_from_array(np.ascontiguousarray(pixels), interpretation="srgb")
    return image.jpegsave_buffer(Q=90, optimize_coding=True)


def _versions_of(name: str, registry: str) -> list[str]:
    """Committed versions (with model.json) of a model name."""
    prefix = f"{registry}/{MODELS_DIR}/{name}/"
    versions = {uri[len(prefix):].split("/")[0] for uri in storage.list_keys(prefix)
                if uri.endswith(f"/{CARD_FILE}") and uri[len(prefix):].count("/") == 1}
    return sorted(versions, key=_natural)


def _natural(text: str) -> list[Any]:
    """Sort key that orders 1.9 before 1.10."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p)
            for p in re.split(r"(\d+)", text) if p]


def check_can_push(ref: str, registry: str | None = None, force: bool = False) -> str:
    """The URI NAME@VERSION would have, once it may be pushed: the registry is set and
    answers, and the version is free (or `force`). Training asks first, not after hours."""
    root = resolve_registry(registry)
    base = version_uri(ref, root)
    if not force and storage.exists(f"{base}/{CARD_FILE}"):
        raise ModelExists(f"{ref} already exists in {root} ({base}); use --force to "
                          "replace it")
    return base


def push(checkpoint_path: str | os.PathLike, ref: str, registry: str | None = None,
         force: bool = False) -> str:
    """Publish a checkpoint as NAME@VERSION; returns the version's URI.

    The checkpoint is validated (loaded) first and the preview rendered before anything is
    uploaded. Then the weights, the preview and finally model.json go up: until model.json
    is there the version counts as absent. An existing version is refused unless `force`;
    with `force` its model.json is removed first, so nobody pulls a half-replaced version.
    """
    name, version = parse_ref(ref)
    base = check_can_push(ref, registry, force)
    card_uri = f"{base}/{CARD_FILE}"
    checkpoint = load_checkpoint(checkpoint_path)
    weights_name, card_name = publish_order(checkpoint.card)
    if force and storage.exists(card_uri):
        log.info("replacing %s: removing its model.json first", ref)
        storage.delete(card_uri)
    preview = render_preview(checkpoint.generator)
    weights_sha = checkpoint.card["weights"]["sha256"]
    meta = {"name": name, "version": version}
    storage.upload_file(checkpoint.path / weights_name, f"{base}/{weights_name}", meta,
                        "application/octet-stream")
    storage.upload_bytes(preview, f"{base}/{PREVIEW_FILE}", meta, "image/jpeg")
    card_meta = {**meta, "weights-sha256": weights_sha,
                 "model-digest": model_digest(checkpoint.card["config"], weights_sha)}
    storage.upload_file(checkpoint.path / card_name, card_uri, card_meta,
                        "application/json")  # the commit
    log.info("pushed %s to %s", ref, base)
    return base


def pull(ref: str, registry: str | None = None, out: str | os.PathLike | None = None) -> Path:
    """A registry model as a local checkpoint directory (the cache entry, or a copy at `out`)."""
    name, version = parse_ref(ref)
    root = resolve_registry(registry)
    base = version_uri(ref, root)
    try:
        path = fetch_model(base)
    except storage.NoSuchObject:
        if storage.list_keys(f"{base}/"):
            raise ModelNotFound(
                f"{ref} in {root} is incomplete: {base} has no {CARD_FILE} (an "
                "interrupted push?); push it again") from None
        versions = _versions_of(name, root)
        known = (f"versions of {name}: {', '.join(versions)}" if versions
                 else f"no model named {name!r}; `texprod models list` shows what there is")
        raise ModelNotFound(f"no model {ref} in {root} ({known})") from None
    if out is None:
        return path
    return _copy_checkpoint(path, Path(out))


def _copy_checkpoint(src: Path, out: Path) -> Path:
    """Copy a cached checkpoint (card and weights) to `out`, atomically."""
    files = publish_order(read_card(src / CARD_FILE))
    if out.exists():
        same = all((out / f).is_file() and sha256_file(out / f) == sha256_file(src / f)
                   for f in files)
        if same:
            return out
        raise ConfigError(f"--out: {out} already exists (and holds something else); "
                          "choose another path or remove it")
    with atomic_directory(out) as tmp:
        for f in files:
            shutil.copyfile(src / f, tmp / f)
    return out


def list_models(registry: str | None = None) -> list[dict[str, Any]]:
    """Committed versions in the registry, sorted by name then version.

    Each: {"name", "version", "uri", "architecture", "size" (bytes of the weights),
    "created", "exemplars" (names), "description"}. Versions without model.json are skipped.
    """
    root = resolve_registry(registry)
    prefix = f"{root}/{MODELS_DIR}/"
    versions: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for obj in storage.list_objects(prefix):
        parts = obj["uri"][len(prefix):].split("/")
        if len(parts) == 3 and all(parts):
            versions.setdefault((parts[0], parts[1]), {})[parts[2]] = obj
    out = []
    for (name, version), files in versions.items():
        if CARD_FILE not in files:
            log.debug("skipping %s@%s: no model.json (incomplete push)", name, version)
            continue
        card_obj = files[CARD_FILE]
        try:
            card = parse_card(storage.read_bytes(card_obj["uri"]), card_obj["uri"])
            config, provenance = card["config"], card.get("provenance", {})
            weights_obj = files.get(weights_file(card))
        except CheckpointError as e:
            log.warning("unreadable model card: %s", e)
            config, provenance, weights_obj = {}, {}, None
        created = provenance.get("created") or (
            card_obj["last_modified"].isoformat(timespec="seconds")
            if card_obj.get("last_modified") else "")
        out.append({
            "name": name,
            "version": version,
            "uri": f"{root}/{MODELS_DIR}/{name}/{version}",
            "architecture": architecture(config) if config else "unreadable model.json",
            "size": weights_obj["bytes"] if weights_obj else 0,
            "created": created,
            "exemplars": _exemplar_names(provenance.get("exemplars")),
            "description": provenance.get("description", ""),
        })
    return sorted(out, key=lambda m: (m["name"], _natural(m["version"])))


def _exemplar_names(exemplars: Any) -> list[str]:
    names = []
    for item in exemplars or []:
        if isinstance(item, dict):
            item = item.get("name") or item.get("path") or item.get("uri") or ""
        text = str(item).rstrip("/")
        if text:
            names.append(text.rsplit("/", 1)[-1])
    return names


def _human_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def format_table(models: list[dict[str, Any]]) -> str:
    """The `texprod models list` table."""
    header = ("NAME", "VERSION", "ARCHITECTURE", "SIZE", "CREATED", "EXEMPLARS")
    rows = [(m["name"], m["version"], m["architecture"], _human_bytes(m["size"]),
             m["created"], ", ".join(m["exemplars"]) or "-") for m in models]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)
