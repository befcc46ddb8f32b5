"""A job's plan: everything a print job needs, resolved and checked from its spec before any
pixel is rendered (the model, the geometry, the colour, the file's layout, the stripes, the
outputs' names), and what the stripes are rendered with (noise field, prepared generator).

The pipeline (`texprod.job.pipeline`) runs a plan; a Dask worker rebuilds the same plan
from the spec (`texprod.job.executors`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from texprod.engine import receptive_field
from texprod.engine.noise import NoiseField
from texprod.engine.render import Renderer, default_tiling, native_on_cpu, resolve_device
from texprod.errors import SpecError, TexprodError
from texprod.job.plates import Plates, plan_plates
from texprod.job.spec import JobSpec, RepeatSpec
from texprod.job.stripes import Stripe, plan_stripes, preview_factor
from texprod.job.texture import TextureField, frame_of, texture_field
from texprod.models import Checkpoint, load_checkpoint
from texprod.models.references import resolve_model
from texprod.press.colour import OutputColour, resolve_colour
from texprod.press.geometry import PrintGeometry, RepeatPeriod, print_geometry, repeat_period
from texprod.press.printfile import TiffOptions, bigtiff_decision, worst_case_size
from texprod.storage import is_s3, s3_public_endpoint, split_s3

log = logging.getLogger(__name__)

BENCHMARKS_JSON = resources.files("texprod") / "data" / "benchmarks.json"


@dataclass(frozen=True)
class JobOutputs:
    """Where the files are written locally and, for s3:// output dirs, where they go."""

    tiff: Path
    proof: Path | None
    thumbnail: Path | None
    remote_dir: str | None = None  # s3://bucket/prefix/ when output.dir is on S3
    repeat_preview: Path | None = None  # 2 x 2 periods of a repeat, to see that it repeats
    plate_files: tuple[Path, ...] = ()  # one grey TIFF per spot plate (output.plates_as)
    region_map: Path | None = None  # label TIFF: each pixel's paint level or quilt block
    pdf: Path | None = None  # the PDF/X-4 of the print

    @property
    def local(self) -> list[Path]:
        """Every output, the print TIFF first (uploaded last: it marks the job done)."""
        return [p for p in (self.tiff, *self.plate_files, self.region_map, self.pdf,
                            self.proof, self.thumbnail, self.repeat_preview) if p is not None]

    def final(self, path: Path) -> str:
        """The output's final location: its S3 URI, or the local path."""
        return f"{self.remote_dir}{path.name}" if self.remote_dir else str(path)


@dataclass
class JobPlan:
    spec: JobSpec
    checkpoint: Checkpoint
    model_path: Path
    spec_digest: str
    geometry: PrintGeometry
    colour: OutputColour
    tiff: TiffOptions
    bigtiff: bool
    bigtiff_reason: str
    stripes: list[Stripe]  # the units of work, top to bottom
    device: str
    colour_engine: str  # "lut" (on the render device) or "libvips" (on the CPU)
    tile_px: int
    batch: int
    period: tuple[int, int] | None  # repeat period in cells (rows, cols)
    texture: TextureField
    plates: Plates  # spot plates (empty: none)
    outputs: JobOutputs
    spool_dir: Path  # stripes that finish early wait here for their turn in the file
    output_bytes: int  # upper bound on the file: worst-case compression plus headers
    deliverable_bytes: int  # likewise for the files beside it (plate files, map, PDF)
    repeat: RepeatPeriod | None = None  # texture.repeat given as a period in mm
    estimate: str = ""
    # (network, pixels): the bytes one stripe holds at its peak, measured once by
    # job.memory; a Dask worker's plan takes the driver's (see StripeJob.stripe_bytes)
    stripe_bytes: tuple[int, int] | None = None

    @property
    def short_digest(self) -> str:
        return self.spec_digest[:12]

    @property
    def tile_count(self) -> int:
        return sum(len(s.tiles.tiles) for s in self.stripes)

    @property
    def tile_px_shape(self) -> tuple[int, int]:
        """(width, height) in pixels of the (interior of the) tiles of a full stripe."""
        ty, tx = self.stripes[0].tiles.tile_cells
        return tx * self.stripes[0].tiles.cell_px, ty * self.stripes[0].tiles.cell_px

    @property
    def tiling(self) -> str:
        """How the stripes are rendered, in words: their tiles and batch, or one pass."""
        if self.tile_px == 0:
            return "a one-pass render"
        return "{} x {} px tiles in batches of {}".format(*self.tile_px_shape, self.batch)

    @property
    def preview_factor(self) -> int:
        return preview_factor(self.geometry.width_px, self.geometry.height_px)

    @property
    def render_bits(self) -> int:
        return self.colour.bits

    @property
    def plates_in_tiff(self) -> bool:
        """Spot plates travel as extra inks of the print TIFF."""
        return bool(self.plates) and self.spec.output.plates_as == "channels"

    @property
    def file_bands(self) -> int:
        """Channels of the print TIFF: the colour's, plus the spot inks."""
        return self.colour.bands + (len(self.plates.plates) if self.plates_in_tiff else 0)

    @property
    def inks(self) -> list[str] | None:
        """The print TIFF's InkNames, when it has spot inks."""
        return self.plates.inks if self.plates_in_tiff else None


