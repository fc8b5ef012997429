"""Analysis never downloads: `compare` and `report` of a run made from a Hub id read the run directory and
the local Hugging Face cache only. With every huggingface_hub network entry point replaced by one that
fails the test, the prediction comes from the cached GGUF where the cache holds it, and is "unavailable:
<why>" where it does not."""

from __future__ import annotations

import huggingface_hub
import huggingface_hub.constants
import pytest

from edgeprof.analysis.compare import add_predictions, disambiguate, flat_rows, join, load_run
from edgeprof.analysis.report import write_report
from run_dirs import CPU_DEVICE, GPU_DEVICE, make_run, workload
from test_hub import COMMIT, offline_hub  # noqa: F401 - the fixture: a Hub GGUF in a local cache

HUB_SPEC = "edge-org/tiny-GGUF:F32"


def _network_calls_fail(monkeypatch, cache) -> list[str]:
    """Replace huggingface_hub's downloads and listings with recorders that raise: a call is a failed test,
    whatever the environment says about offline mode. The cache is `cache` (huggingface_hub reads its
    environment once, when its constants are first imported, which another test may have done already)."""
    calls: list[str] = []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def refuse(name):
        def call(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"analysis called huggingface_hub.{name}")
        return call

    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, refuse(name))
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", refuse("HfApi.model_info"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return calls


def _hub_runs(folder):
    reps = [{"decode_tps": 50.0, "prefill_tps": 900.0, "ttft_ms": 20.0}]
    edge = make_run(folder, "edge", CPU_DEVICE, [workload(HUB_SPEC, "f32", prompt_tokens=64, repetitions=reps)])
    server = make_run(folder, "server", GPU_DEVICE, [workload(HUB_SPEC, "f32", prompt_tokens=64, gpu_layers=-1,
                                                              repetitions=reps)])
    return [edge, server]


def _compared(paths):
    runs = [load_run(path) for path in paths]
    disambiguate(runs)
    joined = join(runs, False)
    add_predictions(joined, runs)
    return joined, flat_rows(joined, runs, False)


def test_a_hub_run_predicts_from_the_cache_without_a_network_call(offline_hub, tmp_path, monkeypatch):
    calls = _network_calls_fail(monkeypatch, offline_hub)
    (item,), (row,) = _compared(_hub_runs(tmp_path / "runs"))
    assert all(p is not None and p["decode_tps"] > 0 for p in item.predicted), item.unavailable
    assert row["raspberry-pi-5:prediction_unavailable"] is None
    assert (tmp_path / "report" / "report.html") == write_report(_hub_runs(tmp_path / "again"), tmp_path / "report")
    assert calls == []


def test_a_hub_run_outside_the_cache_is_unavailable_not_downloaded(offline_hub, tmp_path, monkeypatch):
    calls = _network_calls_fail(monkeypatch, tmp_path / "empty-cache")
    (item,), (row,) = _compared(_hub_runs(tmp_path / "runs"))
    assert item.predicted == [None, None]
    why = row["raspberry-pi-5:prediction_unavailable"]
    assert "not in the local Hugging Face cache" in why and "never downloads" in why
    assert write_report(_hub_runs(tmp_path / "again"), tmp_path / "report").exists()
    assert calls == []


def test_compare_says_why_a_prediction_is_unavailable(offline_hub, tmp_path, monkeypatch):
    from rich.console import Console

    from edgeprof.results.tables import compare_table

    _network_calls_fail(monkeypatch, tmp_path / "empty-cache")
    runs = [load_run(path) for path in _hub_runs(tmp_path / "runs")]
    disambiguate(runs)
    joined = join(runs, False)
    add_predictions(joined, runs)
    console = Console(width=400, record=True)
    console.print(compare_table(joined, runs, False))
    assert "unavailable: edge-org/tiny-GGUF@main is not in the local Hugging Face cache" in console.export_text()
