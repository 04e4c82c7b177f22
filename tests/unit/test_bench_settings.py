"""bench/run.py's `--set KEY=VALUE`: Herald settings for the operators a run starts, kept in
the results so a figure says what it was measured with."""

from __future__ import annotations

import pytest
from bench import run


def test_settings_are_parsed_into_herald_names() -> None:
    args = run._parser().parse_args(
        [
            "--set",
            "watch_worker_idle_seconds=5",
            "--set",
            "CLAIM_AHEAD_SECONDS=60",
            "--set",
            "a=b=c",
        ]
    )
    assert run.operator_settings(args.settings) == {
        "watch_worker_idle_seconds": "5",
        "claim_ahead_seconds": "60",
        "a": "b=c",
    }
    assert run.operator_settings(run._parser().parse_args([]).settings) == {}


@pytest.mark.parametrize("pair", ["claim_ahead_seconds", "=5"])
def test_a_pair_without_key_or_value_is_refused_by_name(pair: str) -> None:
    with pytest.raises(SystemExit, match=f"--set '{pair}': expected KEY=VALUE"):
        run.operator_settings([pair])