def plan_job(spec: JobSpec, spec_dir: Path | None = None, model_path: Path | None = None
             ) -> JobPlan:
    """Resolve and check everything a job needs; raises before any rendering.

    `model_path`: the model already fetched to a local checkpoint (the flow fetches it in a
    task of its own, with retries); otherwise the spec's model reference is resolved here.
    """
    if model_path is None:
        model_path = resolve_model(spec.model, spec_dir, registry=spec.registry)
    checkpoint = load_checkpoint(model_path)
    config = checkpoint.generator.config
    if config.out_channels != 3:
        raise TexprodError(f"model: {model_path} renders {config.out_channels} channels; "
                           "prints need an RGB (3-channel) generator")
    repeat = None
    if isinstance(spec.texture.repeat, RepeatSpec):
        r = spec.texture.repeat
        repeat = repeat_period(r.width_mm, r.height_mm, spec.print.dpi, config.cell_px,
                               r.tolerance_mm, r.adjust)
    geometry = print_geometry(spec.print, config.cell_px if spec.texture.repeat is True
                              else None, repeat)
    colour = resolve_colour(spec.print)
    tiff = TiffOptions(compression=spec.tiff.compression, layout=spec.tiff.layout,
                       bigtiff=spec.tiff.bigtiff, embed_icc=spec.tiff.embed_icc)

    renderer_device = resolve_device(spec.render.device, "render.device")
    precision = spec.render.precision
    if renderer_device.type == "cpu" and not native_on_cpu(precision):
        log.warning("render.precision: %s on this CPU is emulated (no %s convolutions in "
                    "hardware), about 20x slower than fp32 and less exact; fp32 is the "
                    "CPU's fast precision", precision, precision)
    auto_tile, auto_batch = default_tiling(renderer_device, precision)
    tile_px = auto_tile if spec.render.tile_px == "auto" else spec.render.tile_px
    batch = auto_batch if spec.render.batch == "auto" else spec.render.batch
    halo = receptive_field(checkpoint.generator.blocks).halo
    # repeat: a period starts at the trim's corner, so the canvas starts a bleed before
    # cell 0; `repeat: true` makes the trim one period
    period = None
    x0 = y0 = 0
    if repeat is not None:
        period = repeat.cells
    elif spec.texture.repeat:
        _, _, w, h = geometry.trim_box
        period = (h // config.cell_px, w // config.cell_px)
    if period is not None:
        x0 = y0 = -geometry.bleed_px
    stripes = plan_stripes(geometry.width_px, geometry.height_px, config.cell_px, halo,
                           tile_px, x0=x0, y0=y0)
    frame = frame_of(geometry, config.cell_px, x0, y0, halo)
    texture = texture_field(spec, checkpoint, geometry, frame, period, spec_dir)
    plates = plan_plates(spec, texture, geometry, frame, period, spec_dir)
    if spec.output.region_map and texture.regions.count > 2**16:
        raise SpecError(f"output.region_map: the texture has {texture.regions.count:,} "
                        "regions (quilt blocks), a 16-bit map holds 65,536; use larger "
                        "texture.quilt.block_mm or no region map")
    file_bands = colour.bands + (len(plates.plates) if spec.output.plates_as == "channels"
                                 else 0)
    bigtiff, reason = bigtiff_decision(geometry.width_px, geometry.height_px, file_bands,
                                       colour.bits, tiff)

    digest = spec.digest(checkpoint.digest, {**texture.inputs, **plates.inputs})
    remote_dir = None
    if is_s3(spec.output.dir):
        split_s3(spec.output.dir)  # validates the URI
        s3_public_endpoint()  # a bad TEXPROD_S3_PUBLIC_URL fails now, not after the upload
        remote_dir = spec.output.dir.rstrip("/") + "/"
        # staged locally, uploaded when complete: in a directory private to this user
        # (made and checked by prepare_directories), one per output name
        out_dir = Path(spec.render.scratch_dir or tempfile.gettempdir()).expanduser() \
            / f"texprod-staging-{os.getuid()}" / f"{spec.name}-{digest[:12]}"
    else:
        out_dir = Path(spec.output.dir).expanduser()
    stem = f"{spec.name}-{digest[:12]}"
    outputs = JobOutputs(
        tiff=out_dir / f"{stem}.tif",
        proof=out_dir / f"{stem}.proof.jpg" if spec.output.proof else None,
        thumbnail=out_dir / f"{stem}.thumb.jpg" if spec.output.proof else None,
        remote_dir=remote_dir,
        repeat_preview=out_dir / f"{stem}.repeat.jpg"
        if spec.output.proof and period_box(geometry, period, config.cell_px) else None,
        plate_files=tuple(out_dir / f"{stem}.{_file_name(p.name)}.tif" for p in plates.plates)
        if spec.output.plates_as == "files" else (),
        region_map=out_dir / f"{stem}.regions.tif" if spec.output.region_map else None,
        pdf=out_dir / f"{stem}.pdf" if "pdf" in spec.output.formats else None,
    )
    scratch_dir = Path(spec.render.scratch_dir).expanduser() if spec.render.scratch_dir \
        else out_dir
    plan = JobPlan(
        spec=spec, checkpoint=checkpoint, model_path=model_path, spec_digest=digest,
        geometry=geometry, colour=colour, tiff=tiff, bigtiff=bigtiff, bigtiff_reason=reason,
        stripes=stripes, device=str(renderer_device),
        colour_engine=colour_engine(spec.render.colour_engine, renderer_device, colour),
        tile_px=tile_px, batch=batch,
        period=period, texture=texture, plates=plates, repeat=repeat, outputs=outputs,
        spool_dir=scratch_dir / f".{stem}.stripes",
        output_bytes=worst_case_size(geometry.width_px, geometry.height_px, file_bands,
                                     colour.bits, tiff),
        deliverable_bytes=_deliverable_bytes(spec, geometry, colour, tiff, plates, texture),
    )
    plan.estimate = estimate(plan)
    return plan


def period_box(geometry: PrintGeometry, period: tuple[int, int] | None, cell_px: int
                ) -> tuple[int, int, int, int] | None:
    """One whole period in canvas pixels, from the trim's corner; None if it does not fit."""
    if period is None:
        return None
    b = geometry.bleed_px
    w, h = period[1] * cell_px, period[0] * cell_px
    if b + w > geometry.width_px or b + h > geometry.height_px:
        return None
    return b, b, w, h


def _deliverable_bytes(spec: JobSpec, geometry: PrintGeometry, colour: OutputColour,
                       tiff: TiffOptions, plates: Plates, texture: TextureField) -> int:
    """The worst-case size of the files beside the print: each plate file and the region
    map (one band), and the PDF (every ink, Flate: at worst stored blocks)."""
    w, h, inks = geometry.width_px, geometry.height_px, colour.bands + len(plates.plates)
    total = 0
    if spec.output.plates_as == "files":
        total += len(plates.plates) * worst_case_size(w, h, 1, colour.bits, tiff)
    if spec.output.region_map:
        total += worst_case_size(w, h, 1, texture.regions.bits, tiff)
    if "pdf" in spec.output.formats:
        total += worst_case_size(w, h, inks, colour.bits, TiffOptions(compression="deflate"))
    return total


def _file_name(ink: str) -> str:
    """An ink name as part of a file name: "Spot UV" -> "spot-uv"."""
    return re.sub(r"[^a-z0-9]+", "-", ink.lower()).strip("-") or "plate"


def colour_engine(requested: str, device, colour: OutputColour) -> str:
    """The colour engine a job uses: auto means the LUT where the pixels are on a GPU, and
    libvips on the CPU (where it is the faster of the two); sRGB output converts nothing."""
    if colour.profile_path is None:
        return "none"
    if requested == "auto":
        return "lut" if device.type == "cuda" else "libvips"
    return requested


def noise_field(plan: JobPlan) -> NoiseField:
    generator = plan.checkpoint.generator
    return NoiseField(generator.config, plan.spec.seed, waves=generator.waves,
                      period=plan.period, global_field=plan.texture.field)


def make_renderer(plan: JobPlan) -> Renderer:
    return Renderer(plan.checkpoint.generator, device=plan.device,
                    precision=plan.spec.render.precision)


def estimate(plan: JobPlan) -> str:
    """Expected seconds from the last recorded benchmark for this device kind."""
    try:
        records = json.loads((BENCHMARKS_JSON).read_text())
    except (OSError, ValueError):
        return "no benchmark recorded (run make bench)"
    kind = "cuda" if plan.device.startswith("cuda") else "cpu"
    render = records.get("render", {}).get(f"{kind}/{plan.spec.render.precision}")
    if not render:
        return f"no {kind} {plan.spec.render.precision} benchmark recorded (run make bench)"
    mpx = plan.geometry.megapixels
    seconds = mpx / render["mpx_s"]
    text = (f"render ~{duration(seconds)} at {render['mpx_s']:.2f} Mpx/s "
            f"({render['device']}, {render['date']})")
    export = records.get("export", {}).get(plan.colour.color)
    if export:
        export_s = plan.output_bytes / 1e6 / export["mb_s"]
        text += f"; export ~{duration(export_s)} at {export['mb_s']:.0f} MB/s"
    return text


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

