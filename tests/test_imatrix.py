"""The importance matrix edgeprof collects through llama.cpp's eval callback, against numpy.

The reference (tests/reference_forward.py, an independent numpy forward pass of the HF checkpoint) records
the input of every projection; Σ x² per column over the same tokens must equal what the callback summed.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference_forward import ReferenceModel

CHUNK = 32  # tokens per chunk: above llama-imatrix's 16-row floor, small enough for the float64 reference


class _Recording(ReferenceModel):
    """The reference forward, keeping each weight's input rows under its GGUF name."""

    def __init__(self, folder):
        super().__init__(folder)
        self.inputs: dict[str, list[np.ndarray]] = {}
        self._layer = -1

    def _keep(self, name: str, x: np.ndarray) -> None:
        self.inputs.setdefault(name, []).append(np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1]))

    def _rms(self, x, name):
        out = super()._rms(x, name)
        if name.endswith("input_layernorm.weight"):
            self._layer = int(name.split(".")[2])
            for proj in ("attn_q", "attn_k", "attn_v"):
                self._keep(f"blk.{self._layer}.{proj}.weight", out)
        elif name.endswith("post_attention_layernorm.weight"):
            for proj in ("ffn_gate", "ffn_up"):
                self._keep(f"blk.{self._layer}.{proj}.weight", out)
        return out

    def _mlp(self, h, prefix):
        gate = h @ self.w.read(prefix + "gate_proj.weight").T
        up = h @ self.w.read(prefix + "up_proj.weight").T
        self._keep(f"blk.{self._layer}.ffn_down.weight", self._act(gate) * up)
        return super()._mlp(h, prefix)


def test_accumulation_matches_numpy_on_the_tiny_model(tiny_source, tiny_gguf_f32):
    from edgeprof.backends.llamacpp.imatrix import collect_chunks

    rng = np.random.default_rng(0)
    chunks = [rng.integers(1, 256, CHUNK).astype(np.int32) for _ in range(2)]  # byte tokens: in every vocab
    result = collect_chunks(tiny_gguf_f32.path, lambda session: chunks, CHUNK, threads=2, kv_type="f32")

    reference = _Recording(tiny_source.hf_folder())
    for chunk in chunks:
        reference.logits(chunk.tolist())
    assert set(reference.inputs) <= set(result.stats)
    # every blk weight the graph multiplies by is there, attention output included, and nothing else
    assert all(name.startswith("blk.") for name in result.stats)
    assert any(name.endswith("attn_output.weight") for name in result.stats)
    for name, rows in reference.inputs.items():
        x = np.concatenate(rows)
        expected = (x * x).sum(axis=0)
        got = result.stats[name]
        assert got.counts.tolist() == [len(chunks) * CHUNK], name
        # with an f32 KV cache llama.cpp computes every activation in float32: a few ulps (6e-8) per
        # operation, compounded over two layers of norms, matmuls of <= 256 terms and softmax, stays far
        # below 1e-4 on any CPU (an f16 cache, llama-imatrix's default, would add its 4.9e-4 rounding)
        np.testing.assert_allclose(got.sums[0], expected, rtol=1e-4, atol=1e-7 * expected.max(), err_msg=name)


def test_file_round_trips_through_the_gguf_format_llama_quantize_reads(tmp_path, tiny_gguf_f32):
    from edgeprof.backends.llamacpp.imatrix import ImatrixResult, WeightStats, imatrix_means, read_imatrix, \
        write_imatrix_gguf

    stats = {"blk.0.attn_q.weight": WeightStats(np.array([[4.0, 8.0, 0.5]]), np.array([4])),
             "blk.0.ffn_down.weight": WeightStats(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([2, 0]))}
    path = tmp_path / "m.gguf"
    write_imatrix_gguf(str(path), ImatrixResult(stats, chunks=3, chunk_tokens=512), "text.txt")
    read = read_imatrix(str(path))
    np.testing.assert_array_equal(read["blk.0.ffn_down.weight"][0], [[1.0, 2.0], [3.0, 4.0]])
    means = imatrix_means(str(path))
    np.testing.assert_array_equal(means["blk.0.attn_q.weight"], [1.0, 2.0, 0.125])
    np.testing.assert_array_equal(means["blk.0.ffn_down.weight"], [0.5, 1.0, 1.0, 1.0])  # unseen matrix: 1
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {f.name: f for f in reader.fields.values()}
    assert "general.architecture" not in fields
    assert bytes(fields["general.type"].parts[-1]).decode() == "imatrix"


def test_a_crashed_collector_is_named_by_its_fatal_error_and_innermost_frame():
    from edgeprof.export.imatrix import crash_detail

    # faulthandler's dump on SIGSEGV (CPython 3.10-3.13 layout), as the collector child writes it
    dump = """llama_context: n_ctx = 512
Fatal Python error: Segmentation fault

Current thread 0x00007f3a (most recent call first):
  File "/x/edgeprof/backends/llamacpp/imatrix.py", line 125 in _read
  File "/x/edgeprof/backends/llamacpp/imatrix.py", line 91 in _accumulate
  File "/x/edgeprof/backends/llamacpp.py", line 300 in position_logits

Extension modules: numpy._core._multiarray_umath, numpy.linalg._umath_linalg (total: 2)
"""
    assert crash_detail(dump) == ('Fatal Python error: Segmentation fault | '
                                  'File "/x/edgeprof/backends/llamacpp/imatrix.py", line 125 in _read')
    assert crash_detail("a\nValueError: bad text\n") == "a | ValueError: bad text"
    assert crash_detail("") == "no detail"


def test_the_child_loads_llama_cpp_before_numpy(tmp_path):
    """A CUDA build's model load crashed (SIGSEGV) when numpy's bundled libraries were loaded before
    llama.cpp's (the H200 machine, `imatrix` started as the child): the child's imports must run in that
    order. `-X importtime` lists each module as its import completes; the child stops at the missing text
    file, after both imports."""
    import subprocess
    import sys

    pytest.importorskip("llama_cpp")
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgeprof.backends.llamacpp.imatrix_child",
                           "model.gguf", str(tmp_path / "missing.txt"), str(tmp_path / "out.gguf"), "32", "1", "t"],
                          capture_output=True, text=True, timeout=120)
    modules = [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert done.returncode != 0 and "missing.txt" in done.stderr  # it got as far as reading the text
    assert "numpy" in modules and "llama_cpp.llama_cpp" in modules
    assert modules.index("llama_cpp.llama_cpp") < min(i for i, m in enumerate(modules) if m.startswith("numpy"))
