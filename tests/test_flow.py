"""The production job as a Prefect flow, for real: `prefect server start`, moto's S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
import pyvips
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

import flows.generate as generate_flow
import texprod.job.pipeline
from texprod.cli import main
from texprod.engine import GeneratorConfig, random_generator
from texprod.files import sha256_file
from texprod.models import save_generator
from texprod.press.preflight import inspect_tiff
from texprod.press.promise import Promise
from texprod.storage import download_file, split_s3

TINY = GeneratorConfig(nz_local=6, nz_global=4, nz_periodic=2, kernel=5, filters=(16, 8))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_generator(random_generator(TINY, 5), tmp_path_factory.mktemp("m") / "tiny",
                          name="tiny")


def spec_file(tmp_path: Path, **fields) -> Path:
    spec = {
        "name": "flow-job", "seed": 4,
        "print": {"width_mm": 30, "height_mm": 20, "dpi": 150, "bleed_mm": 2, "color": "cmyk"},
        "render": {"device": "cpu", "tile_px": 32, "scratch_dir": str(tmp_path / "scratch")},
        "output": {"dir": str(tmp_path / "out")},
        **fields,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_flow(path: Path, overrides=()):
    state = generate_flow.generate_texture(spec=str(path), overrides=list(overrides),
                                           return_state=True)
    return state, state.state_details.flow_run_id


def task_runs(flow_run_id) -> dict[str, list]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id])))
    names: dict[str, list] = {}
    for run in runs:
        names.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return names


def artifacts(flow_run_id) -> list:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id])))


def s3_keys(bucket_uri: str) -> list[str]:
    bucket, _ = split_s3(bucket_uri + "/x")
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_registry_model_to_s3_output_end_to_end(prefect_api, s3_bucket, tiny_model, tmp_path):
    assert main(["models", "push", str(tiny_model), "tiny@1.0", "--registry", s3_bucket]) == 0
    path = spec_file(tmp_path, model="tiny@1.0", registry=s3_bucket,
                     output={"dir": f"{s3_bucket}/prints/"})
    state, run_id = run_flow(path)
    assert state.is_completed(), state.message
    summary = state.result()
    tiff = next(o for o in summary["outputs"] if o["name"].endswith(".tif"))
    assert tiff["uri"].startswith(f"{s3_bucket}/prints/flow-job-")
    assert summary["timings"]["upload"] > 0 and tiff["etag"]
    # the print file is really on S3: download it and check every promise
    local = tmp_path / "downloaded.tif"
    download_file(tiff["uri"], local, expected_sha256=tiff["sha256"])
    report = inspect_tiff(local)
    assert report.ok, report.table()
    provenance = json.loads(report.to_json())["facts"]["provenance"]
    assert Promise.from_provenance(provenance).spec_digest == summary["spec_digest"]
    bucket, key = split_s3(tiff["uri"])
    head = boto3.client("s3").head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["spec-digest"] == summary["spec_digest"]
    assert {k for k in s3_keys(s3_bucket) if k.startswith("prints/")} == {
        f"prints/{o['name']}" for o in summary["outputs"]}
    assert not any((tmp_path / "scratch").rglob("*.tif"))  # staged copies are gone
    # what the operator sees in the dashboard
    by_key = {a.key: a for a in artifacts(run_id)}
    assert by_key["flow-job-progress"].type == "progress"
    assert float(by_key["flow-job-progress"].data) == pytest.approx(100.0)
    report_md = by_key["flow-job-report"].data
    assert tiff["uri"] in report_md and "preflight | passed" in report_md
    table = by_key["flow-job-outputs"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert any(row["sha256"] == tiff["sha256"] for row in table)
    for kind in ("print", "proof", "thumbnail"):  # presigned links a browser can open
        assert "X-Amz-Signature" in by_key[f"flow-job-{kind}"].data
    runs = task_runs(run_id)
    assert len(runs["render-stripe"]) == summary["stripes"]  # a task per stripe


def test_local_job_through_the_flow_names_its_run(prefect_api, tiny_model, tmp_path):
    path = spec_file(tmp_path, model=str(tiny_model))
    state, run_id = run_flow(path, overrides=["seed=9"])
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).name == "flow-job-seed9"
    (tiff,) = (tmp_path / "out").glob("*.tif")
    assert inspect_tiff(tiff).ok
    assert not any((tmp_path / "scratch").iterdir())


def test_painted_repeat_through_the_flow(prefect_api, tiny_model, tmp_path):
    import numpy as np
    import pyvips

    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 255
    pyvips.Image.new_from_array(mask).pngsave(str(tmp_path / "logo.png"))
    path = spec_file(tmp_path, model=str(tiny_model), texture={
        "paint": {"mask": "logo.png",  # found next to the spec file
                  "latents": {"background": {"seed": 1}, "foreground": {"seed": 2}}},
        "repeat": {"width_mm": 30, "height_mm": 20}})
    state, run_id = run_flow(path)
    assert state.is_completed(), state.message
    names = {o["name"].rsplit(".", 2)[-2] for o in state.result()["outputs"]}
    assert names >= {"repeat", "proof", "thumb"}
    by_key = {a.key: a for a in artifacts(run_id)}
    assert "flow-job-repeat-preview" in by_key
    report_md = by_key["flow-job-report"].data
    assert "| texture | paint logo.png (40 x 40 px)" in report_md
    assert "| repeat | 29.803 x 20.320 mm" in report_md and "snapped from 30 x 20 mm" in report_md


def test_missing_model_key_fails_the_run_with_its_name(prefect_api, s3_bucket, tmp_path):
    path = spec_file(tmp_path, model=f"{s3_bucket}/models/nope/1")
    state, run_id = run_flow(path)
    assert state.is_failed()
    with pytest.raises(Exception, match="nope"):
        state.result()
    runs = task_runs(run_id)
    assert "render-stripe" not in runs and "export" not in runs
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unreachable_endpoint_retries_then_fails_clearly(prefect_api, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("TEXPROD_S3_MAX_ATTEMPTS", "2")
    monkeypatch.setattr(generate_flow, "IO_RETRY_DELAYS", [0.1, 0.1, 0.1])
    path = spec_file(tmp_path, model="s3://bucket/models/x/1")
    state, run_id = run_flow(path)
    assert state.is_failed()
    with pytest.raises(Exception, match=f"127.0.0.1:{port}"):
        state.result()
    (fetch,) = task_runs(run_id)["fetch-model"]
    assert fetch.run_count == 1 + generate_flow.IO_RETRIES  # retried, then gave up
    assert "render-stripe" not in task_runs(run_id)


def test_a_mask_on_an_unreachable_store_is_retried_by_the_plan_task(prefect_api, tiny_model,
                                                                    tmp_path, monkeypatch):
    """Planning fetches a painted mask from S3: that is I/O, so the plan task retries it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("TEXPROD_S3_MAX_ATTEMPTS", "1")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "test")
    monkeypatch.setattr(generate_flow, "IO_RETRY_DELAYS", [0.1, 0.1, 0.1])
    path = spec_file(tmp_path, model=str(tiny_model), texture={"paint": {
        "mask": "s3://bucket/masks/logo.png",
        "latents": {"background": {"seed": 1}, "foreground": {"seed": 2}}}})
    state, run_id = run_flow(path)
    assert state.is_failed()
    with pytest.raises(Exception, match=f"127.0.0.1:{port}"):
        state.result()
    (plan,) = task_runs(run_id)["plan"]
    assert plan.run_count == 1 + generate_flow.IO_RETRIES
    assert "render-stripe" not in task_runs(run_id)


