"""A print job: job spec -> plan -> render -> export -> proof -> preflight.

Each stage is a library function the Prefect flow wraps as a task; `run_job` chains them
for the CLI. Everything that can be checked is checked in `plan_job`, before any pixel is
rendered: the spec, the model, the output profile, BigTIFF limits and free disk space.
Nothing half-written is ever left: outputs appear under their final names only when
complete, and a failed job removes its scratch canvas and partial files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from texprod import __version__, stop
from texprod.canvas import BandWriter, ScratchCanvas
from texprod.colour import OutputColour, resolve_colour, to_output
from texprod.errors import JobFailure, SpecError, TexprodError
from texprod.generators import Checkpoint, load_checkpoint, receptive_field
from texprod.geometry import PrintGeometry, RepeatPeriod, print_geometry, repeat_period
from texprod.joblock import JobLock, sweep_dead_temporaries
from texprod.noise import NoiseField
from texprod.preflight import Expectations, InspectionReport, inspect_tiff
from texprod.printfile import TiffOptions, WrittenTiff, bigtiff_decision, write_print_tiff
from texprod.proof import make_proof, make_repeat_preview
from texprod.render import Renderer, default_tiling, render_reference, resolve_device
from texprod.spec import JobSpec, RepeatSpec
from texprod.storage import is_s3, resolve_model, sha256_file, split_s3, upload_file
from texprod.texture import TextureField, frame_of, texture_field
from texprod.tiling import TilePlan, plan_tiles

log = logging.getLogger(__name__)

DISK_MARGIN = 64 * 2**20  # headroom beyond the computed sizes
BENCHMARKS_JSON = resources.files("texprod") / "data" / "benchmarks.json"

Progress = Callable[[int, int], None]  # (tiles done, tiles total)


class PreflightError(JobFailure):
    """The written file does not keep the spec's promises."""


@dataclass(frozen=True)
class JobOutputs:
    """Where the files are written locally and, for s3:// output dirs, where they go."""

    tiff: Path
    proof: Path | None
    thumbnail: Path | None
    remote_dir: str | None = None  # s3://bucket/prefix/ when output.dir is on S3
    repeat_preview: Path | None = None  # 2 x 2 periods of a repeat, to see that it repeats

    @property
    def local(self) -> list[Path]:
        return [p for p in (self.tiff, self.proof, self.thumbnail, self.repeat_preview)
                if p is not None]

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
    tiles: TilePlan
    device: str
    tile_px: int
    batch: int
    period: tuple[int, int] | None  # repeat period in cells (rows, cols)
    texture: TextureField
    outputs: JobOutputs
    scratch_path: Path
    scratch_bytes: int
    output_bytes: int  # upper bound: uncompressed size plus headers
    repeat: RepeatPeriod | None = None  # texture.repeat given as a period in mm
    estimate: str = ""

    @property
    def short_digest(self) -> str:
        return self.spec_digest[:12]

    @property
    def render_bits(self) -> int:
        return self.colour.bits


@dataclass
class JobResult:
    plan: JobPlan
    tiff: WrittenTiff
    tac_max: float | None
    report: InspectionReport
    timings: dict[str, float] = field(default_factory=dict)
    outputs: list[dict] = field(default_factory=list)  # output_records(), before upload

    def summary(self) -> dict:
        return job_summary(self.plan, self.outputs, self.timings, self.tac_max, self.report)


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
    bigtiff, reason = bigtiff_decision(geometry.width_px, geometry.height_px, colour.bands,
                                       colour.bits, tiff)

    renderer_device = resolve_device(spec.render.device)
    auto_tile, auto_batch = default_tiling(renderer_device)
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
    tiles = plan_tiles(geometry.width_px, geometry.height_px, config.cell_px, halo, tile_px,
                       x0=x0, y0=y0)
    texture = texture_field(spec, checkpoint, geometry,
                            frame_of(geometry, config.cell_px, x0, y0, halo), period, spec_dir)

    digest = spec.digest(checkpoint.digest, texture.inputs)
    remote_dir = None
    if is_s3(spec.output.dir):
        split_s3(spec.output.dir)  # validates the URI
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
        if spec.output.proof and _period_box(geometry, period, config.cell_px) else None,
    )
    scratch_dir = Path(spec.render.scratch_dir).expanduser() if spec.render.scratch_dir \
        else out_dir
    sample_bytes = colour.bits // 8
    plan = JobPlan(
        spec=spec, checkpoint=checkpoint, model_path=model_path, spec_digest=digest,
        geometry=geometry, colour=colour, tiff=tiff, bigtiff=bigtiff, bigtiff_reason=reason,
        tiles=tiles, device=str(renderer_device), tile_px=tile_px, batch=batch, period=period,
        texture=texture, repeat=repeat, outputs=outputs,
        scratch_path=scratch_dir / f".{stem}.canvas.raw",
        scratch_bytes=geometry.width_px * geometry.height_px * 3 * sample_bytes,
        output_bytes=geometry.width_px * geometry.height_px * colour.bands * sample_bytes
        + 2**20,
    )
    plan.estimate = estimate(plan)
    return plan


