"""`QuantTable`: one artifact format's quantizations, the way a backend registers them.

Planning asks a backend's table whether it offers a name (and what that name is canonically: `f16` and
`fp16` are one ONNX variant); the CLI's `export` asks which to make by default. The tables themselves live
beside this file (`gguf.py`, `onnx.py`) or, for a plug-in backend, in its own folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeprof.errors import QuantError


@dataclass(frozen=True)
class QuantTable:
    """The quantizations of one artifact format."""

    format: str  # the artifact format, e.g. "gguf"
    lookup: Callable[[str], Any]  # name -> the quantization (its `.name` canonical), or a QuantError listing the offered
    defaults: tuple[str, ...]  # what `edgeprof export --to FORMAT` makes when no quantization is named

    def canonical(self, name: str) -> str:
        """The quantization's own name (`F16` -> `f16`); raises the table's one-line `QuantError`."""
        return self.lookup(name).name

    def offers(self, name: str) -> bool:
        try:
            self.lookup(name)
        except QuantError:
            return False
        return True