def test_spec_error_fails_before_any_task(prefect_api, tiny_model, tmp_path):
    path = spec_file(tmp_path, model=str(tiny_model))
    state, run_id = run_flow(path, overrides=["print.dpi=0"])
    assert state.is_failed()
    with pytest.raises(Exception, match="print.dpi: got 0, must be between 72 and 2400"):
        state.result()
    assert task_runs(run_id) == {}


def test_failed_upload_leaves_nothing(prefect_api, s3_bucket, tiny_model, tmp_path):
    missing_bucket = s3_bucket + "-missing"
    path = spec_file(tmp_path, model=str(tiny_model),
                     output={"dir": f"{missing_bucket}/prints/"})
    state, _ = run_flow(path)
    assert state.is_failed()
    with pytest.raises(Exception, match="missing"):
        state.result()
    assert not any(p.is_file() for p in (tmp_path / "scratch").rglob("*"))


def test_a_denied_upload_keeps_the_print_and_the_next_run_only_uploads_it(
        prefect_api, s3_server, s3_bucket, tiny_model, tmp_path, monkeypatch):
    """Credentials that may do anything but write objects (moto's real IAM checks): the
    run fails after the render, saying where the checked outputs wait; once the policy
    allows writing, the next run uploads them and renders no stripe."""
    import uuid

    from tests.s3_server import moto_auth

    iam, user = boto3.client("iam"), f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)

    def allow(*denied: str) -> None:
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                          *({"Effect": "Deny", "Action": action, "Resource": "*"}
                            for action in denied)]}))

    allow("s3:PutObject")  # but writing
    key = iam.create_access_key(UserName=user)["AccessKey"]
    path = spec_file(tmp_path, model=str(tiny_model), output={"dir": f"{s3_bucket}/prints/"})
    moto_auth(s3_server, True)
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        state, run_id = run_flow(path)
        assert state.is_failed()
        assert "render-stripe" in task_runs(run_id)
        assert "access denied to" in state.message, state.message
        assert state.message.rstrip(".").endswith(
            ": run the same job again to upload them without rendering"), state.message
        moto_auth(s3_server, False)  # with it on, moto takes only its IAM users' keys
        allow()
        moto_auth(s3_server, True)
        state, run_id = run_flow(path)
    finally:
        moto_auth(s3_server, False)
    assert state.is_completed(), state.message
    assert "render-stripe" not in task_runs(run_id)
    summary = state.result()
    assert "render" not in summary["timings"] and summary["preflight"]["ok"]
    assert s3_keys(s3_bucket) == sorted(f"prints/{o['name']}" for o in summary["outputs"])
    report = next(a.data for a in artifacts(run_id) if a.key == "flow-job-report")
    assert "| workers | none (nothing rendered) |" in report
    assert "| throughput | nothing rendered: uploaded the checked outputs an earlier run kept " \
           f"in {summary['uploaded_kept']} |" in report
    local = tmp_path / "downloaded.tif"
    download_file(summary["file"], local, expected_sha256=summary["sha256"])
    assert inspect_tiff(local).ok
    assert not any(p.is_file() for p in (tmp_path / "scratch").rglob("*"))


