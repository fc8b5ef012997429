"""llama.cpp's measured operator shares (`--profile-ops`): node categories, window planning, the overhead
correction, CUPTI attribution (on a fake CUPTI), and the CLI path on the tiny model."""

from __future__ import annotations

import json

import pytest

import llama_cpp  # noqa: F401  - before numpy-heavy imports; see load_llama_cpp

from edgeprof.backends.llamacpp.cuda_kernels import KernelTimer, categorise_by_alignment, kernel_base_name  # noqa: E402
from edgeprof.backends.llamacpp.nodes import Node, base_name, categorize, categorize_sequence  # noqa: E402
from edgeprof.backends.llamacpp.profile import (  # noqa: E402
    CallTimes, category_ms, list_graph_nodes, plan_calibration, plan_categories)
from edgeprof.backends.op_categories import OP_CATEGORIES  # noqa: E402
from edgeprof.bench.measure import make_prompts  # noqa: E402
from edgeprof.config import Hyperparameters  # noqa: E402
from test_cli import edgeprof  # noqa: E402

ROPE_Q = Node("Qcur-3", "ROPE", "")


def _nodes(*specs: tuple[str, str, str]) -> list[Node]:
    return [Node(name, op, weight) for name, op, weight in specs]


@pytest.mark.parametrize("preset", ["tiny", "tiny-qwen2", "tiny-qwen3", "tiny-smollm3"])
@pytest.mark.parametrize("flash_attn", ["on", "off"])
def test_every_node_of_the_supported_families_has_a_category(preset, flash_attn):
    from edgeprof.export.gguf_export import export_gguf
    from edgeprof.models.source import resolve

    path = str(export_gguf(resolve(f"synth:{preset}"), "f32").path)
    hp = Hyperparameters(batch=2, prompt_tokens=24, gen_tokens=4, threads=2, n_batch=32, n_ubatch=16,
                         flash_attn=flash_attn, sampler="none")
    prefill_calls, decode = list_graph_nodes(path, hp, make_prompts(hp, 256, 0))
    assert len(prefill_calls) == 2  # 48 prompt tokens in calls of at most 32
    for nodes in prefill_calls + [decode]:
        unknown = [n for n in nodes if not categorize(n).matched]
        assert not unknown, unknown
        found = {c.category for c in categorize_sequence(nodes)}
        assert {"embedding", "norms", "projections", "attention", "ffn", "lm_head"} <= found, found
    # weight matmuls are recognised by the GGUF weight they read, unnamed ones included (Qwen2's o_proj)
    matmuls = [n for n in decode if n.op == "MUL_MAT" and n.weight]
    assert {categorize(n).category for n in matmuls if ".attn_output." in n.weight} == {"projections"}
    head = [n for n in decode if n.name == "result_output"]
    assert head and head[0].weight in ("output.weight", "token_embd.weight")  # tied or not
    assert categorize(head[0]).category == "lm_head"


def test_names_ops_and_weights_decide_the_category():
    assert base_name("cache_k_l0 (view) (permuted)") == ("cache_k_l0", None)
    assert base_name("ffn_up-12") == ("ffn_up", 12)
    assert categorize(Node("Qcur-3", "MUL_MAT", "blk.3.attn_q.weight")).category == "projections"
    assert categorize(ROPE_Q).category == "attention"  # same name, the rotary embedding
    assert categorize(Node("node_26", "MUL_MAT", "blk.0.attn_output.weight")).category == "projections"
    assert categorize(Node("result_output", "MUL_MAT", "token_embd.weight")).category == "lm_head"  # tied
    assert categorize(Node("embd", "GET_ROWS", "token_embd.weight")).category == "embedding"
    assert categorize(Node("node_21", "FLASH_ATTN_EXT", "")).category == "attention"
    assert categorize(Node("l_out-3", "ADD", "")).category == "other"
    assert categorize(Node("Qcur-3 (view)", "VIEW", "")).category is None
    mystery = categorize(Node("node_99", "CONCAT", ""))
    assert mystery.category == "other" and not mystery.matched  # reported, never silently folded


LAYER = _nodes(("norm-0", "RMS_NORM", ""), ("attn_norm-0", "MUL", ""), ("Qcur-0", "MUL_MAT", "blk.0.attn_q.weight"),
               ("Qcur-0", "RESHAPE", ""), ("Qcur-0", "ROPE", ""), ("node_9", "FLASH_ATTN_EXT", ""),
               ("attn_out-0", "MUL_MAT", "blk.0.attn_output.weight"), ("ffn_inp-0", "ADD", ""),
               ("norm-0", "RMS_NORM", ""), ("ffn_norm-0", "MUL", ""), ("ffn_up-0", "MUL_MAT", "blk.0.ffn_up.weight"),
               ("ffn_out-0", "MUL_MAT", "blk.0.ffn_down.weight"), ("l_out-0", "ADD", ""))


