"""The `texprod` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np
from tqdm import tqdm

# The commands import what they use inside their handlers: `texprod --help` and spec errors
# answer in ~0.15 s, where importing torch alone takes ~1 s and Prefect ~0.8 s (measured
# with `python -c "import torch"` / `"import prefect"` on the 2-core CI machine).
from texprod.errors import ConfigError, TexprodError

log = logging.getLogger("texprod")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows every option's default, except where there is none or the help states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = default is not None and default is not False and default != "" \
            and default != argparse.SUPPRESS
        if shown and "default" not in text and not action.required and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _filters(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"got {text!r}, must be comma-separated channel counts like 512,256,128,64"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"got {text!r}, channel counts must be positive")
    return values


def _add_architecture(parser: argparse.ArgumentParser) -> None:
    """The generator options `models init` and `train` share: upsampling and noise channels."""
    parser.add_argument("--upsample", choices=["tconv", "nearest"], default="tconv",
                        help="transposed convolutions (the papers) or nearest 2x + convolution "
                             "(no checkerboard artefacts)")
    parser.add_argument("--nz-local", type=int, default=None,
                        help="local noise channels (default: sgan 100, psgan 30)")
    parser.add_argument("--nz-global", type=int, default=None,
                        help="global channels (default: psgan 60; sgan has none)")
    parser.add_argument("--nz-periodic", type=int, default=None,
                        help="periodic channels (default: psgan 6, sgan none; 0 for textures "
                             "without a period, e.g. grass or gravel)")


def _add_overrides(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help=text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="texprod", formatter_class=_Formatter,
        description="Huge, seamless, print-ready textures from SGAN / PSGAN generators.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = commands.add_parser("models", help="create and manage generator checkpoints",
                                 formatter_class=_Formatter)
    model_commands = models.add_subparsers(dest="models_command", required=True,
                                           metavar="SUBCOMMAND")
    init = model_commands.add_parser(
        "init", formatter_class=_Formatter,
        help="write a randomly initialised generator (for tests and benchmarks)",
        description="Write a randomly initialised generator checkpoint. Its BatchNorm "
                    "statistics are random too, so it behaves like a trained model in tests.",
    )
    init.add_argument("--out", required=True, type=Path, help="checkpoint directory to create")
    init.add_argument("--arch", choices=["sgan", "psgan"], default="psgan",
                      help="sgan: local noise only; psgan: local, global and periodic channels")
    _add_architecture(init)
    init.add_argument("--depth", type=int, default=None,
                      help="upsampling layers; output is 2^depth px per noise cell "
                           "(default: 5, or len(--filters) + 1)")
    init.add_argument("--kernel", type=int, default=5, help="convolution kernel size")
    init.add_argument("--filters", type=_filters, default=None,
                      help="channel widths of the hidden layers, comma-separated "
                           "(default: 512,256,128,64 halving towards the output for the depth)")
    init.add_argument("--affine", action="store_true",
                      help="planar waves with a free (kx, ky) per channel instead of axis-aligned")
    init.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    init.add_argument("--name", default="", help="model name recorded in the model card")
    init.add_argument("--force", action="store_true", help="replace an existing checkpoint")
    registry_help = "model registry, s3://BUCKET[/prefix] (default: env TEXPROD_REGISTRY)"
    push = model_commands.add_parser(
        "push", formatter_class=_Formatter,
        help="publish a checkpoint to the model registry as NAME@VERSION",
        description="Check a checkpoint, render a 512 x 512 preview and upload weights, "
                    "preview and model card to s3://BUCKET[/prefix]/models/NAME/VERSION/. "
                    "The model card goes up last: until it is there the version does not "
                    "exist for list and pull.",
    )
    push.add_argument("path", metavar="MODEL",
                      help="checkpoint directory (model.json + generator.safetensors), "
                           "bundled:NAME or s3://...")
    push.add_argument("ref", metavar="NAME@VERSION",
                      help="model name and version: letters, digits, '.', '_', '-'")
    push.add_argument("--registry", default=None, help=registry_help)
    push.add_argument("--force", action="store_true", help="replace an existing version")
    pull = model_commands.add_parser(
        "pull", formatter_class=_Formatter,
        help="fetch a model from the registry into the local cache",
        description="Download NAME@VERSION into the local model cache (TEXPROD_CACHE, "
                    "default ~/.cache/texprod; once per content, verified on every use) and "
                    "print its path, or copy it to --out.",
    )
    pull.add_argument("ref", metavar="NAME@VERSION", help="the model to fetch")
    pull.add_argument("--registry", default=None, help=registry_help)
    pull.add_argument("--out", type=Path, default=None,
                      help="also copy the checkpoint to this new directory "
                           "(default: leave it in the cache only)")
    listing = model_commands.add_parser(
        "list", formatter_class=_Formatter,
        help="list the models in the registry",
        description="List the complete versions in the registry: name, version, "
                    "architecture, weights size, creation time and training exemplars.",
    )
    listing.add_argument("--registry", default=None, help=registry_help)
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    render = commands.add_parser(
        "render", formatter_class=_Formatter,
        help="render a texture window to a plain RGB TIFF",
        description="Render the window [x0, x0 + width) x [y0, y0 + height) of the infinite "
                    "texture plane of a seed to an RGB TIFF. Tiled rendering is exact: any "
                    "--tile and --batch give the same image as the one-pass reference.",
    )
    render.add_argument("--model", required=True,
                        help="generator: a checkpoint directory, bundled:NAME, s3://... or "
                             "NAME@VERSION from the registry")
    render.add_argument("--width", required=True, type=int, help="width in pixels")
    render.add_argument("--height", required=True, type=int, help="height in pixels")
    render.add_argument("--out", required=True, type=Path, help="output .tif file")
    render.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same texture)")
    render.add_argument("--x0", type=int, default=0,
                        help="left edge of the window on the infinite plane, pixels (may be < 0)")
    render.add_argument("--y0", type=int, default=0,
                        help="top edge of the window on the infinite plane, pixels (may be < 0)")
    render.add_argument("--tile", type=int, default=None,
                        help="tile side in output pixels, rounded to whole noise cells; "
                             "0 renders the one-pass reference (default: 512 on the CPU, "
                             "256 for bf16 on a CPU with bf16 in hardware, 2048 on CUDA)")
    render.add_argument("--batch", type=int, default=None,
                        help="tiles per device batch (default: 1 on the CPU, 4 for bf16 on "
                             "a CPU with bf16 in hardware, 4 on CUDA)")
    render.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto picks CUDA when present")
    render.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"],
                        help="network precision; tf32 = fp32 with TensorFloat-32 convolutions "
                             "on CUDA (noise and output maths stay exact)")
    render.add_argument("--repeat", action="store_true",
                        help="make the image exactly one period of a seamless repeat "
                             "(width and height must be multiples of the cell size)")
    render.add_argument("--bits", type=int, default=8, choices=[8, 16], help="bits per sample")
    render.add_argument("--scratch", type=Path, default=None,
                        help="directory for the scratch canvas (default: next to --out)")
    generate = commands.add_parser(
        "generate", formatter_class=_Formatter,
        help="run a print job: render, export a print-ready TIFF, proof and preflight",
        description="Run the job a YAML spec describes and check the result. With a Prefect "
                    "API configured (PREFECT_API_URL, or the active profile) it runs as a "
                    "flow run reported there; without one it runs in this process, with no "
                    "server (--flow forces a flow run). A bare name (box_packaging) is looked "
                    "up in specs/.",
    )
    generate.add_argument("spec", help="job spec: a YAML file or a name in specs/")
    _add_overrides(generate, "override a spec field, e.g. --set print.dpi=150 (repeatable)")
    generate.add_argument("--dry-run", action="store_true",
                          help="print the plan (sizes, tiles, disk, time measured on a sample "
                               "of its tiles) and stop")
    generate.add_argument("--flow", action="store_true",
                          help="run as a Prefect flow run even when no PREFECT_API_URL is "
                               "configured (Prefect then starts a throwaway local API first)")

    inspect = commands.add_parser(
        "inspect", formatter_class=_Formatter,
        help="read a print TIFF back and check every promise",
        description="Check a TIFF's size, resolution, bleed/trim, colour space, ICC profile, "
                    "bit depth, alpha, compression, BigTIFF flag, ink coverage and provenance. "
                    "Exit status 1 if any check fails.",
    )
    inspect.add_argument("file", type=Path, help="the TIFF to check")
    inspect.add_argument("--spec", default=None,
                         help="also check against what this job spec promises")
    _add_overrides(inspect, "spec overrides, as for generate")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument("--no-tac", action="store_true",
                         help="skip measuring ink coverage (reads only the tags)")
    train = commands.add_parser(
        "train", formatter_class=_Formatter,
        help="train a generator from exemplar images (SGAN / PSGAN)",
        description="Adversarial training from one or more exemplars (any format libvips "
                    "reads). Checkpoints and sample grids are written to --out periodically; "
                    "a killed run continues with --resume. With several exemplars a PSGAN's "
                    "global channels learn a texture manifold and one named latent per "
                    "exemplar is stored in the model card.",
    )
    train.add_argument("exemplars", nargs="+", help="exemplar image(s)")
    train.add_argument("--out", required=True,
                       help="checkpoint directory, or s3://bucket/prefix to upload to at the end")
    train.add_argument("--arch", choices=["sgan", "psgan"], default="sgan",
                       help="sgan: local noise; psgan: + global and periodic channels")
    train.add_argument("--size", default="small",
                       help="small (256-128-64-32 generator, 128 px crops), standard (the "
                            "papers' 512-256-128-64, 160 px crops), or a crop size in px for "
                            "the small generator")
    _add_architecture(train)
    train.add_argument("--filters", type=_filters, default=None,
                       help="explicit generator widths, overriding --size's")
    train.add_argument("--iters", type=int, default=2000, help="training iterations")
    train.add_argument("--batch", type=int, default=8, help="crops per iteration")
    train.add_argument("--lr", type=float, default=None,
                       help="Adam learning rate of both nets (default 2e-4; with --resume, "
                            "the saved rate); given with --resume it replaces the saved rate, "
                            "so a lower one anneals the run")
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="auto picks CUDA when present")
    train.add_argument("--init", default=None, metavar="MODEL",
                       help="warm start: begin from this trained generator (a checkpoint "
                            "directory, bundled:NAME, s3://... or NAME@VERSION) with the same "
                            "widths; an SGAN can start a PSGAN, whose new global channels "
                            "then learn what to change")
    train.add_argument("--init-discriminator", default=None, metavar="RUN",
                       help="with --init: begin the discriminator from the one saved in this "
                            "texprod train --out directory (same --size), so the warm-started "
                            "generator is not wiped out by a random discriminator's first "
                            "gradients")
    train.add_argument("--latent-steps", type=int, default=60,
                       help="psgan: gradient steps that refine each exemplar's named latent "
                            "after training")
    train.add_argument("--resume", action="store_true",
                       help="continue the training saved in --out")
    train.add_argument("--samples-every", type=int, default=250,
                       help="write a sample grid every N iterations")
    train.add_argument("--checkpoint-every", type=int, default=250,
                       help="save a resumable checkpoint every N iterations")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation and crops")
    train.add_argument("--name", default="", help="model name for the model card")
    quality = commands.add_parser(
        "quality", formatter_class=_Formatter,
        help="score a model's texture fidelity against its exemplar",
        description="Compare the texture statistics (Gram matrices of a fixed, seeded random "
                    "CNN, plus colour) of crops of a model's renders with crops of an exemplar "
                    "image. Ratios are in units of the exemplar's own variation between crop "
                    "sets: ~1 is as close as the exemplar is to itself; uniform noise and "
                    "noise with the exemplar's colours are shown as baselines. Deterministic.",
    )
    quality.add_argument("model", metavar="MODEL",
                         help="generator: a checkpoint directory, bundled:NAME, s3://... or "
                              "NAME@VERSION from the registry")
    quality.add_argument("exemplar", metavar="EXEMPLAR", type=Path,
                         help="exemplar image (any format libvips reads)")
    quality.add_argument("--latent", default=None, metavar="NAME",
                         help="PSGAN global latent: a name from the model card or a seed "
                              "(default: the card's only latent, else each noise seed's own)")
    quality.add_argument("--crop", type=int, default=128, metavar="PX",
                         help="crop side in pixels (>= 80)")
    quality.add_argument("--crops", type=int, default=16, metavar="N", help="crops per set")
    quality.add_argument("--size", type=int, default=None, metavar="PX",
                         help="side of each rendered canvas in px; 4 canvases, noise seeds "
                              "seed .. seed + 3 (default: max(512, 2 x crop))")
    quality.add_argument("--seed", type=int, default=0, metavar="N",
                         help="seed of renders and crops")
    quality.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                         help="where the model renders (the statistics are computed on the CPU)")
    quality.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _train(args: argparse.Namespace) -> int:
    from texprod.training.trainer import TrainConfig, train_model

    config = TrainConfig.from_cli(arch=args.arch, size=args.size, filters=args.filters,
                                  iters=args.iters, batch=args.batch, lr=args.lr,
                                  seed=args.seed, checkpoint_every=args.checkpoint_every,
                                  samples_every=args.samples_every, name=args.name,
                                  upsample=args.upsample, nz_local=args.nz_local,
                                  nz_global=args.nz_global, init=args.init,
                                  init_discriminator=args.init_discriminator,
                                  latent_steps=args.latent_steps,
                                  nz_periodic=args.nz_periodic)
    bar = tqdm(total=config.iters, unit="it", desc="train", disable=None)

    def progress(iteration: int, losses: dict[str, float], seconds: float) -> None:
        bar.n = iteration
        bar.set_postfix(d=f"{losses['d']:.3f}", g=f"{losses['g']:.3f}", refresh=False)
        bar.refresh()
        if bar.disable and iteration % config.checkpoint_every == 0:  # a log, not a tty
            print(f"iteration {iteration}/{config.iters}: D {losses['d']:.3f} G "
                  f"{losses['g']:.3f}, {seconds:.0f} s", flush=True)

    try:
        result = train_model(args.exemplars, args.out, config, device=args.device,
                             resume=args.resume, progress=progress)
    finally:
        bar.close()
    print(f"wrote {result['uri']}: {result['iterations']} iterations in "
          f"{result['seconds']:.0f} s ({result['seconds_per_iteration']:.3f} s/it on "
          f"{result['device']}); latents: {', '.join(result['latents']) or 'none'}")
    return 0


def _prefect_api_url() -> str | None:
    """The Prefect API this machine is configured for (env or profile), if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def _check_api(url: str) -> None:
    """Refuse early, in one line, when the configured Prefect API does not answer."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=10):
            return
    except OSError as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(
            f"PREFECT_API_URL: got {url}, no Prefect server answers there ({reason}); start "
            "one (make server) or unset PREFECT_API_URL to run the job in this process"
        ) from None


class _TileBar:
    """One terminal progress bar for a job: tiles, Mpx/s and ETA (silent when not a tty)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.megapixels = 0.0

    def __call__(self, done: int, total: int, megapixels: float | None = None) -> None:
        if megapixels is not None:
            self.megapixels = megapixels
        if self.bar is None:
            self.bar = tqdm(total=total, initial=done, unit="tile", desc="render",
                            disable=None, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        tiles_per_s = self.bar.format_dict.get("rate")  # tqdm's smoothed rate
        if tiles_per_s and self.megapixels:
            self.bar.set_postfix_str(f"{tiles_per_s * self.megapixels / total:.2f} Mpx/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_summary(summary: dict) -> str:
    """The one-screen end of `texprod generate`: what was made, how long it took, where."""
    from texprod.job.pipeline import describe_stripe_work

    t = summary["timings"]
    stages = " · ".join(f"{k} {v:.1f} s" for k, v in t.items() if k != "total")
    tac = (f"; TAC max {summary['tac_max']:.1f}% (limit {summary['tac_limit']:g}%)"
           if summary.get("tac_max") is not None else "")
    verdict = summary["preflight"]
    rows = [
        ("file", f"{summary['file']} ({summary['bytes'] / 1e6:.1f} MB, sha256 "
                 f"{summary['sha256'][:16]}...)"),
        ("pixels", f"{summary['width_px']} x {summary['height_px']} px "
                   f"({summary['megapixels']:.1f} Mpx) at {summary['dpi']:g} dpi, "
                   f"{summary['bleed_mm']:g} mm bleed ({summary['bleed_px']} px)"),
        ("colour", summary["colour"] + tac),
        ("timings", f"{stages}; {summary['megapixels'] / t['total']:.2f} Mpx/s end to end"
                    if not summary.get("uploaded_kept") else stages),
        *([("render", f"none: uploaded the checked outputs an earlier run kept in "
                      f"{summary['uploaded_kept']}")] if summary.get("uploaded_kept") else []),
        *([("stripes", f"{summary['stripes']} on {summary['workers']}")]
          if summary.get("workers") else []),
        *([("work", describe_stripe_work(summary["stripe_seconds"])
            + " (summed over the stripes, which overlap)")]
          if summary.get("stripe_seconds") else []),
        ("preflight", f"passed, {verdict['checks']} checks" if verdict["ok"]
         else f"FAILED: {', '.join(verdict['failed'])}"),
        ("proof", summary.get("proof") or "none (output.proof: false)"),
    ]
    if summary.get("repeat_preview"):
        rows.append(("repeat", summary["repeat_preview"]))
    rows += [("plate", line) for line in summary.get("plates", [])]
    for key, label in (("region_map", "regions"), ("pdf", "pdf")):
        if summary.get(key):
            rows.append((label, summary[key]))
    if summary.get("run_url"):
        rows.append(("flow run", summary["run_url"]))
    width = max(len(k) for k, _ in rows)
    head = (f"texprod: {summary['name']} (seed {summary['seed']}) done in "
            f"{t['total']:.1f} s on {summary['device']}")
    return "\n".join([head, *(f"  {k:<{width}}  {v}" for k, v in rows)])


def _generate(args: argparse.Namespace) -> int:
    from texprod.job.pipeline import check_disk_space
    from texprod.job.plan import plan_job
    from texprod.job.spec import load_spec, resolve_spec_path

    spec_path = resolve_spec_path(args.spec)
    spec = load_spec(spec_path, args.overrides)  # spec errors stop here, before any run
    if args.dry_run:
        from texprod.job.executors import check_cluster
        from texprod.job.kept import is_kept
        from texprod.job.memory import check_memory, memory_need
        from texprod.job.pipeline import describe_plan, measured_estimate

        plan = plan_job(spec, spec_path.parent)
        kept = is_kept(plan)  # an earlier run's checked outputs: the job would only upload
        # checked before the estimate renders a batch of its tiles; an upload needs none
        memory = memory_need(plan) if kept else check_memory(plan)
        workers = check_cluster(plan, spec_path.parent)  # a cluster elsewhere: its workers
        plan.estimate = ("no render: the kept outputs would be read back and uploaded" if kept
                         else measured_estimate(plan, workers))
        print(describe_plan(plan, memory, workers))
        check_disk_space(plan)
        return 0
    if not args.verbose:  # a flow run's logs go to its API; the terminal gets bar and summary
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
    # a throwaway API (--flow) migrates a fresh database first: minutes on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    api_url = _prefect_api_url()  # Prefect reads these settings when first imported
    if api_url:
        _check_api(api_url)
    bar = _TileBar()
    try:
        if args.flow or api_url:
            summary = _generate_as_flow(spec_path, args.overrides, bar)
        else:
            # no Prefect API configured: the same job in this process, no throwaway server
            from texprod.job import stop
            from texprod.job.pipeline import run_job

            with stop.stop_on_signals():  # SIGTERM / SIGINT stop it at a safe point
                plan = plan_job(spec, spec_path.parent)
                bar(0, plan.tile_count, plan.geometry.megapixels)
                summary = run_job(spec, spec_path.parent, progress=bar, plan=plan).summary()
                late = stop.pending()
            if late is not None:  # arrived during the upload: the job is complete anyway
                bar.close()
                print(format_summary(summary))
                print(f"texprod: error: {signal.Signals(late).name} arrived after the last safe "
                      "point; the outputs above are complete", file=sys.stderr)
                return 128 + late
    finally:
        bar.close()
    print(format_summary(summary))
    return 0


def _generate_as_flow(spec_path: Path, overrides: list[str], bar: _TileBar) -> dict:
    """The job as a Prefect flow run, reported to the configured API (or a throwaway one)."""
    import flows.generate as generate_flow  # imports Prefect: only when running a flow

    generate_flow.progress_listeners.append(bar)
    try:
        return generate_flow.generate_texture(spec=str(spec_path), overrides=list(overrides))
    finally:
        generate_flow.progress_listeners.remove(bar)


def _inspect(args: argparse.Namespace) -> int:
    from texprod.press.preflight import inspect_tiff

    if args.spec:
        from texprod.job.pipeline import preflight_job
        from texprod.job.plan import plan_job
        from texprod.job.spec import load_spec, resolve_spec_path

        spec_path = resolve_spec_path(args.spec)
        plan = plan_job(load_spec(spec_path, args.overrides), spec_path.parent)
        report = preflight_job(plan, Path(args.file), measure_tac=not args.no_tac)
    else:
        report = inspect_tiff(args.file, None, measure_tac=not args.no_tac)
    print(report.to_json() if args.json else report.table())
    return 0 if report.ok else 1


def _quality(args: argparse.Namespace) -> int:
    import json

    from texprod.models.references import resolve_model
    from texprod.training.quality import format_table, model_fidelity, table_json, verdict

    model = resolve_model(args.model)  # a path, bundled:NAME, s3://..., NAME@VERSION
    rows = model_fidelity(model, args.exemplar, seed=args.seed, latent=args.latent,
                          size=args.size, crop=args.crop, n=args.crops, device=args.device)
    if args.json:
        print(json.dumps(table_json(rows, model=args.model, exemplar=str(args.exemplar),
                                    latent=args.latent, crop=args.crop, crops=args.crops,
                                    seed=args.seed), indent=2))
    else:
        print(format_table(rows))
        print(verdict(rows))
    return 0


def _models_init(args: argparse.Namespace) -> int:
    from texprod.engine import make_config, random_generator
    from texprod.files import directory_problem
    from texprod.models import save_generator

    if problem := directory_problem(args.out):
        raise ConfigError(f"--out: got '{args.out}', but {problem}")
    config = make_config(
        arch=args.arch, upsample=args.upsample, depth=args.depth, kernel=args.kernel,
        filters=args.filters, nz_local=args.nz_local, nz_global=args.nz_global,
        nz_periodic=args.nz_periodic, affine=args.affine,
    )
    generator = random_generator(config, args.seed)
    out = save_generator(
        generator, args.out, name=args.name or args.out.name, overwrite=args.force,
        description=f"randomly initialised {config.arch} (seed {args.seed}), for tests",
        provenance={"init": {"kind": "random", "seed": args.seed}},
    )
    n_weights = sum(p.numel() for p in generator.parameters())
    print(f"wrote {out}: {config.arch}/{config.upsample}, depth {config.depth}, "
          f"kernel {config.kernel}, nz {config.nz}, {n_weights:,} weights, "
          f"{config.cell_px} px per noise cell")
    return 0


def _models_push(args: argparse.Namespace) -> int:
    from texprod.models import registry
    from texprod.models.references import resolve_model

    uri = registry.push(resolve_model(args.path), args.ref, args.registry, force=args.force)
    print(f"pushed {args.ref} to {uri}")
    return 0


def _models_pull(args: argparse.Namespace) -> int:
    from texprod.models import registry

    path = registry.pull(args.ref, args.registry, args.out)
    print(f"pulled {args.ref} to {path}")
    return 0


def _models_list(args: argparse.Namespace) -> int:
    import json

    from texprod.models import registry

    models = registry.list_models(args.registry)
    if args.json:
        print(json.dumps(models, indent=2))
    elif not models:
        print(f"no models in {registry.resolve_registry(args.registry)}")
    else:
        print(registry.format_table(models))
    return 0

def repeat_period(width: int, height: int, cell_px: int) -> tuple[int, int]:
    """Period in cells for a --repeat image, or an error naming the nearest valid sizes."""
    for name, value in (("width", width), ("height", height)):
        if value % cell_px:
            lower = value // cell_px * cell_px
            options = [v for v in (lower, lower + cell_px) if v > 0]
            raise ConfigError(
                f"{name}: got {value}, --repeat needs a multiple of the model's cell size "
                f"{cell_px} px; nearest valid: {' or '.join(map(str, options))}"
            )
    return height // cell_px, width // cell_px


def _render(args: argparse.Namespace) -> int:
    from texprod.engine.noise import NoiseField
    from texprod.engine.render import Renderer, default_tiling
    from texprod.files import directory_problem
    from texprod.models import load_generator
    from texprod.models.references import resolve_model
    from texprod.press.canvas import BandWriter, ScratchCanvas
    from texprod.press.geometry import MAX_PIXELS, MAX_SIDE_PX
    from texprod.press.printfile import check_tiff_path, write_plain_tiff

    out = check_tiff_path(args.out)
    for option, given, directory in (("--out", args.out, out.parent),
                                     ("--scratch", args.scratch, args.scratch)):
        if given is not None and (problem := directory_problem(directory)):
            raise ConfigError(f"{option}: got {str(given)!r}, but {problem}")
    for name in ("width", "height"):
        value = getattr(args, name)
        if value < 1:
            raise ConfigError(f"--{name}: got {value}, must be at least 1 pixel")
        if value > MAX_SIDE_PX:
            raise ConfigError(f"--{name}: got {value:,}, must be at most {MAX_SIDE_PX:,} pixels")
    if args.width * args.height > MAX_PIXELS:
        raise ConfigError(f"--width x --height: got {args.width * args.height / 1e9:.1f} Gpx, "
                          f"at most {MAX_PIXELS / 1e9:.1f} Gpx")
    if args.tile is not None and args.tile < 0:
        raise ConfigError(f"--tile: got {args.tile}, must be 0 (one pass) or a size in pixels")
    if args.batch is not None and args.batch < 1:
        raise ConfigError(f"--batch: got {args.batch}, must be at least 1")
    generator = load_generator(resolve_model(args.model))
    cell = generator.config.cell_px
    period = repeat_period(args.width, args.height, cell) if args.repeat else None
    field = NoiseField(generator.config, args.seed, waves=generator.waves, period=period)
    renderer = Renderer(generator, device=args.device, precision=args.precision)
    default_tile, default_batch = default_tiling(renderer.device, renderer.precision)
    args.tile = default_tile if args.tile is None else args.tile
    args.batch = default_batch if args.batch is None else args.batch
    plan = renderer.plan(args.width, args.height, args.tile, x0=args.x0, y0=args.y0)
    output = "uint8" if args.bits == 8 else "uint16"
    log.info("rendering %dx%d px on %s (%s): %d tiles of %dx%d cells, halo %d",
             args.width, args.height, renderer.device, args.precision, len(plan.tiles),
             *plan.tile_cells, renderer.rf.halo)

    started = time.perf_counter()
    scratch = (args.scratch or out.parent) / f".{out.name}.canvas.raw"
    with ScratchCanvas(scratch, args.width, args.height, generator.config.out_channels,
                       np.dtype(output)) as canvas:
        bands = BandWriter(canvas, plan)
        tiles = renderer.tiles(field, plan, batch=args.batch, output=output)
        for tile, pixels in tqdm(tiles, total=len(plan.tiles), unit="tile", desc="render",
                                 disable=None):
            bands.add(tile, pixels)
        rendered = time.perf_counter() - started
        write_plain_tiff(canvas.to_vips(), out)
    total = time.perf_counter() - started
    megapixels = args.width * args.height / 1e6
    print(f"wrote {out}: {args.width}x{args.height} px, {args.bits}-bit, "
          f"render {rendered:.1f} s ({megapixels / rendered:.2f} Mpx/s), total {total:.1f} s")
    return 0


def _shown(record: logging.LogRecord, verbose: bool) -> bool:
    """What the terminal shows of the logs: not an expected failure (main() prints its cause
    once, itself), and of a flow run's logs (kept on its server) only errors."""
    if getattr(record, "texprod_expected", False):
        return False
    return verbose or record.levelno >= logging.ERROR or not record.name.startswith("prefect")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # libraries' loggers propagate to it too
        handler.setLevel(level)
        handler.addFilter(lambda r: _shown(r, args.verbose))
    handlers = {"models": _models_init, "render": _render, "generate": _generate,
                "inspect": _inspect, "train": _train}
    handlers["quality"] = _quality
    if args.command == "models" and args.models_command != "init":
        handlers["models"] = {"push": _models_push, "pull": _models_pull,
                              "list": _models_list}[args.models_command]
    try:
        return handlers[args.command](args)
    except TexprodError as e:  # expected: one line, the message says what to change
        print(f"texprod: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `texprod inspect ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # a file the user named cannot be read or written
        print(f"texprod: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("texprod: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: keep the traceback, and say that it is one
        traceback.print_exc()
        print("texprod: internal error: the traceback above is a bug in texprod, not a "
              "problem with your input; please report it with the command you ran",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
