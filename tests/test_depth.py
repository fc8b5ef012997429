"""Context depth as an axis: decode after the KV cache already holds N tokens (llama-bench's -d), the KV
cache's bytes in the record and in the memory fit, and ids that stay as they were at depth 0."""

from __future__ import annotations

import hashlib
import json

import pytest

from edgeprof.bench.plan import expand
from edgeprof.bench.runner import Runner, RunOptions
from edgeprof.config import Hyperparameters, config_id, run_key
from edgeprof.hardware.emulation import memory_needed
from edgeprof.errors import ConfigError
from edgeprof.results.records import read_records
from edgeprof.results.rundir import create_run_dir

SMALL = {"batch": [1], "prompt_tokens": [16], "gen_tokens": [8], "threads": [2]}


def _old_hash(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def test_depth_is_part_of_the_context_and_ids_at_depth_0_are_unchanged():
    hp = Hyperparameters(prompt_tokens=128, gen_tokens=64)
    # The ids as they were computed before depth and power_mode existed: runs made then still join/resume.
    before = {k: v for k, v in hp.to_dict().items() if k not in ("depth", "power_mode")}
    workload = {"batch": 1, "prompt_tokens": 128, "gen_tokens": 64, "context": 192, "kv_type": "f16", "sampler": "greedy"}
    cid = config_id("synth:tiny", "q4_0", "llama.cpp", hp)
    assert cid == _old_hash({"model": "synth:tiny", "quant": "q4_0", "backend": "llama.cpp", "workload": workload})
    assert run_key(cid, hp) == _old_hash({"config_id": cid, "hyperparameters": before})
    deep = Hyperparameters(prompt_tokens=128, gen_tokens=64, depth=4096)
    assert deep.context_per_sequence == 4096 + 192
    assert config_id("synth:tiny", "q4_0", "llama.cpp", deep) != cid  # a depth is other work: another config
    with pytest.raises(ConfigError, match=r"depth \(4096\) \+ prompt"):
        Hyperparameters(prompt_tokens=128, gen_tokens=64, depth=4096, context=2048).validate()
    with pytest.raises(ConfigError, match="depth must be >= 0"):
        Hyperparameters(depth=-1).validate()


def test_memory_fit_counts_the_depth():
    configs = expand(["synth:llama-3.2-1b"], ["q4_k_m"], ["llama.cpp"], {**SMALL, "depth": [0, 4096]})
    shallow, deep = (memory_needed(c, c.hp) for c in configs)
    arch = configs[0].source.architecture
    assert deep["kv_cache"] - shallow["kv_cache"] == pytest.approx(arch.kv_cache_bytes_per_token(2.0) * 4096)
    assert deep["weights"] == shallow["weights"]
    with pytest.raises(ConfigError, match="depth"):  # past the trained context is refused as before
        expand(["synth:tiny"], ["q4_0"], ["llama.cpp"], {**SMALL, "depth": [4096]})


@pytest.mark.parametrize("backend,quant", [("llama.cpp", "f32"), ("onnxruntime", "fp32")])
def test_decode_at_depth_0_and_512_recorded_and_kv_bytes_grow_as_predicted(tmp_path, backend, quant):
    if backend == "onnxruntime":
        pytest.importorskip("optimum")
    configs = expand(["synth:tiny"], [quant], [backend], {**SMALL, "depth": [0, 512]})
    run_dir = create_run_dir(tmp_path)
    Runner(run_dir, {"profile": "test"}, RunOptions(repetitions=1, warmup=0, fidelity=False)).run(configs)
    records = {r["hyperparameters"]["depth"]: r for r in read_records(run_dir.records_path)}
    assert set(records) == {0, 512} and all(r["status"] == "ok" for r in records.values()), \
        [r.get("error") for r in records.values()]
    shallow, deep = records[0]["metrics"], records[512]["metrics"]
    assert shallow["decode_tps"] > 0 and deep["decode_tps"] > 0
    assert records[0]["config_id"] != records[512]["config_id"]
    arch = configs[0].source.architecture
    per_token = arch.kv_cache_bytes_per_token(2.0 if backend == "llama.cpp" else 4.0)  # f16 cache; fp32 ONNX
    # Predicted: exactly 512 tokens' K and V more, in the record and in the allocation.
    assert deep["kv_cache_bytes_held_predicted"] - shallow["kv_cache_bytes_held_predicted"] == pytest.approx(512 * per_token)
    assert deep["kv_cache_bytes"] - shallow["kv_cache_bytes"] == pytest.approx(512 * per_token)
    grown = deep["kv_cache_bytes_held"] - shallow["kv_cache_bytes_held"]
    # Held, as the backend reports it: llama.cpp's saved state adds a cell's position and sequence ids
    # (at most 16 bytes per cell, any CPU) to its K and V rows; ONNX Runtime's tensors are K and V only.
    assert 512 * per_token <= grown <= 512 * (per_token + 16)
