"""Generator checkpoints: a directory with safetensors weights and a JSON model card.

    NAME/
      generator.safetensors   weights (float32, float16 or bfloat16)
      model.json              the model card (texprod.models.card)

Loading never unpickles anything (DESIGN invariant 6): the safetensors header is parsed and
checked before any tensor is read, and every problem names the file and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from texprod.engine.config import GeneratorConfig
from texprod.engine.model import Generator
from texprod.engine.noise import global_latent
from texprod.errors import CheckpointError, TexprodError, shorten
from texprod.files import atomic_directory, normal_modes, sha256_file
from texprod.models.card import (
    CARD_FILE,
    FORMAT,
    WEIGHTS_FILE,
    card_bytes,
    model_digest,
    new_card,
    publish_order,
    read_card,
    weights_file,
)

SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# safetensors dtype codes we accept for weights
LOAD_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
MAX_HEADER_BYTES = 16 * 2**20


@dataclass
class Checkpoint:
    generator: Generator
    card: dict[str, Any]
    path: Path  # the checkpoint directory
    latents: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """Content digest of the model: architecture config and weights."""
        return model_digest(self.card["config"], self.card["weights"]["sha256"])

    def latent(self, name: str | None = None, seed: int | None = None) -> torch.Tensor:
        """One texture of the model's manifold, (nz_global,): a latent the card names, or
        the latent of a seed (the same one the noise field draws for that seed). Raises
        UnknownLatent (naming the card's latents) for a name the card does not have."""
        if seed is not None:
            return global_latent(seed, self.generator.config.nz_global)
        if name not in self.latents:
            raise UnknownLatent(name, sorted(self.latents))
        return self.latents[name]


class UnknownLatent(CheckpointError):
    """A latent name the model card does not have; `known` lists the names it has."""

    def __init__(self, name: str | None, known: list[str]) -> None:
        super().__init__(f"no latent {name!r} in the model card (it names "
                         f"{', '.join(known) or 'none'})")
        self.name, self.known = name, known


def _state_tensors(generator: Generator) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores: parameters and BN statistics (not batch counters)."""
    return {k: v for k, v in generator.state_dict().items() if not k.endswith("num_batches_tracked")}


def save_generator(
    generator: Generator,
    path: str | os.PathLike,
    *,
    name: str = "",
    description: str = "",
    provenance: dict[str, Any] | None = None,
    latents: dict[str, torch.Tensor] | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Write `generator` as a checkpoint directory at `path`; it appears only when complete."""
    if dtype not in SAVE_DTYPES:
        raise CheckpointError(f"dtype: got {dtype!r}, must be one of {', '.join(SAVE_DTYPES)}")
    out = Path(path)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out}: already exists (pass overwrite to replace it)")
    latents = latents or {}
    nz_global = generator.config.nz_global
    for key, value in latents.items():
        if tuple(value.shape) != (nz_global,):
            raise CheckpointError(
                f"latents.{key}: got shape {tuple(value.shape)}, expected ({nz_global},)"
            )
    with atomic_directory(out) as tmp:
        tensors = {k: v.detach().to("cpu", SAVE_DTYPES[dtype]).contiguous()
                   for k, v in _state_tensors(generator).items()}
        save_file(tensors, tmp / WEIGHTS_FILE, metadata={"format": FORMAT})
        card = new_card(
            generator.config.to_dict(), sha256_file(tmp / WEIGHTS_FILE), dtype,
            {"name": name, "description": description, **(provenance or {})},
            {k: [float(x) for x in v.tolist()] for k, v in latents.items()})
        (tmp / CARD_FILE).write_bytes(card_bytes(card))
        if out.exists():
            # replace the two files one by one, the card last; anything else in the
            # directory (training state) stays
            normal_modes(tmp)
            for file in publish_order(card):
                (tmp / file).replace(out / file)
            shutil.rmtree(tmp)
    return out


def _checkpoint_dir(path: Path) -> Path:
    if path.is_dir():
        return path
    if path.name in (CARD_FILE, WEIGHTS_FILE) or path.suffix == ".safetensors":
        return path.parent
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (expected a directory with "
                              f"{CARD_FILE} and {WEIGHTS_FILE})")
    raise CheckpointError(f"{path}: not a checkpoint directory, {CARD_FILE} or {WEIGHTS_FILE}")


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Parse and check the header of a safetensors file without reading any tensor."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (the checkpoint has no weights file)")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
            raise CheckpointError(
                f"{path}: is a pickle or PyTorch zip archive, not safetensors; texprod never "
                "unpickles checkpoints (convert the weights with safetensors)"
            )
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated ({size} bytes, no safetensors header)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(
                f"{path}: not a safetensors file or truncated (header length {header_len} "
                f"bytes, file {size} bytes)"
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not an object)")
    header.pop("__metadata__", None)
    for key, entry in header.items():
        _check_header_entry(path, key, entry)
    data_end = max((v["data_offsets"][1] for v in header.values()), default=0)
    available = size - 8 - header_len
    if data_end > available:
        raise CheckpointError(
            f"{path}: truncated: the header describes {data_end} bytes of tensor data, "
            f"the file holds {available}"
        )
    return header


DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U8": 1, "BOOL": 1}


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_header_entry(path: Path, key: str, entry: Any) -> None:
    """One tensor's header entry: {dtype, shape, data_offsets}, sizes that agree."""
    where = f"{path}: header entry {shorten(key)}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: got {type(entry).__name__}, expected an object with "
                              "dtype, shape and data_offsets")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise CheckpointError(f"{where}: dtype: got {shorten(dtype)}, expected one of "
                              f"{', '.join(DTYPE_BYTES)}")
    if not isinstance(shape, list) or len(shape) > 8 or not all(map(_is_count, shape)):
        raise CheckpointError(f"{where}: shape: got {shorten(shape)}, expected a list of at "
                              "most 8 sizes >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where}: data_offsets: got {shorten(offsets)}, expected "
                              "[begin, end] with 0 <= begin <= end")
    size = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != size:
        raise CheckpointError(f"{where}: data_offsets span {offsets[1] - offsets[0]} bytes, "
                              f"shape {shape} of {dtype} needs {size}")


def _expected_tensors(config: GeneratorConfig) -> dict[str, list[int]]:
    """The tensor shapes the architecture needs, from a generator on the meta device: no
    weights are allocated before the file is known to match."""
    with torch.device("meta"):
        return {k: list(v.shape) for k, v in _state_tensors(Generator(config)).items()}


def load_checkpoint(path_or_uri: str | os.PathLike) -> Checkpoint:
    """Rebuild a generator from a checkpoint and validate everything about it."""
    text = os.fspath(path_or_uri)
    if "://" in text and not text.startswith("file://"):
        raise CheckpointError(
            f"model: got {text!r}; only local checkpoint paths can be loaded here "
            "(fetch remote models to a local path first)"
        )
    directory = _checkpoint_dir(Path(text.removeprefix("file://")))
    card_path = directory / CARD_FILE
    card = read_card(card_path)
    try:
        config = GeneratorConfig.from_dict(card["config"])
    except TexprodError as e:
        raise CheckpointError(f"{card_path}: config: {e}") from None
    except TypeError as e:  # a key the dataclass lacks would be caught above; belt and braces
        raise CheckpointError(f"{card_path}: config: {e}") from None

    weights_path = directory / weights_file(card)
    header = read_safetensors_header(weights_path)
    recorded = card["weights"].get("sha256")
    if recorded is not None and sha256_file(weights_path) != recorded:
        raise CheckpointError(
            f"{weights_path}: checksum mismatch: sha256 differs from the one in {CARD_FILE} "
            "(the file was changed or corrupted)"
        )
    expected = _expected_tensors(config)
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path}: tensors do not match the architecture in {CARD_FILE}: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for key, want in expected.items():
        info = header[key]
        if info.get("dtype") not in LOAD_DTYPES:
            raise CheckpointError(
                f"{weights_path}: {key}: dtype {info.get('dtype')}, "
                f"must be one of {', '.join(LOAD_DTYPES)}"
            )
        if info["shape"] != want:
            raise CheckpointError(
                f"{weights_path}: {key}: got shape {info['shape']}, "
                f"expected {want} for this architecture"
            )
    generator = Generator(config)
    state: dict[str, torch.Tensor] = {}
    try:
        with safe_open(weights_path, framework="pt") as f:
            for key in expected:
                state[key] = f.get_tensor(key).to(torch.float32)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{weights_path}: unreadable: {e}") from None
    for key, tensor in state.items():
        if not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{weights_path}: {key}: {bad} non-finite values (NaN or inf)")
    generator.load_state_dict(state, strict=False)
    generator.eval()

    latents = {}
    for name, values in (card.get("latents") or {}).items():
        if not isinstance(values, list) or len(values) != config.nz_global or not all(
            isinstance(v, int | float) and math.isfinite(v) for v in values
        ):
            raise CheckpointError(
                f"{card_path}: latents.{name}: must be {config.nz_global} finite numbers"
            )
        latents[name] = torch.tensor(values, dtype=torch.float32)
    return Checkpoint(generator, card, directory, latents)


def load_generator(path_or_uri: str | os.PathLike) -> Generator:
    """The generator of a checkpoint, in inference mode."""
    return load_checkpoint(path_or_uri).generator