def _period_box(geometry: PrintGeometry, period: tuple[int, int] | None, cell_px: int
                ) -> tuple[int, int, int, int] | None:
    """One whole period in canvas pixels, from the trim's corner; None if it does not fit."""
    if period is None:
        return None
    b = geometry.bleed_px
    w, h = period[1] * cell_px, period[0] * cell_px
    if b + w > geometry.width_px or b + h > geometry.height_px:
        return None
    return b, b, w, h


def check_directories(plan: JobPlan) -> None:
    """The output and scratch directories can be made and written, or the field is named."""
    fields = [("output.dir", plan.spec.output.dir, plan.outputs.tiff.parent)]
    if plan.spec.render.scratch_dir:
        fields.append(("render.scratch_dir", plan.spec.render.scratch_dir,
                       plan.scratch_path.parent))
    for name, given, directory in fields:
        existing = _existing_ancestor(directory)
        if not existing.is_dir():
            raise SpecError(f"{name}: got {given!r}, but {existing} is a file, not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise SpecError(f"{name}: got {given!r}, but {existing} is not writable by this "
                            "user")


def prepare_directories(plan: JobPlan) -> None:
    """Make the output, staging and scratch directories. The staging directory of s3://
    outputs lives under a shared temp dir, so its parent must be this user's own: made
    0700, and refused if someone made it first (a symlink, another owner, open modes)."""
    if plan.outputs.remote_dir is not None:
        parent = plan.outputs.tiff.parent.parent
        parent.parent.mkdir(parents=True, exist_ok=True)
        try:
            parent.mkdir(mode=0o700)
        except FileExistsError:
            pass
        info = os.lstat(parent)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() \
                or stat.S_IMODE(info.st_mode) & 0o077:
            raise SpecError(f"render.scratch_dir: the staging directory {parent} is not a "
                            "private directory of this user (a symlink, another owner, or "
                            "open to others); remove it or set render.scratch_dir elsewhere")
        plan.outputs.tiff.parent.mkdir(mode=0o700, exist_ok=True)
    else:
        plan.outputs.tiff.parent.mkdir(parents=True, exist_ok=True)
    plan.scratch_path.parent.mkdir(parents=True, exist_ok=True)


def job_lock(plan: JobPlan) -> JobLock:
    """The lock a running job holds on its output name, beside its canvas and outputs."""
    return JobLock(plan.outputs.tiff.stem, [plan.scratch_path.parent, plan.outputs.tiff.parent])


def remove_staging(plan: JobPlan) -> None:
    """Drop the (empty) private staging directory of an s3:// job."""
    if plan.outputs.remote_dir is not None:
        with contextlib.suppress(OSError):
            plan.outputs.tiff.parent.rmdir()


def check_disk_space(plan: JobPlan) -> None:
    """Fail before rendering if the scratch canvas and the output will not fit."""
    check_directories(plan)
    needs: dict[Path, list[tuple[str, int]]] = {}
    for label, directory, size in (
        ("scratch canvas", plan.scratch_path.parent, plan.scratch_bytes),
        ("output", plan.outputs.tiff.parent, plan.output_bytes),
    ):
        directory = _existing_ancestor(directory)  # a dry run creates no directories
        key = next((d for d in needs if d.stat().st_dev == directory.stat().st_dev), directory)
        needs.setdefault(key, []).append((label, size))
    for directory, items in needs.items():
        need = sum(size for _, size in items) + DISK_MARGIN
        free = shutil.disk_usage(directory).free
        if free < need:
            what = " + ".join(f"{label} {_size(size)}" for label, size in items)
            raise TexprodError(
                f"disk: {directory} has {_size(free)} free, the job needs {_size(need)} "
                f"({what} + {_size(DISK_MARGIN)} headroom); free space there or point "
                "render.scratch_dir / output.dir elsewhere"
            )


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def open_canvas(plan: JobPlan) -> ScratchCanvas:
    """The job's scratch canvas; one left by an interrupted run of the same spec resumes."""
    dtype = np.uint8 if plan.render_bits == 8 else np.uint16
    identity = {"spec_digest": plan.spec_digest, "tile_cells": list(plan.tiles.tile_cells),
                "x0": plan.tiles.x0, "y0": plan.tiles.y0}
    try:
        return ScratchCanvas(plan.scratch_path, plan.geometry.width_px, plan.geometry.height_px,
                             3, dtype, identity=identity)
    except OSError as e:
        raise _disk_error(e, plan.scratch_path) from None


