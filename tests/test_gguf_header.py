"""The lean GGUF header reader against the `gguf` package's own reader, on files the package writes."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from edgeprof.models.gguf_header import KEEP_STRINGS, GgufHeaderError, SkippedStrings, read_gguf_header  # noqa: E402


def _write(path, endian):
    writer = gguf.GGUFWriter(str(path), arch="llama", endianess=endian)
    writer.add_uint32("llama.block_count", 3)
    writer.add_int64("test.int64", -5)
    writer.add_float32("test.f32", 0.125)
    writer.add_float64("test.f64", 1e-300)
    writer.add_bool("test.bool", True)
    writer.add_string("general.name", "tiny ünïcode")
    writer.add_array("test.ints", [1, 2, 3])
    writer.add_array("test.floats", [0.5, 1.5])
    writer.add_array("test.few_strings", ["a", "bc"])
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(KEEP_STRINGS + 5)])
    writer.add_tensor("token_embd.weight", np.arange(64 * 8, dtype=np.float32).reshape(8, 64))
    writer.add_tensor("blk.0.attn_q.weight", np.ones((4, 32), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("endian", ["LITTLE", "BIG"])
def test_header_equals_the_gguf_readers(tmp_path, endian):
    path = tmp_path / "m.gguf"
    _write(path, getattr(gguf.GGUFEndian, endian))
    ours = read_gguf_header(path)
    theirs = gguf.GGUFReader(path, "r")
    for key, field in theirs.fields.items():
        if key.startswith("GGUF."):
            continue
        if key == "tokenizer.ggml.tokens":
            assert ours.fields[key] == SkippedStrings(KEEP_STRINGS + 5)  # stepped over, its length kept
        else:
            assert ours.fields[key] == pytest.approx(field.contents()), key
    assert ours.fields["general.name"] == "tiny ünïcode"
    assert [(t.name, t.shape, t.ggml_type, t.data_offset, t.n_bytes) for t in ours.tensors] == [
        (t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), t.data_offset, int(t.n_bytes))
        for t in theirs.tensors]


def test_a_truncated_or_foreign_file_is_a_header_error(tmp_path):
    path = tmp_path / "m.gguf"
    _write(path, gguf.GGUFEndian.LITTLE)
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:200])  # inside the token strings
    with pytest.raises(GgufHeaderError):
        read_gguf_header(cut)
    foreign = tmp_path / "x.gguf"
    foreign.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(GgufHeaderError, match="magic"):
        read_gguf_header(foreign)
