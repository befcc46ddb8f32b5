"""Training as a Prefect flow: exemplars -> trained generator -> fidelity -> model registry.

    fetch exemplars (retries on I/O) -> train (progress artifact) -> fidelity table
    -> push NAME@VERSION with model card and preview (retries on I/O) -> report
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.task_runners import ThreadPoolTaskRunner

from flows.generate import IO_RETRIES, IO_RETRY_DELAYS, _artifact_key, _retry_on_io
from texprod.models.registry import check_can_push, push
from texprod.storage import cache_root, download_file, is_s3
from texprod.training.quality import format_table, model_fidelity, verdict
from texprod.training.trainer import TrainConfig, train_model

PROGRESS_EVERY_S = 5.0  # how often the dashboard's progress bar is updated


@task(name="fetch-exemplars", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_condition_fn=_retry_on_io)
def fetch_exemplars(exemplars: list[str]) -> list[str]:
    """Local copies of the exemplars (S3 ones are downloaded into the cache)."""
    local = []
    for ref in exemplars:
        if is_s3(ref):
            path = cache_root() / "exemplars" / ref.removeprefix("s3://").replace("/", "_")
            if not path.exists():
                download_file(ref, path)
            local.append(str(path))
        else:
            local.append(ref)
    return local


@task(name="train")
def train_task(exemplars: list[str], out: str, config: dict, device: str, resume: bool,
               progress_key: str) -> dict:
    """Train (resuming a checkpoint in `out` if asked); the dashboard follows the iterations."""
    config_ = TrainConfig(**config)
    artifact = create_progress_artifact(0.0, key=progress_key,
                                        description=f"training iterations of {config_.name}")
    last = [0.0]

    def progress(iteration: int, losses: dict[str, float], seconds: float) -> None:
        if time.monotonic() - last[0] >= PROGRESS_EVERY_S or iteration == config_.iters:
            last[0] = time.monotonic()
            update_progress_artifact(artifact, 100.0 * iteration / config_.iters,
                                     description=f"iteration {iteration}: D {losses['d']:.3f}, "
                                                 f"G {losses['g']:.3f}")

    result = train_model(exemplars, out, config_, device=device, resume=resume,
                         progress=progress)
    result["path"] = str(result["path"])
    get_run_logger().info("trained %s: %d iterations in %.0f s", out, result["iterations"],
                          result["seconds"])
    return result


@task(name="fidelity")
def fidelity_task(model: str, exemplar: str) -> dict:
    rows = model_fidelity(model, exemplar)
    return {"table": format_table(rows), "verdict": verdict(rows),
            "ratio": next(r.ratio for r in rows if r.name == "model")}


@task(name="push", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_condition_fn=_retry_on_io)
def push_task(model: str, ref: str, registry: str | None, force: bool) -> str:
    return push(Path(model), ref, registry, force=force)


@flow(name="train-generator", flow_run_name="train-{name}-{version}",
      task_runner=ThreadPoolTaskRunner(max_workers=1),
      description="Train an SGAN/PSGAN from exemplars and push it to the model registry.")
def train_generator(exemplars: list[str], name: str, version: str, registry: str | None = None,
                    arch: str = "sgan", size: str = "small", iters: int = 2000,
                    batch: int = 8, device: str = "auto", seed: int = 0,
                    filters: list[int] | None = None, resume: bool = False,
                    force: bool = False) -> dict:
    """Train a generator on the exemplars and publish it as NAME@VERSION."""
    ref = f"{name}@{version}"
    # before any work: a bad name, no registry or a version taken fail now, not after training
    check_can_push(ref, registry, force)
    config = TrainConfig.from_cli(arch=arch, size=size, iters=iters, batch=batch, seed=seed,
                                  name=name, filters=tuple(filters) if filters else None)
    local = fetch_exemplars(exemplars)
    out = str(cache_root() / "training" / f"{name}-{version}")
    trained = train_task(local, out, {**config.__dict__}, device, resume,
                         f"{_artifact_key(name)}-training")
    fidelity = fidelity_task(trained["path"], local[0])
    uri = push_task(trained["path"], ref, registry, force)
    create_markdown_artifact(
        "\n".join([
            f"# {ref}",
            "",
            f"- registry: {uri}",
            f"- exemplars: {', '.join(Path(e).name for e in exemplars)}",
            f"- {config.arch}, generator {'-'.join(map(str, config.filters))}, crops "
            f"{config.crop_px} px, batch {config.batch}",
            f"- {trained['iterations']} iterations in {trained['seconds']:.0f} s "
            f"({trained['seconds_per_iteration']:.3f} s/it on {trained['device']})",
            f"- named latents: {', '.join(trained['latents']) or 'none'}",
            "",
            "## Fidelity",
            "",
            "```",
            fidelity["table"],
            "```",
            "",
            fidelity["verdict"],
        ]),
        key=f"{_artifact_key(name)}-model-card", description=f"training report of {ref}")
    return {"uri": uri, "ratio": fidelity["ratio"], **{k: trained[k] for k in (
        "iterations", "seconds", "latents")}}
