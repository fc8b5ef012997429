"""The report leads with the comparison (a table and a sentence from known numbers), labels every chart in
words (never a run id), and gives a single run a page of its own."""

from __future__ import annotations

import math

import pytest
from run_dirs import CPU_DEVICE, GPU_DEVICE, make_run, workload
from test_cli import edgeprof

from edgeprof.analysis import report as report_module
from edgeprof.analysis.compare import load_run, merge_by_device
from edgeprof.analysis.headline import build_headlines, format_ratio

FILE = "/models/synth-llama-3.2-1b.q4_k_m.gguf"
EDGE_ID, SERVER_ID = "20261202-101010-edge01", "20261202-111111-srv002"
SAMPLES = "t_s,run_key,phase,ina.board.power_w,thermal.cpu.temp_c,process.cpu.util_pct\n" + "".join(
    f"{i / 10:.1f},k,{'idle' if i < 5 else 'decode'},{4 + (i >= 5) * 3},{50 + i / 4:.2f},{i * 5}\n" for i in range(20))


def _edge_reps(ttft: float = 1000.0) -> list[dict]:
    return [{"decode_tps": 9.0, "prefill_tps": 512.0, "ttft_ms": ttft, "j_per_token_decode": 0.9, "peak_rss_mb": 800.0},
            {"decode_tps": 11.0, "prefill_tps": 512.0, "ttft_ms": ttft, "j_per_token_decode": 0.9, "peak_rss_mb": 800.0}]


@pytest.fixture()
def two_devices(tmp_path):
    edge = make_run(tmp_path, EDGE_ID, CPU_DEVICE, [
        workload(prompt_tokens=512, threads=4, repetitions=_edge_reps()),
        workload(batch=4, prompt_tokens=128, threads=4, repetitions=[{"decode_tps": 20.0}]),
    ], samples=SAMPLES)
    server = make_run(tmp_path, SERVER_ID, GPU_DEVICE, [
        workload(path=FILE, prompt_tokens=512, gpu_layers=-1, repetitions=[
            {"decode_tps": 450.0, "prefill_tps": 51200.0, "ttft_ms": 10.0, "j_per_token_decode": 0.05,
             "gpu_mem_used_mb_peak": 2000.0, "peak_rss_mb": 600.0}] * 2),
        workload(path=FILE, batch=4, prompt_tokens=128, gpu_layers=-1, repetitions=[{"decode_tps": 1600.0}]),
    ])
    return edge, server


def test_headline_table_and_sentence_from_known_numbers(two_devices):
    sides = merge_by_device([load_run(p) for p in reversed(two_devices)])  # given server first: edge leads anyway
    (headline,) = build_headlines(sides, predicted=False)
    assert headline.sides == ["raspberry-pi-5", "h200"] and (headline.model, headline.quant) == ("llama-3.2-1b", "q4_k_m")
    lead = headline.rows[headline.lead]
    assert lead.workload == {"batch": 1, "prompt_tokens": 512, "gen_tokens": 64}  # batch 1 leads, not batch 4
    decode = lead.cells["decode_tps"]
    assert (decode[0].mean, decode[1].mean) == (10.0, 450.0)
    assert decode[0].std == pytest.approx(math.sqrt(2))  # sample std of 9 and 11
    ratio, spread = lead.ratio("decode_tps", 1)
    assert ratio == pytest.approx(45.0) and spread == pytest.approx(45.0 * math.sqrt(2) / 10)
    memory = lead.cells["gpu_mem_used_mb_peak"]
    assert (memory[0].mean, memory[0].source, memory[1].mean, memory[1].source) == (800.0, "RSS", 2000.0, "GPU")
    assert headline.sentence == ("On llama-3.2-1b q4_k_m (llama.cpp), batch 1, prompt 512, 64 generated: the h200 "
                                 "decodes 45× faster than the raspberry-pi-5, returns its first token 100× sooner, "
                                 "at 1/18 of the energy per token.")
    assert lead.settings[0].startswith("threads 4 · GPU layers 0") and "GPU layers -1" in lead.settings[1]


def test_ratios_read_as_multiples_or_fractions():
    assert [format_ratio(v) for v in (45.2, 7.31, 1.0, 0.62, 1 / 18, 1 / 2.5)] == ["45×", "7.3×", "1.0×", "0.62×",
                                                                                  "1/18", "1/2.5"]


def test_an_emulated_side_is_marked(tmp_path):
    emulated = {**CPU_DEVICE, "profile": "jetson-orin-nano-8gb", "emulated": True}
    edge = make_run(tmp_path, "a", emulated, [workload(repetitions=[{"decode_tps": 5.0}])])
    server = make_run(tmp_path, "b", GPU_DEVICE, [workload(repetitions=[{"decode_tps": 50.0}])])
    (headline,) = build_headlines(merge_by_device([load_run(edge), load_run(server)]), predicted=False)
    assert headline.sides[0] == "jetson-orin-nano-8gb (emulated)"
    assert "the h200 decodes 10× faster than the jetson-orin-nano-8gb (emulated)" in headline.sentence
    assert any("emulated on a larger host" in note for note in headline.notes)


