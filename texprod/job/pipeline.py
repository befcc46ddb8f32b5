"""A print job: spec -> plan -> stripes (render, colour, encode) -> file -> proof -> preflight
-> upload, in one orchestration, `run_job`, that the CLI, tests, benchmarks and the Prefect
flow all run.

Everything that can be checked is checked in `plan_job`, before any pixel is rendered:
the spec, the model, the output profile, BigTIFF limits and free disk space. The stripes
are worked by an executor (threads here, or a Dask cluster: texprod.job.executors), each
stripe all the way to encoded TIFF chunks, so rendering and encoding overlap and the
driver only assembles the file. Nothing half-written is ever left: outputs appear under
their final names only when complete, and a failed job removes its spool and partial
files (a killed one leaves its finished stripes for a rerun).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

from texprod import __version__
from texprod.errors import JobFailure, SpecError, TexprodError
from texprod.files import directory_problem, existing_ancestor, fsync_directory, sha256_file
from texprod.job import stop
from texprod.job.cluster import cluster_options, describe_cluster
from texprod.job.deliverables import (
    check_plates,
    write_pdf,
    write_plate_file,
    write_region_map,
)
from texprod.job.executors import StripeJob, WorkerReport, prepare, stripe_executor
from texprod.job.joblock import JobLock, sweep_dead_temporaries
from texprod.job.kept import (
    is_kept,
    keep_for_rerun,
    kept_note,
    release_kept,
    take_kept,
)
from texprod.job.memory import MemoryNeed, check_memory
from texprod.job.plan import JobPlan, duration, make_renderer, noise_field, period_box, plan_job
from texprod.job.plates import tint_preview
from texprod.job.spec import JobSpec
from texprod.job.spool import StripeSpool
from texprod.job.stripes import StripeResult, finishing_seconds, single_threaded_torch
from texprod.models.references import resolve_model
from texprod.press.colour_lut import colour_lut
from texprod.press.preflight import InspectionReport, inspect_tiff
from texprod.press.printfile import WrittenTiff, print_tags
from texprod.press.promise import Promise
from texprod.press.proof import make_proof, make_repeat_preview
from texprod.storage import head, upload_file

log = logging.getLogger(__name__)

DISK_MARGIN = 64 * 2**20  # headroom beyond the computed sizes

Progress = Callable[[int, int], None]  # (tiles done, tiles total)


class PreflightError(JobFailure):
    """The written file does not keep the spec's promises."""


@dataclass
class JobResult:
    plan: JobPlan
    tiff: WrittenTiff
    tac_max: float | None
    report: InspectionReport
    timings: dict[str, float] = field(default_factory=dict)
    outputs: list[dict] = field(default_factory=list)  # output_records(), before upload
    workers: str = ""  # who worked the stripes, and the Dask dashboard if any
    # seconds the stripes spent in each stage, summed over stripes worked in parallel
    # (a stage's busy time; with overlap the job's render time is near the largest)
    stripe_seconds: dict[str, float] = field(default_factory=dict)
    uploaded_kept: bool = False  # nothing rendered: an earlier run's checked outputs uploaded

    def summary(self) -> dict:
        return {**job_summary(self.plan, self.outputs, self.timings, self.tac_max,
                              self.report), "workers": self.workers,
                "stripe_seconds": dict(self.stripe_seconds),
                "uploaded_kept": (str(self.plan.outputs.tiff.parent) if self.uploaded_kept
                                  else None)}


def check_directories(plan: JobPlan) -> None:
    """The output and scratch directories can be made and written, or the field is named."""
    fields = [("output.dir", plan.spec.output.dir, plan.outputs.tiff.parent)]
    if plan.spec.render.scratch_dir:
        fields.append(("render.scratch_dir", plan.spec.render.scratch_dir,
                       plan.spool_dir.parent))
    for name, given, directory in fields:
        if problem := directory_problem(directory):
            raise SpecError(f"{name}: got {given!r}, but {problem}")