def render_job(plan: JobPlan, canvas: ScratchCanvas, bands: list[int] | None = None,
               progress: Progress | None = None, renderer: Renderer | None = None
               ) -> list[int]:
    """Render the plan's tile bands (all, or the given ones) into the canvas.

    Bands the canvas already has (a resumed job) are skipped. Returns the bands rendered.
    Pass a `renderer` to reuse one prepared generator across calls (one band per call).
    `progress(done, total)` follows every tile, counting the whole job's tiles.
    """
    generator = plan.checkpoint.generator
    field = _noise_field(plan)
    output = "uint8" if plan.render_bits == 8 else "uint16"
    wanted = range(len(plan.tiles.bands)) if bands is None else bands
    todo = [b for b in wanted if b not in canvas.done_bands]
    total = len(plan.tiles.tiles)
    done = sum(len(plan.tiles.bands[b]) for b in canvas.done_bands)  # of the whole job
    if not todo:
        return []
    writer = BandWriter(canvas, plan.tiles)
    try:
        if plan.tile_px == 0:  # the one-pass reference
            g = plan.geometry
            pixels = render_reference(generator, field, g.width_px, g.height_px,
                                      plan.tiles.x0, plan.tiles.y0, device=plan.device,
                                      precision=plan.spec.render.precision, output=output)
            writer.add(plan.tiles.tiles[0], pixels)
            if progress:
                progress(total, total)
            return todo
        renderer = renderer or make_renderer(plan)
        for band in todo:
            sub = _band_plan(plan.tiles, band)
            for tile, pixels in renderer.tiles(field, sub, batch=plan.batch, output=output):
                writer.add(tile, pixels)
                done += 1
                if progress:
                    progress(done, total)
                stop.check()
    except OSError as e:
        raise _disk_error(e, plan.scratch_path) from None
    return todo


def _noise_field(plan: JobPlan) -> NoiseField:
    generator = plan.checkpoint.generator
    return NoiseField(generator.config, plan.spec.seed, waves=generator.waves,
                      period=plan.period, global_field=plan.texture.field)


def make_renderer(plan: JobPlan) -> Renderer:
    return Renderer(plan.checkpoint.generator, device=plan.device,
                    precision=plan.spec.render.precision)


def _band_plan(plan: TilePlan, band: int) -> TilePlan:
    return _sub_plan(plan, plan.bands[band])


def _sub_plan(plan: TilePlan, tiles) -> TilePlan:
    return TilePlan(plan.width, plan.height, plan.x0, plan.y0, plan.cell_px, plan.halo,
                    plan.tile_cells, tuple(tiles))


def _disk_error(error: OSError, path: Path) -> Exception:
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return JobFailure(f"disk full while writing {path}: {error.strerror}")
    return error


def provenance(plan: JobPlan) -> dict:
    """What the file promises, written into it (the TAC found is measured by preflight)."""
    g, c = plan.geometry, plan.colour
    return {"texprod": {
        "version": __version__,
        "spec_name": plan.spec.name,
        "spec_digest": plan.spec_digest,
        "model_digest": plan.checkpoint.digest,
        "model_name": plan.checkpoint.card.get("provenance", {}).get("name", ""),
        "seed": plan.spec.seed,
        "width_px": g.width_px,
        "height_px": g.height_px,
        "dpi": g.dpi,
        "trim_box_px": list(g.trim_box),
        "bleed_px": g.bleed_px,
        "trim_mm": [round(v, 3) for v in g.trim_mm],
        "bleed_mm": round(g.bleed_mm, 3),  # what the pixels hold (whole pixels at the dpi)
        "bleed_mm_requested": plan.spec.print.bleed_mm,
        "repeat": _repeat_record(plan),
        "texture": plan.texture.summary,
        "color": c.color,
        "bits": c.bits,
        "icc_profile": c.description,
        "intent": c.intent,
        "black_point_compensation": c.black_point_compensation,
        "embed_icc": plan.tiff.embed_icc,
        "tac_limit": plan.spec.print.tac_limit if c.color == "cmyk" else None,
        "compression": plan.tiff.compression,
        "layout": plan.tiff.layout,
        "bigtiff": plan.bigtiff,
        "bigtiff_reason": plan.bigtiff_reason,
    }}


