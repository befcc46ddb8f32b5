"""What an operator sees in the Prefect UI, in a real browser: Debian's Chromium driven by
Playwright, against `make server` on a random (non-default) port.

One good run, one failed run and one that uploads to S3 (moto) of generate-texture; then the
run page, the Artifacts tab, the report with its thumbnail, the inline proof, the S3 proof
through its presigned link, the progress at 100 and the failed run's cause. Screenshots are
kept in the test's tmp dir.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import pyvips
import yaml

import flows.generate as generate_flow
from tests.s3_server import admin_client
from texprod.engine import GeneratorConfig, random_generator
from texprod.models import save_generator

TINY = GeneratorConfig(nz_local=6, nz_global=4, nz_periodic=2, kernel=5, filters=(16, 8))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# as root, with no network beyond loopback: no sandbox, no background connections
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
# the S3 endpoint's name as the browser knows it: only Chromium resolves it (to the moto
# server), as only the operator's browser knows the compose stack's public S3 address.
# No dot: moto would read a dotted host as a virtual-hosted bucket
S3_PUBLIC_HOST = "s3-public"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary (install it with `make system-packages`)")


def _spec(tmp_path: Path, name: str, model: str, out: str | None = None) -> Path:
    """A CMYK print with a Spot UV plate over a rectangle, and its PDF/X-4, into `out`
    (default: a local directory)."""
    mask = tmp_path / "varnish.png"
    pyvips.Image.new_from_array(np.full((10, 20), 255, np.uint8)).pngsave(str(mask))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "seed": 2, "model": model,
        "print": {"width_mm": 40, "height_mm": 30, "dpi": 150, "bleed_mm": 2, "color": "cmyk"},
        "render": {"device": "cpu", "tile_px": 64, "scratch_dir": str(tmp_path / "scratch")},
        "output": {"dir": out or str(tmp_path / "out"), "formats": ["tiff", "pdf"]},
        "plates": [{"name": "Spot UV", "from": {"mask": str(mask),
                                                "placement": {"box_mm": [10, 8, 20, 10]}}}],
    }))
    return path


@pytest.fixture(scope="module")
def runs(prefect_api, s3_server, tmp_path_factory) -> dict[str, str]:
    """Flow run ids: one that succeeded, one whose model does not exist, and one whose
    outputs went to S3, its links signed for the endpoint as the browser names it."""
    tmp = tmp_path_factory.mktemp("dashboard")
    model = save_generator(random_generator(TINY, 3), tmp / "tiny", name="tiny")
    bucket = f"texprod-dash-{uuid.uuid4().hex[:8]}"
    admin_client().create_bucket(Bucket=bucket)
    ids = {}
    for kind, name, model_ref, out in (
            ("ok", "dash-ok", str(model), None),
            ("failed", "dash-failed", str(tmp / "no-such-model"), None),
            ("s3", "dash-s3", str(model), f"s3://{bucket}/prints/")):
        with pytest.MonkeyPatch.context() as env:
            if out:
                env.setenv("TEXPROD_S3_PUBLIC_URL",
                           s3_server.replace("127.0.0.1", S3_PUBLIC_HOST))
            state = generate_flow.generate_texture(spec=str(_spec(tmp, name, model_ref, out)),
                                                   return_state=True)
        assert state.is_completed() == (kind != "failed"), state.message
        ids[kind] = str(state.state_details.flow_run_id)
    return ids


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            *CHROMIUM_ARGS, f"--host-resolver-rules=MAP {S3_PUBLIC_HOST} 127.0.0.1"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
    context.close()


def _artifact_page(server, run_id: str, key: str) -> str:
    """The page of the run's artifact `key` (where its card in the Artifacts tab leads)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id={"any_": [run_id]}))
    return f"{server.url}/artifacts/artifact/{artifact.id}"


def _loaded_images(page) -> list[dict]:
    """Every <img> in the page, with its natural width (0 until it decoded) and its source."""
    return page.evaluate("Array.from(document.images).map(i => "
                         "({src: i.src.slice(0, 40), width: i.naturalWidth, alt: i.alt}))")


