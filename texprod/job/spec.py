"""Job specs: YAML validated by pydantic, with errors that name the field, value and line.

A spec names the generator, the print geometry, colour and TIFF settings, how to render
and where to put the outputs. Every field except `model` and the print size has a
documented default; unknown keys are errors so typos never pass silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    ValidationError,
    model_validator,
)

from texprod.errors import SpecError, shorten
from texprod.job.paint import BACKGROUND, level_value
from texprod.press.tiff_tags import PROCESS_INKS

SPECS_DIR = Path(__file__).resolve().parents[2] / "specs"  # the repository's specs/


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _between(lo: float, hi: float):
    def check(value):
        if not lo <= value <= hi:
            raise ValueError(f"must be between {_num(lo)} and {_num(hi)}")
        return value

    return AfterValidator(check)


def _positive_max(hi: float):
    def check(value):
        if not 0 < value <= hi:
            raise ValueError(f"must be greater than 0 and at most {_num(hi)}")
        return value

    return AfterValidator(check)


class _Strict(BaseModel):
    # strict: YAML's true/yes/on are booleans, never the number 1; "300" is not a number
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LatentSpec(_Strict):
    seed: Annotated[int, _between(0, 2**64 - 1)] | None = Field(
        None, description="the global latent this seed stands for")
    name: str | None = Field(None, description="a named latent from the model card")

    @model_validator(mode="after")
    def _one_source(self) -> LatentSpec:
        if (self.seed is None) == (self.name is None):
            raise ValueError("give exactly one of seed (a number) or name (a latent named "
                             "in the model card)")
        return self


class QuiltSpec(_Strict):
    block_mm: Annotated[float, _positive_max(100_000)] = Field(
        description="side of a quilt block holding one texture; in repeat mode a whole "
                    "number of blocks fits the period")
    transition_mm: Annotated[float, _between(0, 100_000)] | None = Field(
        None, description="width of the blend between neighbouring blocks (default: a quarter "
                          "of the block)")
    seed: Annotated[int, _between(0, 2**64 - 1)] | None = Field(
        None, description="seed of the block latents (default: the job seed)")

    @model_validator(mode="after")
    def _transition_fits(self) -> QuiltSpec:
        if self.transition_mm is not None and self.transition_mm > self.block_mm:
            raise ValueError(f"transition_mm {_num(self.transition_mm)} is wider than "
                             f"block_mm {_num(self.block_mm)}; it must be at most the block")
        return self


class PlacementSpec(_Strict):
    fit: Literal["contain", "cover", "fill"] | None = Field(
        None, description="contain: the whole mask inside the trim (default); cover: the "
                          "trim covered, the mask cropped; fill: stretched to the trim")
    margin_mm: Annotated[float, _between(0, 100_000)] = Field(
        0, description="space kept free on every side of the trim (repeat: of the period)")
    # a YAML list is fine here (strict would want a tuple); its items are strict numbers
    box_mm: Annotated[tuple[StrictFloat, StrictFloat, StrictFloat, StrictFloat] | None,
                      Field(strict=False)] = Field(
        None, description="explicit [x, y, width, height] in mm from the trim's top-left")

    @model_validator(mode="after")
    def _one_way(self) -> PlacementSpec:
        if self.box_mm is not None:
            if self.fit is not None:
                raise ValueError("give either fit (with margin_mm) or box_mm, not both")
            if self.box_mm[2] <= 0 or self.box_mm[3] <= 0:
                raise ValueError(f"box_mm: got {list(self.box_mm)}, width and height must be "
                                 "greater than 0")
        return self


def _check_levels(value: dict) -> dict:
    seen: dict[tuple, str] = {}
    for key in value:
        level = level_value(key)  # raises with the allowed forms
        grey = level * 3 if len(level) == 1 else level
        if grey in seen:
            raise ValueError(f"{key!r} and {seen[grey]!r} name the same mask level")
        seen[grey] = str(key)
    if BACKGROUND not in value:
        raise ValueError("background is missing: it is the latent outside the mask (and of "
                         "its black pixels)")
    return {str(k): v for k, v in value.items()}


class PaintSpec(_Strict):
    mask: str = Field(description="mask image (any format libvips reads), a path relative to "
                                  "the spec or s3://bucket/key; white = foreground")
    placement: PlacementSpec = PlacementSpec()
    latents: Annotated[dict[str | int, LatentSpec], AfterValidator(_check_levels)] = Field(
        description="mask level -> latent: background (black and outside the mask), "
                    "foreground (white), grey levels 0-255, or palette colours #rrggbb; each "
                    "pixel takes the nearest level named")
    transition_mm: Annotated[float, _between(0, 10_000)] = Field(
        4, description="width of the blend across mask edges")


class RepeatSpec(_Strict):
    width_mm: Annotated[float, _positive_max(100_000)] = Field(description="period width")
    height_mm: Annotated[float, _positive_max(100_000)] = Field(description="period height")
    tolerance_mm: Annotated[float, _between(0, 1000)] | None = Field(
        None, description="how far the period may move when snapped to whole noise cells "
                          "(default: any snap, at most half a cell, is accepted and reported)")
    adjust: Literal["size", "dpi"] = Field(
        "size", description="size: keep the dpi, snap the period to whole cells; dpi: keep "
                            "the period exact in mm, adjust the resolution to whole cells")


class TextureSpec(_Strict):
    latent: LatentSpec | None = Field(None, description="one texture everywhere: {seed: N} or "
                                                        "{name: NAME} (default: the job seed)")
    quilt: QuiltSpec | None = Field(None, description="blocks of independent textures "
                                                      "blended into each other (PSGAN)")
    paint: PaintSpec | None = Field(None, description="a mask painted with textures (PSGAN)")
    repeat: bool | RepeatSpec = Field(
        False, description="true: the trim is one exact period of a seamless repeat, snapped "
                           "to whole noise cells; or {width_mm, height_mm}: the period")

    @model_validator(mode="after")
    def _one_field(self) -> TextureSpec:
        given = [k for k in ("latent", "quilt", "paint") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"got {' and '.join(given)}: give only one of latent, quilt or "
                             "paint")
        return self


class PrintSpec(_Strict):
    width_mm: Annotated[float, _positive_max(100_000)] | None = Field(
        None, description="trim width in mm (or give width_px/height_px)")
    height_mm: Annotated[float, _positive_max(100_000)] | None = Field(
        None, description="trim height in mm")
    width_px: Annotated[int, _between(1, 1_000_000)] | None = Field(
        None, description="trim width in pixels, for screen work")
    height_px: Annotated[int, _between(1, 1_000_000)] | None = Field(
        None, description="trim height in pixels")
    dpi: Annotated[float, _between(72, 2400)] = Field(300, description="pixels per inch")
    bleed_mm: Annotated[float, _between(0, 50)] = Field(
        3, description="bleed on every side; the texture continues into it")
    color: Literal["rgb", "cmyk"] = Field("cmyk", description="output colour space")
    icc_profile: str = Field(
        "default", description="output profile: default (FOGRA39 for cmyk, sRGB for rgb) or "
                               "a path to an ICC output profile of the output colour space")
    intent: Literal["perceptual", "relative", "saturation", "absolute"] = Field(
        "relative", description="rendering intent of the colour conversion")
    tac_limit: Annotated[float, _between(100, 400)] = Field(
        300, description="total area coverage limit in %, checked on CMYK output")
    bit_depth: Literal[8, 16] = Field(8, description="bits per sample")

    @model_validator(mode="after")
    def _one_size(self) -> PrintSpec:
        mm = (self.width_mm, self.height_mm)
        px = (self.width_px, self.height_px)
        if any(v is not None for v in mm) and any(v is not None for v in px):
            raise ValueError("give the size either in mm (width_mm, height_mm) or in pixels "
                             "(width_px, height_px), not both")
        if all(v is None for v in mm + px):
            raise ValueError("the print size is required: width_mm and height_mm "
                             "(or width_px and height_px)")
        given = mm if any(v is not None for v in mm) else px
        if any(v is None for v in given):
            names = ("width_mm", "height_mm") if given is mm else ("width_px", "height_px")
            missing = names[given.index(None)]
            raise ValueError(f"{missing} is missing: give both {names[0]} and {names[1]}")
        return self


class TiffSpec(_Strict):
    compression: Literal["lzw", "deflate", "none"] = Field(
        "lzw", description="lossless compression, with horizontal predictor")
    layout: Literal["tiled", "strips"] = Field("tiled", description="TIFF data layout")
    bigtiff: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: BigTIFF only when the file could pass 4 GB")
    embed_icc: bool = Field(True, description="embed the output ICC profile")


CLUSTER_KINDS = ("local", "local-cuda")
DASK_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc)://[^\s/]+$")


def _check_cluster(value: str) -> str:
    if value not in CLUSTER_KINDS and not DASK_ADDRESS.match(value):
        raise ValueError("must be null (in-process), local, local-cuda or a Dask scheduler "
                         "address such as tcp://scheduler:8786")
    return value


class RenderSpec(_Strict):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA "
                                                                       "when present")
    precision: Literal["fp32", "tf32", "bf16", "fp16"] = Field("fp32", description="network "
                                                                                   "precision")
    tile_px: Literal["auto"] | Annotated[int, _between(0, 65_536)] = Field(
        "auto", description="tile side in pixels (0: one pass); auto: 512 on the CPU (256 "
                            "for bf16 on a CPU with bf16 in hardware), 2048 on CUDA")
    batch: Literal["auto"] | Annotated[int, _between(1, 256)] = Field(
        "auto", description="tiles per device batch; auto: 1 on the CPU (4 for bf16 on a "
                            "CPU with bf16 in hardware), 4 on CUDA")
    colour_engine: Literal["auto", "lut", "libvips"] = Field(
        "auto", description="who converts to the output colour space: lut (a 3D table sampled "
                            "from the ICC transform, applied on the render device, within "
                            "2/255 of libvips), libvips (LittleCMS on the CPU, the reference); "
                            "auto: lut on CUDA, libvips on the CPU")
    scratch_dir: str | None = Field(None, description="directory for the stripe spool "
                                                      "(default: the output directory)")
    cluster: Annotated[str, AfterValidator(_check_cluster)] | None = Field(
        None, description="who renders the stripes: null (this process; or the Dask "
                          "scheduler in TEXPROD_DASK_ADDRESS), local (a Dask LocalCluster of "
                          "render.workers processes), local-cuda (one Dask worker per GPU), "
                          "or a Dask scheduler address tcp://HOST:PORT")
    workers: Literal["auto"] | Annotated[int, _between(1, 256)] = Field(
        "auto", description="worker processes of a local cluster; auto: one per core")
    threads: Literal["auto"] | Annotated[int, _between(1, 256)] = Field(
        "auto", description="stripes worked on at once in this process (in-process), or per "
                            "Dask worker of local/local-cuda; auto: one per core in-process, "
                            "1 per local worker, 4 per GPU worker")


MAX_PLATES = 6  # spot plates beside CMYK: ten printing units is a large press
_INK_NAME = re.compile(r"^[!-~]([ -~]{0,61}[!-~])?$")
_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


def _check_ink_name(value: str) -> str:
    if not _INK_NAME.match(value):
        raise ValueError("must be 1-63 printable ASCII characters (letters, digits, spaces "
                         "inside, punctuation): it is written as a TIFF InkName and a PDF "
                         "separation name")
    if value.lower() in (*(p.lower() for p in PROCESS_INKS), "all", "none"):
        raise ValueError("is reserved: Cyan, Magenta, Yellow and Black are the process inks, "
                         "All and None are PDF's; name the spot ink (e.g. Spot UV, White)")
    return value


def _check_hex_colour(value: str) -> str:
    if not _HEX_COLOUR.match(value):
        raise ValueError("must be an sRGB colour #rrggbb")
    return value.lower()


class PlateSourceSpec(_Strict):
    levels: list[str | int] | None = Field(
        None, description="where the plate prints: levels of texture.paint.latents "
                          "(background, foreground, grey levels, #rrggbb)")
    mask: str | None = Field(None, description="or a mask of its own (white = ink), a path "
                                               "relative to the spec or s3://bucket/key")
    placement: PlacementSpec | None = Field(
        None, description="where the plate's own mask lands (default: contain in the trim)")

    @model_validator(mode="after")
    def _one_source(self) -> PlateSourceSpec:
        if (self.levels is None) == (self.mask is None):
            raise ValueError("give exactly one of levels (paint levels, registered with the "
                             "texture) or mask (a mask of the plate's own)")
        if self.levels is not None and self.placement is not None:
            raise ValueError("placement goes with mask; levels use the paint's placement")
        if self.levels is not None and not self.levels:
            raise ValueError("levels is empty: name at least one paint level")
        return self


class PlateSpec(_Strict):
    name: Annotated[str, AfterValidator(_check_ink_name)] = Field(
        description="the spot ink, e.g. Spot UV, White, Pantone 871 C")
    source: PlateSourceSpec = Field(alias="from", description="where the plate prints")
    tint: Annotated[float, _between(1, 100)] = Field(100, description="ink in %, inside")
    preview: Annotated[str, AfterValidator(_check_hex_colour)] = Field(
        "#d8e8ff", description="the sRGB colour the proof tints the plate's area with")
    knockout: bool = Field(False, description="remove the process inks under the plate "
                                              "(opaque spot inks); false: overprint")
    choke_mm: Annotated[float, _between(0, 50)] = Field(0, description="shrink the plate's "
                                                                      "edges by this much")
    spread_mm: Annotated[float, _between(0, 50)] = Field(0, description="grow the plate's "
                                                                        "edges by this much")

    @model_validator(mode="after")
    def _choke_or_spread(self) -> PlateSpec:
        if self.choke_mm and self.spread_mm:
            raise ValueError("give choke_mm or spread_mm, not both")
        return self


def _check_plates(value: list) -> list:
    if len(value) > MAX_PLATES:
        raise ValueError(f"{len(value)} plates, at most {MAX_PLATES} spot plates beside CMYK")
    seen: set[str] = set()
    for plate in value:
        if plate.name.lower() in seen:
            raise ValueError(f"two plates are named {plate.name!r}; ink names must differ")
        seen.add(plate.name.lower())
    return value


class OutputSpec(_Strict):
    dir: str = Field("out/", description="output directory, or s3://bucket/prefix/")
    proof: bool = Field(True, description="write an sRGB proof JPEG and a thumbnail")
    formats: list[Literal["tiff", "pdf"]] = Field(
        ["tiff"], description="tiff: the print TIFF; pdf: also a PDF/X-4 of it (the TIFF is "
                              "always written: the PDF is made from it)")
    plates_as: Literal["channels", "files"] = Field(
        "channels", description="channels: spot plates as extra inks of the print TIFF; "
                                "files: one grey TIFF per plate beside it")
    region_map: bool = Field(False, description="write a label TIFF: each pixel's paint "
                                                "level or quilt block (legend in provenance)")


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check_name(value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError("must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit (it is used in file names)")
    return value


def _check_model(value: str) -> str:
    if not value.strip():
        raise ValueError("must name a model (a checkpoint path)")
    return value


class JobSpec(_Strict):
    name: Annotated[str, AfterValidator(_check_name)] = Field(description="used in output names")
    model: Annotated[str, AfterValidator(_check_model)] = Field(
        description="generator: a checkpoint path, s3://bucket/prefix, NAME@VERSION from the "
                    "registry, or bundled:NAME")
    description: str = Field("", description="free text, recorded in the provenance")
    registry: str | None = Field(
        None, description="model registry s3://BUCKET[/prefix] that NAME@VERSION models are "
                          "resolved against (default: the TEXPROD_REGISTRY environment variable)")
    seed: Annotated[int, _between(0, 2**64 - 1)] = Field(0, description="noise seed")
    texture: TextureSpec = TextureSpec()
    print: PrintSpec
    tiff: TiffSpec = TiffSpec()
    render: RenderSpec = RenderSpec()
    output: OutputSpec = OutputSpec()
    plates: Annotated[list[PlateSpec], AfterValidator(_check_plates)] = Field(
        [], description="spot plates (varnish, white ink, a spot colour) registered with the "
                        "texture")

    def digest(self, model_digest: str, inputs: dict[str, str] | None = None) -> str:
        """What determines the output's pixels and file: everything but where and how fast.

        The model and input files (a paint mask: `inputs` {"mask": sha256}, plate masks
        {"plate_mask_I": sha256}) enter by
        content digest, not by path; rendering device, tiling, batch and directories do
        not change the image (tiles are exact) and are left out.
        """
        content = self.model_dump(mode="json", exclude={"name", "model", "description",
                                                        "output", "registry"})
        content["render"] = {"precision": self.render.precision}
        if not content["plates"]:  # specs without plates keep the digests they had
            del content["plates"]
        else:  # as channels or as files, the print TIFF differs
            content["plates_as"] = self.output.plates_as
        content["model_digest"] = model_digest
        inputs = inputs or {}
        if "mask" in inputs and content["texture"].get("paint"):
            content["texture"]["paint"]["mask"] = inputs["mask"]
        for i, plate in enumerate(content.get("plates", [])):  # a plate's own mask
            if f"plate_mask_{i}" in inputs:
                plate["source"]["mask"] = inputs[f"plate_mask_{i}"]
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# --------------------------------------------------------------------------- loading


def _yaml_node_at(root: yaml.Node | None, loc: tuple) -> yaml.Node | None:
    """The YAML node a pydantic error location points to (or its nearest parent)."""
    node, key = root, None
    for part in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            key = node if isinstance(node, yaml.ScalarNode) else key
            continue
        if not isinstance(node, yaml.MappingNode):
            break
        pair = next(((k, v) for k, v in node.value if k.value == part), None)
        if pair is None:
            break
        key, node = pair
    # a section's problem is reported at its key, a value's at the value
    return key if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and key else node


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The spec section a field holds (unwrapping `Section | None` and similar)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):  # Section | None, list[Section], Annotated[...]
        model = _section_model(arg)
        if model is not None:
            return model
    return None


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = JobSpec
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list section (plates)
            continue
        field = _field_named(model, part)
        if field is None:
            return []
        model = _section_model(field.annotation)
        if model is None:
            return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _field_path(error: dict) -> tuple:
    # pydantic adds union branches and validator names to loc; keep the field names
    if error["type"] == "extra_forbidden":
        return tuple(error["loc"])
    names = _all_field_names()
    return tuple(p for p in error["loc"] if isinstance(p, int) or p in names)


def _describe(loc: tuple, errors: list[dict]) -> str:
    """One message for all errors pydantic reported on one field (one per union branch)."""
    field = ".".join(str(p) for p in loc) or "spec"
    first = errors[0]
    if first["type"] == "extra_forbidden":
        return f"{field}: unknown key, allowed keys here: {', '.join(_allowed_keys(loc))}"
    if first["type"] == "missing":
        return f"{field}: missing, this field is required"
    if first["type"] == "value_error" and isinstance(first["input"], dict):
        return f"{field}: {first['msg'].removeprefix('Value error, ')}"  # a section-level rule
    rules = []  # each completes "got VALUE, ..."
    for error in errors:
        if error["type"] == "literal_error":
            expected = error["ctx"]["expected"]
            rule = "must be " + (f"one of {expected.replace(' or ', ', ')}"
                                 if " or " in expected else expected)
        elif error["type"] in ("bool_type", "bool_parsing"):
            rule = "must be true or false"
        elif error["type"] == "model_type":  # a section: say its keys, not its class name
            rule = f"must be a mapping of {', '.join(_allowed_keys((*loc, None)))}"
        else:
            rule = error["msg"].removeprefix("Value error, ")
            rule = rule.replace("Input should be", "must be")
        rules.append(rule)
    rules = list(dict.fromkeys(rules))
    rules[1:] = [r.removeprefix("must be ") for r in rules[1:]]
    return f"{field}: got {shorten(first['input'])}, {' or '.join(rules)}"


def _field_named(model: type[BaseModel], key: str):
    """A model's field by its YAML key (its alias, e.g. a plate's `from`, or its name)."""
    return next((f for name, f in model.model_fields.items() if (f.alias or name) == key),
                None)


def _all_field_names() -> set[str]:
    names: set[str] = set()
    todo: list[type[BaseModel]] = [JobSpec]
    while todo:
        model = todo.pop()
        names.update(f.alias or name for name, f in model.model_fields.items())
        todo += [m for f in model.model_fields.values()
                 if (m := _section_model(f.annotation)) is not None]
    return names


def _other_branch(error: dict, errors: list[dict]) -> bool:
    """A section given as a mapping also fails a scalar branch of its union (repeat: true or
    {width_mm, ...}); that branch's complaint is noise next to the section's own errors."""
    if not isinstance(error["input"], dict) or error["type"] != "bool_type":
        return False
    path = _field_path(error)
    return any(len(_field_path(other)) > len(path) and _field_path(other)[:len(path)] == path
               for other in errors if other is not error)


def parse_spec(data: Any, source: str = "spec", root: yaml.Node | None = None,
               overrides: list[str] | tuple[str, ...] = ()) -> JobSpec:
    """Validate spec data; raise SpecError listing every problem with its field and line.

    A problem in a field an override set names the override, not the YAML line it replaced.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a job spec must be a mapping of fields, got "
                        f"{type(data).__name__}")
    if _expanded_size(data, MAX_SPEC_VALUES) > MAX_SPEC_VALUES:
        raise SpecError(f"{source}: more than {MAX_SPEC_VALUES:,} values once its YAML "
                        "aliases (*name) are expanded; a job spec needs a few dozen")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        by_field: dict[tuple, list[dict]] = {}
        errors = e.errors()
        for error in errors:
            if _other_branch(error, errors):
                continue
            by_field.setdefault(_field_path(error), []).append(error)
        problems = []
        for loc, errors in by_field.items():
            line = ""
            node = _yaml_node_at(root, loc) if root is not None else None
            override = _override_of(loc, overrides)
            if override is not None:
                line = f" (from --set {override})"
            elif node is not None:
                line = f" (line {node.start_mark.line + 1})"
            problems.append(_describe(loc, errors) + line)
        _raise_problems(source, problems)
    problems = []
    for loc, message in _cross_field_problems(spec):
        node = _yaml_node_at(root, loc) if root is not None else None
        override = _override_of(loc, overrides)
        line = (f" (from --set {override})" if override is not None
                else f" (line {node.start_mark.line + 1})" if node is not None else "")
        problems.append(f"{'.'.join(map(str, loc))}: {message}{line}")
    if problems:
        _raise_problems(source, problems)
    return spec


