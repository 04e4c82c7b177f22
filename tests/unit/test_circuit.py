"""The per-target circuit breaker (herald.circuit): closed, open, half-open.

Time is a plain float passed in; nothing here sleeps. Whether a failure counts (a
permanent error does not) is the dispatcher's business, not the breaker's.
"""

from __future__ import annotations

import pytest

from herald.circuit import CircuitBreaker, State

THRESHOLD, WINDOW, OPEN_FOR = 3, 10.0, 30.0


def breaker() -> CircuitBreaker:
    return CircuitBreaker(threshold=THRESHOLD, window=WINDOW, open_for=OPEN_FOR)


def opened_at(t: float) -> CircuitBreaker:
    """A breaker whose third failure, at `t`, opened it."""
    cb = breaker()
    for when in (t - 2, t - 1, t):
        cb.record_failure(when)
    assert cb.state(t) is State.OPEN
    return cb


def test_new_breaker_is_closed_and_allows() -> None:
    cb = breaker()
    assert cb.state(0.0) is State.CLOSED
    assert all(cb.allow(float(t)) for t in range(100))
    assert cb.retry_at(5.0) == 5.0


def test_failures_below_threshold_keep_it_closed() -> None:
    cb = breaker()
    cb.record_failure(100.0)
    cb.record_failure(101.0)
    assert cb.state(101.0) is State.CLOSED
    assert cb.allow(101.0) is True


def test_threshold_failures_inside_the_window_open_it() -> None:
    cb = breaker()
    for t in (100.0, 105.0, 109.9):
        cb.record_failure(t)
    assert cb.state(109.9) is State.OPEN
    assert cb.allow(109.9) is False
    assert cb.allow(139.8) is False
    assert cb.retry_at(110.0) == 109.9 + OPEN_FOR


@pytest.mark.parametrize(
    "times",
    [
        pytest.param((100.0, 105.0, 110.0), id="oldest-exactly-window-old"),
        pytest.param((100.0, 111.0, 125.0), id="spread-over-more-than-window"),
        pytest.param((0.0, 50.0, 100.0, 150.0, 200.0), id="one-per-window"),
    ],
)
def test_failures_outside_the_window_do_not_count(times: tuple[float, ...]) -> None:
    cb = breaker()
    for t in times:
        cb.record_failure(t)
    assert cb.state(times[-1]) is State.CLOSED
    assert cb.allow(times[-1]) is True


def test_success_resets_the_failure_count() -> None:
    cb = breaker()
    cb.record_failure(100.0)
    cb.record_failure(101.0)
    cb.record_success(102.0)
    cb.record_failure(103.0)
    cb.record_failure(104.0)
    assert cb.state(104.0) is State.CLOSED


def test_open_defers_until_open_for_elapses() -> None:
    cb = opened_at(100.0)
    for t in (100.0, 110.0, 129.999):
        assert cb.state(t) is State.OPEN
        assert cb.allow(t) is False
        assert cb.retry_at(t) == 130.0
    assert cb.state(130.0) is State.HALF_OPEN


def test_half_open_lets_exactly_one_probe_through() -> None:
    cb = opened_at(100.0)
    assert cb.allow(130.0) is True
    assert cb.state(130.0) is State.HALF_OPEN
    assert [cb.allow(t) for t in (130.0, 131.0, 500.0)] == [False, False, False]
    # While the probe is out, others are told to come back after it had its chance.
    assert cb.retry_at(131.0) == 132.0


def test_probe_success_closes() -> None:
    cb = opened_at(100.0)
    assert cb.allow(130.0) is True
    cb.record_success(131.0)
    assert cb.state(131.0) is State.CLOSED
    assert cb.allow(131.0) is True
    assert cb.allow(131.0) is True
    # The old failures are gone: it takes a full threshold to open it again.
    cb.record_failure(132.0)
    cb.record_failure(133.0)
    assert cb.state(133.0) is State.CLOSED


def test_probe_failure_reopens_for_another_open_for() -> None:
    cb = opened_at(100.0)
    assert cb.allow(130.0) is True
    cb.record_failure(131.0)
    assert cb.state(131.0) is State.OPEN
    assert cb.allow(131.0) is False
    assert cb.allow(160.9) is False
    assert cb.retry_at(140.0) == 161.0
    assert cb.state(161.0) is State.HALF_OPEN
    assert cb.allow(161.0) is True
    assert cb.allow(161.0) is False


def test_cancel_probe_frees_the_probe_slot() -> None:
    cb = opened_at(100.0)
    assert cb.allow(130.0) is True
    assert cb.allow(130.0) is False
    cb.cancel_probe()
    assert cb.state(130.5) is State.HALF_OPEN
    assert cb.allow(130.5) is True
    assert cb.allow(130.5) is False


def test_straggler_failure_while_open_keeps_it_open() -> None:
    cb = opened_at(100.0)
    cb.record_failure(120.0)  # a request sent before the circuit opened
    assert cb.state(130.0) is State.OPEN
    assert cb.retry_at(130.0) == 150.0


def test_threshold_one_opens_on_first_failure() -> None:
    cb = CircuitBreaker(threshold=1, window=1.0, open_for=5.0)
    cb.record_failure(0.0)
    assert cb.state(0.0) is State.OPEN
    assert cb.allow(4.9) is False
    assert cb.allow(5.0) is True
