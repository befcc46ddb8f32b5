"""Every expected error ends `texprod` with one line naming the field or resource, the value
and what is allowed, no traceback, exit 2 for input to fix and 1 for a job that failed,
and nothing left behind; a bug keeps its traceback, with a line that says it is one.

The command runs as a user runs it, in a subprocess: in-process (no Prefect API) and as a
flow run against a real Prefect server.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.prefect_server import server_env
from texprod.engine import GeneratorConfig, random_generator
from texprod.models import save_generator

TINY = GeneratorConfig(nz_local=6, nz_global=4, nz_periodic=2, kernel=5, filters=(16, 8))
TEXPROD = str(Path(sys.executable).with_name("texprod"))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_generator(random_generator(TINY, 4), tmp_path_factory.mktemp("m") / "tiny")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(tmp_path: Path, model_path: Path, **sections) -> Path:
    spec = {"name": "err", "model": str(model_path), "seed": 1,
            "print": {"width_mm": 30, "height_mm": 20, "dpi": 150, "bleed_mm": 1,
                      "color": "cmyk"},
            "render": {"device": "cpu", "tile_px": 64, "scratch_dir": str(tmp_path / "out")},
            "output": {"dir": str(tmp_path / "out")}}
    for key, value in sections.items():
        if isinstance(value, dict):
            spec.setdefault(key, {}).update(value)
        else:
            spec[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _bad_card(tmp_path: Path, model: Path) -> Path:
    bad = tmp_path / "bad-model"
    bad.mkdir()
    card = json.loads((model / "model.json").read_text())
    card["config"]["filters"] = [1e9, 1e9, 8]
    (bad / "model.json").write_text(json.dumps(card))
    (bad / "generator.safetensors").write_bytes((model / "generator.safetensors").read_bytes())
    return str(bad)


def _a_file(tmp_path: Path) -> str:
    (tmp_path / "a-file").write_text("not a directory")
    return str(tmp_path / "a-file" / "out")


# (case, spec sections (a callable gets tmp_path and the model), overrides, extra env,
#  exit code, text the one line must hold)
CASES = [
    ("missing model", {"model": "/no/such/model"}, [], {}, 2, "no such checkpoint"),
    ("unknown bundled model", {"model": "bundled:nope"}, [], {}, 2, "no such bundled model"),
    ("absurd checkpoint config", {"model": _bad_card}, [], {}, 2,
     "filters: got [1000000000.0"),
    ("missing mask", {"texture": {"paint": {"mask": "/no/mask.png",
                                            "latents": {"background": {"seed": 1}}}}},
     [], {}, 2, "texture.paint.mask: got '/no/mask.png'"),
    ("missing ICC profile", {"print": {"icc_profile": "/no/such.icc"}}, [], {}, 2,
     "print.icc_profile: got '/no/such.icc'"),
    ("output dir is a file", {"output": {"dir": _a_file}}, [], {}, 2,
     "is a file, not a directory"),
    ("bigtiff never, too big", {"tiff": {"bigtiff": "never", "compression": "none"},
                                "print": {"width_mm": 3000, "height_mm": 3000, "dpi": 300}},
     [], {}, 2, "bigtiff"),
    ("ink over the limit", {}, ["print.tac_limit=100"], {}, 2, "exceeds the limit 100%"),
    ("bad override", {}, ["print.dpi=10"], {}, 2, "(from --set print.dpi=10)"),
    ("invalid S3 bucket name", {"model": "s3://B/m"}, [], {}, 2, "not a valid bucket name"),
    ("no S3 credentials", {"model": "s3://bucket/models/m"}, [],
     {"AWS_ENDPOINT_URL": "http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "",
      "AWS_SECRET_ACCESS_KEY": "", "AWS_CONFIG_FILE": os.devnull,
      "AWS_SHARED_CREDENTIALS_FILE": os.devnull}, 2, "no usable S3 credentials"),
    ("S3 endpoint down", {"model": "s3://bucket/models/m"}, [],
     {"AWS_ENDPOINT_URL": "http://127.0.0.1:{port}", "TEXPROD_S3_MAX_ATTEMPTS": "1",
      "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}, 1,
     "127.0.0.1:{port}"),
]


def _no_api_env(tmp_path: Path) -> dict[str, str]:
    """This environment without a Prefect API: the job runs in the command's process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "PREFECT_HOME": str(tmp_path / "prefect-home")}


