"""The model cache: a checkpoint directory on S3 downloaded once into a local directory keyed
by its content digest, verified on every use (card digest and weights checksum).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from texprod.errors import CheckpointError
from texprod.files import atomic_directory, atomic_write_bytes, normal_modes, sha256_file
from texprod.models.card import (
    CARD_FILE,
    WEIGHTS_FILE,
    content_digest,
    parse_card,
    weights_file,
    weights_sha256,
)
from texprod.storage import (
    IntegrityError,
    NoSuchObject,
    cache_root,
    check_location,
    download_file,
    head,
    is_s3,
    read_with_etag,
    split_object,
)

log = logging.getLogger(__name__)

SOURCE_FILE = "source.json"  # where a cache entry came from


def _checkpoint_prefix(uri: str) -> str:
    base = uri.rstrip("/")
    for name in (f"/{CARD_FILE}", f"/{WEIGHTS_FILE}"):
        if base.endswith(name):
            base = base.removesuffix(name)
    split_object(base + "/" + CARD_FILE)  # validates bucket and key
    return base


def _card_weights(raw_card: bytes, where: str) -> tuple[str, str]:
    """(weights file name, weights sha256) of a card, which must record the checksum."""
    card = parse_card(raw_card, where)
    return weights_file(card), weights_sha256(card, where, "to cache the model")


def _verify_entry(path: Path, digest: str) -> bool:
    """Whether a cache entry is whole: the card hashes to its digest and the weights match."""
    card_path = path / CARD_FILE
    if not card_path.is_file():
        return False
    card_bytes = card_path.read_bytes()
    try:
        name, sha = _card_weights(card_bytes, str(card_path))
    except CheckpointError:
        return False
    weights = path / name
    if content_digest(card_bytes, sha) != digest or not weights.is_file():
        return False
    return sha256_file(weights) == sha


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove_tree(path: Path) -> None:
    """Move a directory aside (atomic) and delete it."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{threading.get_ident()}")
    try:
        path.rename(trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def fetch_model(uri: str) -> Path:
    """A checkpoint directory on S3 as a verified local directory in the model cache.

    `uri` names the directory (``s3://bucket/.../NAME``, or its model.json). The entry is
    keyed by content (the weights' SHA-256 from the card and the card's own SHA-256), so
    models are stored once however many URIs name them. A later fetch costs two HEAD
    requests when the remote ETags (recorded in ``source.json`` and an index by URI) are
    unchanged; the weights are re-hashed on every use and a corrupt entry is fetched again.
    A local path is returned as it is.
    """
    check_location(uri)
    if not is_s3(uri):
        return Path(uri)
    base = _checkpoint_prefix(uri)
    card_uri = f"{base}/{CARD_FILE}"
    root = cache_root() / "models"
    index = root / "by-uri" / f"{hashlib.sha256(base.encode()).hexdigest()[:32]}.json"
    card_head = head(card_uri, "fetch the model")
    if card_head is None:
        raise NoSuchObject(f"{card_uri}: no such object (is {base} a checkpoint directory? "
                           f"it needs {CARD_FILE} and {WEIGHTS_FILE})")
    entry = _read_json(index)
    if entry and entry.get("etags", {}).get(CARD_FILE) == card_head["etag"]:
        name = entry.get("weights_file", WEIGHTS_FILE)
        weights_head = head(f"{base}/{name}", "fetch the model")
        path = root / str(entry.get("digest", "-"))
        if weights_head is not None and entry["etags"].get(name) == weights_head["etag"]:
            if _verify_entry(path, entry["digest"]):
                log.debug("model cache hit for %s: %s", base, path)
                return path
            log.warning("model cache entry %s is corrupt; fetching %s again", path, base)

    card_bytes, card_etag = read_with_etag(card_uri)
    name, weights_sha = _card_weights(card_bytes, card_uri)
    digest = content_digest(card_bytes, weights_sha)
    path = root / digest
    weights_uri = f"{base}/{name}"
    if _verify_entry(path, digest):  # same content fetched before (perhaps by another URI)
        weights_head = head(weights_uri, "fetch the model")
        weights_etag = weights_head["etag"] if weights_head else None
    else:
        if path.exists():
            log.warning("model cache entry %s is corrupt; fetching %s again", path, base)
        with atomic_directory(path) as tmp:
            try:
                result = download_file(weights_uri, tmp / name, expected_sha256=weights_sha)
            except IntegrityError as e:
                raise IntegrityError(f"{e} (the weights do not match {card_uri}: a push in "
                                     "progress or a corrupted upload?)") from None
            except NoSuchObject:
                raise NoSuchObject(f"{weights_uri}: no such object ({card_uri} names it as "
                                   "the model's weights)") from None
            weights_etag = result["etag"]
            (tmp / CARD_FILE).write_bytes(card_bytes)
            source = {"uri": base, "digest": digest, "weights_file": name,
                      "weights_sha256": weights_sha,
                      "card_sha256": hashlib.sha256(card_bytes).hexdigest(),
                      "etags": {CARD_FILE: card_etag, name: weights_etag},
                      "fetched": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
            (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
            normal_modes(tmp)  # a cache shared by workers running as other users
            if path.exists():
                _remove_tree(path)
            try:
                tmp.rename(path)
            except OSError:  # another process finished the same entry first: keep it
                if not _verify_entry(path, digest):
                    raise
                shutil.rmtree(tmp)
        log.info("fetched %s into the model cache: %s", base, path)
    atomic_write_bytes(index, json.dumps({
        "uri": base, "digest": digest, "weights_file": name,
        "etags": {CARD_FILE: card_etag, name: weights_etag},
    }, indent=2).encode() + b"\n")
    return path


# -- model references ----------------------------------------------------------------------