def _raise_problems(source: str, problems: list[str]) -> None:
    if len(problems) == 1:  # one line for one problem
        raise SpecError(f"{source}: invalid job spec: {problems[0]}") from None
    raise SpecError(f"{source}: invalid job spec:\n  " + "\n  ".join(problems)) from None


def _cross_field_problems(spec: JobSpec) -> list[tuple[tuple, str]]:
    """Rules between sections, as (field, message): what plates and formats need."""
    problems: list[tuple[tuple, str]] = []
    if "tiff" not in spec.output.formats:
        problems.append((("output", "formats"), f"got {spec.output.formats}, must include "
                         "tiff: the PDF is made from the print TIFF, which is always "
                         "delivered"))
    if "pdf" in spec.output.formats and spec.print.color != "cmyk":
        problems.append((("output", "formats"), "pdf needs print.color cmyk: the PDF/X-4 "
                         f"carries the CMYK print (got {spec.print.color})"))
    if spec.plates and spec.print.color != "cmyk":
        problems.append((("plates",), "spot plates need print.color cmyk (got "
                         f"{spec.print.color}): they are inks beside the process inks"))
    paint = spec.texture.paint
    for i, plate in enumerate(spec.plates):
        levels = plate.source.levels
        if levels is None:
            continue
        where = ("plates", i, "from", "levels")
        if paint is None:
            problems.append((where, f"got {levels}, but the spec has no texture.paint to take "
                             "levels from; paint the texture with a mask, or give the plate "
                             "a mask of its own (from: {mask: PATH})"))
            continue
        known = {_level_of(k): str(k) for k in paint.latents}
        for level in levels:
            value = _level_of(level)
            if value is None or value not in known:
                problems.append((where, f"got {level!r}, not a level of "
                                 f"texture.paint.latents ({', '.join(known.values())})"))
    return problems


