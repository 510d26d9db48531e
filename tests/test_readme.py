"""README.md as a newcomer reads it: its code runs as written, again and again, its links
lead somewhere, and it documents the public API.

- Every ``python`` block runs in a fresh working directory, twice there (a second run
  finds what the first left behind); when the README follows it with "prints" and a
  ``text`` block, its output must be exactly that.
- The shell blocks of the sections in ``RUN_SHELL`` run with bash, twice, with
  ``roomstate`` standing for ``python -m roomstate`` of the package under test. Every
  other shell block belongs to a section of ``NOT_RUN_SHELL``, which says why it is not run
  and is reported as a skip; a shell block in an unlisted section fails.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import roomstate
import roomstate.aio

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HOME = "https://github.com/roomstate/roomstate"
# Links into the repository, and the checkout path each names.
REPO_URL = re.compile(r"https://(?:github\.com/roomstate/roomstate/(?:blob|tree)/main|raw\.githubusercontent\.com/roomstate/roomstate/main)/([^)\s#]+)")

# The subprocesses must run the same roomstate as this test process.
_PACKAGE_PARENT = str(Path(roomstate.__file__).resolve().parents[1])
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_PACKAGE_PARENT, os.environ.get("PYTHONPATH")])))

SHELL = {"sh", "console", "bash", "shell"}
RUN_SHELL = {"Quick start"}
NOT_RUN_SHELL = {
    "Set up": "installs into the running environment and runs this suite: checked in a fresh venv and by .ci/run",
    "Development": "rebuilds the package under test and runs the test and benchmark suites",
    "Command line": "transcripts with timings, of files the README does not all give; the CLI tests drive the commands",
}


class Block:
    def __init__(self, lang, code, section, line, prints):
        self.lang, self.code, self.section, self.line, self.prints = lang, code, section, line, prints

    def __repr__(self):
        return f"{self.lang}@{self.line}"


def sections(text):
    """``{title: body}`` of the level-2 sections (the text before the first is under "")."""
    out, title = {"": []}, ""
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            out[title] = []
        out[title].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def blocks(text):
    """The fenced code blocks, with their section and the expected output a "prints" gives them."""
    found, section, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        if line.startswith("```"):
            lang, start = line[3:].strip(), i + 1
            i += 1
            while not lines[i].startswith("```"):
                i += 1
            before = [ln for ln in lines[: start - 1] if ln.strip()]
            found.append(Block(lang, "\n".join(lines[start:i]) + "\n", section, start, before[-1].strip() == "prints"))
        i += 1
    for b, nxt in zip(found, found[1:] + [None]):
        b.prints = nxt.code if nxt is not None and nxt.prints and nxt.lang == "text" else None
    return found


TEXT = README.read_text(encoding="utf-8")
BLOCKS = blocks(TEXT)
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SHELL_BLOCKS = [b for b in BLOCKS if b.lang in SHELL]


def run_twice(cmd, cwd, env=ENV):
    outs = []
    for _ in range(2):
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"run {len(outs) + 1} of {cmd}:\n{proc.stdout}\n{proc.stderr}"
        outs.append(proc.stdout)
    return outs


def test_the_readme_has_the_blocks_a_newcomer_runs():
    assert len(PYTHON) >= 3
    assert {b.section for b in PYTHON} >= {"Quick start", "Python API", "asyncio: `roomstate.aio`"}
    assert all(b.prints for b in PYTHON), [b for b in PYTHON if not b.prints]
    assert any(b.section == "Quick start" for b in SHELL_BLOCKS)


@pytest.mark.parametrize("block", PYTHON, ids=repr)
def test_python_block_runs_as_written_twice(block, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for out in run_twice([sys.executable, str(script)], cwd):
        if block.prints is not None:
            assert out == block.prints


@pytest.mark.parametrize("section", sorted({b.section for b in SHELL_BLOCKS}))
def test_shell_blocks_run_as_written_twice(section, tmp_path):
    mine = [b for b in SHELL_BLOCKS if b.section == section]
    if section not in RUN_SHELL:
        assert section in NOT_RUN_SHELL, f"shell blocks in {section!r}: run them or say why not"
        pytest.skip(f"{len(mine)} shell block(s) of {section!r} not run: {NOT_RUN_SHELL[section]}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "roomstate"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m roomstate "$@"\n')
    shim.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    env = dict(ENV, PATH=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for block in mine:
        for out in run_twice(["bash", "-euo", "pipefail", "-c", block.code], cwd, env):
            assert out.strip()
            if "roomstate current" in block.code:
                assert '"type": "m.room.power_levels"' in out


def test_links_into_the_repository_name_files_it_has():
    named = REPO_URL.findall(TEXT)
    assert any(p == "bench/results.png" for p in named)  # the plot
    missing = [p for p in named if not (ROOT / p).exists()]
    assert not missing


def test_no_relative_links_to_files():
    """A README read on a package index has no checkout beside it: files are linked by URL."""
    relative = [t for t in re.findall(r"\]\(([^)\s]+)\)", TEXT) if not t.startswith(("https://", "http://", "#"))]
    assert not relative


def slug(heading):
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_anchors_name_headings():
    anchors = set(re.findall(r"\]\(#([^)]+)\)", TEXT))
    headings = {slug(h) for h in re.findall(r"^#+ (.+)$", TEXT, flags=re.M)}
    assert anchors <= headings


UNREACHABLE = ["DESIGN.md", "the performance issue", "issue 4"]


@pytest.mark.parametrize(
    "section",
    list(sections(TEXT)),
)
def test_no_pointers_to_what_a_reader_does_not_have(section):
    """No documents that are not in the repository; test files only by URL."""
    body = sections(TEXT)[section]
    assert not [name for name in UNREACHABLE if name in body]
    assert not re.findall(r"(?<![/\w])(?:tests/)?test_\w+\.py(?!`\]\(https://)", body)


def test_the_public_api_is_documented():
    names = set(roomstate.__all__) - {"aio"}
    methods = {m for m in vars(roomstate.StateStore) if not m.startswith("_")}
    async_methods = {m for m in vars(roomstate.aio.AsyncStateStore) if not m.startswith("_")}
    assert {"StorageError", "has_event", "is_outlier", "event_depth"} <= names | methods
    quoted = " ".join(re.findall(r"`[^`\n]+`", TEXT))
    undocumented = sorted(n for n in names | methods | async_methods if not re.search(rf"\b{n}\b", quoted))
    assert not undocumented