def _run(tmp_path, model, sections, overrides, env_extra, preexec=None, env=None):
    sections = {k: (v(tmp_path, model) if callable(v) else v) for k, v in sections.items()}
    for section in sections.values():
        if isinstance(section, dict) and callable(section.get("dir")):
            section["dir"] = section["dir"](tmp_path)
    path = _spec(tmp_path, model, **sections)
    env = dict(env or _no_api_env(tmp_path))
    env.setdefault("PREFECT_HOME", str(tmp_path / "prefect-home"))
    env.update(env_extra)
    args = [TEXPROD, "generate", str(path), *[a for o in overrides for a in ("--set", o)]]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=preexec)


def _assert_one_line(done, code: int, text: str, out: Path) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("texprod: error: "), done.stderr[-3000:]
    assert text in lines[0], lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


@pytest.mark.parametrize("case, sections, overrides, env, code, text", CASES,
                         ids=[c[0] for c in CASES])
def test_expected_errors_in_process(model, tmp_path, case, sections, overrides, env, code,
                                    text):
    port = str(_closed_port())
    env = {k: v.replace("{port}", port) for k, v in env.items()}
    done = _run(tmp_path, model, sections, overrides, env)
    _assert_one_line(done, code, text.replace("{port}", port), tmp_path / "out")


@pytest.mark.parametrize("case", ["missing model", "ink over the limit", "bad override",
                                  "absurd checkpoint config"])
def test_expected_errors_through_a_flow_run(prefect_server, model, tmp_path, case):
    _, sections, overrides, env, code, text = next(c for c in CASES if c[0] == case)
    done = _run(tmp_path, model, sections, overrides, env, env=server_env(prefect_server))
    _assert_one_line(done, code, text, tmp_path / "out")


def test_an_s3_output_that_cannot_be_reached_fails_before_rendering(model, tmp_path,
                                                                     monkeypatch):
    """Hours of rendering must not end in an upload to an endpoint that was never there."""
    from texprod import storage
    from texprod.job.pipeline import run_job
    from texprod.job.spec import load_spec

    port = _closed_port()
    for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "k",
                        "AWS_SECRET_ACCESS_KEY": "s", "TEXPROD_S3_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)
    storage.clear_client_cache()
    spec = load_spec(_spec(tmp_path, model, output={"dir": "s3://bucket/prints/"}))
    rendered = []
    with pytest.raises(storage.EndpointUnreachable,
                       match=rf"cannot reach the S3 endpoint http://127.0.0.1:{port} to write "
                             r"the output to s3://bucket/prints/err-\w+\.tif"):
        run_job(spec, progress=lambda *done: rendered.append(done))
    assert rendered == []  # not one tile
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # no staging, no spool
    storage.clear_client_cache()


