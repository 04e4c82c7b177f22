"""The krew manifest (plugins/herald.yaml) and the archive `make plugin` builds for it."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _packager() -> ModuleType:
    spec = importlib.util.spec_from_file_location("herald_plugin_packager", REPO / "hack/plugin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/ as `make plugin` builds it (hack/plugin.py, the target's command)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, str(REPO / "hack" / "plugin.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def test_manifest_has_krews_fields_and_the_built_archives_sha256(built: Path) -> None:
    version = "v" + tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    (archive,) = built.glob("kubectl-herald-*.tar.gz")
    assert archive.name == f"kubectl-herald-{version}.tar.gz"
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (built / f"{archive.name}.sha256").read_text() == f"{sha256}  {archive.name}\n"

    manifest: dict[str, Any] = yaml.safe_load((built / "herald.yaml").read_text())
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin"
    assert manifest["metadata"]["name"] == "herald"  # `kubectl herald`
    spec = manifest["spec"]
    assert spec["version"] == version and re.fullmatch(r"v\d+\.\d+\.\d+", version)
    assert spec["homepage"].startswith("https://")
    assert 0 < len(spec["shortDescription"]) <= 50 and spec["description"].strip()
    assert set(spec) <= {
        "version",
        "homepage",
        "shortDescription",
        "description",
        "caveats",
        "platforms",
    }
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    for platform in spec["platforms"]:
        expressions = platform["selector"]["matchExpressions"]
        assert {e["key"] for e in expressions} <= {"os", "arch"}
        assert all(e["operator"] in ("In", "NotIn", "Exists", "DoesNotExist") for e in expressions)
        assert platform["uri"].startswith("https://") and platform["uri"].endswith(archive.name)
        assert platform["sha256"] == sha256
        assert platform["bin"] == "kubectl-herald"
        bin_member = members[platform["bin"]]
        assert bin_member.isfile() and bin_member.mode & 0o111, "the bin is executable"
        for item in platform["files"]:
            assert any(fnmatch(name, item["from"]) for name in members), item
        # krew-index reviewers require the licence in the archive.
        assert any(item["from"] == "LICENSE" for item in platform["files"])
    # The template itself is a manifest with placeholders, nothing else to fill in.
    template = (REPO / "plugins" / "herald.yaml").read_text()
    assert set(re.findall(r"\$\{(\w+)\}", template)) == {"VERSION", "SHA256"}


def test_archive_is_reproducible() -> None:
    packager = _packager()
    files = {"b": (b"two", 0o644), "a": (b"one", 0o755)}
    assert packager.archive(files) == packager.archive(dict(reversed(files.items())))


def test_launcher_installs_on_first_run_then_runs_the_plugin(built: Path, tmp_path: Path) -> None:
    """The archive's kubectl-herald, run as krew runs it: the first run makes the
    virtualenv and installs the wheel (here without a registry: --no-deps, and the
    dependencies then come from this venv through a .pth); later runs exec the plugin."""
    (archive,) = built.glob("kubectl-herald-*.tar.gz")
    unpacked = tmp_path / "store"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    launcher = unpacked / "kubectl-herald"
    assert subprocess.run(["sh", "-n", str(launcher)], check=False).returncode == 0
    home = tmp_path / "home"
    env = {
        **os.environ,
        "KUBECTL_HERALD_HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PIP_NO_INDEX": "1",
        "PIP_NO_DEPS": "1",
    }
    first = subprocess.run(
        [str(launcher), "--help"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert "first run, installing into" in first.stderr, first.stderr
    (venv,) = home.iterdir()
    assert (venv / "bin" / "kubectl-herald").exists(), first.stderr
    purelib = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "herald-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    second = subprocess.run(
        [str(launcher), "list", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    assert "usage: kubectl herald list" in second.stdout
    assert "first run" not in second.stderr