def check_destination(plan: JobPlan) -> None:
    """An S3 output dir answers (endpoint, credentials, bucket) before the rendering, not
    at the upload after it: a HEAD of the print's final key, which raises naming the cause."""
    if plan.outputs.remote_dir is not None:
        head(plan.outputs.final(plan.outputs.tiff), action="write the output to")


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
    plan.spool_dir.parent.mkdir(parents=True, exist_ok=True)


def job_lock(plan: JobPlan) -> JobLock:
    """The lock a running job holds on its output name, beside its spool and outputs."""
    return JobLock(plan.outputs.tiff.stem, [plan.spool_dir.parent, plan.outputs.tiff.parent])


def remove_staging(plan: JobPlan) -> None:
    """Drop the (empty) private staging directory of an s3:// job."""
    if plan.outputs.remote_dir is not None:
        with contextlib.suppress(OSError):
            plan.outputs.tiff.parent.rmdir()


def check_disk_space(plan: JobPlan) -> None:
    """Fail before rendering if the stripe spool and the output will not fit (worst-case
    compression). Stripes go into the file as they arrive; the spool holds only those that
    come early (stripes finish about in order), counted as one stripe when it shares the
    output's file system and as the whole output when it does not."""
    check_directories(plan)
    if is_kept(plan):  # an earlier run's checked outputs wait: nothing to render or write
        return
    needs: dict[Path, list[tuple[str, int]]] = {}
    stripe = math.ceil(plan.output_bytes * plan.stripes[0].h / plan.geometry.height_px)
    spool_dir, out_dir = (existing_ancestor(d) for d in (plan.spool_dir.parent,
                                                          plan.outputs.tiff.parent))
    shared = spool_dir.stat().st_dev == out_dir.stat().st_dev
    for label, directory, size in (
        ("stripe spool", plan.spool_dir.parent, stripe if shared else plan.output_bytes),
        ("output", plan.outputs.tiff.parent, plan.output_bytes + plan.deliverable_bytes),
    ):
        directory = existing_ancestor(directory)  # a dry run creates no directories
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


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def open_spool(plan: JobPlan) -> StripeSpool:
    """The job's stripe spool; one left by a killed run of the same job resumes."""
    identity = {"spec_digest": plan.spec_digest, "device": plan.device.split(":")[0],
                "colour_engine": plan.colour_engine, "bands": plan.file_bands,
                "stripes": [[s.y, s.h, *s.tiles.tile_cells] for s in plan.stripes],
                "tiff": [plan.tiff.compression, plan.tiff.layout]}
    try:
        return StripeSpool(plan.spool_dir, identity, plan.outputs.tiff, plan.bigtiff)
    except OSError as e:
        raise _disk_error(e, plan.spool_dir) from None


def render_stripes(plan: JobPlan, spool: StripeSpool, executor, job,
                   progress: Progress | None = None,
                   busy: dict[str, float] | None = None) -> list[int]:
    """Work every stripe the spool lacks on `executor`, each into the print file (or the
    spool, until its turn) as it arrives.
    Returns the stripes worked. `progress(done, total)` counts the whole job's tiles: per
    tile for stripes worked in this process, per stripe for those of other processes.
    `busy` sums the stripes' seconds per stage (render, colour, encode)."""
    todo = [s.index for s in plan.stripes if s.index not in spool.done]
    total = plan.tile_count
    done = total - sum(len(plan.stripes[i].tiles.tiles) for i in todo)
    seen: dict[int, int] = {}  # tiles reported so far, by stripe
    lock = threading.Lock()

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done, total)

    def on_tile(index: int) -> None:
        with lock:
            seen[index] = seen.get(index, 0) + 1
            advance(1)

    def on_result(result: StripeResult) -> None:
        try:
            spool.put(result)
        except OSError as e:
            raise _disk_error(e, plan.spool_dir if result.index > spool.assembled
                              else spool.growing) from None
        with lock:  # the tiles nobody reported (another process's)
            unseen = result.tiles - seen.pop(result.index, 0)
            if unseen:
                advance(unseen)
            if busy is not None:
                for stage in ("render", "colour", "encode"):
                    busy[stage] = busy.get(stage, 0.0) + getattr(result, f"{stage}_s")

    advance(0)
    if todo:
        ready = prepare(plan)
        ready.on_tile = on_tile
        try:
            executor.run(job, todo, on_result)
        finally:
            ready.on_tile = None
    return todo


