"""`make up` works: hack/up.py brings everything up and the demo post gets published."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.controlplane import REPO

pytestmark = pytest.mark.e2e


def test_make_up_publishes_the_demo_post() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "hack" / "up.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "export KUBECONFIG=" in proc.stdout
    assert "smoke: hello-herald is Published" in proc.stdout
