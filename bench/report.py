"""The benchmark's outputs from its results: the printed table, RESULTS.md and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Row = tuple[str, str, str]


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def _lat(d: dict[str, Any]) -> str:
    return " / ".join(_fmt(d.get(k)) for k in ("p50", "p99", "max")) + " s"


def _seed(p: dict[str, Any]) -> str:
    design = p["seed_design"]
    return f"every {design['interval_s']:.0f} s, {design['batch']} at a time"


def _cpu(name: str, figures: dict[str, Any], window: str) -> list[Row]:
    """CPU ms per published post, and new TLS connections, per process."""
    out: list[Row] = []
    for role in ("operator", "sidecar"):
        f = figures.get(role)
        if f:
            out.append(
                (
                    name,
                    f"{role} CPU per post / TLS handshakes ({window})",
                    f"{_fmt(f['cpu_ms_per_post'], 'ms')} / {_fmt(f['tls_handshakes'])}",
                )
            )
    return out


def rows(results: dict[str, Any]) -> list[Row]:
    """The headline figures, one per row: (scenario, figure, value)."""
    out: list[Row] = []
    s = results["scenarios"]
    if c := s.get("ceiling"):
        out += [
            (
                "ceiling",
                f"status writes/s at concurrency {c['concurrency']}",
                _fmt(c["status_writes_per_s"]),
            ),
            (
                "ceiling",
                "  the same with raw httpx (Herald's API client before issue 17)",
                _fmt(c["httpx_status_writes_per_s"]),
            ),
            *(
                [
                    (
                        "ceiling",
                        "  the same with herald.kube (Herald's API client, aiohttp)",
                        _fmt(c["herald_status_writes_per_s"]),
                    ),
                    (
                        "ceiling",
                        "  client CPU ms per write: aiohttp / httpx / herald.kube",
                        " / ".join(
                            _fmt(c[k].get("client_cpu_ms_per_write"))
                            for k in ("raw_aiohttp", "httpx", "herald")
                        ),
                    ),
                ]
                if "herald" in c
                else []
            ),
            ("ceiling", "writes per published post", _fmt(c["writes_per_post"])),
            ("ceiling", "ideal posts/s (ceiling ÷ writes per post)", _fmt(c["ideal_posts_per_s"])),
        ]
    if p := s.get("precision"):
        out += [
            (
                "precision",
                f"Herald lateness p50/p99/max ({p['posts']} over {p['spread_s']:.0f}s)",
                _lat(p["herald_lateness_s"]),
            ),
            (
                "precision",
                f"seed poller lateness p50/p99/max ({_seed(p)})",
                _lat(p["seed_lateness_s"]),
            ),
            (
                "precision",
                "Herald ÷ seed p50/p99/max",
                " / ".join(_fmt(p["herald_vs_seed"][k]) for k in ("p50", "p99", "max")),
            ),
            *_cpu("precision", p.get("per_post", {}), "whole run"),
        ]
    for name in ("burst", "two_replicas"):
        if b := s.get(name):
            label = f"{b['posts']} due at once" + (
                f", {b['replicas']} operators" if b["replicas"] > 1 else ""
            )
            out += [
                (name, f"{label}: all at n8n after", _fmt(b["all_at_n8n_s"], "s")),
                (name, "all Published after", _fmt(b["all_published_s"], "s")),
                (
                    name,
                    "published posts/s (fraction of ideal)",
                    f"{_fmt(b['published_posts_per_s'])} ({_fmt(b.get('fraction_of_ideal'))})",
                ),
                (name, "writes per post", _fmt(b["writes_per_post"])),
                (
                    name,
                    "of which status / publication ledger / Events",
                    " / ".join(
                        _fmt(b["writes"].get(k, 0) / max(b["posts"], 1))
                        for k in ("status_writes", "ledger_writes", "event_writes")
                    ),
                ),
                (name, "bytes per publication record", _fmt(b.get("bytes_per_record"))),
                (
                    name,
                    "peak RSS: operator / sidecar",
                    " / ".join(
                        _fmt(b.get("peak_rss_mib", {}).get(role), "MiB")
                        for role in ("operator", "sidecar")
                    ),
                ),
                (
                    name,
                    "lost CAS (API 409/422) / herald_claim_conflicts",
                    f"{b['lost_cas_apiserver']} / {b['claim_conflicts_herald']:.0f}",
                ),
                (name, "duplicate webhooks at n8n", _fmt(b["duplicates_at_n8n"])),
                *_cpu(name, b.get("per_post", {}), "intake + burst"),
                *_cpu(name, b.get("burst_per_post", {}), "from all known: claims and burst"),
            ]
    if t := s.get("tenants"):
        out += [
            (
                "tenants",
                f"B's lateness with A's {t['posts_a']} due at once (max)",
                _fmt(t["b_lateness_s"]["max"], "s"),
            ),
            ("tenants", "B's first arrival rank", _fmt(t["b_first_arrival_rank"])),
            ("tenants", "A's lateness p50/p99/max", _lat(t["a_lateness_s"])),
        ]
    if i := s.get("idle"):
        out += [
            (
                "idle",
                f"{i['posts']} future posts: all known after start",
                _fmt(i["known_after_start_s"], "s"),
            ),
            (
                "idle",
                f"operator CPU over {i['idle_window_s']:.0f}s idle",
                _fmt(i["idle_cpu_pct_of_core"], "% of a core"),
            ),
            ("idle", "operator RSS", _fmt(i["rss_mib_after_idle"], "MiB")),
        ]
    if h := s.get("history"):
        out += [
            (
                "history",
                f"setup: {h['finished']} finished + {h['live']} live posts",
                f"{_fmt(h['setup_s'], 's')} ({_fmt(h['setup_finished_posts_per_s'])} finished/s)",
            ),
            ("history", "live posts known after start", _fmt(h["live_known_after_start_s"], "s")),
            ("history", "all posts known after start", _fmt(h["all_known_after_start_s"], "s")),
            ("history", "operator RSS", _fmt(h["rss_mib_settled"], "MiB")),
            (
                "history",
                "operator writes at start-up",
                _fmt(h["operator_writes_at_startup"]["total"]),
            ),
        ]
    for name, err in results.get("errors", {}).items():
        out.append((name, "FAILED", err.splitlines()[0][:80] if err else "error"))
    return out


def table(results: dict[str, Any]) -> str:
    data = rows(results)
    if not data:
        return "(no results)"
    w0 = max(len(r[0]) for r in data)
    w1 = max(len(r[1]) for r in data)
    lines = [f"{'scenario':<{w0}}  {'figure':<{w1}}  value", "-" * (w0 + w1 + 20)]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in data]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "| scenario | figure | value |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows(results)),
    ]
    head = (
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB memory, "
        f"load average at start {', '.join(f'{x:.1f}' for x in m['loadavg_at_start'])}. "
        f"Mode: {results['mode']}; wall time {results['wall_seconds']:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in results['scenario_seconds'].items())})."
    )
    return head + "\n\n" + "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> Path | None:
    """Herald's and the seed poller's lateness, side by side; None without the data or
    matplotlib (the `bench` extra)."""
    p = results["scenarios"].get("precision")
    if not p:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    herald, seed = p["samples"]["herald"], p["samples"]["seed"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    title = (
        f"{p['posts']} posts due over {p['spread_s']:.0f} s: lateness = arrival at n8n - publishAt"
    )
    fig.suptitle(title)
    panels = (
        (axes[0], herald, "Herald (herald run)", "tab:blue", "herald_lateness_s"),
        (axes[1], seed, f"seed poller ({_seed(p)})", "tab:orange", "seed_lateness_s"),
    )
    for ax, data, name, color, key in panels:
        # Milliseconds while everything is under 2 s, seconds beyond.
        scale, unit = (1000.0, "ms") if data and max(data) < 2 else (1.0, "s")
        ax.hist([v * scale for v in data], bins=40, color=color)
        s = p[key]
        ax.set_title(
            f"{name}\np50 {s['p50'] * scale:.3g} {unit}, p99 {s['p99'] * scale:.3g} {unit}, "
            f"max {s['max'] * scale:.3g} {unit}",
            fontsize=10,
        )
        ax.set_xlabel(f"lateness ({unit})")
        ax.set_ylabel("posts")
    ax = axes[2]
    for data, name, color in ((herald, "Herald", "tab:blue"), (seed, "seed poller", "tab:orange")):
        xs = sorted(max(v, 1e-3) for v in data)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=name, color=color)
    ax.set_xscale("log")
    ax.set_xlabel("lateness (s, log scale; ≤1 ms drawn at 1 ms)")
    ax.set_ylabel("fraction of posts sent")
    ax.set_title("both, cumulative", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_memory(points: list[dict[str, Any]], path: Path) -> Path | None:
    """Issue 17's memory curve: operator RSS against the Published posts present at
    start-up (one `history` run per point: `finished`, `rss_mib`, `live`); None without
    matplotlib (the `bench` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    points = sorted(points, key=lambda p: p["finished"])
    xs = [p["finished"] for p in points]
    ys = [p["rss_mib"] for p in points]
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    ax.plot(
        xs, ys, marker="o", color="tab:blue", label="operator RSS once the live posts are known"
    )
    for x, y in zip(xs, ys, strict=True):
        ax.annotate(f"{y:.0f} MiB", (x, y), textcoords="offset points", xytext=(0, 8), ha="center")
    live = {p["live"] for p in points}
    ax.set_title(f"Operator memory against Published posts ({', '.join(map(str, live))} live)")
    ax.set_xlabel("Published posts in the cluster at start-up")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(0, max(ys) * 1.25 + 10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