def test_a_failed_upload_keeps_the_checked_print_and_the_rerun_only_uploads_it(
        model, s3_bucket, tmp_path, caplog, capsys):
    """A store that fails once the print is checked must not cost the render: the outputs
    stay in the private staging directory, the error says so, and the next run of the job
    verifies and uploads them without rendering a tile. Kept outputs changed meanwhile are
    dropped and rendered anew. The outage is real: the bucket is deleted on the moto
    server as the upload stage starts."""
    from tests.s3_server import admin_client
    from texprod.cli import format_summary, main
    from texprod.files import sha256_file
    from texprod.job.pipeline import run_job
    from texprod.job.spec import load_spec
    from texprod.storage import StorageError

    bucket = s3_bucket.removeprefix("s3://")
    spec = load_spec(_spec(tmp_path, model, output={"dir": f"{s3_bucket}/prints/"}))
    staging = tmp_path / "out" / f"texprod-staging-{os.getuid()}"
    store_gone_at_upload = _store_gone_at_upload(bucket)

    def tiles_of_a_run() -> tuple[list, object]:
        tiles: list = []
        return tiles, run_job(spec, progress=lambda *done: tiles.append(done))

    with pytest.raises(StorageError) as failed:
        run_job(spec, stage=store_gone_at_upload)
    (job_dir,) = staging.iterdir()
    assert str(failed.value).endswith(f"; the checked outputs are kept in {job_dir}: run the "
                                      "same job again to upload them without rendering")
    kept = {p.name: sha256_file(p) for p in job_dir.iterdir() if p.suffix != ".json"}
    assert sorted(kept) == sorted(f"{job_dir.name}{ext}" for ext in (
        ".tif", ".proof.jpg", ".thumb.jpg"))
    assert main(["generate", str(tmp_path / "spec.yaml"), "--dry-run"]) == 0
    dry_run = capsys.readouterr().out
    assert "an earlier run's checked outputs wait there: the job would verify and upload " \
           "them, rendering nothing" in dry_run
    assert "estimate  no render: the kept outputs would be read back and uploaded" in dry_run
    admin_client().create_bucket(Bucket=bucket)
    tiles, result = tiles_of_a_run()
    assert tiles == [] and "render" not in result.timings and result.report.ok
    assert f"  render     none: uploaded the checked outputs an earlier run kept in {job_dir}\n" \
           in format_summary(result.summary())
    uploaded = admin_client().list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(o["Key"] for o in uploaded) == sorted(f"prints/{name}" for name in kept)
    local = tmp_path / "uploaded.tif"
    admin_client().download_file(bucket, f"prints/{job_dir.name}.tif", str(local))
    assert sha256_file(local) == kept[f"{job_dir.name}.tif"]
    assert list(staging.iterdir()) == []  # nothing left once uploaded

    # kept again, then a kept file changes on disk: the rerun renders and uploads anew
    with pytest.raises(StorageError):
        run_job(spec, stage=store_gone_at_upload)
    admin_client().create_bucket(Bucket=bucket)
    with open(job_dir / f"{job_dir.name}.proof.jpg", "ab") as proof:
        proof.write(b"changed")
    tiles, result = tiles_of_a_run()
    assert tiles and "render" in result.timings and "incomplete or changed" in caplog.text
    admin_client().download_file(bucket, f"prints/{job_dir.name}.tif", str(local))
    assert sha256_file(local) == kept[f"{job_dir.name}.tif"]  # the same bytes, rendered again
    assert list(staging.iterdir()) == []


def _store_gone_at_upload(bucket: str):
    """A stage runner for `run_job`: the bucket is deleted on the S3 server (an outage)
    as the upload stage starts."""
    from tests.s3_server import admin_client
    from texprod.job.pipeline import inline

    def runner(name, work):
        if name == "upload":
            for listed in admin_client().list_objects_v2(Bucket=bucket).get("Contents", []):
                admin_client().delete_object(Bucket=bucket, Key=listed["Key"])
            admin_client().delete_bucket(Bucket=bucket)
        return inline(name, work)
    return runner


