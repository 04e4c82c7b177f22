"""The documentation's shell blocks, run against a real control plane, so the docs cannot rot.

Every fenced block tagged `sh`, `bash` or `shell` in the DOCUMENTS is one test, named
after its file and line (`README.md:25`). New blocks are picked up automatically: they run
unless marked. Each document is followed the way a reader would, top to bottom on a fresh
cluster: one new control plane per document (the CRD installed, as after `make up`), its
blocks run in order and share it, so later blocks see what earlier ones created. A block
runs as `bash -euo pipefail` in the repository's root, with kubectl and helm from
.tools/bin, the cluster's admin KUBECONFIG and a throwaway HOME, within a timeout.

Markers, an HTML comment on the line before the block:
    <!-- docs-test: skip reason="needs a real cluster with an Ingress" -->
        not run; the reason shows in pytest's summary (a reason is required);
    <!-- docs-test: stop-after=5 -->
        the block's last command runs until stopped (a watch): the commands before it must
        succeed, then it must still be running (or have succeeded) after 5 s, and is stopped;
    <!-- docs-test: timeout=300 -->
        a longer timeout than TIMEOUT;
    <!-- docs-test: fresh-cluster -->
        the block starts another path through the document (say, an alternative way to
        install): it and the blocks after it run on a new control plane.
A block in another language (or none) that holds a shell prompt (`$ kubectl ...`) must be
tagged `sh` or marked skip, so commands cannot slip past the test untagged.
Placeholders such as `<name>` are replaced with PLACEHOLDERS (objects the earlier blocks
created); a block with an unknown placeholder fails and says so.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CRD
from tests.support.controlplane import REPO, ControlPlane, tools_bin

pytestmark = pytest.mark.e2e

DOCUMENTS = [
    REPO / "README.md",
    REPO / "charts" / "herald" / "README.md",
    REPO / "n8n" / "README.md",
]
SHELLS = {"sh", "bash", "shell"}
TIMEOUT = 120.0

# What the runbook's placeholders stand for: a sample post applied by the quick start, its
# namespace and target, in the cluster the document's blocks build up.
PLACEHOLDERS = {
    "name": "launch-announcement",
    "namespace": "default",
    "target": "default",
}

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<info>[^`\s]*)")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
_PLACEHOLDER = re.compile(r"<([a-z][a-z0-9-]*)>")


@dataclass(frozen=True)
class Block:
    """One fenced shell block of a document."""

    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    skip: str | None = None
    stop_after: float | None = None
    timeout: float = TIMEOUT
    fresh_cluster: bool = False
    shell: bool = True  # tagged sh/bash/shell: run

    @property
    def where(self) -> str:
        return f"{shown(self.path)}:{self.line}"


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def parse_marker(body: str, where: str) -> dict[str, str]:
    """`skip reason="..."`, `stop-after=5`, `timeout=300` → {"skip": ..., ...}."""
    options: dict[str, str] = {}
    for word in shlex.split(body):
        key, _, value = word.partition("=")
        options[key] = value
    unknown = set(options) - {"skip", "reason", "stop-after", "timeout", "fresh-cluster"}
    if unknown:
        raise ValueError(f"{where}: unknown docs-test option(s) {sorted(unknown)}")
    if "skip" in options and not options.get("reason"):
        raise ValueError(f'{where}: docs-test skip needs reason="why"')
    return options


def blocks(path: Path, *, all_languages: bool = False) -> list[Block]:
    """The shell blocks of a Markdown document (with all_languages, every fenced block),
    with the marker before each (if any)."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, start = opening["fence"], i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        shell = opening["info"].lower() in SHELLS
        if not shell and not all_languages:
            continue
        where = f"{shown(path)}:{start + 1}"
        previous = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        marker = _MARKER.match(previous)
        options = parse_marker(marker["body"], where) if marker else {}
        found.append(
            Block(
                path=path,
                line=start + 1,
                code="\n".join(body) + "\n",
                skip=options.get("reason") if "skip" in options else None,
                stop_after=float(options["stop-after"]) if "stop-after" in options else None,
                timeout=float(options.get("timeout") or TIMEOUT),
                fresh_cluster="fresh-cluster" in options,
                shell=shell,
            )
        )
    return found


ALL_BLOCKS = [block for document in DOCUMENTS for block in blocks(document)]


def substitute(block: Block) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if name not in PLACEHOLDERS:
            pytest.fail(
                f"{block.where}: unknown placeholder <{name}>: add it to PLACEHOLDERS in "
                "tests/e2e/test_docs.py, or mark the block with "
                '<!-- docs-test: skip reason="..." -->',
                pytrace=False,
            )
        return shlex.quote(PLACEHOLDERS[name])

    return _PLACEHOLDER.sub(replace, block.code)


