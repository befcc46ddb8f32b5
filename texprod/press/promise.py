"""The promise a print file makes, in one shape.

A job builds one `Promise` from its plan; the same object is written into the file as its
provenance (the TIFF's ImageDescription, ``{"texprod": {...}}``), read back from a file by
`Promise.from_provenance`, and compared field by field by preflight. Each field says how
preflight checks it:

- FILE: against what the file itself is (its tags): dimensions, dpi, colour, bits, ...
- RECORD: against the provenance the file carries (identity: digests, seed, trim box);
- OWN: by a check of its own (the trim box geometry, trim in mm, the TAC measurement);
- NOTE: recorded for people and tools, not compared.

Adding a field is one line here (and its value where the job builds the promise).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

FILE, RECORD, OWN, NOTE = "file", "record", "own", "note"


def _promised(check: str, *, key: str | None = None, required: bool = False) -> Any:
    return dataclasses.field(default=None, metadata={"check": check, "key": key,
                                                     "required": required})


@dataclass
class Promise:
    """What a job promised about its print file; None means not promised (not checked).
    The field order is the provenance's key order (it is part of the file's bytes)."""

    version: str | None = _promised(NOTE, required=True)  # texprod's
    spec_name: str | None = _promised(NOTE)
    spec_digest: str | None = _promised(RECORD)
    model_digest: str | None = _promised(RECORD)
    model_name: str | None = _promised(NOTE)
    seed: int | None = _promised(RECORD)
    width_px: int | None = _promised(FILE, required=True)
    height_px: int | None = _promised(FILE, required=True)
    dpi: float | None = _promised(FILE, required=True)
    trim_box_px: tuple[int, int, int, int] | None = _promised(RECORD, required=True)
    bleed_px: int | None = _promised(RECORD, required=True)
    trim_mm: list[float] | None = _promised(OWN)
    bleed_mm: float | None = _promised(OWN)  # what the pixels hold (whole pixels at the dpi)
    bleed_mm_requested: float | None = _promised(NOTE)
    repeat: dict | bool | None = _promised(NOTE)
    texture: str | None = _promised(NOTE)
    color: str | None = _promised(FILE, required=True)  # "rgb" | "cmyk"
    bits: int | None = _promised(FILE, required=True)
    # the output profile's description: a promise about the file only when embedded
    icc_description: str | None = _promised(FILE, key="icc_profile")
    intent: str | None = _promised(NOTE)
    black_point_compensation: bool | None = _promised(NOTE)
    colour_engine: str | None = _promised(NOTE)  # "lut" | "libvips" | "none" (sRGB out)
    embed_icc: bool | None = _promised(FILE, required=True)
    tac_limit: float | None = _promised(OWN)
    compression: str | None = _promised(FILE, required=True)  # "lzw" | "deflate" | "none"
    layout: str | None = _promised(FILE, required=True)  # "tiled" | "strips"
    bigtiff: bool | None = _promised(FILE, required=True)
    bigtiff_reason: str | None = _promised(NOTE)
    inks: list[str] | None = _promised(FILE)  # InkNames, when spot plates are channels
    plates: list[dict] | None = _promised(NOTE)  # the spot plates and where they are
    region_map: dict | None = _promised(NOTE)  # the label TIFF and its legend

    def to_provenance(self) -> dict[str, Any]:
        """The provenance written into the file: {"texprod": {key: value, ...}}."""
        return {"texprod": {_key(f): _jsonable(getattr(self, f.name)) for f in fields(self)}}

    @classmethod
    def from_provenance(cls, provenance: Any) -> Promise:
        """The promise a file's provenance records ({"texprod": {...}} or the inner dict);
        keys it lacks are not promised, keys this texprod does not know are ignored."""
        prov = provenance.get("texprod", provenance) if isinstance(provenance, dict) else {}
        if not isinstance(prov, dict):
            prov = {}
        values = {f.name: prov.get(_key(f)) for f in fields(cls)}
        if isinstance(values["trim_box_px"], list):
            values["trim_box_px"] = tuple(values["trim_box_px"])
        return cls(**values)

    @classmethod
    def names(cls, check: str) -> list[str]:
        """The fields preflight checks the `check` way (FILE, RECORD, ...)."""
        return [f.name for f in fields(cls) if f.metadata["check"] == check]

    @classmethod
    def required_keys(cls) -> list[str]:
        """Provenance keys every texprod print file carries."""
        return [_key(f) for f in fields(cls) if f.metadata["required"]]

    @classmethod
    def key(cls, name: str) -> str:
        """The provenance key of field `name`."""
        return next(_key(f) for f in fields(cls) if f.name == name)


def _key(f: dataclasses.Field) -> str:
    return f.metadata["key"] or f.name


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
