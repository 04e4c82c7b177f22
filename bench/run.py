"""Herald's benchmark: real kube-apiserver + etcd, real `herald run` and `herald
callback-server` processes, a fast fake n8n on 127.0.0.1.

    python bench/run.py                       # every scenario at full size (`make bench`)
    python bench/run.py --quick               # small sizes, under ~2 minutes (CI runs it)
    python bench/run.py --only burst,precision --burst-posts 5000

Writes <out>/results.json, <out>/RESULTS.md and <out>/lateness.png (with the `bench`
extra's matplotlib) and prints the table. Scenarios: ceiling, precision (with the seed's
poller as the baseline), burst, tenants, two_replicas, idle, history; see bench/README in
the project README's "Benchmark" section.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.controlplane import ControlPlane, require_binary

from bench import report
from bench.common import machine
from bench.fake_n8n import FakeN8nProcess
from bench.scenarios import CRD, OWN_CONTROL_PLANE, PY_SPY, QUICK, SCENARIOS, Bench, Sizes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark Herald against a real API server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="run nothing: redo the table, RESULTS.md and plot from a results.json",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        nargs="?",
        const=Path(__file__).resolve().parent,
        default=None,
        help="py-spy flame graphs (SVG) of the operator and the sidecar during the burst, "
        "written to this directory (default: next to bench/RESULTS.md); needs the `profile` "
        "extra (py-spy)",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Herald setting for every operator the bench starts (HERALD_<KEY>), e.g. "
        "--set watch_worker_idle_seconds=5 to measure kopf's default; repeatable",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "out", help="output dir"
    )
    group = parser.add_argument_group("sizes (defaults: the full benchmark; --quick lowers them)")
    for f in dataclasses.fields(Sizes):
        kind = float if f.type in ("float", "float | None") else int
        group.add_argument(
            f"--{f.name.replace('_', '-')}", type=kind, default=None, help=f"(full: {f.default})"
        )
    return parser


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = dataclasses.replace(QUICK) if args.quick else Sizes()
    for f in dataclasses.fields(Sizes):
        value = getattr(args, f.name)
        if value is not None:
            setattr(sizes, f.name, value)
    return sizes


def start_control_plane(workdir: Path) -> ControlPlane:
    cp = ControlPlane(workdir=workdir)
    cp.start()
    cp.kubectl("apply", "-f", str(CRD.parent))  # ScheduledPost, the ledger, the accounts
    crds = ("scheduledposts", "publications", "socialaccounts", "clustersocialaccounts")
    for crd in (f"{plural}.herald.dev" for plural in crds):
        cp.wait_established(crd)
    return cp


def operator_settings(pairs: list[str]) -> dict[str, str]:
    """`--set KEY=VALUE` pairs as Herald settings; a pair without `=` is an error."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE, e.g. claim_ahead_seconds=60")
        settings[key.strip().lower()] = value
    return settings


async def run_scenarios(
    names: list[str],
    sizes: Sizes,
    out: Path,
    profile: Path | None = None,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "mode": "quick" if sizes == QUICK else "custom" if sizes != Sizes() else "full",
        "machine": machine(),
        "sizes": dataclasses.asdict(sizes),
        "operator_settings": settings or {},
        "scenarios": {},
        "scenario_seconds": {},
        "errors": {},
    }
    n8n = FakeN8nProcess(out / "fake-n8n.log").start()
    shared: ControlPlane | None = None
    started = time.monotonic()
    try:
        for name in names:
            t0 = time.monotonic()
            workdir = out / "logs" / name
            workdir.mkdir(parents=True, exist_ok=True)
            own = name in OWN_CONTROL_PLANE
            cp: ControlPlane | None = None
            bench: Bench | None = None
            print(f"== {name} ...", flush=True)
            try:
                if own:
                    cp = start_control_plane(workdir / "control-plane")
                else:
                    if shared is None:
                        shared = start_control_plane(out / "logs" / "control-plane")
                    cp = shared
                bench = Bench(
                    cp, n8n, workdir, sizes, profile_dir=profile, operator_settings=settings or {}
                )
                results["scenarios"][name] = await SCENARIOS[name](bench)
            except Exception:
                results["errors"][name] = traceback.format_exc()
                print(results["errors"][name], file=sys.stderr, flush=True)
            finally:
                if bench is not None:
                    await bench.stop_all()
                    await bench.api.aclose()
                if own and cp is not None:
                    cp.stop()
            results["scenario_seconds"][name] = round(time.monotonic() - t0, 1)
            print(f"== {name}: {results['scenario_seconds'][name]:.0f} s", flush=True)
            # A long run keeps what it has so far.
            (out / "results.partial.json").write_text(json.dumps(results, indent=1) + "\n")
    finally:
        if shared is not None:
            shared.stop()
        n8n.stop()
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    ceiling = results["scenarios"].get("ceiling")
    for name in ("burst", "two_replicas"):
        got = results["scenarios"].get(name)
        if got and ceiling and ceiling.get("ideal_posts_per_s"):
            got["fraction_of_ideal"] = round(
                got["published_posts_per_s"] / ceiling["ideal_posts_per_s"], 3
            )
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        return 2
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        return _report(results, args.from_json.resolve().parent)
    try:
        require_binary("kube-apiserver")
        require_binary("etcd")
    except FileNotFoundError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    sizes = sizes_from(args)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.profile is not None and not Path(PY_SPY[0]).exists():
        print(f"bench: --profile needs py-spy ({PY_SPY[0]}): pip install -e '.[profile]'")
        return 2
    settings = operator_settings(args.settings)
    results = asyncio.run(run_scenarios(names, sizes, out, args.profile, settings))
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return _report(results, out)


def _report(results: dict[str, Any], out: Path) -> int:
    (out / "RESULTS.md").write_text(report.markdown(results))
    png = report.plot(results, out / "lateness.png")
    print()
    print(report.table(results))
    print(f"\nwall time {results['wall_seconds']:.0f} s; results in {out / 'results.json'}")
    if png:
        print(f"plot: {png}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
