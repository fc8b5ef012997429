"""The package layout holds: imports follow ARCHITECTURE.md's one-way flow with no cycles (the contracts in
pyproject's [tool.importlinter], also run by .ci/run), and the CLI module imports no heavy native or optional
library before a command needs it, so `edgeprof --help` stays quick."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("llama_cpp", "onnxruntime", "torch", "optimum", "transformers", "dask", "distributed", "matplotlib",
         "numpy", "huggingface_hub", "gguf", "pynvml")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_imports_follow_the_flow_and_form_no_cycle():
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_cli_module_imports_no_heavy_library():
    code = f"import sys, edgeprof.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