def test_make_generate_works_on_a_busy_machine_with_no_server(tiny_model, tmp_path):
    """A fresh machine with every core busy: no PREFECT_API_URL, a fresh PREFECT_HOME, local
    model and output. The job runs in-process, with no throwaway Prefect server to wait for."""
    path = spec_file(tmp_path, model=str(tiny_model), print={
        "width_mm": 20, "height_mm": 20, "dpi": 100, "bleed_mm": 1, "color": "rgb"})
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "AWS_", "TEXPROD_REGISTRY"))}
    home = tmp_path / "prefect-home"
    env["PREFECT_HOME"] = str(home)
    repo = Path(__file__).resolve().parent.parent
    venv_bin = Path(sys.executable).parent
    spin = "import time\nwhile True: time.perf_counter()"
    burners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 2)]
    try:
        done = subprocess.run(["make", "-C", str(repo), "generate", f"SPEC={path}",
                               f"VENV={venv_bin.parent}"], env=env, capture_output=True,
                              text=True, timeout=600)
        assert all(b.poll() is None for b in burners)  # the cores were busy throughout
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (tiff,) = (tmp_path / "out").glob("flow-job-*.tif")
    assert inspect_tiff(tiff).ok
    # the one-screen summary: file, size, pixels, colour, stages, preflight, proof
    summary = done.stdout[done.stdout.index("texprod: flow-job (seed 4) done in"):]
    assert f"file       {tiff} (" in summary and "sha256 " in summary
    assert "pixels     " in summary and " px (" in summary and "colour     RGB 8-bit" in summary
    for stage in ("plan", "render", "export", "proof", "preflight"):
        assert f"{stage} " in summary.split("timings", 1)[1].split("\n", 1)[0]
    assert "preflight  passed" in summary
    assert f"proof      {tiff.with_suffix('.proof.jpg')}" in summary
    assert "Finished in state" not in done.stdout + done.stderr
    assert not (home / "prefect.db").exists()  # no throwaway API server was started


