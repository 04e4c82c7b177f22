"""Running the real helm (from .tools/bin) against charts/herald, and reading what it renders."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.controlplane import REPO, require_binary

CHART = REPO / "charts" / "herald"
_files = itertools.count()


def kubernetes_version() -> str:
    """The Kubernetes version the tests' API server runs (hack/versions.env)."""
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        if line.startswith("KUBERNETES_VERSION="):
            return line.partition("=")[2].strip()
    raise LookupError("KUBERNETES_VERSION is not in hack/versions.env")


@dataclass
class Helm:
    """helm with its caches in `home` and the cluster (if any) given by `env`'s KUBECONFIG."""

    env: Mapping[str, str]
    home: Path

    def _command(self, args: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
        if args[:1] == ("template",) and not any(a.startswith("--kube-version") for a in args):
            # Without a cluster helm assumes the Kubernetes version it was built for; the
            # source build of hack/tools.sh says v1.20, below the chart's kubeVersion.
            # Render for the version the tests' API server runs.
            args = (*args, "--kube-version", kubernetes_version())
        env = dict(self.env)
        env.update(
            HELM_CACHE_HOME=str(self.home / "cache"),
            HELM_CONFIG_HOME=str(self.home / "config"),
            HELM_DATA_HOME=str(self.home / "data"),
        )
        return [require_binary("helm"), *args], env

    def env_for_shell(self) -> dict[str, str]:
        """The environment for a shell command line that calls helm (and kubectl, found
        on the PATH of `env`, as the control plane's environment has it)."""
        _, env = self._command(())
        return env

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        command, env = self._command(args)
        proc = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        """helm running in the background (say `helm test`, which waits for a pod); the
        caller bounds it with communicate(timeout=...)."""
        command, env = self._command(args)
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    def values_args(self, values: Mapping[str, Any] | None, name: str = "values") -> list[str]:
        """`-f <file>` for `values` (written under home), or nothing."""
        if not values:
            return []
        path = self.home / f"{name}-{next(_files)}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(dict(values)))
        return ["-f", str(path)]

    def template(
        self,
        release: str = "herald",
        namespace: str = "herald",
        values: Mapping[str, Any] | None = None,
        *extra: str,
    ) -> str:
        return self.run(
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            *self.values_args(values),
            *extra,
        ).stdout


def documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a multi-document stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(
    docs: Iterable[dict[str, Any]], kind: str, name: str | None = None
) -> list[dict[str, Any]]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
