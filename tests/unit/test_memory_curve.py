"""bench/memory_curve.py's plot, from points as its runs record them (the runs themselves
are bench/run.py's `history` scenario, which tests/e2e/test_bench.py runs in quick mode)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from bench import memory_curve


def test_the_curve_is_drawn_from_recorded_points(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    points = [
        {"finished": n, "live": 1000, "rss_mib": rss, "run": {}}
        for n, rss in ((0, 80.0), (10000, 83.6), (50000, 84.0))
    ]
    recorded = tmp_path / "memory-curve.json"
    recorded.write_text(json.dumps({"points": points}))
    assert memory_curve.main(["--from-json", str(recorded), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "  50000 Published + 1000 live: 84.0 MiB" in printed
    png = tmp_path / "memory-curve.png"
    if importlib.util.find_spec("matplotlib") is None:
        # `make venv` (CI) has no bench extra: the points, and a clear word, no plot.
        assert "no plot: install the bench extra (matplotlib)" in printed
        assert not png.exists()
        return
    assert f"plot: {png}" in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
