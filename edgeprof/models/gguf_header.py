"""A GGUF file's header (its metadata and tensor table) read without its tensor data, in milliseconds.

`gguf.GGUFReader` builds a numpy view for every element of every field. A Llama-3 vocabulary (128k token
strings, 280k merges) makes that about 10 s per file on the project's CPU host, and a plain
`edgeprof run` of a 1B GGUF read it four times (the run's plan, the KV prediction twice, the roof shares):
53 s of a run whose measurement took 3 (measured; on the H200 60 s of every 67). This reader walks the same
layout with `struct` on a memory map, reads numeric arrays in one call each and steps over string arrays
it is not asked to keep, and takes the value types and quantization block sizes from the `gguf` package.

Layout (GGUF v2/v3, little- or big-endian): magic "GGUF", u32 version, u64 tensor count, u64 key count;
each key: string, u32 value type, value (an array is u32 element type, u64 count, elements); each tensor:
string name, u32 n_dims, u64 dims (ne0 first), u32 ggml type, u64 offset within the data section, which
starts at the next multiple of `general.alignment` (32) after the header. A string is u64 length + bytes.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
KEEP_STRINGS = 256  # string arrays up to this length are read; longer ones (vocabularies, merges) are skipped


class GgufHeaderError(ValueError):
    """The bytes are not a GGUF header this reader understands (bad magic, version, type, or truncated)."""


@dataclass(frozen=True)
class SkippedStrings:
    """A string array longer than KEEP_STRINGS, stepped over: only its length is known."""

    count: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ne0 first, as the file (and gguf.GGUFReader) list it
    ggml_type: int
    data_offset: int  # absolute position of its first byte in the file

    @property
    def n_bytes(self) -> int:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(self.ggml_type)]
        return math.prod(self.shape) // block * size


@dataclass(frozen=True)
class GgufHeader:
    version: int
    fields: dict[str, object]  # key -> int, float, bool, str, list of those, or SkippedStrings
    tensors: tuple[TensorInfo, ...]


class _Cursor:
    def __init__(self, buffer, order: str):
        self.buffer, self.order, self.at = buffer, order, 0

    def take(self, fmt: str):
        values = struct.unpack_from(self.order + fmt, self.buffer, self.at)
        self.at += struct.calcsize(self.order + fmt)
        return values

    def one(self, fmt: str):
        return self.take(fmt)[0]

    def string(self) -> str:
        length = self.one("Q")
        end = self.at + length
        if end > len(self.buffer):
            raise GgufHeaderError(f"a string runs past the end of the file ({end} > {len(self.buffer)})")
        text = bytes(self.buffer[self.at:end]).decode("utf-8", errors="replace")
        self.at = end
        return text

    def skip_strings(self, count: int) -> None:
        unpack, order = struct.unpack_from, self.order + "Q"
        at, buffer = self.at, self.buffer
        for _ in range(count):
            at += 8 + unpack(order, buffer, at)[0]
        if at > len(buffer):
            raise GgufHeaderError("a string array runs past the end of the file")
        self.at = at

    def value(self, value_type: int):
        if value_type == STRING:
            return self.string()
        if value_type == ARRAY:
            item_type, count = self.one("I"), self.one("Q")
            if item_type == STRING:
                if count > KEEP_STRINGS:
                    self.skip_strings(count)
                    return SkippedStrings(count)
                return [self.string() for _ in range(count)]
            if item_type in SCALAR_FORMATS:
                return list(self.take(f"{count}{SCALAR_FORMATS[item_type]}"))
            return [self.value(item_type) for _ in range(count)]  # arrays of arrays (not written by llama.cpp)
        if value_type in SCALAR_FORMATS:
            return self.one(SCALAR_FORMATS[value_type])
        raise GgufHeaderError(f"unknown GGUF value type {value_type}")


def read_gguf_header(path: Path) -> GgufHeader:
    """The header of the GGUF at `path`; GgufHeaderError (or OSError) where it is not one."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GgufHeaderError("bad magic (not a GGUF file)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            try:
                return _parse(memoryview(mapped))
            except struct.error as exc:
                raise GgufHeaderError(f"truncated header ({exc})") from None


def _parse(buffer: memoryview) -> GgufHeader:
    try:
        order = "<"
        version = struct.unpack_from("<I", buffer, 4)[0]
        if version & 0xFFFF == 0:  # written by a big-endian host
            order, version = ">", struct.unpack_from(">I", buffer, 4)[0]
        if version not in (2, 3):
            raise GgufHeaderError(f"GGUF version {version} (this reader knows versions 2 and 3)")
        cursor = _Cursor(buffer, order)
        cursor.at = 8
        n_tensors, n_fields = cursor.take("QQ")
        fields = {}
        for _ in range(n_fields):
            key = cursor.string()
            fields[key] = cursor.value(cursor.one("I"))
        infos = []
        for _ in range(n_tensors):
            name = cursor.string()
            n_dims = cursor.one("I")
            shape = cursor.take(f"{n_dims}Q")
            infos.append((name, tuple(int(d) for d in shape), cursor.one("I"), cursor.one("Q")))
        alignment = int(fields.get("general.alignment", 32) or 32)
        data_start = -(-cursor.at // alignment) * alignment
        tensors = tuple(TensorInfo(name, shape, kind, data_start + offset) for name, shape, kind, offset in infos)
        return GgufHeader(version, fields, tensors)
    finally:
        buffer.release()