class Clusters:
    """One fresh control plane per document, started when its first block runs; the
    previous document's is stopped then (only one runs at a time)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.current: tuple[Path, ControlPlane, Path] | None = None
        self.started = 0

    def for_document(self, path: Path, fresh: bool = False) -> tuple[ControlPlane, Path]:
        if self.current is not None and self.current[0] == path and not fresh:
            return self.current[1], self.current[2]
        self.close()
        self.started += 1
        name = f"{self.started}-" + re.sub(r"[^a-z0-9]+", "-", shown(path).lower())
        cp = ControlPlane(workdir=self.root / name / "cp").start()
        home = self.root / name / "home"
        home.mkdir(parents=True)
        self.current = (path, cp, home)
        cp.kubectl("apply", "-f", str(CRD.parent))  # every CRD, as `make up` installs them
        for plural in ("scheduledposts", "socialaccounts", "clustersocialaccounts"):
            cp.wait_established(f"{plural}.herald.dev")
        return cp, home

    def close(self) -> None:
        if self.current is not None:
            self.current[1].stop()
            self.current = None


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clusters]:
    found = Clusters(tmp_path_factory.mktemp("docs"))
    try:
        yield found
    finally:
        found.close()


def split_last_command(script: str) -> tuple[str, str]:
    """(everything before the last command, the last command), continuation lines kept."""
    lines = script.rstrip("\n").split("\n")
    last = len(lines) - 1
    while last > 0 and lines[last - 1].rstrip().endswith("\\"):
        last -= 1
    return "\n".join(lines[:last]) + "\n", "\n".join(lines[last:]) + "\n"


def run_script(
    script: str, limit: float, env: dict[str, str], home: Path
) -> tuple[int | None, str]:
    """Run `script` for at most `limit` seconds: (exit status, or None if it was still
    running and got stopped; its stdout and stderr)."""
    out = home / "output"
    with out.open("w") as output:
        proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
        )
        deadline = time.monotonic() + limit
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        status = proc.poll()
        if status is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
    return status, out.read_text()[-4000:]


def run_block(block: Block, script: str, cp: ControlPlane, home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "HELM_"))}
    env.update(
        KUBECONFIG=str(cp.kubeconfig),
        HOME=str(home),
        PATH=f"{tools_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
    )

    def report(problem: str, output: str) -> str:
        return f"{block.where}: {problem}\n--- block ---\n{script}--- output ---\n{output}"

    steps = [(script, block.timeout)]
    if block.stop_after is not None:
        head, watch = split_last_command(script)
        steps = [(head, block.timeout), (watch, block.stop_after)]
    for step, (code, limit) in enumerate(steps):
        status, output = run_script(code, limit, env, home)
        if step == 1:
            # The watch: still running when stopped (or done without error) is a pass.
            assert status in (None, 0), report(f"the last command exited {status}", output)
        else:
            assert status is not None, report(f"still running after {limit:.0f} s", output)
            assert status == 0, report(f"exited {status}", output)


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.where for b in ALL_BLOCKS])
def test_doc_block_runs(block: Block, clusters: Clusters) -> None:
    if block.skip is not None:
        pytest.skip(f"{block.where}: {block.skip}")
    script = substitute(block)
    cp, home = clusters.for_document(block.path, fresh=block.fresh_cluster)
    run_block(block, script, cp, home)


def test_every_document_has_blocks_and_every_skip_a_reason() -> None:
    """The harness sees the blocks (a parser regression would silently test nothing)."""
    for document in DOCUMENTS:
        found = blocks(document)
        assert [b for b in found if b.skip is None], f"no runnable block found in {document}"
    assert all(b.skip for b in ALL_BLOCKS if b.skip is not None)


def test_prompts_outside_shell_blocks_are_marked() -> None:
    """`$ kubectl ...` in an untagged (or console, text...) block would never run: it must
    be tagged sh, or marked skip with the reason."""
    unmarked = [
        b.where
        for document in DOCUMENTS
        for b in blocks(document, all_languages=True)
        if not b.shell and b.skip is None and re.search(r"^\s*\$ ", b.code, re.MULTILINE)
    ]
    assert unmarked == [], (
        "blocks with shell prompts that the docs test does not run; tag them ```sh "
        '(without the prompts) or add <!-- docs-test: skip reason="..." -->'
    )


def test_parser_reads_markers_and_fences(tmp_path: Path) -> None:
    doc = tmp_path / "sample.md"
    text = (
        "# T\n\n```sh\necho one\n```\n\n"
        '<!-- docs-test: skip reason="needs a real cluster" -->\n```bash\nexit 1\n```\n'
        "\n```yaml\na: b\n```\n\n<!-- docs-test: stop-after=2 timeout=9 fresh-cluster -->\n\n"
        "````shell\nkubectl get sp -w\n```\nstill inside\n````\n"
    )
    doc.write_text(text)
    found = blocks(doc)
    assert [(b.line, b.skip, b.stop_after, b.timeout, b.fresh_cluster) for b in found] == [
        (3, None, None, TIMEOUT, False),
        (8, "needs a real cluster", None, TIMEOUT, False),
        (18, None, 2.0, 9.0, True),
    ]
    assert found[0].code == "echo one\n"
    assert split_last_command("a\nb \\\n  c\n") == ("a\n", "b \\\n  c\n")
    assert split_last_command("w\n") == ("\n", "w\n")
    assert [(b.line, b.shell) for b in blocks(doc, all_languages=True)] == [
        (3, True),
        (8, True),
        (12, False),
        (18, True),
    ]
    assert found[2].code == "kubectl get sp -w\n```\nstill inside\n"
    with pytest.raises(ValueError, match="skip needs reason"):
        parse_marker("skip", "x.md:1")
    with pytest.raises(ValueError, match="unknown docs-test option"):
        parse_marker("skip-it", "x.md:1")
