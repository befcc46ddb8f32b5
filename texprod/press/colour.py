"""Colour management: output profiles, the sRGB -> press conversion, ICC parsing.

Renders are sRGB. RGB prints embed sRGB (or convert to a user's RGB output profile); CMYK
prints go through one ICC transform from sRGB to the output profile with the chosen
intent and black point compensation where the intent allows it. The default CMYK profile
is the project's own FOGRA39 (ISO Coated v2 class) build, see texprod/data/icc/README.md;
libvips' built-in 'cmyk' profile is a proofing profile, not a press standard.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyvips

from texprod.errors import SpecError

if TYPE_CHECKING:  # the spec's print section, read by attribute: no runtime import of job
    from texprod.job.spec import PrintSpec

ICC_DIR = resources.files("texprod") / "data" / "icc"
DEFAULT_CMYK_PROFILE = "FOGRA39-texprod.icc"
# device classes usable as the destination of a conversion
OUTPUT_CLASSES = {"cmyk": {"prtr"}, "rgb": {"prtr", "mntr", "spac"}}
ICC_SPACES = {"cmyk": "CMYK", "rgb": "RGB"}


_ICC_HEADER = struct.Struct(">I4s4s4s4s4s")


def parse_icc(data: bytes) -> dict[str, Any]:
    """Header fields and description of an ICC profile (v2 'desc' or v4 'mluc').

    Raises ValueError on a profile that is too short or lacks the 'acsp' signature.
    """
    if len(data) < 132:
        raise ValueError(f"ICC profile is {len(data)} bytes, shorter than its 128-byte header")
    if data[36:40] != b"acsp":
        raise ValueError(f"not an ICC profile (signature {data[36:40]!r}, not b'acsp')")
    size, _cmm, version, dev_class, space, pcs = _ICC_HEADER.unpack_from(data, 0)
    info: dict[str, Any] = {
        "size": size,
        "size_matches": size == len(data),
        "version": f"{version[0]}.{version[1] >> 4}.{version[1] & 0x0F}",
        "device_class": dev_class.decode("latin-1"),
        "colour_space": space.decode("latin-1"),
        "pcs": pcs.decode("latin-1"),
        "description": None,
    }
    (n_tags,) = struct.unpack_from(">I", data, 128)
    if 132 + 12 * n_tags > len(data):
        raise ValueError(f"ICC tag table ({n_tags} tags) runs past the end of the profile")
    for i in range(n_tags):
        sig, off, length = struct.unpack_from(">4sII", data, 132 + 12 * i)
        if sig == b"desc":
            info["description"] = _icc_text(data[off:off + length])
            break
    return info


def _icc_text(tag: bytes) -> str | None:
    kind = tag[:4]
    if kind == b"desc" and len(tag) >= 12:  # textDescriptionType (v2)
        (count,) = struct.unpack_from(">I", tag, 8)
        return tag[12:12 + count].split(b"\0", 1)[0].decode("latin-1").strip()
    if kind == b"mluc" and len(tag) >= 16:  # multiLocalizedUnicodeType (v4)
        n_records, rec_size = struct.unpack_from(">II", tag, 8)
        records = []
        for i in range(n_records):
            base = 16 + i * rec_size
            if base + 12 > len(tag):
                break
            lang, country, length, offset = struct.unpack_from(">2s2sII", tag, base)
            text = tag[offset:offset + length].decode("utf-16-be", "replace").rstrip("\0")
            records.append((lang + country, text.strip()))
        for key, text in records:
            if key == b"enUS":
                return text
        return records[0][1] if records else None
    if kind == b"text":
        return tag[8:].split(b"\0", 1)[0].decode("latin-1").strip()
    return None


@functools.cache
def srgb_profile() -> bytes:
    """libvips' built-in sRGB profile, the profile of every render."""
    probe = pyvips.Image.black(1, 1, bands=3).copy(interpretation="srgb")
    return probe.icc_transform("srgb", input_profile="srgb").get("icc-profile-data")