def test_kept_outputs_are_uploaded_by_a_machine_too_small_to_render_them(model, s3_bucket,
                                                                         tmp_path):
    """Uploading kept outputs renders nothing, so the memory check stays out of its way:
    here the rerun runs in a real 512 MiB memory cgroup (a smaller container) and asks
    for a one-pass render, which that cgroup refuses when there is something to render."""
    from tests.cgroups import joining, made_cgroup
    from tests.s3_server import admin_client
    from texprod.files import sha256_file
    from texprod.job.pipeline import run_job
    from texprod.job.spec import load_spec
    from texprod.storage import StorageError

    bucket = s3_bucket.removeprefix("s3://")
    path = _spec(tmp_path, model, output={"dir": f"{s3_bucket}/prints/"},
                 print={"width_mm": 347, "height_mm": 347, "dpi": 300},  # 17 Mpx
                 render={"tile_px": "auto"})
    limit = str(512 * 2**20)
    with made_cgroup("memory", {"v2": {"memory.max": limit},
                                "v1": {"memory.limit_in_bytes": limit}}) as small:
        def one_pass_in_the_small_cgroup(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([TEXPROD, "generate", str(path), "--set", "render.tile_px=0",
                                   *args], capture_output=True, text=True, timeout=300,
                                  env=_no_api_env(tmp_path), preexec_fn=joining(small))

        refused = one_pass_in_the_small_cgroup()  # nothing kept: it would render
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert refused.stderr.startswith("texprod: error: render: a one-pass render needs")
        assert f"memory cgroup {small} allows 0.5 GiB" in refused.stderr
        with pytest.raises(StorageError):
            run_job(load_spec(path), stage=_store_gone_at_upload(bucket))
        (job_dir,) = (tmp_path / "out" / f"texprod-staging-{os.getuid()}").iterdir()
        kept = sha256_file(job_dir / f"{job_dir.name}.tif")
        admin_client().create_bucket(Bucket=bucket)
        dry_run = one_pass_in_the_small_cgroup("--dry-run")
        uploaded = one_pass_in_the_small_cgroup()
    assert dry_run.returncode == 0, dry_run.stderr[-2000:]
    assert "estimate  no render: the kept outputs would be read back" in dry_run.stdout
    assert uploaded.returncode == 0, uploaded.stderr[-2000:]
    assert "render     none: uploaded the checked outputs" in uploaded.stdout, uploaded.stdout
    local = tmp_path / "uploaded.tif"
    admin_client().download_file(bucket, f"prints/{job_dir.name}.tif", str(local))
    assert sha256_file(local) == kept


def test_a_full_disk_while_writing_is_a_job_failure(model, tmp_path):
    def limit():  # the file system refuses writes past 200 kB: EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    done = _run(tmp_path, model, {"print": {"width_mm": 120, "height_mm": 80}}, [], {},
                preexec=limit)
    _assert_one_line(done, 1, "disk full while writing", tmp_path / "out")


def test_a_bug_keeps_its_traceback_and_says_so(model, tmp_path):
    path = _spec(tmp_path, model)
    script = ("import sys\nimport texprod.job.pipeline\n"
              "def broken(*args, **kwargs):\n    raise ZeroDivisionError('a bug')\n"
              "texprod.job.pipeline.run_job = broken  # fault injection\n"
              "from texprod.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", script, "generate", str(path)],
                          env=_no_api_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ZeroDivisionError: a bug" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("texprod: internal error: ")


def test_inputs_that_would_size_work_are_bounded_before_use(tmp_path):
    import time

    import pyvips

    bomb = tmp_path / "bomb.png"  # 400 KB on disk, 400 Mpx decoded
    pyvips.Image.black(20000, 20000).pngsave(str(bomb), compression=9)
    assert bomb.stat().st_size < 2_000_000
    cases = [
        (["texture.paint.mask=" + str(bomb)], "logo_paint",
         "20000 x 20000 px; a mask may have at most 256 Mpx"),
        (["texture.quilt={block_mm: 0.001}"], "wallpaper_repeat",
         "texture.quilt.block_mm: got 0.001, a block must span at least one noise cell"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    for overrides, spec, message in cases:
        started = time.perf_counter()
        args = [a for o in overrides for a in ("--set", o)]
        done = subprocess.run([TEXPROD, "generate", spec, *args, "--set",
                               f"output.dir={tmp_path / 'out'}", "--dry-run"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert time.perf_counter() - started < 30
    assert not (tmp_path / "out").exists()