def _disk_error(error: OSError, path: Path) -> Exception:
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return JobFailure(f"disk full while writing {path}: {error.strerror}")
    return error


def promise(plan: JobPlan) -> Promise:
    """What the file promises: written into it as its provenance and checked by preflight
    (which measures the TAC found)."""
    g, c = plan.geometry, plan.colour
    return Promise(
        version=__version__,
        spec_name=plan.spec.name,
        spec_digest=plan.spec_digest,
        model_digest=plan.checkpoint.digest,
        model_name=plan.checkpoint.card.get("provenance", {}).get("name", ""),
        seed=plan.spec.seed,
        width_px=g.width_px,
        height_px=g.height_px,
        dpi=g.dpi,
        trim_box_px=g.trim_box,
        bleed_px=g.bleed_px,
        trim_mm=[round(v, 3) for v in g.trim_mm],
        bleed_mm=round(g.bleed_mm, 3),
        bleed_mm_requested=plan.spec.print.bleed_mm,
        repeat=_repeat_record(plan),
        texture=plan.texture.summary,
        color=c.color,
        bits=c.bits,
        icc_description=c.description,
        intent=c.intent,
        black_point_compensation=c.black_point_compensation,
        colour_engine=plan.colour_engine,
        embed_icc=plan.tiff.embed_icc,
        tac_limit=plan.spec.print.tac_limit if c.color == "cmyk" else None,
        compression=plan.tiff.compression,
        layout=plan.tiff.layout,
        bigtiff=plan.bigtiff,
        bigtiff_reason=plan.bigtiff_reason,
        inks=plan.inks,
        plates=[{**p.summary, **({"file": f.name} if f else {})}
                for p, f in zip(plan.plates.plates, _plate_files(plan), strict=True)] or None,
        region_map=plan.texture.regions.provenance(plan.outputs.region_map.name)
        if plan.outputs.region_map else None,
    )


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


def assemble_job(plan: JobPlan, spool: StripeSpool) -> WrittenTiff:
    """The print TIFF: the stripes' chunks are in the file already (they went in as they
    arrived); its tags go last, and it takes its name."""
    g, c = plan.geometry, plan.colour
    tags = print_tags(width=g.width_px, height=g.height_px, bands=plan.file_bands,
                      dtype=np.uint8 if c.bits == 8 else np.uint16, options=plan.tiff,
                      dpi=g.dpi, icc_profile=c.profile,
                      description=json.dumps(promise(plan).to_provenance()), inks=plan.inks)
    started = time.perf_counter()
    try:
        size = spool.finish(tags, len(plan.stripes), plan.outputs.tiff)
    except OSError as e:
        raise _disk_error(e, plan.outputs.tiff) from None
    fsync_directory(plan.outputs.tiff.parent)
    return WrittenTiff(path=plan.outputs.tiff, bytes=size, bigtiff=plan.bigtiff,
                       bigtiff_reason=plan.bigtiff_reason,
                       seconds=time.perf_counter() - started)


def _plate_files(plan: JobPlan) -> tuple[Path | None, ...]:
    """Each plate's file, or None for plates that are channels of the print TIFF."""
    return plan.outputs.plate_files or (None,) * len(plan.plates.plates)


def deliverables_job(plan: JobPlan, written: list[Path]) -> None:
    """The files beside the print TIFF (plate files, region map, PDF/X-4), each added to
    `written` as it appears, so that a failure removes it."""
    makers: list[tuple[Path, Callable[[], Any]]] = [
        (path, lambda i=i: write_plate_file(plan, i))
        for i, path in enumerate(plan.outputs.plate_files)]
    if plan.outputs.region_map:
        makers.append((plan.outputs.region_map, lambda: write_region_map(plan)))
    if plan.outputs.pdf:
        makers.append((plan.outputs.pdf,
                       lambda: write_pdf(plan, promise(plan).to_provenance()["texprod"])))
    for path, make in makers:
        try:
            make()
        except OSError as e:
            raise _disk_error(e, path) from None
        written.append(path)