def _figure_texts(monkeypatch) -> list[str]:
    """Every text matplotlib draws in the report's figures: titles, axis labels, ticks, legends."""
    import matplotlib.text

    texts: list[str] = []
    original = report_module._Page.figure

    def capture(self, name, title, fig, note="", quiet=False):
        if fig is not None:
            texts.extend(t.get_text() for t in fig.findobj(matplotlib.text.Text))
        return original(self, name, title, fig, note, quiet)

    monkeypatch.setattr(report_module._Page, "figure", capture)
    return texts


def test_comparison_report_leads_with_the_sentence_and_never_labels_by_run_id(two_devices, tmp_path, monkeypatch):
    texts = _figure_texts(monkeypatch)
    path = report_module.write_report(list(two_devices), tmp_path / "report")
    page = path.read_text()
    body, appendix = page.split("Appendix: every configuration")
    assert "<title>edgeprof: raspberry-pi-5 vs h200</title>" in page
    assert body.index("decodes 45× faster") < body.index("<img")  # the sentence comes before any chart
    assert "45×" in body and "1/18" in body and "±" in body
    assert EDGE_ID not in body and SERVER_ID not in body  # run ids only in the appendix
    assert EDGE_ID in appendix and "<details>" in appendix
    assert len(texts) > 20 and not any(EDGE_ID in t or SERVER_ID in t for t in texts)
    assert any("raspberry-pi-5" in t for t in texts) and any("h200" in t for t in texts)
    assert any("llama-3.2-1b q4_k_m" in t for t in texts)
    assert (tmp_path / "report" / "overview.png").stat().st_size > 1000
    assert (tmp_path / "report" / "raspberry-pi-5.csv").read_text().startswith("run_key,")


def test_a_single_run_gets_its_own_page(tmp_path, monkeypatch):
    texts = _figure_texts(monkeypatch)
    reps = [{**r, "op_profile": {"method": "eval-callback", "decode": {"share": {
        "projections": 0.5, "ffn": 0.3, "attention": 0.1, "norms": 0.05, "lm_head": 0.05}}}} for r in _edge_reps()]
    run = make_run(tmp_path, EDGE_ID, CPU_DEVICE, [workload(prompt_tokens=512, repetitions=reps)], samples=SAMPLES)
    result = edgeprof("report", str(run), "-o", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    body = page.split("Appendix")[0]
    assert "<title>edgeprof: llama-3.2-1b on raspberry-pi-5</title>" in page
    assert "What ran and how fast" in body and "10 <span class='sd'>±1.4</span>" in body  # the run's table
    assert "alt='power_raspberry-pi-5' title='Power and temperature: raspberry-pi-5'" in body  # the trace from samples.csv
    assert "alt='op_shares'" in body
    assert (tmp_path / "report" / "power_raspberry-pi-5.png").exists() and (tmp_path / "report" / "op_shares.png").exists()
    assert EDGE_ID not in body


def test_the_power_trace_draws_power_and_temperature_in_words(tmp_path, monkeypatch):
    texts = _figure_texts(monkeypatch)
    run = make_run(tmp_path, EDGE_ID, CPU_DEVICE, [workload(repetitions=_edge_reps())], samples=SAMPLES)
    report_module.write_report([run], tmp_path / "report")
    assert "ina board power (W)" in texts and "thermal cpu temperature (°C)" in texts
    assert "raspberry-pi-5: power and temperature while measuring llama-3.2-1b q4_k_m" in texts


def test_devices_without_an_identical_workload_are_paired_nearest_and_say_what_differs(tmp_path):
    """The committed op-profile runs: 32 generated tokens on the CPU, 64 on the GPU."""
    edge = make_run(tmp_path, "a", CPU_DEVICE, [workload(gen_tokens=32, repetitions=[{"decode_tps": 10.0}])])
    server = make_run(tmp_path, "b", GPU_DEVICE, [workload(path=FILE, gen_tokens=64, repetitions=[{"decode_tps": 80.0}])])
    page = report_module.write_report([edge, server], tmp_path / "report").read_text()
    assert "No workload ran identically on these devices" in page
    assert ("batch 1, prompt 128, not the same workload (generated tokens 32 on raspberry-pi-5, 64 on h200): the h200 "
            "decodes 8.0× faster") in page


def test_a_single_run_of_several_models_gets_an_at_a_glance_figure(tmp_path):
    run = make_run(tmp_path, EDGE_ID, CPU_DEVICE, [workload(quant=q, sha256=s, repetitions=_edge_reps())
                                                   for q, s in (("q4_k_m", "01" * 32), ("q8_0", "02" * 32))])
    page = report_module.write_report([run], tmp_path / "report").read_text()
    assert "<title>edgeprof: llama-3.2-1b on raspberry-pi-5</title>" in page and "alt='overview'" in page
    assert "Every configuration: llama-3.2-1b · llama.cpp" in page  # what both rows share, said once