def _repeat_record(plan: JobPlan) -> dict | bool:
    if plan.period is None:
        return False
    cell = plan.checkpoint.generator.config.cell_px
    record = {"period_cells": [plan.period[1], plan.period[0]],
              "period_px": [plan.period[1] * cell, plan.period[0] * cell]}
    if plan.repeat is not None:
        record["period_mm"] = [round(v, 4) for v in plan.repeat.mm]
        record["requested_mm"] = list(plan.repeat.requested_mm)
    return record


class _InkMeter:
    """Total area coverage (C+M+Y+K, %) measured band by band during export."""

    def __init__(self, limit: float, top: int):
        self.limit, self.top = limit, top
        self.max = 0.0

    def __call__(self, y: int, band: np.ndarray) -> None:
        total = band.sum(axis=2, dtype=np.uint32)  # (h, w)
        worst = float(total.max()) * 100.0 / self.top
        self.max = max(self.max, worst)
        if worst > self.limit + 1e-9:
            row, col = np.unravel_index(int(total.argmax()), total.shape)
            raise TexprodError(
                f"print.tac_limit: total ink {worst:.1f}% at pixel ({col}, {y + row}) exceeds "
                f"the limit {self.limit:g}%; lower the texture's darkest tones, use a profile "
                "with a lower ink limit, or raise print.tac_limit if the press allows it"
            )


def export_job(plan: JobPlan, canvas: ScratchCanvas) -> tuple[WrittenTiff, float | None]:
    """Colour-convert the canvas and write the print TIFF; returns it and the max TAC."""
    image = to_output(canvas.to_vips(), plan.colour)
    meter = None
    if plan.colour.color == "cmyk":
        meter = _InkMeter(plan.spec.print.tac_limit, 255 if plan.colour.bits == 8 else 65535)
    description = json.dumps(provenance(plan))

    def on_band(y: int, band: np.ndarray) -> None:
        stop.check()  # a safe point: the partial file is removed on the way out
        if meter is not None:
            meter(y, band)

    try:
        written = write_print_tiff(
            image, plan.outputs.tiff, options=plan.tiff, dpi=plan.geometry.dpi,
            icc_profile=plan.colour.profile if plan.tiff.embed_icc else None,
            description=description, on_band=on_band,
        )
    except OSError as e:
        raise _disk_error(e, plan.outputs.tiff) from None
    return written, None if meter is None else meter.max


def proof_job(plan: JobPlan, canvas: ScratchCanvas) -> tuple[Path, ...] | None:
    """Proof and thumbnail; for a repeat also 2 x 2 periods side by side."""
    if plan.outputs.proof is None or plan.outputs.thumbnail is None:
        return None
    paths = make_proof(canvas.to_vips(), plan.geometry.trim_box, plan.colour,
                       plan.outputs.proof, plan.outputs.thumbnail)
    if plan.outputs.repeat_preview is not None:  # set only when a whole period fits
        box = _period_box(plan.geometry, plan.period, plan.checkpoint.generator.config.cell_px)
        try:
            paths += (make_repeat_preview(canvas.to_vips(), box, plan.colour,
                                          plan.outputs.repeat_preview),)
        except BaseException:
            for path in paths:
                path.unlink(missing_ok=True)
            raise
    return paths


def expectations(plan: JobPlan) -> Expectations:
    """Every promise the spec makes about the file, for preflight."""
    g, c = plan.geometry, plan.colour
    return Expectations(
        width_px=g.width_px, height_px=g.height_px, dpi=g.dpi, trim_box_px=g.trim_box,
        bleed_px=g.bleed_px, color=c.color, bits=c.bits, compression=plan.tiff.compression,
        layout=plan.tiff.layout, bigtiff=plan.bigtiff, embed_icc=plan.tiff.embed_icc,
        icc_description=c.description if plan.tiff.embed_icc else None,
        tac_limit=plan.spec.print.tac_limit if c.color == "cmyk" else None,
        spec_digest=plan.spec_digest, model_digest=plan.checkpoint.digest, seed=plan.spec.seed,
    )