def proof_job(plan: JobPlan, preview) -> tuple[Path, ...] | None:
    """Proof and thumbnail from the stripes' previews (sRGB, shrunk by the plan's preview
    factor); for a repeat also 2 x 2 periods side by side, read from the print file."""
    if plan.outputs.proof is None or plan.outputs.thumbnail is None:
        return None

    factor = plan.preview_factor
    preview = tint_preview(preview, plan.plates, factor)  # where the spot plates print
    small = pyvips.Image.new_from_array(preview, interpretation="srgb")
    trim = tuple(v / factor for v in plan.geometry.trim_box)
    paths = make_proof(small, trim, plan.colour, plan.outputs.proof, plan.outputs.thumbnail)
    if plan.outputs.repeat_preview is not None:  # set only when a whole period fits
        box = period_box(plan.geometry, plan.period, plan.checkpoint.generator.config.cell_px)
        try:
            printed = pyvips.Image.new_from_file(str(plan.outputs.tiff), access="random")
            paths += (make_repeat_preview(printed, box, plan.colour,
                                          plan.outputs.repeat_preview, printed=True),)
        except BaseException:
            for path in paths:
                path.unlink(missing_ok=True)
            raise
    return paths


def preflight_job(plan: JobPlan, path: Path | None = None, measure_tac: bool = True
                  ) -> InspectionReport:
    """The print read back against the job's promise, and its spot plates against the
    mask they come from."""
    report = inspect_tiff(path or plan.outputs.tiff, promise(plan), measure_tac=measure_tac)
    report.checks += check_plates(plan, path)
    return report


