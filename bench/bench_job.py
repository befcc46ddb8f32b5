"""Benchmark whole print jobs: end-to-end seconds, Mpx/s and peak RSS against print size,
side by side with the naive way a user would do it without texprod.

Usage:
    python bench/bench_job.py              # box wrap + 4096^2 .. 16384^2 CMYK, to BENCHMARKS.md
    python bench/bench_job.py --sizes 2048,4096 --no-append
    python bench/bench_job.py --huge       # adds 32768^2 (1 Gpx; needs ~8 GB of disk)

Each job runs in a fresh subprocess (`--one '<json>'`) with the reference generator
(random weights: speed does not depend on what the weights are), so its peak RSS is its
own. The point of the RSS column: it must stay flat as the print grows (DESIGN invariant 5).

The naive peer, per square size (`--peer-max` caps it: it holds the whole image in
memory): `texprod render --tile 0` (the one-pass reference render of the same checkpoint
and size), then pyvips `icc_transform` to the same FOGRA39 profile and `tiffsave` (LZW,
tiled), each step a process of its own; its time is the sum, its RSS the larger peak.
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
from common import REPO, append_section, cpu_name, parser, run_as_child, spawn  # noqa: E402

CHILD_TIMEOUT_S = 3600


def run_one(job: dict) -> dict:
    """Run one job in this process; report its timings and peak RSS."""
    from texprod.job.pipeline import run_job
    from texprod.job.spec import parse_spec

    result = run_job(parse_spec(job["spec"]))
    g = result.plan.geometry
    return {
        "label": job["label"], "width": g.width_px, "height": g.height_px,
        "color": result.plan.colour.color, "timings": result.timings,
        "bytes": result.tiff.bytes, "device": result.plan.device, "tile": result.plan.tile_px,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


PEER_SAVE = """
import resource, sys, pyvips
from texprod.press.colour import ICC_DIR, DEFAULT_CMYK_PROFILE
image = pyvips.Image.new_from_file(sys.argv[1])
cmyk = image.icc_transform(str(ICC_DIR / DEFAULT_CMYK_PROFILE), input_profile="srgb",
                           intent="relative", black_point_compensation=True)