@dataclass(frozen=True)
class OutputColour:
    color: str  # "rgb" | "cmyk"
    profile: bytes  # the output profile (embedded unless tiff.embed_icc is false)
    profile_path: Path | None  # None: keep sRGB, no conversion
    description: str
    intent: str
    black_point_compensation: bool
    bits: int

    @property
    def bands(self) -> int:
        return 4 if self.color == "cmyk" else 3


def resolve_colour(spec: PrintSpec) -> OutputColour:
    """The output colour setup of a print spec; user profiles are validated here."""
    # lcms ignores black point compensation for absolute colorimetric
    bpc = spec.intent != "absolute"
    if spec.icc_profile == "default":
        if spec.color == "rgb":
            return OutputColour("rgb", srgb_profile(), None, parse_icc(srgb_profile())["description"],
                                spec.intent, bpc, spec.bit_depth)
        path = Path(str(ICC_DIR / DEFAULT_CMYK_PROFILE))
    else:
        path = Path(spec.icc_profile).expanduser()
    data = _read_profile(path, spec)
    return OutputColour(spec.color, data, path, parse_icc(data)["description"], spec.intent, bpc,
                        spec.bit_depth)


def _read_profile(path: Path, spec: PrintSpec) -> bytes:
    field = f"print.icc_profile: got {str(spec.icc_profile)!r}"
    if not path.is_file():
        raise SpecError(f"{field}, no such file (use default or a path to an ICC profile)")
    data = path.read_bytes()
    try:
        info = parse_icc(data)
    except ValueError as e:
        raise SpecError(f"{field}, {e}") from None
    want = ICC_SPACES[spec.color]
    space, device_class = info["colour_space"].strip(), info["device_class"]
    if space != want:
        raise SpecError(f"{field}, a {space} profile; print.color {spec.color} "
                        f"needs a {want} output profile")
    if device_class not in OUTPUT_CLASSES[spec.color]:
        raise SpecError(f"{field}, device class '{device_class}' cannot be a conversion "
                        f"target; need an output ({'/'.join(sorted(OUTPUT_CLASSES[spec.color]))}) "
                        "profile")
    try:  # a real conversion proves lcms can use it as a destination
        probe = pyvips.Image.black(2, 2, bands=3).copy(interpretation="srgb")
        probe.icc_transform(str(path), input_profile="srgb", intent=spec.intent).avg()
    except pyvips.Error as e:
        raise SpecError(f"{field}, unusable as an output profile: {e.message.strip()}") from None
    return data


def to_output(image: pyvips.Image, colour: OutputColour) -> pyvips.Image:
    """sRGB render (8-bit srgb or 16-bit rgb16) -> the print's colour space and depth."""
    if colour.profile_path is None:
        if colour.bits == 16 and image.format != "ushort":
            image = (image.cast("ushort") * 257).cast("ushort").copy(interpretation="rgb16")
        return image
    return image.icc_transform(
        str(colour.profile_path), input_profile="srgb", intent=colour.intent,
        black_point_compensation=colour.black_point_compensation, depth=colour.bits,
        embedded=False,
    )


def soft_proof(image: pyvips.Image, colour: OutputColour) -> pyvips.Image:
    """How an sRGB image will print: through the output profile and back to sRGB (8-bit)."""
    if image.format != "uchar":
        image = (image / 257).cast("uchar").copy(interpretation="srgb")
    if colour.profile_path is None:
        return image
    printed = image.icc_transform(str(colour.profile_path), input_profile="srgb",
                                  intent=colour.intent,
                                  black_point_compensation=colour.black_point_compensation)
    return printed_to_srgb(printed, colour)


def printed_to_srgb(image: pyvips.Image, colour: OutputColour) -> pyvips.Image:
    """Pixels in the print's colour space (as in the file) shown in sRGB, 8-bit."""
    if colour.profile_path is None:
        if image.format != "uchar":
            image = (image / 257).cast("uchar")
        return image.copy(interpretation="srgb")
    return image.icc_transform("srgb", input_profile=str(colour.profile_path),
                               intent="relative", black_point_compensation=True,
                               embedded=False, depth=8)