def upload_job(plan: JobPlan, records: list[dict] | None = None) -> list[dict]:
    """Upload the finished local outputs to the S3 output dir, then drop the staged copies.

    Each object appears at its final key only when its upload completes.
    """
    if plan.outputs.remote_dir is None:
        return []
    metadata = {"spec-digest": plan.spec_digest, "model-digest": plan.checkpoint.digest,
                "seed": str(plan.spec.seed), "texprod-version": __version__,
                "spec-name": plan.spec.name}
    types = {".tif": "image/tiff", ".jpg": "image/jpeg", ".pdf": "application/pdf"}
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
            plan: JobPlan | None = None, stage: StageRunner = inline,
            executor=None) -> JobResult:
    """The job, and its only orchestration: fetch the model, plan, render the stripes
    (each rendered, converted and encoded by the executor: threads here or a Dask cluster,
    as render.cluster says, unless `executor` is given), assemble the file, proof,
    preflight, upload. The CLI, tests and benchmarks run it inline, the flow through
    Prefect tasks. On failure it leaves no spool and no output, except the checked
    outputs of an s3:// job whose upload failed, which its next run uploads (`kept`)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if plan is None:
        model_path = stage("fetch-model", lambda: resolve_model(spec.model, spec_dir,
                                                                registry=spec.registry))
        plan = stage("plan", lambda: plan_job(spec, spec_dir, model_path))
    was_kept = is_kept(plan)
    if not was_kept:  # uploading kept outputs renders nothing: any machine may do it
        check_memory(plan)
    check_disk_space(plan)
    check_destination(plan)
    prepare_directories(plan)
    lock = job_lock(plan).acquire()  # another live job on the same name is refused here
    try:
        sweep_dead_temporaries(plan.outputs.tiff.parent)
        kept = take_kept(plan)  # checked outputs an earlier run could not upload
        if kept is None and was_kept:  # they were dropped: the render needs its room
            check_memory(plan)
            check_disk_space(plan)
        spool = open_spool(plan) if kept is None else None
    except BaseException:
        lock.release()
        remove_staging(plan)
        raise
    timings["plan"] = time.perf_counter() - started
    written_paths: list[Path] = list(kept.hashes) if kept else []
    # the print's SHA-256 is read while the proof and preflight run (a 1 Gpx file: ~4 s)
    hashing = ThreadPoolExecutor(1, thread_name_prefix="sha256")
    workers, busy = "", {}
    try:
        if kept is None:
            written, tac, tiff_sha256, workers = _make_outputs(
                plan, spool, executor, spec_dir, progress, stage, timings, busy,
                written_paths, hashing)
        else:
            written = WrittenTiff(plan.outputs.tiff, plan.outputs.tiff.stat().st_size,
                                  plan.bigtiff, plan.bigtiff_reason, 0.0)
            tac = kept.tac_max
        t = time.perf_counter()
        report = stage("preflight", lambda: _preflight_or_fail(plan))
        timings["preflight"] = time.perf_counter() - t
        outputs = output_records(plan, kept.hashes if kept else
                                 {written.path: tiff_sha256.result()})
        stop.check()  # the last safe point: after the upload the job is done
        keep_for_rerun(plan, outputs, tac)  # if the store fails, the next run uploads them
        t = time.perf_counter()
        uploaded = {u["uri"]: u for u in stage("upload", lambda: upload_job(plan, outputs))}
        release_kept(plan)
        if uploaded:
            timings["upload"] = time.perf_counter() - t
        for row in outputs:
            row["etag"] = uploaded.get(row["uri"], {}).get("etag", "")
    except BaseException as error:
        if is_kept(plan) and not isinstance(error, PreflightError):
            # the upload failed (or was stopped): the checked outputs wait for the next run
            _add_note(error, kept_note(plan))
        else:
            release_kept(plan)
            for path in written_paths:  # a failed job leaves no output behind
                path.unlink(missing_ok=True)
        raise
    finally:
        hashing.shutdown(wait=False, cancel_futures=True)
        if spool is not None:
            spool.remove()
        lock.release()
        remove_staging(plan)
    timings["total"] = time.perf_counter() - started
    return JobResult(plan, written, tac, report, timings, outputs, workers or "", busy,
                     uploaded_kept=kept is not None)


def _make_outputs(plan: JobPlan, spool: StripeSpool, executor, spec_dir: Path | None,
                  progress: Progress | None, stage: StageRunner, timings: dict[str, float],
                  busy: dict[str, float], written_paths: list[Path], hashing
                  ) -> tuple[WrittenTiff, float | None, Future, str]:
    """Render the stripes, assemble the print, make the deliverables and the proof; each
    file made is added to `written_paths` as it appears. Returns the print, its ink
    maximum, its SHA-256 being read by `hashing`, and who worked the stripes."""
    t = time.perf_counter()
    workers = stage("render", lambda: _render_on(plan, spool, executor, spec_dir,
                                                 progress, busy))
    timings["render"] = time.perf_counter() - t  # rendering, colour and encoding
    preview = spool.preview(len(plan.stripes))
    tac = spool.tac_max()
    t = time.perf_counter()
    written = stage("export", lambda: assemble_job(plan, spool))
    written_paths.append(written.path)
    timings["export"] = time.perf_counter() - t  # assembling the file
    tiff_sha256 = hashing.submit(sha256_file, written.path)
    stop.check()
    if plan.outputs.plate_files or plan.outputs.region_map or plan.outputs.pdf:
        t = time.perf_counter()
        stage("deliverables", lambda: deliverables_job(plan, written_paths))
        timings["deliverables"] = time.perf_counter() - t  # plate files, map, PDF
        stop.check()
    t = time.perf_counter()
    written_paths += stage("proof", lambda: proof_job(plan, preview)) or []
    timings["proof"] = time.perf_counter() - t
    stop.check()
    return written, tac, tiff_sha256, workers


def _add_note(error: BaseException, note: str) -> None:
    """Append `note` to an expected error's one-line message (the CLI and the flow print
    str(error)); any other exception carries it as a note under its traceback."""
    if isinstance(error, TexprodError) and error.args:
        error.args = (f"{error.args[0]}; {note}", *error.args[1:])
    else:
        error.add_note(note)


def _render_on(plan: JobPlan, spool: StripeSpool, executor, spec_dir: Path | None,
               progress: Progress | None, busy: dict[str, float]) -> str:
    """Every stripe the spool lacks, on the given executor or the one the spec asks for;
    returns who worked them (and the Dask dashboard, if any)."""
    done = spool.done
    if done:
        log.info("resuming: %d of %d stripes already in the spool", len(done),
                 len(plan.stripes))
    job = StripeJob.of(plan, spec_dir)
    if executor is not None:
        render_stripes(plan, spool, executor, job, progress, busy)
        return ""
    with stripe_executor(plan.spec.render) as chosen:
        who = chosen.describe() + (f", dashboard {chosen.dashboard}" if chosen.dashboard
                                   else "")
        log.info("stripes on %s", who)
        render_stripes(plan, spool, chosen, job, progress, busy)
    return who


def _preflight_or_fail(plan: JobPlan) -> InspectionReport:
    report = preflight_job(plan)
    if not report.ok:
        failed = ", ".join(f"{c.name} (found {c.found}, expected {c.expected})"
                           for c in report.failed)
        raise PreflightError(f"preflight failed for {plan.outputs.tiff}: {failed}")
    return report


def output_records(plan: JobPlan, hashed: dict[Path, str] | None = None) -> list[dict]:
    """Each finished local output: name, final location, size and sha256 (before upload;
    `hashed` holds the hashes already known)."""
    hashed = hashed or {}
    return [{"name": p.name, "uri": plan.outputs.final(p), "bytes": p.stat().st_size,
             "sha256": hashed.get(p) or sha256_file(p)} for p in plan.outputs.local]


_ENGINES = {"lut": "a 3D table on the render device", "libvips": "libvips (LittleCMS)"}


def plates_summary(plan: JobPlan, uri: Callable[[Path | None], str | None]) -> list[str]:
    """One line per spot plate: its ink, where it prints and where it went."""
    lines = []
    for plate, path in zip(plan.plates.plates, _plate_files(plan), strict=True):
        source = plate.summary["from"]
        where = (f"paint levels {', '.join(source['levels'])}" if "levels" in source
                 else f"mask {source['mask']}")
        extra = "".join(f", {k.removesuffix('_px')} {v} px" for k, v in plate.summary.items()
                        if k in ("choke_px", "spread_px"))
        went = uri(path) if path else f"channel {plan.inks.index(plate.name) + 1} of the TIFF"
        lines.append(f"{plate.name}: {where}, {plate.summary['tint']:g} %"
                     + (", knockout" if plate.knockout else ", overprint") + extra
                     + f" -> {went}")
    return lines


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
        "colour": f"{c.color.upper()} {c.bits}-bit, {c.description}, {c.intent}"
                  + (f", converted by {_ENGINES[plan.colour_engine]}"
                     if plan.colour_engine in _ENGINES else ""),
        "tac_max": tac_max, "tac_limit": plan.spec.print.tac_limit if c.color == "cmyk" else None,
        "preflight": {"ok": report.ok, "checks": len(report.checks),
                      "failed": [ch.name for ch in report.failed]},
        "proof": uri(plan.outputs.proof), "thumbnail": uri(plan.outputs.thumbnail),
        "repeat_preview": uri(plan.outputs.repeat_preview),
        "plates": plates_summary(plan, uri),
        "region_map": uri(plan.outputs.region_map), "pdf": uri(plan.outputs.pdf),
        "device": plan.device, "tiles": plan.tile_count, "stripes": len(plan.stripes),
        "timings": dict(timings), "outputs": outputs,
    }


# ------------------------------------------------------------------------------ estimates


def measured_estimate(plan: JobPlan, workers: list[WorkerReport] | None = None) -> str:
    """The render stage's time measured now, on this machine and device, from the plan's
    own tiles: the network, then the colour conversion and encoding the stripes do with
    those pixels. It costs one stripe's conversion and a few batches, 1-3 s on a CPU.
    `workers`: those of a cluster elsewhere (`check_cluster`), measured per thread here.

    A recorded benchmark comes from an idle machine and was 4-5x optimistic on a loaded
    one. Within 15 % of the render stage for the shipped specs on a 2-core Xeon.
    """
    if plan.tile_px == 0:  # sampling the one-pass render would be the whole render
        return f"at least {plan.estimate} (recorded on an idle machine; not measured now)"
    kind, options = cluster_options(plan.spec.render)
    threads = (options["threads"] if kind == "in-process" else
               options["n_workers"] * options["threads_per_worker"] if kind == "local" else
               1)  # a cluster elsewhere: its size is not known here, figures per thread
    on_gpu = plan.device.startswith("cuda")
    renderer = make_renderer(plan)
    network_s, band = _network_seconds(plan, renderer, 1 if on_gpu else threads)
    # a stripe converts and encodes its whole width at once, and a narrow band pays the
    # calls' fixed costs many times over: time a full-width stripe of the sample repeated
    lut = colour_lut(plan.colour) if plan.colour_engine == "lut" else None
    finishing_seconds(plan, band, lut, renderer.device)  # warm-up: profiles, the table
    width = plan.geometry.width_px
    stripe = np.ascontiguousarray(  # (h, W, 3)
        np.tile(band, (1, -(-width // band.shape[1]), 1))[:, :width])
    stripes = plan.geometry.height_px / band.shape[0]
    device_s, host_s = (s * stripes for s in finishing_seconds(plan, stripe, lut,
                                                              renderer.device))
    on_device = network_s + device_s
    # on a GPU the device works one stripe while the host threads finish others
    seconds = (max(on_device, host_s / threads) if on_gpu
               else (on_device + host_s) / threads)
    per = f" x {threads} threads" if threads > 1 else (
        " per worker thread" if kind not in ("in-process", "local") else "")
    if kind == "local":
        per += ", once its workers have started"
    return (f"render ~{duration(seconds)} ({plan.geometry.megapixels / seconds:.2f} Mpx/s; "
            f"network {_seconds(network_s)} s, colour and encoding "
            f"{_seconds(device_s + host_s)} s of work{per}; measured now on {plan.device} over "
            f"{min(plan.batch, len(plan.stripes[0].tiles.tiles))} tile(s))"
            + _over_workers(plan, seconds, workers))


def _over_workers(plan: JobPlan, seconds: float, workers: list[WorkerReport] | None) -> str:
    """What `seconds` of one thread (one GPU) measured here means on a cluster elsewhere:
    spread over its CPU threads (its GPUs) only when they render on the kind of device this
    machine measured on."""
    if not workers:
        return ""
    devices = sorted({w.device.split(" ")[0] for w in workers})
    if devices != [plan.device]:
        return f"; the workers render on {' and '.join(devices)}, not measured here"
    if plan.device.startswith("cuda"):  # a GPU worker renders one stripe at a time
        side_by_side, what = len(workers), "GPU(s)"
    else:
        side_by_side, what = sum(w.threads for w in workers), "thread(s)"
    return (f"; ~{duration(seconds / side_by_side)} over the cluster's {side_by_side} {what} "
            f"if they are as fast as this machine's")


def _network_seconds(plan: JobPlan, renderer, side_by_side: int) -> tuple[float, np.ndarray]:
    """The whole plan's network seconds, from one batch of its first tiles rendered by
    `side_by_side` threads at once (as the stripes render: CPU threads slow each other, in
    caches and memory), and that batch's pixels (h, batch px, 3) sRGB."""
    single_threaded_torch()  # as the stripes render
    field = noise_field(plan)
    first = plan.stripes[0].tiles
    sample = dataclasses.replace(first, tiles=first.tiles[:plan.batch])  # one row of tiles
    output = "uint8" if plan.render_bits == 8 else "uint16"

    def render_sample() -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        band = np.concatenate([pixels.copy() for _, pixels in renderer.tiles(
            field, sample, batch=plan.batch, output=output)], axis=1)  # (h, sample w, 3)
        return time.perf_counter() - started, band

    render_sample()  # warm-up
    with ThreadPoolExecutor(side_by_side) as pool:
        timed = list(pool.map(lambda _: render_sample(), range(side_by_side)))
    per_sample = sum(t for t, _ in timed) / side_by_side
    return per_sample * plan.tile_count / len(sample.tiles), timed[0][1]


