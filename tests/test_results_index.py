"""results/INDEX.md names every committed result, and the docs quote only results that exist (issue 22).

INDEX.md names a result by its path, by a pattern with `*` (one path level per `*`), or, for run
directories, by their folder or a folder above it: a run directory (a folder holding manifest.json) covers
only the files edgeprof writes there, so scratch such as `jobs/` is never covered. Everything from the
"## Removed" heading on lists what is gone and is not checked.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "results" / "INDEX.md"
# what a run directory holds besides scratch: bench/runner writes these (samples.csv only when sampling)
RUN_MEMBERS = re.compile(r"manifest\.json|records\.jsonl|samples\.csv|summary\.csv|sustain/[0-9a-f]+\.csv")
QUOTED = re.compile(r"(?<![\w/.-])results/[\w./<>*{},-]*")  # not edgeprof/results/..., a package path
DOCS = ("README.md", "ARCHITECTURE.md", "docs/benchmarks.md", "docs/findings.md")


def index_names() -> list[str]:
    text = INDEX.read_text(encoding="utf-8").split("\n## Removed", 1)[0]
    return re.findall(r"`(results/[^`\s]+)`", text)


def result_files() -> set[str]:
    """Files under results/ that a commit would hold: git's view in a checkout (ignored scratch left by local
    runs is not committed), else the tree (an unpacked source archive)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "results"],
                             cwd=ROOT, capture_output=True, check=True).stdout.decode()
        files = {f for f in out.split("\0") if f and (ROOT / f).is_file()}
        if files:
            return files
    except (OSError, subprocess.CalledProcessError):
        pass
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / "results").rglob("*") if p.is_file()}


def matches(pattern: str, files: set[str]) -> set[str]:
    return {f for f in files if f.count("/") == pattern.count("/") and fnmatch.fnmatchcase(f, pattern)}


def run_members(folder: str, files: set[str]) -> set[str]:
    """The run-directory files at or below `folder`."""
    covered = set()
    for f in files:
        if not f.startswith(folder):
            continue
        parts = f.split("/")
        for depth in range(len(parts) - 1, folder.rstrip("/").count("/"), -1):
            run_dir = "/".join(parts[:depth])
            if (ROOT / run_dir / "manifest.json").is_file():
                if RUN_MEMBERS.fullmatch("/".join(parts[depth:])):
                    covered.add(f)
                break
    return covered


def test_every_path_the_index_names_exists():
    files = result_files()
    missing = []
    for name in index_names():
        if "*" in name:
            ok = bool(matches(name, files))
        elif name.endswith("/"):
            ok = (ROOT / name).is_dir() and bool(run_members(name, files))
        else:
            ok = name in files
        if not ok:
            missing.append(name)
    assert not missing, f"results/INDEX.md names what is not there: {missing}"


def test_every_committed_result_is_named_in_the_index():
    files = result_files()
    covered = {"results/INDEX.md"}
    for name in index_names():
        if "*" in name:
            covered |= matches(name, files)
        elif name.endswith("/"):
            covered |= run_members(name, files)
        else:
            covered.add(name)
    unnamed = sorted(files - covered)
    assert not unnamed, f"name these in results/INDEX.md (figure, command, commit) or remove them: {unnamed}"


def test_no_jobs_scratch_is_committed():
    assert not [f for f in result_files() if "/jobs/" in f]


def expand(quoted: str) -> list[str]:
    """A quoted path as globs: <placeholder> is any name, {a,b} either."""
    path = re.sub(r"<[^>/]*>", "*", quoted.rstrip(".,;:)"))
    parts = re.split(r"\{([^}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def test_the_docs_quote_only_results_that_exist():
    files = result_files()
    stale = []
    for doc in DOCS:
        for quoted in QUOTED.findall((ROOT / doc).read_text(encoding="utf-8")):
            for path in expand(quoted):
                if path.endswith(".py") or path == "results/":
                    continue  # a module of the edgeprof.results package, or the folder itself
                if path.endswith("/") or "*" in path.split("/")[-1] or "." not in path.split("/")[-1]:
                    folder = path.rstrip("/") + "/"
                    ok = any(fnmatch.fnmatchcase(f, folder + "*") for f in files) if "*" in folder else \
                        any(f.startswith(folder) for f in files)
                    ok = ok or bool(matches(path, files))
                else:
                    ok = path in files
                if not ok:
                    stale.append(f"{doc}: {quoted}")
    assert not stale, f"these quote results that are not committed: {stale}"
