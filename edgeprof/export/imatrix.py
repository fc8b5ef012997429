"""Importance matrices for calibrated GGUF quantizations: made once per (parent model, calibration text).

The matrix is collected by edgeprof's own llama.cpp eval callback (`backends/llamacpp/imatrix`, run in a
child process so a native crash fails one export) over the calibration text: `--calibration-text FILE`, by
default the text fidelity is measured over (`texts.default_fidelity_text`; a sweep that judges
calibration should calibrate on other text, as scripts/calibrated_sweep.py does). It is cached under
`$EDGEPROF_CACHE/imatrix/` by the parent GGUF's sha256, the text's sha256 and the chunk length; the
quantized artifact's sidecar names the matrix's own sha256 and the text's, so calibrated files made from
different texts never share a cache entry.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeprof.texts import read_fidelity_text
from edgeprof.errors import QuantError
from edgeprof.export.artifacts import partial_path, sha256_of
from edgeprof.lifetime import child_env
from edgeprof.paths import cache_root, ensure_writable_dir

CHUNK_TOKENS = 512  # llama-imatrix's default context


@dataclass(frozen=True)
class Imatrix:
    path: Path
    sha256: str  # of the imatrix file
    text_sha256: str
    text: str  # the calibration text's path

    @property
    def label(self) -> str:
        """What a sidecar records: `<imatrix sha256> <text sha256> <text path>`."""
        return f"{self.sha256} {self.text_sha256} {self.text}"


def ensure_imatrix(parent_gguf: Path, parent_sha256: str, calibration_text: str | Path | None = None,
                   threads: int | None = None) -> Imatrix:
    """The cached importance matrix of `parent_gguf` over the calibration text, collecting it if needed."""
    text = read_fidelity_text(calibration_text, min_bytes=CHUNK_TOKENS)
    folder = ensure_writable_dir(cache_root() / "imatrix", "imatrix cache")
    final = folder / f"{parent_sha256[:16]}-{text.sha256[:16]}-c{CHUNK_TOKENS}.imatrix.gguf"
    if not final.exists():
        tmp = partial_path(final)
        command = [sys.executable, "-X", "faulthandler", "-m", "edgeprof.backends.llamacpp.imatrix_child", str(parent_gguf), text.path,
                   str(tmp), str(CHUNK_TOKENS), str(threads or 0), Path(text.path).name]
        try:
            result = subprocess.run(command, capture_output=True, text=True, env=child_env())
            if result.returncode != 0:
                raise QuantError(f"collecting the importance matrix failed: {crash_detail(result.stderr)}")
            tmp.replace(final)
        finally:
            tmp.unlink(missing_ok=True)
    return Imatrix(final, sha256_of(final), text.sha256, text.path)


def crash_detail(stderr: str) -> str:
    """What a failed collector child said, in one line: for a native crash, Python's fatal-error line and the
    innermost Python frame of the crashing thread (faulthandler's dump ends in a list of extension modules,
    which says nothing); otherwise the last two lines."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    fatal = next((i for i, line in enumerate(lines) if line.startswith("Fatal Python error")), None)
    if fatal is None:
        return " | ".join(lines[-2:]) or "no detail"
    frame = next((line for line in lines[fatal:] if line.startswith("File ")), "")
    return " | ".join(part for part in (lines[fatal], frame) if part)
