"""Record a GPU check here, after the run on the lent machine.

    python bench/record_gpu_check.py DIR

DIR is the $OUT folder that came back from `make gpu-check` (gpu-check.md and .json).
Only files under $OUT return from the GPU machine, so the record is made here: the report
becomes a section of BENCHMARKS.md named by the device and dated by the check, and the
fastest tiled render per precision goes into texprod/data/benchmarks.json, where
`texprod generate --dry-run` finds it to estimate CUDA jobs. It then prints those tilings:
the candidates for `engine/render.default_tiling`. A dry run (--device cpu) is refused:
its tiny sizes are no record of anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCHMARKS, RECORDS, append_section, update_record  # noqa: E402
from gpu_check import best_tiling, rows_of  # noqa: E402


def refuse(message: str) -> None:
    print(f"record_gpu_check: {message}", file=sys.stderr)
    sys.exit(2)


def load(folder: Path) -> tuple[dict, str]:
    """The check's figures and its markdown report, or exit 2 saying what is wrong."""
    try:
        figures = json.loads((folder / "gpu-check.json").read_text())
        report = (folder / "gpu-check.md").read_text()
    except (OSError, ValueError) as e:
        refuse(f"{folder}: no readable gpu-check.json and gpu-check.md ({e})")
    kind = figures.get("environment", {}).get("kind")
    if kind != "cuda":
        refuse(f"{folder}: the check ran on {kind or 'an unnamed device'}, not cuda; only a "
               "GPU run is recorded (a dry run's sizes are tiny)")
    return figures, report


def as_section(report: str) -> str:
    """The report under a BENCHMARKS.md section: its title dropped, headings one level down."""
    lines = report.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("#" + line if line.startswith("## ") else line for line in lines).strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="the $OUT of `make gpu-check`")
    ap.add_argument("--benchmarks", type=Path, default=BENCHMARKS,
                    help="the markdown record (default: BENCHMARKS.md)")
    ap.add_argument("--records", type=Path, default=RECORDS,
                    help="the estimates' figures (default: texprod/data/benchmarks.json)")
    args = ap.parse_args()
    figures, report = load(args.folder)
    env = figures["environment"]
    device, stamp = env["device"], env["date"]
    append_section("GPU check", device, as_section(report), stamp=stamp,
                   command="python3 bench/gpu_check.py", path=args.benchmarks)
    best = best_tiling(rows_of(figures, "render"))  # a failed step keeps its rows before
    for b in best:
        update_record("render", f"cuda/{b['precision']}",
                        {"batch": b["batch"], "device": device, "mpx_s": round(b["mpx_s"], 1),
                         "tile": b["tile"]}, date=stamp[:10], path=args.records)
    print(f"recorded {device} ({stamp}) in {args.benchmarks} and, for "
          f"{len(best)} precision(s), in {args.records}")
    for b in best:
        print(f"  fastest tiling {b['precision']}: tile {b['tile']} px, batch {b['batch']}, "
              f"{b['mpx_s']:.1f} Mpx/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
