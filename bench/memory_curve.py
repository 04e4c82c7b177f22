"""Issue 17's memory curve: the operator's RSS against the Published posts present at its
start-up, one `history` run per size (each on its own control plane), then a plot.

    python bench/memory_curve.py --sizes 0,10000,50000,100000 --live 1000

Writes <out>/memory-curve.json (the points and each run's figures) and
<out>/memory-curve.png (with the `bench` extra's matplotlib); each run's own output stays in
<out>/history-<N>/. `--from-json` redraws the plot from an earlier memory-curve.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import report  # noqa: E402


def run_one(finished: int, live: int, out: Path) -> dict[str, Any]:
    """One `bench/run.py --only history` run; its figures, as a point of the curve."""
    run_out = out / f"history-{finished}"
    subprocess.run(
        [
            sys.executable,
            str(HERE / "run.py"),
            "--only",
            "history",
            "--history-finished",
            str(finished),
            "--history-live",
            str(live),
            "--out",
            str(run_out),
        ],
        check=True,
    )
    figures = json.loads((run_out / "results.json").read_text())["scenarios"]["history"]
    rss = figures["rss_mib_settled"]
    return {"finished": finished, "live": live, "rss_mib": rss, "run": figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,10000,50000,100000", help="Published posts")
    parser.add_argument("--live", type=int, default=1000, help="live posts in every run")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    parser.add_argument("--from-json", type=Path, help="plot an earlier memory-curve.json")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        points = json.loads(args.from_json.read_text())["points"]
    else:
        sizes = [int(n) for n in args.sizes.split(",") if n.strip()]
        points = [run_one(n, args.live, args.out) for n in sizes]
        data = {"points": points}
        (args.out / "memory-curve.json").write_text(json.dumps(data, indent=1) + "\n")
    for p in points:
        print(f"{p['finished']:>7} Published + {p['live']} live: {p['rss_mib']:.1f} MiB")
    png = report.plot_memory(points, args.out / "memory-curve.png")
    print(f"plot: {png}" if png else "no plot: install the bench extra (matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