def test_training_flow_pushes_a_model_with_its_card(prefect_api, s3_bucket, tmp_path,
                                                   monkeypatch):
    import numpy as np
    import pyvips

    from flows.train import train_generator
    from texprod.models.registry import list_models, pull

    monkeypatch.setenv("TEXPROD_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:256]  # larger than the 128 px fidelity crops
    image = np.stack([(np.sin((x + y) / 3.0) > 0) * 150 + 60] * 3, axis=-1) \
        + rng.normal(0, 10, (256, 256, 3))
    exemplar = tmp_path / "stripes.png"
    pyvips.Image.new_from_array(np.clip(image, 0, 255).astype(np.uint8)).pngsave(str(exemplar))
    state = train_generator(exemplars=[str(exemplar)], name="stripes", version="0.1",
                            registry=s3_bucket, size="32", iters=2, batch=2, device="cpu",
                            filters=[16, 8], return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["uri"].endswith("models/stripes/0.1") and result["iterations"] == 2
    assert result["ratio"] > 0
    (entry,) = [m for m in list_models(s3_bucket) if m["name"] == "stripes"]
    assert entry["version"] == "0.1" and "stripes.png" in str(entry["exemplars"])
    pulled = pull("stripes@0.1", s3_bucket)
    card = json.loads((pulled / "model.json").read_text())
    assert card["provenance"]["training"]["iterations"] == 2
    keys = {a.key for a in artifacts(state.state_details.flow_run_id)}
    assert {"stripes-training", "stripes-model-card"} <= keys
    # the same version again fails before training, not after it
    again = train_generator(exemplars=[str(exemplar)], name="stripes", version="0.1",
                            registry=s3_bucket, size="32", iters=2, batch=2, device="cpu",
                            filters=[16, 8], return_state=True)
    assert again.is_failed() and "stripes@0.1 already exists" in again.message
    assert task_runs(again.state_details.flow_run_id) == {}  # nothing fetched or trained


def _artifact_versions(api_url: str, key: str) -> list:
    """Every stored version of artifact `key`, read over HTTP (usable from any thread)."""
    import urllib.request

    request = urllib.request.Request(
        f"{api_url}/artifacts/filter", method="POST",
        data=json.dumps({"artifacts": {"key": {"any_": [key]}}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_progress_moves_per_tile_and_is_rounded(prefect_api, tiny_model, tmp_path,
                                                monkeypatch):
    import threading

    monkeypatch.setattr(generate_flow, "PROGRESS_SECONDS", 0.0)  # every tile reaches the API
    path = spec_file(tmp_path, name="progress-job", model=str(tiny_model), print={
        "width_mm": 60, "height_mm": 50, "dpi": 150, "bleed_mm": 0, "color": "rgb"})
    seen: list[float] = []
    ticks: list[tuple[int, int]] = []
    stop = threading.Event()

    def poll() -> None:  # what an operator's dashboard reads while the job runs
        while not stop.is_set():
            for artifact in _artifact_versions(prefect_api.api_url, "progress-job-progress"):
                seen.append(float(artifact["data"]))
            time.sleep(0.02)

    def listener(done: int, total: int, megapixels: float) -> None:
        ticks.append((done, total))

    generate_flow.progress_listeners.append(listener)
    poller = threading.Thread(target=poll)
    poller.start()
    try:
        state, run_id = run_flow(path)
    finally:
        stop.set()
        poller.join()
        generate_flow.progress_listeners.remove(listener)
    assert state.is_completed(), state.message
    total = ticks[-1][1]
    assert total > 20 and [d for d, _ in ticks] == list(range(total + 1))  # every tile
    assert any(0 < value < 100 for value in seen), seen  # a value mid-run, in the API
    assert all(value == round(value, 1) for value in seen)
    (final,) = [a for a in artifacts(run_id) if a.key == "progress-job-progress"]
    assert float(final.data) == 100.0


def test_the_report_shows_every_timing_size_checksum_and_the_files_bleed(
        prefect_api, tiny_model, tmp_path):
    import base64
    import re

    import pyvips

    path = spec_file(tmp_path, name="report-job", model=str(tiny_model), print={
        "width_mm": 40, "height_mm": 30, "dpi": 300, "bleed_mm": 3, "color": "cmyk"})
    state, run_id = run_flow(path)
    assert state.is_completed(), state.message
    summary = state.result()
    by_key = {a.key: a for a in artifacts(run_id)}
    report = by_key["report-job-report"].data
    rows = {}
    for line in report.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)]  # a bare | ends a cell
        if len(cells) >= 4 and cells[1]:
            assert len(cells) == 4, line  # exactly two cells on every row
            rows[cells[1]] = cells[2]
    for stage in ("plan", "render", "export", "proof", "preflight", "total"):
        assert f"{stage} " in rows["timings"], rows["timings"]
    assert re.match(r"network [\d.]+ s · colour [\d.]+ s · encode [\d.]+ s \(summed",
                    rows["stripe work"]), rows["stripe work"]
    tiff = Path(summary["file"])
    assert rows["sha256"] == f"`{sha256_file(tiff)}`"
    assert f"({tiff.stat().st_size:,} bytes)" in rows["size"]
    facts = json.loads(inspect_tiff(tiff).to_json())["facts"]
    provenance = facts["provenance"]
    # the file's bleed is whole pixels: 35 px at 300 dpi = 2.963 mm, in both places
    assert provenance["bleed_mm"] == round(facts["bleed_px"] / 300 * 25.4, 3) != 3
    assert f"+ {provenance['bleed_mm']:g} mm bleed ({facts['bleed_px']} px; spec 3 mm)" \
        in rows["print"]
    assert provenance["bleed_mm_requested"] == 3
    # the thumbnail inside the report and the proof inline: images a browser can show
    for text, alt in ((report, "thumbnail of report-job"),
                      (by_key["report-job-proof"].data, "proof of report-job-")):
        match = re.search(rf"!\[{re.escape(alt)}[^\]]*\]\(data:image/jpeg;base64,([^)]+)\)",
                          text)
        assert match, text[:300]
        image = pyvips.Image.new_from_buffer(base64.b64decode(match[1]), "")
        assert image.width > 0 and max(image.width, image.height) <= 1024


def _logs(run_id) -> list:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        for _ in range(100):  # logs travel to the API in batches, every few seconds
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            if any("Finished in state" in log.message and log.task_run_id is None
                   for log in logs):
                return logs
            time.sleep(0.2)
    return logs


@pytest.mark.parametrize("case, fields, overrides, cause", [
    ("missing-model", {"model": "no-such-model"}, [], "no such checkpoint"),
    ("ink-limit", {}, ["print.tac_limit=100"], "exceeds the limit 100%"),
    ("bad-override", {}, ["print.dpi=10"], "print.dpi: got 10, must be between 72 and 2400 "
                                           "(from --set print.dpi=10)"),
])
def test_a_failed_run_is_named_and_says_its_cause_in_one_error_line(
        prefect_api, tiny_model, tmp_path, case, fields, overrides, cause):
    path = spec_file(tmp_path, name=case, **{"model": str(tiny_model), **fields})
    state, run_id = run_flow(path, overrides)
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        name = client.read_flow_run(run_id).name
    assert name.endswith("-FAILED") and name != "flow-job-seed4"
    logs = _logs(run_id)
    errors = [log.message for log in logs if log.level >= 40]
    assert len(errors) == 1, errors
    assert cause in errors[0]
    assert not any("Traceback" in log.message for log in logs)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_bug_keeps_its_traceback(prefect_api, tiny_model, tmp_path, monkeypatch):
    def broken_plan(*args, **kwargs):
        raise ZeroDivisionError("a bug in planning")

    monkeypatch.setattr(texprod.job.pipeline, "plan_job", broken_plan)  # fault injection
    state, run_id = run_flow(spec_file(tmp_path, name="buggy", model=str(tiny_model)))
    assert state.is_failed()
    logs = _logs(run_id)
    assert any("Traceback" in log.message and "ZeroDivisionError" in log.message
               and "a bug in texprod" in log.message for log in logs if log.level >= 40)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).name.endswith("-FAILED")


def test_a_flow_run_parses_its_spec_once(prefect_api, tiny_model, tmp_path, monkeypatch):
    calls = []
    real = generate_flow.load_spec

    def counting(*args, **kwargs):  # a spy on the real parser
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(generate_flow, "load_spec", counting)
    state, _ = run_flow(spec_file(tmp_path, name="parse-once", model=str(tiny_model)))
    assert state.is_completed(), state.message
    assert len(calls) == 1
    assert not generate_flow._PARSED  # nothing kept after the run


@pytest.mark.slow
def test_the_flow_renders_on_a_dask_local_cluster(prefect_api, tiny_model, tmp_path):
    """render.cluster local: prefect-dask's DaskTaskRunner starts 2 worker processes, each
    stripe is a `render-stripe` task run on one of them (reported to this server), and the
    file is byte-identical to the in-process flow's; the report links the Dask dashboard."""
    size = {"width_mm": 100, "height_mm": 120, "dpi": 150, "bleed_mm": 2, "color": "cmyk"}
    path = spec_file(tmp_path, model=str(tiny_model), print=size)
    state, _ = run_flow(path, overrides=["render.threads=1"])
    assert state.is_completed(), state.message
    alone = state.result()
    state, run_id = run_flow(path, overrides=["render.cluster=local", "render.workers=2",
                                              "output.dir=" + str(tmp_path / "dask")])
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["stripes"] >= 3 and summary["sha256"] == alone["sha256"]
    stripes = task_runs(run_id)["render-stripe"]
    assert len(stripes) == summary["stripes"] and all(r.state.is_completed() for r in stripes)
    report_md = {a.key: a for a in artifacts(run_id)}["flow-job-report"].data
    assert "Dask: 2 worker(s), 2 thread(s)" in report_md and "[Dask dashboard](http" in report_md


def test_press_deliverables_through_the_flow_to_s3(prefect_api, s3_bucket, tiny_model,
                                                   tmp_path):
    """Spot plate files, a region map and the PDF/X-4 made by the flow's `deliverables`
    task, uploaded beside the print with their content types, and listed in the report."""
    mask = tmp_path / "logo.png"
    pyvips.Image.new_from_array(np.full((20, 30), 255, np.uint8)).pngsave(str(mask))
    path = spec_file(tmp_path, model=str(tiny_model),
                     output={"dir": f"{s3_bucket}/press/", "plates_as": "files",
                             "region_map": True, "formats": ["tiff", "pdf"]},
                     plates=[{"name": "Spot UV", "from": {"mask": str(mask),
                                                         "placement": {"box_mm": [5, 5, 15, 8]}},
                              "knockout": True}])
    state, run_id = run_flow(path)
    assert state.is_completed(), state.message
    summary = state.result()
    names = {o["name"] for o in summary["outputs"]}
    for suffix in (".spot-uv.tif", ".regions.tif", ".pdf", ".proof.jpg"):
        assert any(n.endswith(suffix) for n in names), (suffix, names)
    pdf = next(o for o in summary["outputs"] if o["name"].endswith(".pdf"))
    bucket, key = split_s3(pdf["uri"])
    assert boto3.client("s3").head_object(Bucket=bucket, Key=key)["ContentType"] \
        == "application/pdf"
    assert {k for k in s3_keys(s3_bucket) if k.startswith("press/")} == \
        {f"press/{name}" for name in names}
    assert "deliverables" in task_runs(run_id)
    report_md = {a.key: a for a in artifacts(run_id)}["flow-job-report"].data
    assert "spot plate" in report_md and "Spot UV" in report_md and pdf["uri"] in report_md
