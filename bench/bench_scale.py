"""Benchmark one job spread over Dask workers: seconds and peak RSS per process, speed-ups.

Usage:
    python bench/bench_scale.py                 # 16 and 64 Mpx CMYK, to BENCHMARKS.md
    python bench/bench_scale.py --sizes 4096 --no-append

For each square CMYK size, the same job runs in-process (one stripe at a time: the
baseline), in-process on every core, and on a `distributed.LocalCluster` of 1 and 2
worker processes (one thread each), each in a fresh driver process. The cluster is
started before the clock (its start-up is reported apart): the figures are the job's.
Peak RSS is reported for the driver and for the largest worker; both must stay flat as
the print grows. Then one stripe of the largest job is timed stage by stage, the
per-stripe figures that BENCHMARKS.md's model of a 10 Gpx job on 8 GPUs is built from.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_section, cpu_name, parser, run_as_child, spawn  # noqa: E402

CHILD_TIMEOUT_S = 3600
MODES = {  # label: (Dask workers or None, in-process threads)
    "in-process, 1 thread": (None, 1),
    "in-process, all cores": (None, "auto"),
    "Dask, 1 worker": (1, None),
    "Dask, 2 workers": (2, None),
}


def spec(model: Path, out: Path, size: int, threads) -> dict:
    return {"name": f"scale-{size}", "model": str(model), "seed": 1,
            "print": {"width_px": size, "height_px": size, "dpi": 300, "bleed_mm": 0,
                      "color": "cmyk"},
            "render": {"device": "cpu", **({"threads": threads} if threads else {})},
            "output": {"dir": str(out), "proof": True}}


def run_one(args: dict) -> dict:
    """One job in this (fresh) process, on a cluster of `workers` processes if given."""
    from texprod.job.pipeline import run_job
    from texprod.job.spec import parse_spec

    job = spec(Path(args["model"]), Path(args["out"]), args["size"], args["threads"])
    row: dict = {}
    if args["workers"] is None:
        result = run_job(parse_spec(job))
        worker_rss = 0.0
    else:
        import distributed

        started = time.perf_counter()
        with distributed.LocalCluster(n_workers=args["workers"], threads_per_worker=1,
                                      processes=True, dashboard_address=":0") as cluster, \
                distributed.Client(cluster) as client:
            row["cluster_s"] = time.perf_counter() - started
            job["render"]["cluster"] = cluster.scheduler_address
            result = run_job(parse_spec(job))
            peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            worker_rss = max(peaks.values()) / 1024
    row.update(total=result.timings["total"], timings=result.timings, worker_rss=worker_rss,
               driver_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               sha256=result.summary()["sha256"], stripes=len(result.plan.stripes))
    return row


def stripe_figures(model: Path, size: int, out: Path) -> dict:
    """One full stripe of a size x size job, worked here stage by stage (one thread)."""
    from texprod.job.executors import prepare
    from texprod.job.plan import plan_job
    from texprod.job.spec import parse_spec
    from texprod.job.stripes import work_stripe

    plan = plan_job(parse_spec(spec(model, out, size, 1)))
    ready = prepare(plan)
    stripe = plan.stripes[0]
    work_stripe(plan, stripe, ready.field, ready.renderer)  # warm-up
    result = work_stripe(plan, stripe, ready.field, ready.renderer)
    mpx = stripe.h * plan.geometry.width_px / 1e6
    return {"width": plan.geometry.width_px, "rows": stripe.h, "mpx": mpx,
            "render_s": result.render_s, "encode_s": result.encode_s,
            "raw_mb": mpx * 4, "encoded_mb": len(result.data) / 1e6,
            "preview_kb": len(result.preview) / 1e3}


def tables(rows: dict, stripe: dict) -> str:
    head = ["pixels", "mode", "stripes", "total s", "speed-up vs 1 thread",
            "driver peak RSS MB", "worker peak RSS MB", "same bytes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size, by_mode in rows.items():
        base = by_mode.get("in-process, 1 thread", {})
        for label, r in by_mode.items():
            if "error" in r:
                lines.append(f"| {size}x{size} | {label} | error: {r['error']} |" + " |" * 5)
                continue
            speed = base["total"] / r["total"] if "total" in base else float("nan")
            cluster = f" (+{r['cluster_s']:.1f} s cluster start)" if "cluster_s" in r else ""
            worker = f"{r['worker_rss']:.0f}" if r["worker_rss"] else "-"
            same = "yes" if r["sha256"] == base.get("sha256") else "NO"
            lines.append(f"| {size}x{size} ({size * size / 1e6:.0f} Mpx) | {label} | "
                         f"{r['stripes']} | {r['total']:.1f}{cluster} | {speed:.2f}x | "
                         f"{r['driver_rss']:.0f} | {worker} | {same} |")
        one, two = by_mode.get("Dask, 1 worker", {}), by_mode.get("Dask, 2 workers", {})
        if "total" in one and "total" in two:
            lines.append(f"| {size}x{size} | **2 workers vs 1** | | | "
                         f"**{one['total'] / two['total']:.2f}x** | | | |")
    s = stripe
    lines += ["", f"One stripe of the {s['width']} px wide job ({s['rows']} rows, "
              f"{s['mpx']:.1f} Mpx), one thread:", "",
              "| render s | render Mpx/s | colour + ink + encode s | encode Mpx/s | raw CMYK MB "
              "| encoded MB (moved per stripe) | preview KB |", "|---|---|---|---|---|---|---|",
              f"| {s['render_s']:.2f} | {s['mpx'] / s['render_s']:.2f} | {s['encode_s']:.2f} | "
              f"{s['mpx'] / s['encode_s']:.1f} | {s['raw_mb']:.1f} | {s['encoded_mb']:.1f} | "
              f"{s['preview_kb']:.0f} |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--sizes", default="4096,8192", help="comma-separated square CMYK sizes")
    args = ap.parse_args(argv)
    if run_as_child(args, run_one):
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s]
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        model = work / "reference"
        subprocess.run([sys.executable, "-m", "texprod.cli", "models", "init", "--out",
                        str(model), "--seed", "1"], check=True, capture_output=True)
        rows: dict[int, dict] = {}
        for size in sizes:
            for label, (workers, threads) in MODES.items():
                row = spawn(__file__, {"model": str(model), "out": str(work / "out"),
                                       "size": size, "workers": workers, "threads": threads},
                            CHILD_TIMEOUT_S)
                status = row.get("error") or f"{row['total']:.1f} s"
                print(f"{size}^2, {label}: {status}", file=sys.stderr, flush=True)
                rows.setdefault(size, {})[label] = row
                shutil.rmtree(work / "out", ignore_errors=True)
        stripe = stripe_figures(model, max(sizes), work / "out")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = tables(rows, stripe) + (
        "\n\nReference generator (5 layers, 512-256-128-64), random weights; FOGRA39 CMYK, "
        "LZW tiled, 512-row stripes, proof and preflight included. Workers: one thread "
        "each; the driver assembles encoded stripes only.")
    print(text)
    if not args.no_append:
        append_section("scale", cpu_name(), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