def test_only_the_last_node_of_each_run_of_a_category_is_observed():
    plan = plan_categories(LAYER)
    observed = [LAYER[i].name for i, wanted in enumerate(plan.observe) if wanted]
    # the view joins the q projection's window, the rope and attention share one
    assert observed == ["attn_norm-0", "Qcur-0", "node_9", "attn_out-0", "ffn_inp-0", "ffn_norm-0", "ffn_out-0",
                        "l_out-0"]
    assert [w.category for w in plan.windows] == ["norms", "projections", "attention", "projections", "other",
                                                  "norms", "ffn", "other"]


def test_gpu_plans_keep_the_residual_add_with_the_matmul_it_fuses_into():
    plan = plan_categories(LAYER, keep_fusions=True)
    assert [(w.category, w.absorbed) for w in plan.windows] == [
        ("norms", None), ("projections", None), ("attention", None), ("projections", "other"), ("norms", None),
        ("ffn", "other")]
    # where the add still runs as a kernel of its own, the kernel timer hands its time back to "other"
    times = CallTimes([(2e3, 0), (10e3, 0), (5e3, 0), (12e3, 2e3), (2e3, 0), (30e3, 3e3)])
    totals, _ = category_ms(plan, times, 0.0)
    assert totals["other"] == pytest.approx(0.005) and totals["projections"] == pytest.approx(0.020)
    assert totals["ffn"] == pytest.approx(0.027)


def test_the_calibrated_overhead_is_taken_off_every_window():
    plan = plan_categories(LAYER)
    # each window took its work plus 3 us of overhead; the corrected sums are the work alone
    work_us = [1, 10, 6, 10, 1, 1, 30, 1]
    times = CallTimes([((w + 3) * 1e3, 0.0) for w in work_us])
    totals, by_layer = category_ms(plan, times, overhead_ns=3e3)
    assert totals["ffn"] == pytest.approx(0.030) and totals["projections"] == pytest.approx(0.020)
    assert sum(totals.values()) == pytest.approx(sum(work_us) / 1e3)
    assert by_layer[0]["attention"] == pytest.approx(0.006)


def test_calibration_windows_hold_one_view_each():
    plan = plan_calibration(LAYER, count=8)
    singles = [i for i, w in enumerate(plan.windows) if w.category is None]
    assert singles  # the RESHAPE of Qcur-0
    observed = [i for i, wanted in enumerate(plan.observe) if wanted]
    reshape = 3
    assert reshape in observed and reshape - 1 in observed and plan.observe[-1]


class _FakeActivity:
    def __init__(self, start, end, name, kind):
        self.start, self.end, self.name, self.kind = start, end, name, kind


class _FakeCupti:
    """Enough of cupti-python for KernelTimer: a clock 1 ms ahead of perf_counter, and records on flush."""

    class ActivityKind:
        CONCURRENT_KERNEL, MEMCPY, MEMSET = 1, 2, 3

    def __init__(self):
        self.pending, self.enabled = [], set()
        self._completed = None

    def activity_register_callbacks(self, requested, completed):
        self._completed = completed

    def activity_enable(self, kind):
        self.enabled.add(kind)

    def activity_disable(self, kind):
        self.enabled.discard(kind)

    def activity_flush_all(self, flag):
        records, self.pending = self.pending, []
        self._completed([r for r in records if r.kind in self.enabled])

    def get_timestamp(self):
        import time

        return time.perf_counter_ns() + 1_000_000


def test_kernels_are_assigned_to_the_window_they_started_in():
    cupti = _FakeCupti()
    timer = KernelTimer(cupti)
    timer.start()
    timer.begin()
    shift = 1_000_000  # the fake CUPTI clock's lead
    spans = [(10_000, 20_000), (30_000, 60_000)]
    cupti.pending = [
        _FakeActivity(12_000 + shift, 15_000 + shift, "_Z13mul_mat_vec_qIL9ggml_type12ELi1EEvPKv", 1),
        _FakeActivity(31_000 + shift, 41_000 + shift, "_ZL11k_bin_bcastv", 1),
        _FakeActivity(42_000 + shift, 52_000 + shift, "_ZL12rms_norm_f32ILi1024EEvPKf", 1),
        _FakeActivity(70_000 + shift, 75_000 + shift, "memcpy", 2),  # the logits copy after the graph
    ]
    windows = timer.per_window(spans, frozenset({"k_bin_bcast"}))
    assert windows[0] == (3_000, 0) and windows[1] == (20_000, 10_000)
    assert timer.outside_ns == 5_000
    assert [k[1] for k in timer.last_kernels] == ["mul_mat_vec_q", "k_bin_bcast", "rms_norm_f32"]
    timer.pause()  # the plain reference steps run without tracing
    assert not cupti.enabled


