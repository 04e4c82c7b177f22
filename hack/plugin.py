"""Package `kubectl herald` for krew: `make plugin`.

Builds into dist/ (or --out):
  kubectl-herald-v<version>.tar.gz         the archive krew downloads: a launcher named
                                           kubectl-herald, Herald's wheel and a README
  kubectl-herald-v<version>.tar.gz.sha256  its checksum, as `sha256sum` prints it
  herald.yaml                              plugins/herald.yaml with version and sha256 filled in

The plugin needs compiled dependencies (pydantic-core), so it cannot be one zipapp for
every platform: the launcher makes a virtualenv on first use and installs the wheel
there. The archive is reproducible (sorted entries, fixed times and owners), so the same
sources give the same sha256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "plugins" / "herald.yaml"

LAUNCHER = """#!/bin/sh
# kubectl-herald as krew installs it: Herald's plugin from the wheel beside this script,
# in a virtualenv made on first use (python3 >= 3.11; pip fetches its dependencies then).
set -eu
here=$(CDPATH='' cd -- "$(dirname -- "$(readlink -f -- "$0")")" && pwd)
venv="${KUBECTL_HERALD_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-herald}/@VERSION@"
if [ ! -x "$venv/bin/kubectl-herald" ]; then
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "error: kubectl herald needs python3 >= 3.11 on PATH" >&2
        exit 1
    fi
    echo "kubectl herald: first run, installing into $venv" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \\
        "$here"/herald-*.whl >&2
fi
exec "$venv/bin/kubectl-herald" "$@"
"""

README = """kubectl herald @VERSION@: inspect and steer Herald's ScheduledPosts.

  kubectl herald --help
  kubectl herald list -A -o wide
  kubectl herald describe NAME
  source <(kubectl herald completion bash)     # or zsh

The first run needs python3 >= 3.11 and makes a virtualenv under ~/.cache/kubectl-herald
(KUBECTL_HERALD_HOME to put it elsewhere). Documentation: https://github.com/herald-dev/herald
"""


def version() -> str:
    return "v" + tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def build_wheel(into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
         "--disable-pip-version-check", "--wheel-dir", str(into), str(REPO)],
        check=True,
        timeout=300,
    )  # fmt: skip
    (wheel,) = into.glob("herald-*.whl")
    return wheel


def archive(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A reproducible .tar.gz of `files` (name: (content, mode))."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            content, mode = files[name]
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def render(manifest: str, ver: str, sha256: str) -> str:
    return manifest.replace("${VERSION}", ver).replace("${SHA256}", sha256)


def build(out: Path) -> Path:
    """Build the archive, its checksum and the manifest into `out`; returns the archive."""
    ver = version()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        files = {
            "kubectl-herald": (LAUNCHER.replace("@VERSION@", ver).encode(), 0o755),
            wheel.name: (wheel.read_bytes(), 0o644),
            "README.md": (README.replace("@VERSION@", ver).encode(), 0o644),
            "LICENSE": ((REPO / "LICENSE").read_bytes(), 0o644),
        }
    data = archive(files)
    path = out / f"kubectl-herald-{ver}.tar.gz"
    path.write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    (out / f"{path.name}.sha256").write_text(f"{sha256}  {path.name}\n")
    (out / "herald.yaml").write_text(render(MANIFEST.read_text(), ver, sha256))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="where to build")
    path = build(parser.parse_args().out)
    print(f"{path} ({path.stat().st_size} bytes)\n{path}.sha256\n{path.parent / 'herald.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
