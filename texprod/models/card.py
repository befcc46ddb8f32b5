"""The model card (model.json): what a checkpoint is.

    {"format": "texprod-generator", "format_version": 1,
     "config": {...architecture...},
     "weights": {"file": "generator.safetensors", "sha256": "...", "dtype": "float32"},
     "provenance": {"name", "description", "created", "texprod_version", "exemplars", ...},
     "latents": {"NAME": [nz_global floats], ...}}

This module is the card's one reader and writer: the checkpoint loader, the model cache,
the registry and the trainer all go through it. The card names the weights' checksum, so
it is published last (`publish_order`): a reader never pairs new weights with an old card.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from texprod import __version__
from texprod.errors import CheckpointError, shorten

FORMAT = "texprod-generator"
FORMAT_VERSION = 1
WEIGHTS_FILE = "generator.safetensors"
CARD_FILE = "model.json"
CARD_KEYS = {"format", "format_version", "config", "weights", "provenance", "latents"}
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def parse_card(raw: bytes, where: str) -> dict[str, Any]:
    """A card's bytes as a checked dict; every problem names `where` and the field."""
    try:
        card = json.loads(raw)
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{where}: not a text file ({e})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"{where}: expected a JSON object, got {type(card).__name__}")
    if card.get("format") != FORMAT:
        raise CheckpointError(f"{where}: format: got {card.get('format')!r}, expected {FORMAT!r}")
    if card.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{where}: format_version: got {card.get('format_version')!r}, "
                              f"this texprod reads version {FORMAT_VERSION}")
    unknown = sorted(set(card) - CARD_KEYS)
    if unknown:
        raise CheckpointError(f"{where}: unknown keys {unknown}, allowed: {sorted(CARD_KEYS)}")
    for key in ("config", "weights"):
        if not isinstance(card.get(key), dict):
            raise CheckpointError(f"{where}: {key}: missing or not an object")
    for key in ("provenance", "latents"):
        if not isinstance(card.get(key, {}), dict):
            raise CheckpointError(f"{where}: {key}: got {type(card[key]).__name__}, "
                                  "expected an object")
    file = card["weights"].get("file", WEIGHTS_FILE)
    if not isinstance(file, str) or Path(file).name != file or file in ("", ".", "..") \
            or "\\" in file:
        raise CheckpointError(f"{where}: weights.file: got {shorten(file)}, expected "
                              f"a file name in the checkpoint directory (e.g. {WEIGHTS_FILE})")
    sha = card["weights"].get("sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256_RE.match(sha)):
        raise CheckpointError(f"{where}: weights.sha256: got {shorten(sha)}, expected "
                              "64 hex digits")
    return card


def read_card(path: Path) -> dict[str, Any]:
    """The checked card at `path` (a checkpoint's model.json)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a checkpoint needs its model card)")
    return parse_card(path.read_bytes(), str(path))


def weights_file(card: dict[str, Any]) -> str:
    """The weights' file name, in the checkpoint directory."""
    return card["weights"].get("file", WEIGHTS_FILE)


def weights_sha256(card: dict[str, Any], where: str, why: str) -> str:
    """The weights' recorded checksum, which `why` (e.g. "to cache the model") needs."""
    sha = card["weights"].get("sha256")
    if sha is None:
        raise CheckpointError(f"{where}: weights.sha256 is needed {why}, the card has none")
    return sha


def publish_order(card: dict[str, Any]) -> tuple[str, str]:
    """The checkpoint's files in the order they must appear: the weights, then the card."""
    return weights_file(card), CARD_FILE


def new_card(config: dict[str, Any], weights_sha256: str, dtype: str,
             provenance: dict[str, Any], latents: dict[str, list[float]]) -> dict[str, Any]:
    """The card of freshly written weights; `provenance` adds to (or overrides) the defaults."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "weights": {"file": WEIGHTS_FILE, "sha256": weights_sha256, "dtype": dtype},
        "provenance": {
            "name": "",
            "description": "",
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "texprod_version": __version__,
            "exemplars": [],
            **provenance,
        },
        "latents": latents,
    }


def card_bytes(card: dict[str, Any]) -> bytes:
    return json.dumps(card, indent=2).encode() + b"\n"


def model_digest(config: dict[str, Any], weights_sha256: str) -> str:
    """The model's identity: its architecture and weights (not its provenance)."""
    canonical = json.dumps({"config": config, "weights": weights_sha256}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def content_digest(raw_card: bytes, weights_sha256: str) -> str:
    """The checkpoint's exact content, card bytes included: the model cache's key."""
    card_sha = hashlib.sha256(raw_card).hexdigest()
    return hashlib.sha256(f"{weights_sha256}:{card_sha}".encode()).hexdigest()