def test_kernel_names_reduce_to_their_function_and_align():
    assert kernel_base_name("_Z13mul_mat_vec_qIL9ggml_type12ELi1EEvPKvS2_PKiPfjjj") == "mul_mat_vec_q"
    assert kernel_base_name("void mul_mat_vec_q<(ggml_type)12, 1>(const void *, int)") == "mul_mat_vec_q"
    assert kernel_base_name("_ZN7cutlass6KernelINS_4gemmEEEvv") == "Kernel"
    profiled = [["projections", "quantize_q8_1", 1], ["projections", "mul_mat_vec_q", 5], ["other", "k_bin_bcast", 1],
                ["norms", "rms_norm_f32", 1]]
    plain = [("quantize_q8_1", 2.0), ("mul_mat_vec_q", 6.0), ("rms_norm_f32", 1.5)]  # the add fused away
    totals, unmatched = categorise_by_alignment(plain, profiled)
    assert totals == {"projections": 8.0, "norms": 1.5} and unmatched == 0


def test_run_profile_ops_on_llama_cpp_gives_measured_shares(tmp_path):
    result = edgeprof("run", "-m", "synth:tiny", "-q", "f32", "-p", "32", "-n", "8", "-r", "1", "--warmup", "0",
                      "--profile-ops", "--no-fidelity", "--sample-hz", "0", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "operator time shares" in result.stdout and "measured" in result.stdout
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    record = json.loads((run_dir / "records.jsonl").read_text().splitlines()[0])
    profile = record["metrics"]["op_profile"]
    assert profile["method"].startswith("eval-callback category windows")
    assert profile["unmatched_nodes"] == []
    for phase in ("prefill", "decode"):
        shares = profile[phase]["share"]
        assert set(shares) == set(OP_CATEGORIES) and sum(shares.values()) == pytest.approx(1.0)
        assert shares["ffn"] > 0 and shares["projections"] > 0
        # the reconstructed step is a positive fraction of the plain one; its target (0.9-1.1) is checked on
        # real models by scripts/validate_op_profile.py, not on a 2-layer toy whose step is mostly overhead
        assert profile[phase]["coverage"] > 0 and profile[phase]["dilation"] > 0
    assert profile["overhead_us_per_window"] >= 0 and profile["calibration_windows"] > 0
    assert set(profile["decode_by_layer"]) == {"0", "1"}
    layers = edgeprof("results", str(run_dir), "--ops-by-layer")
    assert layers.returncode == 0 and "by layer" in layers.stdout
    csv = edgeprof("results", str(run_dir), "-f", "csv")
    assert "ops_decode_share_ffn" in csv.stdout and "ops_decode_coverage" in csv.stdout
    report = edgeprof("report", str(run_dir), "-o", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    assert "alt='op_shares'" in page and "<title>edgeprof: " in page


class _FakeKernelTimer:
    """A kernel timer without a GPU: one 'kernel' per observed window lasting the window's wall time; a
    plain (single-span) step replays the last profiled decode step's kernels at twice their time (the last
    observed call is a calibration step, the one before it the last profiled step)."""

    def __init__(self):
        self.last_kernels, self.outside_ns, self._observed = [], 0.0, []
        self.paused = 0

    def begin(self):
        pass

    def pause(self):
        self.paused += 1

    def resume(self):
        pass

    def per_window(self, spans, split=frozenset()):
        if len(spans) == 1 and len(self._observed) >= 2:
            self.last_kernels = [(0, name, 2 * ns) for _, name, ns in self._observed[-2]]
            return [(sum(ns for _, _, ns in self.last_kernels), 0.0)]
        self.last_kernels = [(i, f"k{i}", end - begin) for i, (begin, end) in enumerate(spans)]
        self._observed.append(list(self.last_kernels))
        return [(end - begin, 0.0) for begin, end in spans]


def test_gpu_decode_shares_are_plain_kernel_times_under_the_windows_labels(tiny_gguf_f32):
    from edgeprof.backends.llamacpp.profile import profile_ops

    hp = Hyperparameters(batch=1, prompt_tokens=16, gen_tokens=4, threads=2)
    timer = _FakeKernelTimer()
    profile = profile_ops(tiny_gguf_f32.path, hp, make_prompts(hp, 256, 0), kernel_timer=timer).to_dict()
    labelled = profile["decode_kernels"]
    assert labelled and {category for category, _, _ in labelled} >= {"projections", "ffn", "lm_head"}
    # every plain kernel found its labelled partner, at twice the time: the categories are the labels'
    decode = profile["decode"]
    assert decode["unmatched_ms"] == 0 and decode["traced_steps"] > 0
    expected = {}
    for category, _, ns in labelled:
        expected[category] = expected.get(category, 0.0) + 2 * ns / 1e6
    for category, ms in expected.items():
        assert decode["ms"][category] == pytest.approx(ms)
    assert profile["decode_windowed"]["share"].keys() == decode["share"].keys()
    assert timer.paused >= 2  # plain reference steps ran untraced