def _wait_for_image(page, alt_prefix: str) -> dict:
    image = page.locator(f"img[alt^='{alt_prefix}']").first
    image.wait_for(state="visible")
    page.wait_for_function(
        "prefix => Array.from(document.images).some(i => i.alt.startsWith(prefix) && "
        "i.complete && i.naturalWidth > 0)", arg=alt_prefix)
    return next(i for i in _loaded_images(page) if i["alt"].startswith(alt_prefix))


def test_the_run_page_lists_the_artifacts(prefect_api, runs, page, tmp_path):
    page.goto(f"{prefect_api.url}/runs/flow-run/{runs['ok']}")
    page.get_by_text("dash-ok-seed2").first.wait_for()  # the run's name: the page loaded
    assert "Oops" not in page.inner_text("body")
    page.get_by_text("Artifacts", exact=True).click()
    for key in ("dash-ok-report", "dash-ok-outputs", "dash-ok-proof", "dash-ok-progress",
                "dash-ok-print", "dash-ok-thumbnail"):
        page.get_by_text(key, exact=True).first.wait_for()
    page.screenshot(path=str(tmp_path / "artifacts-tab.png"), full_page=True)


def test_the_proof_and_the_thumbnail_load_inline(prefect_api, runs, page, tmp_path):
    page.goto(_artifact_page(prefect_api, runs["ok"], "dash-ok-proof"))
    proof = _wait_for_image(page, "proof of dash-ok-")
    assert proof["width"] > 0 and proof["src"].startswith("data:image/jpeg")
    page.screenshot(path=str(tmp_path / "proof.png"), full_page=True)
    page.goto(_artifact_page(prefect_api, runs["ok"], "dash-ok-report"))
    thumbnail = _wait_for_image(page, "thumbnail of dash-ok")
    assert thumbnail["width"] > 0
    text = page.inner_text("body")
    # the timings row shows every stage (a bare | used to cut it at the first one)
    timings = next(line for line in text.splitlines() if line.startswith("timings"))
    for stage in ("plan", "render", "export", "deliverables", "proof", "preflight", "total"):
        assert f"{stage} " in timings, timings
    assert "sha256" in text and "size" in text
    # which stage bounds the render, as the operator reads it
    work = next(line for line in text.splitlines() if line.startswith("stripe work"))
    for stage in ("network", "colour", "encode"):
        assert f"{stage} " in work, work
    plate = next(line for line in text.splitlines() if line.startswith("spot plate"))
    assert "Spot UV" in plate and "channel 5 of the TIFF" in plate, plate
    assert any(line.startswith("PDF/X-4") and ".pdf" in line for line in text.splitlines())
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)


def test_an_s3_proof_loads_through_the_public_endpoint(prefect_api, runs, page, tmp_path):
    """An S3 output's proof is a presigned link, signed for TEXPROD_S3_PUBLIC_URL: it loads
    from a host that only the browser can resolve."""
    page.goto(_artifact_page(prefect_api, runs["s3"], "dash-s3-proof"))
    proof = _wait_for_image(page, "proof of dash-s3-")
    assert proof["width"] > 0 and proof["src"].startswith(f"http://{S3_PUBLIC_HOST}:"), proof
    page.screenshot(path=str(tmp_path / "s3-proof.png"), full_page=True)


def test_the_progress_shows_100(prefect_api, runs, page, tmp_path):
    page.goto(_artifact_page(prefect_api, runs["ok"], "dash-ok-progress"))
    page.get_by_text("100", exact=False).first.wait_for()
    page.screenshot(path=str(tmp_path / "progress.png"), full_page=True)


def test_a_failed_run_shows_its_cause(prefect_api, runs, page, tmp_path):
    page.goto(f"{prefect_api.url}/runs/flow-run/{runs['failed']}")
    page.get_by_text("dash-failed-seed2-FAILED").first.wait_for()
    page.get_by_text("no such checkpoint").first.wait_for()  # the ERROR line in its logs
    body = page.inner_text("body")
    assert "Failed" in body and "Traceback" not in body
    page.screenshot(path=str(tmp_path / "failed-run.png"), full_page=True)