def _level_of(key: str | int) -> tuple[int, ...] | None:
    """A paint level as its mask value (grey levels as colours), or None if it is none."""
    try:
        level = level_value(key)
    except ValueError:
        return None
    return level * 3 if len(level) == 1 else level


def _override_of(loc: tuple, overrides: list[str] | tuple[str, ...]) -> str | None:
    """The last override that set field `loc` (or a section around it), if any."""
    field = [str(p) for p in loc]
    found = None
    for assignment in overrides:
        path = assignment.partition("=")[0].split(".")
        if field[:len(path)] == path:
            found = assignment
    return found


def resolve_spec_path(name: str | os.PathLike) -> Path:
    """A spec file by path, or a bare name looked up in specs/ (with or without .yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (SPECS_DIR / path.name, SPECS_DIR / f"{path.name}.yaml"):
        if path.parent == Path(".") and candidate.is_file():
            return candidate
    raise SpecError(f"spec: {str(name)!r} not found (a YAML file, or a name in {SPECS_DIR})")


def _set_override(data: dict, assignment: str) -> None:
    """Apply one `dotted.key=value` override; the value is parsed as YAML."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise SpecError(f"--set: got {assignment!r}, must be key=value like print.dpi=150")
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"--set {key}: {part} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(raw) if raw else ""


