"""herald.lean: the Kubernetes client library without its generated modules, in a fresh
interpreter (this test process may have imported the library already)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from herald import lean

ROOT = Path(__file__).resolve().parents[2]


def _all_of(init: Path) -> list[str]:
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            names: list[str] = ast.literal_eval(node.value)
            return names
    raise AssertionError(f"no __all__ in {init}")


@pytest.mark.parametrize("package", lean.PACKAGES)
def test_every_exported_name_has_its_module(package: str) -> None:
    import importlib.util

    top = importlib.util.find_spec("kubernetes_asyncio")
    assert top is not None and top.submodule_search_locations
    init = Path(next(iter(top.submodule_search_locations))).joinpath(
        *package.split(".")[1:], "__init__.py"
    )
    # The stand-in exports exactly what the real package does: a library upgrade that
    # changes how its __init__ imports shows up here.
    assert set(lean.exports(init)) == set(_all_of(init))


def test_the_operator_loads_credentials_without_the_generated_modules(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t0k3n"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    script = textwrap.dedent(
        f"""
        import json, sys
        import herald.controller, kopf  # what `herald run` imports
        from herald import kubeauth
        creds = kubeauth.load_sync(kubeauth.Source(kubeconfig={str(kubeconfig)!r}))
        from kubernetes_asyncio.client import V1ObjectMeta
        import kubernetes_asyncio.client.models as models
        loaded = [m for m in sys.modules if m.startswith("kubernetes_asyncio.client.")]
        print(json.dumps({{
            "authorization": creds.authorization,
            "server": creds.server,
            "meta": V1ObjectMeta.__module__,
            "same": models.V1ObjectMeta is V1ObjectMeta,
            "modules": len(loaded),
        }}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["authorization"] == "Bearer t0k3n"
    assert got["server"] == "https://127.0.0.1:6443"
    assert got["meta"] == "kubernetes_asyncio.client.models.v1_object_meta"
    assert got["same"] is True
    # The real package imports ~850; the loader and kopf need a few dozen.
    assert got["modules"] < 60, got["modules"]
