"""A second stop signal is harmless: `herald run` and `herald callback-server` stop once.

A terminal's Ctrl-C reaches every process of the foreground group, and a supervisor then
sends SIGTERM as well; someone presses Ctrl-C twice; a process manager sends SIGTERM and
then SIGINT. Each process must stop once, in order, exit 0, and say so in one INFO line:
no ERROR, no Traceback (issue #21).
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.support.herald_proc import HeraldProcess

pytestmark = pytest.mark.e2e

Start = Callable[..., HeraldProcess]
Sidecar = Callable[..., tuple[HeraldProcess, str]]

# 100 ms: a process manager's second signal, or a second Ctrl-C. 5 ms: the terminal's
# SIGINT and a supervisor's SIGTERM arriving together, while the first is being handled.
GAPS = {"100ms": 0.1, "5ms": 0.005}
ORDERS = {
    "SIGTERM-then-SIGINT": (signal.SIGTERM, signal.SIGINT),
    "SIGINT-then-SIGTERM": (signal.SIGINT, signal.SIGTERM),
    "SIGINT-twice": (signal.SIGINT, signal.SIGINT),
}


def signal_twice(
    proc: HeraldProcess, first: signal.Signals, second: signal.Signals, gap: float
) -> int:
    """`first`, then `second` `gap` seconds later; the exit code (it must exit in 30 s)."""
    assert proc.proc is not None and proc.proc.poll() is None, proc.log()[-3000:]
    proc.proc.send_signal(first)
    time.sleep(gap)
    proc.proc.send_signal(second)
    try:
        return proc.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"did not exit in 30 s:\n{proc.log()[-3000:]}") from None


def assert_clean(log: str) -> None:
    assert "Traceback" not in log, log[-4000:]
    assert not re.search(r"\bERROR\b", log), log[-4000:]
    assert "CRITICAL" not in log, log[-4000:]


@pytest.mark.parametrize("gap", list(GAPS))
@pytest.mark.parametrize("order", list(ORDERS))
def test_operator_stops_once_on_a_second_signal(herald: Start, order: str, gap: str) -> None:
    first, second = ORDERS[order]
    proc = herald("http://127.0.0.1:1/unused")
    code = signal_twice(proc, first, second, GAPS[gap])
    log = proc.log()
    assert code == 0, log[-4000:]
    assert_clean(log)
    stopping = [line for line in log.splitlines() if "Operator is stopping" in line]
    assert len(stopping) == 1, stopping
    assert " INFO " in stopping[0] and first.name in stopping[0], stopping


@pytest.mark.parametrize("gap", list(GAPS))
@pytest.mark.parametrize("order", list(ORDERS))
def test_callback_server_stops_once_on_a_second_signal(
    sidecar: Sidecar, order: str, gap: str
) -> None:
    first, second = ORDERS[order]
    proc, _ = sidecar()
    code = signal_twice(proc, first, second, GAPS[gap])
    log = proc.log()
    assert code == 0, log[-4000:]
    assert_clean(log)
    stopping = [line for line in log.splitlines() if "is stopping" in line]
    assert len(stopping) == 1, log[-4000:]
    assert " INFO " in stopping[0] and first.name in stopping[0], stopping