MAX_SPEC_BYTES = 1 << 20  # a job spec is a page of YAML; 1 MiB is generous
MAX_SPEC_VALUES = 10_000  # values in the spec with every alias expanded


def _expanded_size(data: Any, limit: int) -> int:
    """How many values `data` holds with shared parts (YAML aliases) counted each time they
    appear, up to `limit`: nested anchors expand to billions from a few lines, and a
    recursive one never ends, so the count stops early."""
    count, todo = 0, [data]
    while todo and count <= limit:
        value = todo.pop()
        count += 1
        if isinstance(value, dict):
            todo += [*value.keys(), *value.values()]
        elif isinstance(value, list | tuple):
            todo += value
    return count


def _read_spec_text(spec_path: Path) -> str:
    size = spec_path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"{spec_path}: {size:,} bytes; a job spec may be at most "
                        f"{MAX_SPEC_BYTES:,} bytes")
    raw = spec_path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{spec_path}: not UTF-8 text: byte 0x{raw[e.start]:02x} at offset "
                        f"{e.start} (save the spec as UTF-8)") from None


def load_spec(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> JobSpec:
    """Read and validate a YAML job spec. Relative model and output paths stay as written."""
    spec_path = resolve_spec_path(path)
    text = _read_spec_text(spec_path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError(f"{spec_path}: not valid YAML{where}: {problem}") from None
    for assignment in overrides:
        if not isinstance(data, dict):
            break
        _set_override(data, assignment)
    return parse_spec(data, str(spec_path), root, overrides)
