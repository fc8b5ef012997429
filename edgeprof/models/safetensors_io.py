"""A small streaming reader and writer for the safetensors format.

Why not the `safetensors` package: its numpy API builds a whole checkpoint in memory before writing
(an 8B model would need 16+ GB), and it cannot read bf16 into numpy. The format is a JSON header and
raw little-endian buffers, so streaming tensor by tensor takes a few lines.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from edgeprof.errors import ArtifactError

_NUMPY_TO_ST = {np.dtype("float32"): "F32", np.dtype("float16"): "F16"}
_ST_TO_NUMPY = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


def write_streaming(path: Path, specs: Iterable[tuple[str, tuple[int, ...], np.dtype]],
                    produce: Iterator[np.ndarray]) -> None:
    """Write tensors one at a time: `specs` (name, shape, dtype) fixes the header, `produce` yields data.

    Peak memory is one tensor, whatever the model size.
    """
    header: dict[str, dict] = {}
    offset = 0
    for name, shape, dtype in specs:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": _NUMPY_TO_ST[np.dtype(dtype)], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the spec recommends 8-byte alignment of the data section
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(raw)))
        out.write(raw)
        for name, array in zip(header, produce):
            meta = header[name]
            if list(array.shape) != meta["shape"] or _NUMPY_TO_ST[array.dtype] != meta["dtype"]:
                raise ValueError(f"tensor {name} does not match its header entry")
            out.write(np.ascontiguousarray(array).tobytes())


class SafetensorsFile:
    """Memory-mapped read access to one .safetensors file; `read(name)` returns float32."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with open(path, "rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(header_len))
        except (OSError, struct.error, ValueError) as exc:
            raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from None
        header.pop("__metadata__", None)
        self._header = header
        self._data_start = 8 + header_len
        self._map = np.memmap(path, dtype=np.uint8, mode="r")

    def names(self) -> list[str]:
        return list(self._header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._header[name]["shape"])

    def read(self, name: str) -> np.ndarray:
        """The tensor as float32 (bf16 widened exactly by a 16-bit shift)."""
        meta = self._header[name]
        start, end = meta["data_offsets"]
        dtype = _ST_TO_NUMPY.get(meta["dtype"])
        if dtype is None:
            raise ArtifactError(f"{self.path}: tensor {name} has unsupported dtype {meta['dtype']}")
        raw = self._map[self._data_start + start:self._data_start + end].view(dtype).reshape(meta["shape"])
        if meta["dtype"] == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32)


class SafetensorsCheckpoint:
    """All `*.safetensors` shards of an HF folder behind one name -> tensor lookup."""

    def __init__(self, folder: Path):
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise ArtifactError(f"{folder}: no *.safetensors weights found")
        self._owner: dict[str, SafetensorsFile] = {}
        for file in files:
            st = SafetensorsFile(file)
            for name in st.names():
                self._owner[name] = st

    def __contains__(self, name: str) -> bool:
        return name in self._owner

    def names(self) -> list[str]:
        """Every tensor name over all shards."""
        return list(self._owner)

    def read(self, name: str) -> np.ndarray:
        if name not in self._owner:
            raise ArtifactError(f"checkpoint has no tensor {name!r}")
        return self._owner[name].read(name)