def describe_stripe_work(stripe_seconds: dict[str, float]) -> str:
    """The stripes' seconds per stage, summed over the stripes: which stage bounds the
    render (stages overlap, so the render stage takes less than their sum)."""
    labels = {"render": "network", "colour": "colour", "encode": "encode"}
    return " · ".join(f"{label} {stripe_seconds[stage]:.1f} s"
                      for stage, label in labels.items() if stage in stripe_seconds)


def _seconds(s: float) -> str:
    return f"{s:.1f}" if s >= 1 else f"{s:.2g}"  # a small job's parts too


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


def _worker_rows(workers: list[WorkerReport] | None) -> list[tuple[str, str]]:
    if workers is None:
        return []
    if not workers:
        return [("workers", "none has joined the scheduler: the stripes would wait until one "
                            "does")]
    threads = sum(w.threads for w in workers)
    return [("workers", f"{len(workers)} joined, {threads} thread(s) in all; each built the "
                        f"job's plan and checked its memory"),
            *(("", worker.describe()) for worker in workers)]


def describe_plan(plan: JobPlan, memory: MemoryNeed,
                  workers: list[WorkerReport] | None = None) -> str:
    """The dry-run text: what the job would do, and what it would cost (`memory`: what
    `check_memory` found; `workers`: what each worker of a cluster elsewhere found)."""
    g, c = plan.geometry, plan.colour
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
        *[("plate", line) for line in plates_summary(plan, lambda p: plan.outputs.final(p)
                                                     if p else None)],
        ("colour", f"{c.color.upper()} {c.bits}-bit, {c.description}, {c.intent}"
                   f"{' + BPC' if c.black_point_compensation and c.profile_path else ''}"
                   + (f", TAC limit {plan.spec.print.tac_limit:g}%" if c.color == "cmyk"
                      else "")
                   + (f"; converted by {_ENGINES[plan.colour_engine]}"
                      if plan.colour_engine in _ENGINES else "")),
        ("tiff", f"{plan.tiff.compression} {plan.tiff.layout}, {bigtiff} "
                 f"({plan.bigtiff_reason}), ICC {'embedded' if plan.tiff.embed_icc else 'not embedded'}"),
        ("render", f"{plan.device} {plan.spec.render.precision}, "
                   + ("one pass" if plan.tile_px == 0 else
                      "tiles {} x {} px (halo {} cells)".format(*plan.tile_px_shape,
                                                               plan.stripes[0].tiles.halo))
                   + f", {plan.tile_count} tiles in {len(plan.stripes)} stripes, "
                     f"batch {plan.batch}, {describe_cluster(plan.spec.render)}"
                   + (f", repeat period {plan.period[1]} x {plan.period[0]} cells"
                      if plan.period else "")),
        ("disk", f"stripe spool in {plan.spool_dir.parent} (moved into the file as it is "
                 f"assembled), output at most "
                 f"{_size(plan.output_bytes + plan.deliverable_bytes)} in "
                 f"{plan.outputs.tiff.parent}"),
        ("memory", memory.describe()),
        *_worker_rows(workers),
        ("estimate", plan.estimate),
        ("outputs", ", ".join(plan.outputs.final(p) for p in plan.outputs.local)
         + (f" (staged in {plan.outputs.tiff.parent})" if plan.outputs.remote_dir else "")
         + ("; an earlier run's checked outputs wait there: the job would verify and "
            "upload them, rendering nothing" if is_kept(plan) else "")),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