cmyk.tiffsave(sys.argv[2], compression="lzw", predictor="horizontal", tile=True,
              tile_width=256, tile_height=256, bigtiff=cmyk.width * cmyk.height > 2**30)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def run_peer(model: Path, size: int, work: Path) -> dict:
    """The naive way: a one-pass render to a TIFF, then libvips to CMYK and LZW tiles."""
    work.mkdir(parents=True, exist_ok=True)
    rgb, cmyk = work / "peer-rgb.tif", work / "peer-cmyk.tif"
    steps = [[sys.executable, "-c", "import resource, sys\nfrom texprod.cli import main\n"
              "code = main(sys.argv[1:])\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
              "sys.exit(code)", "render", "--model", str(model), "--width", str(size),
              "--height", str(size), "--seed", "1", "--tile", "0", "--out", str(rgb)],
             [sys.executable, "-c", PEER_SAVE, str(rgb), str(cmyk)]]
    seconds, rss = 0.0, 0.0
    try:
        for step in steps:
            started = time.perf_counter()
            done = subprocess.run(step, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
            seconds += time.perf_counter() - started
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                return {"label": f"naive peer {size}x{size}", "size": size, "error": f"exit "
                        f"{done.returncode} ({'out of memory?' if done.returncode < 0 else tail})"}
            rss = max(rss, float(done.stdout.split()[-1]))
        return {"label": f"naive peer {size}x{size}", "size": size,
                "seconds": seconds, "rss_mb": rss, "bytes": cmyk.stat().st_size}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def jobs(model: Path, out: Path, sizes: list[int], device: str) -> list[dict]:
    box = yaml_spec(REPO / "specs" / "box_packaging.yaml")
    box.update(model=str(model), output={"dir": str(out), "proof": True})
    box.setdefault("render", {})["device"] = device
    result = [{"label": "box wrap 600x400 mm + 3 mm bleed, 300 dpi, CMYK", "spec": box}]
    for size in sizes:
        result.append({"label": f"{size}x{size} px CMYK", "spec": {
            "name": f"square-{size}", "model": str(model), "seed": 1,
            "print": {"width_px": size, "height_px": size, "dpi": 300, "bleed_mm": 0,
                      "color": "cmyk"},
            "render": {"device": device},
            "output": {"dir": str(out), "proof": True},
        }})
    return result


def yaml_spec(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def peer_table(rows: list[dict], peers: list[dict]) -> str:
    """texprod generate vs the naive peer, same checkpoint and size, measured in one run."""
    ours = {r["width"]: r for r in rows if "error" not in r and r["width"] == r["height"]}
    head = ["pixels", "texprod s", "naive peer s", "speed-up", "texprod peak RSS MB",
            "peer peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for peer in peers:
        mine = ours.get(peer["size"])
        total = f"{mine['timings']['total']:.1f}" if mine else "-"
        rss = f"{mine['rss_mb']:.0f}" if mine else "-"
        if "error" in peer or mine is None:
            lines.append(f"| {peer['size']}² | {total} | {peer.get('error', '-')} | - | {rss} "
                         "| - |")
            continue
        speed = peer["seconds"] / mine["timings"]["total"]
        lines.append(f"| {peer['size']}² | {total} | {peer['seconds']:.1f} | {speed:.2f}x | "
                     f"{rss} | {peer['rss_mb']:.0f} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    head = ["job", "pixels", "Mpx", "device", "tile", "stripes s", "finish file s", "proof s",
            "preflight s", "total s", "Mpx/s end to end", "TIFF MB", "peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | error: {r['error']} |" + " |" * (len(head) - 2))
            continue
        t = r["timings"]
        mpx = r["width"] * r["height"] / 1e6
        lines.append(
            f"| {r['label']} | {r['width']}x{r['height']} | {mpx:.0f} | {r['device']} "
            f"| {r['tile']} | {t['render']:.1f} | {t['export']:.1f} | {t['proof']:.1f} "
            f"| {t['preflight']:.1f} | {t['total']:.1f} | {mpx / t['total']:.2f} "
            f"| {r['bytes'] / 1e6:.0f} | {r['rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--sizes", default="4096,8192,16384",
                    help="comma-separated square CMYK print sizes in pixels")
    ap.add_argument("--huge", action="store_true", help="also 32768x32768 (1 Gpx)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--peer-max", type=int, default=8192,
                    help="largest size the naive peer is run at (it holds the whole image)")
    ap.add_argument("--no-box", action="store_true", help="skip the box wrap job")
    args = ap.parse_args(argv)
    if run_as_child(args, run_one):
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s] + ([32768] if args.huge else [])
    work = Path(tempfile.mkdtemp(prefix="bench-job-"))
    try:
        model = work / "reference"
        subprocess.run([sys.executable, "-m", "texprod.cli", "models", "init", "--out",
                        str(model), "--seed", "1"], check=True, capture_output=True)
        rows, peers = [], []
        for job in jobs(model, work / "out", sizes, args.device)[args.no_box:]:
            row = spawn(__file__, job, CHILD_TIMEOUT_S)
            row.setdefault("label", job["label"])
            status = row.get("error") or f"{row['timings']['total']:.1f} s, " \
                                         f"peak RSS {row['rss_mb']:.0f} MB"
            print(f"{job['label']}: {status}", file=sys.stderr, flush=True)
            rows.append(row)
            shutil.rmtree(work / "out", ignore_errors=True)
            size = job["spec"]["print"].get("width_px")
            if size and size <= args.peer_max:  # the naive way, right after, same machine
                peer = run_peer(model, size, work / "peer")
                status = peer.get("error") or f"{peer['seconds']:.1f} s"
                print(f"{peer['label']}: {status}", file=sys.stderr, flush=True)
                peers.append(peer)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    device = rows[0].get("device", args.device) if rows else args.device
    text = table(rows) + ("\n\nReference generator (5 layers, 512-256-128-64), random weights; "
                          "FOGRA39 CMYK, LZW tiled, proof and preflight included. Stripes: "
                          "render + colour + encode, overlapped, each stripe into the file as "
                          "it arrives; finish file: its IFD and fsync.")
    if peers:
        text += ("\n\nAgainst the naive peer (`texprod render --tile 0`, then pyvips "
                 "icc_transform + tiffsave LZW tiled), same checkpoint and size, one run:\n\n"
                 + peer_table(rows, peers))
    print(text)
    if not args.no_append:
        append_section("job", cpu_name() if device == "cpu" else device, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