def preflight_job(plan: JobPlan, path: Path | None = None) -> InspectionReport:
    return inspect_tiff(path or plan.outputs.tiff, expectations(plan))


def upload_job(plan: JobPlan, records: list[dict] | None = None) -> list[dict]:
    """Upload the finished local outputs to the S3 output dir, then drop the staged copies.

    Each object appears at its final key only when its upload completes.
    """
    if plan.outputs.remote_dir is None:
        return []
    metadata = {"spec-digest": plan.spec_digest, "model-digest": plan.checkpoint.digest,
                "seed": str(plan.spec.seed), "texprod-version": __version__,
                "spec-name": plan.spec.name}
    types = {".tif": "image/tiff", ".jpg": "image/jpeg"}
    uploaded = []
    # the TIFF last: a consumer that sees it sees a complete set
    known = {r["name"]: r["sha256"] for r in records or []}  # hashed once, by output_records
    for path in sorted(plan.outputs.local, key=lambda p: p == plan.outputs.tiff):
        uploaded.append(upload_file(path, plan.outputs.final(path), metadata=metadata,
                                    content_type=types.get(path.suffix),
                                    sha256=known.get(path.name)))
    for path in plan.outputs.local:
        path.unlink(missing_ok=True)
    return uploaded


StageRunner = Callable[[str, Callable[[], Any]], Any]  # (stage name, its work) -> result


def inline(name: str, work: Callable[[], Any]) -> Any:
    """Run a stage here and now. The Prefect flow passes a runner that makes each stage a
    task (with retries on I/O) and holds a GPU slot around "render"."""
    return work()


