"""The per-target circuit breaker (herald.circuit): closed, open, half-open.

Time is a plain float passed in; nothing here sleeps. Whether a failure counts (a
permanent error does not) is the dispatcher's business, not the breaker's.
"""

from __future__ import annotations

import pytest

from herald.circuit import CircuitBreaker, State

THRESHOLD, WINDOW, OPEN_MIN, OPEN_FOR = 3, 10.0, 5.0, 30.0


def breaker() -> CircuitBreaker:
    return CircuitBreaker(threshold=THRESHOLD, window=WINDOW, open_for=OPEN_FOR, open_min=OPEN_MIN)


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
    assert cb.allow(114.8) is False
    assert cb.retry_at(110.0) == 109.9 + OPEN_MIN


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


def test_open_defers_for_the_short_first_period() -> None:
    cb = opened_at(100.0)
    for t in (100.0, 102.0, 104.999):
        assert cb.state(t) is State.OPEN
        assert cb.allow(t) is False
        assert cb.retry_at(t) == 105.0
    assert cb.state(105.0) is State.HALF_OPEN


def test_failed_probes_double_the_open_period_up_to_open_for() -> None:
    cb = opened_at(100.0)
    t, periods = 100.0, []
    for _ in range(5):
        t += cb.open_period
        assert cb.allow(t) is True
        cb.record_failure(t)
        periods.append(cb.open_period)
    assert periods == [10.0, 20.0, 30.0, 30.0, 30.0]
    cb.record_success(t)
    assert cb.open_period == OPEN_MIN


def test_a_short_outage_costs_the_short_period_not_open_for() -> None:
    """The 20 s outage of the review: with the defaults (10 s doubling to 300 s), the
    circuit is probed 10 s after opening and again 20 s later, not after 300 s."""
    cb = CircuitBreaker(threshold=10, window=600, open_for=300)
    for i in range(10):
        cb.record_failure(float(i))  # n8n down from t=0
    assert cb.retry_at(9.0) == 19.0
    assert cb.allow(19.0) is True
    cb.record_failure(19.0)  # still down
    assert cb.retry_at(19.0) == 39.0
    assert cb.allow(39.0) is True
    cb.record_success(39.0)  # back at t=20: the next probe, 19 s later, closes it
    assert cb.state(39.0) is State.CLOSED


def test_half_open_lets_exactly_one_probe_through() -> None:
    cb = opened_at(100.0)
    assert cb.allow(105.0) is True
    assert cb.state(105.0) is State.HALF_OPEN
    assert [cb.allow(t) for t in (105.0, 106.0, 500.0)] == [False, False, False]
    # While the probe is out, others are told to come back after it had its chance.
    assert cb.retry_at(106.0) == 107.0


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


def test_probe_failure_reopens_for_twice_as_long() -> None:
    cb = opened_at(100.0)
    assert cb.allow(105.0) is True
    cb.record_failure(106.0)
    assert cb.state(106.0) is State.OPEN
    assert cb.allow(106.0) is False
    assert cb.allow(115.9) is False
    assert cb.retry_at(110.0) == 116.0
    assert cb.state(116.0) is State.HALF_OPEN
    assert cb.allow(116.0) is True
    assert cb.allow(116.0) is False


def test_cancel_probe_frees_the_probe_slot() -> None:
    cb = opened_at(100.0)
    assert cb.allow(130.0) is True
    assert cb.allow(130.0) is False
    cb.cancel_probe()
    assert cb.state(130.5) is State.HALF_OPEN
    assert cb.allow(130.5) is True
    assert cb.allow(130.5) is False


def test_straggler_failure_while_open_keeps_it_open_without_doubling() -> None:
    cb = opened_at(100.0)
    cb.record_failure(103.0)  # a request sent before the circuit opened
    assert cb.state(107.0) is State.OPEN
    assert cb.retry_at(107.0) == 108.0
    assert cb.open_period == OPEN_MIN


def test_threshold_one_opens_on_first_failure() -> None:
    cb = CircuitBreaker(threshold=1, window=1.0, open_for=5.0, open_min=5.0)
    cb.record_failure(0.0)
    assert cb.state(0.0) is State.OPEN
    assert cb.allow(4.9) is False
    assert cb.allow(5.0) is True


def test_a_straggler_failure_does_not_end_the_probe() -> None:
    """A request sent before the circuit opened fails while the probe is out: the probe
    stays the only request let through (issue 16, window 8)."""
    cb = opened_at(100.0)
    assert cb.allow(105.0) is True  # the probe
    cb.record_failure(106.0, straggler=True)
    assert cb.probing is True
    assert cb.allow(106.0) is False