def run_job(spec: JobSpec, spec_dir: Path | None = None, progress: Progress | None = None,
            plan: JobPlan | None = None, stage: StageRunner = inline) -> JobResult:
    """The job, and its only orchestration: fetch the model, plan, render band by band,
    export, proof, preflight, upload. The CLI, tests and benchmarks run it inline, the flow
    through Prefect tasks. On failure it leaves no scratch and no output."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if plan is None:
        model_path = stage("fetch-model", lambda: resolve_model(spec.model, spec_dir,
                                                                registry=spec.registry))
        plan = stage("plan", lambda: plan_job(spec, spec_dir, model_path))
    check_disk_space(plan)
    prepare_directories(plan)
    lock = job_lock(plan).acquire()  # another live job on the same name is refused here
    try:
        sweep_dead_temporaries(plan.outputs.tiff.parent)
        canvas = open_canvas(plan)
    except BaseException:
        lock.release()
        remove_staging(plan)
        raise
    timings["plan"] = time.perf_counter() - started
    written_paths: list[Path] = []
    try:
        t = time.perf_counter()
        stage("render", lambda: _render_bands(plan, canvas, progress, stage))
        timings["render"] = time.perf_counter() - t
        t = time.perf_counter()
        written, tac = stage("export", lambda: export_job(plan, canvas))
        written_paths.append(written.path)
        timings["export"] = time.perf_counter() - t
        stop.check()
        t = time.perf_counter()
        written_paths += stage("proof", lambda: proof_job(plan, canvas)) or []
        timings["proof"] = time.perf_counter() - t
        stop.check()
        t = time.perf_counter()
        report = stage("preflight", lambda: _preflight_or_fail(plan))
        timings["preflight"] = time.perf_counter() - t
        outputs = output_records(plan)
        stop.check()  # the last safe point: after the upload the job is done
        t = time.perf_counter()
        uploaded = {u["uri"]: u for u in stage("upload", lambda: upload_job(plan, outputs))}
        if uploaded:
            timings["upload"] = time.perf_counter() - t
        for row in outputs:
            row["etag"] = uploaded.get(row["uri"], {}).get("etag", "")
    except BaseException:
        for path in written_paths:  # a failed job leaves no output behind
            path.unlink(missing_ok=True)
        raise
    finally:
        canvas.close(remove=True)
        lock.release()
        remove_staging(plan)
    timings["total"] = time.perf_counter() - started
    return JobResult(plan, written, tac, report, timings, outputs)


def _render_bands(plan: JobPlan, canvas: ScratchCanvas, progress: Progress | None,
                  stage: StageRunner) -> None:
    """Each band the canvas lacks, one stage each, with one prepared generator."""
    done = canvas.done_bands
    if done:
        log.info("resuming: %d of %d bands already on the scratch canvas", len(done),
                 len(plan.tiles.bands))
    renderer = make_renderer(plan) if plan.tile_px != 0 else None
    if progress:
        progress(sum(len(plan.tiles.bands[b]) for b in done), len(plan.tiles.tiles))
    for band in range(len(plan.tiles.bands)):
        if band not in done:
            stage("render-band", lambda b=band: render_job(plan, canvas, bands=[b],
                                                           progress=progress,
                                                           renderer=renderer))


def _preflight_or_fail(plan: JobPlan) -> InspectionReport:
    report = preflight_job(plan)
    if not report.ok:
        failed = ", ".join(f"{c.name} (found {c.found}, expected {c.expected})"
                           for c in report.failed)
        raise PreflightError(f"preflight failed for {plan.outputs.tiff}: {failed}")
    return report


def output_records(plan: JobPlan) -> list[dict]:
    """Each finished local output: name, final location, size and sha256 (before upload)."""
    return [{"name": p.name, "uri": plan.outputs.final(p), "bytes": p.stat().st_size,
             "sha256": sha256_file(p)} for p in plan.outputs.local]


def job_summary(plan: JobPlan, outputs: list[dict], timings: dict[str, float],
                tac_max: float | None, report: InspectionReport) -> dict:
    """What a finished job made, as plain JSON: the CLI's closing screen and the flow's result."""
    g, c = plan.geometry, plan.colour
    by_name = {o["name"]: o for o in outputs}

    def uri(path: Path | None) -> str | None:
        return by_name[path.name]["uri"] if path is not None and path.name in by_name else None

    tiff = by_name[plan.outputs.tiff.name]
    return {
        "name": plan.spec.name, "spec_digest": plan.spec_digest, "seed": plan.spec.seed,
        "file": tiff["uri"], "bytes": tiff["bytes"], "sha256": tiff["sha256"],
        "width_px": g.width_px, "height_px": g.height_px, "megapixels": g.megapixels,
        "dpi": g.dpi, "bleed_mm": round(g.bleed_mm, 3), "bleed_px": g.bleed_px,
        "colour": f"{c.color.upper()} {c.bits}-bit, {c.description}, {c.intent}",
        "tac_max": tac_max, "tac_limit": plan.spec.print.tac_limit if c.color == "cmyk" else None,
        "preflight": {"ok": report.ok, "checks": len(report.checks),
                      "failed": [ch.name for ch in report.failed]},
        "proof": uri(plan.outputs.proof), "thumbnail": uri(plan.outputs.thumbnail),
        "repeat_preview": uri(plan.outputs.repeat_preview),
        "device": plan.device, "tiles": len(plan.tiles.tiles),
        "timings": dict(timings), "outputs": outputs,
    }


# ------------------------------------------------------------------------------ estimates


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
    text = (f"render ~{_duration(seconds)} at {render['mpx_s']:.2f} Mpx/s "
            f"({render['device']}, {render['date']})")
    export = records.get("export", {}).get(plan.colour.color)
    if export:
        export_s = plan.output_bytes / 1e6 / export["mb_s"]
        text += f"; export ~{_duration(export_s)} at {export['mb_s']:.0f} MB/s"
    return text


def measured_estimate(plan: JobPlan) -> str:
    """The render time measured now, on this machine and device, from the plan's own tiles.

    A recorded benchmark comes from an idle machine and was 4-5x optimistic on a loaded
    one; one warm-up batch and one timed batch of real tiles cost about a second here.
    """
    if plan.tile_px == 0:  # sampling the one-pass render would be the whole render
        return f"at least {plan.estimate} (recorded on an idle machine; not measured now)"
    renderer = make_renderer(plan)
    field = _noise_field(plan)
    sample = _sub_plan(plan.tiles, list(plan.tiles.tiles[:plan.batch]))
    output = "uint8" if plan.render_bits == 8 else "uint16"
    for _ in renderer.tiles(field, sample, batch=plan.batch, output=output):  # warm-up
        pass
    started = time.perf_counter()
    for _ in renderer.tiles(field, sample, batch=plan.batch, output=output):
        pass
    per_tile = (time.perf_counter() - started) / len(sample.tiles)
    seconds = per_tile * len(plan.tiles.tiles)
    text = (f"render ~{_duration(seconds)} ({plan.geometry.megapixels / seconds:.2f} Mpx/s, "
            f"measured now on {plan.device} over {len(sample.tiles)} tile(s))")
    recorded = plan.estimate.split("; export ", 1)
    if len(recorded) == 2:
        text += f"; export at least {recorded[1].removeprefix('~')} (recorded on an idle machine)"
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _describe_repeat(plan: JobPlan) -> str:
    if plan.repeat is not None:
        text = f"period {plan.repeat.describe()}"
    else:
        cell = plan.checkpoint.generator.config.cell_px
        py, px = plan.period
        text = (f"period = trim, {px * cell} x {py * cell} px = {px} x {py} cells of "
                f"{cell} px")
    if plan.outputs.repeat_preview is not None:
        text += "; 2 x 2 preview " + plan.outputs.final(plan.outputs.repeat_preview)
    return text


def describe_plan(plan: JobPlan) -> str:
    """The dry-run text: what the job would do, and what it would cost."""
    g, c, t = plan.geometry, plan.colour, plan.tiles
    trim_w, trim_h = g.trim_mm
    size_w, size_h = g.size_mm
    _, _, tw, th = g.trim_box
    config = plan.checkpoint.generator.config
    requested = g.requested_trim_mm
    snapped = (f" (snapped from {requested[0]:g} x {requested[1]:g} mm to whole "
               f"{config.cell_px}-px noise cells)" if g.snapped else "")
    bigtiff = "BigTIFF" if plan.bigtiff else "classic TIFF"
    places = 3 if g.snapped or plan.period else 1  # repeats are exact: show it
    rows = [
        ("job", f"{plan.spec.name} (spec digest {plan.short_digest})"),
        ("model", f"{plan.model_path} ({config.arch}/{config.upsample}, depth {config.depth}, "
                  f"{config.cell_px} px per cell, digest {plan.checkpoint.digest[:12]})"),
        ("print", f"{trim_w:.{places}f} x {trim_h:.{places}f} mm trim + {g.bleed_mm:.2f} mm "
                  f"bleed = {size_w:.1f} x {size_h:.1f} mm at {g.dpi:g} dpi{snapped}"
                  + (f" (spec: {plan.spec.print.dpi:g} dpi)" if g.dpi != plan.spec.print.dpi
                     else "")),
        ("pixels", f"{g.width_px} x {g.height_px} px with bleed ({g.megapixels:.1f} Mpx); "
                   f"trim {tw} x {th} px at ({g.bleed_px}, {g.bleed_px})"),
        ("texture", plan.texture.summary),
        *([("repeat", _describe_repeat(plan))] if plan.period else []),
        ("colour", f"{c.color.upper()} {c.bits}-bit, {c.description}, {c.intent}"
                   f"{' + BPC' if c.black_point_compensation and c.profile_path else ''}"
                   + (f", TAC limit {plan.spec.print.tac_limit:g}%" if c.color == "cmyk"
                      else "")),
        ("tiff", f"{plan.tiff.compression} {plan.tiff.layout}, {bigtiff} "
                 f"({plan.bigtiff_reason}), ICC {'embedded' if plan.tiff.embed_icc else 'not embedded'}"),
        ("render", f"{plan.device} {plan.spec.render.precision}, "
                   + ("one pass" if plan.tile_px == 0 else
                      f"tiles {t.tile_cells[1] * t.cell_px} x {t.tile_cells[0] * t.cell_px} px "
                      f"(halo {t.halo} cells)")
                   + f", {len(t.tiles)} tiles in {len(t.bands)} bands, batch {plan.batch}"
                   + (f", repeat period {plan.period[1]} x {plan.period[0]} cells"
                      if plan.period else "")),
        ("disk", f"scratch {_size(plan.scratch_bytes)} in {plan.scratch_path.parent}, output "
                 f"at most {_size(plan.output_bytes)} in {plan.outputs.tiff.parent}"),
        ("estimate", plan.estimate),
        ("outputs", ", ".join(plan.outputs.final(p) for p in plan.outputs.local)
         + (f" (staged in {plan.outputs.tiff.parent})" if plan.outputs.remote_dir else "")),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

