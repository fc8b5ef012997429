"""The public measurement corpus loads, every row has a source, and a malformed row names file:line."""

import json

import pytest

from edgeprof.analysis.corpus import CorpusError, load_corpus, parse_row, parse_test
from edgeprof.quant import GGUF_QUANTS

GOOD = {"device": "raspberry-pi-5", "device_name": "Raspberry Pi 5", "device_class": "arm-cpu", "variant": {},
        "backend": "CPU", "build": None, "date": None, "model": "llama 7B Q4_0", "model_params_b": 6.74,
        "preset": "llama-2-7b", "model_shape": None, "quant": "q4_0", "model_size_gib": 3.56, "test": "tg128",
        "threads": 4, "n_gpu_layers": 0, "flash_attn": None, "value_tps": 2.0, "stdev_tps": None,
        "source_url": "https://example.org/thread", "source_note": "first table", "doubt": None}


def test_the_committed_corpus_loads_and_every_row_has_a_source():
    rows = load_corpus()
    assert rows, "data/published holds no rows"
    for row in rows:
        assert row.source_url.startswith("https://") and row.source_note.strip(), row.where
        assert row.quant is None or row.quant in GGUF_QUANTS, row.where
        if row.preset or row.model_shape:  # else a doubtful row that says the source gives no shape
            assert row.architecture().num_layers > 0, row.where
        else:
            assert row.unusable, row.where
    assert sum(1 for row in rows if not row.unusable) >= len(rows) // 2  # most rows feed the fit


@pytest.mark.parametrize("change,message", [
    ({"source_url": ""}, "source_url"),
    ({"source_note": " "}, "source_note"),
    ({"device_class": "toaster"}, "device_class"),
    ({"quant": "q4_z"}, "quant"),
    ({"quant": None}, "doubt"),
    ({"preset": "no-such-model"}, "does not resolve"),
    ({"preset": None}, "model_shape"),
    ({"value_tps": 0}, "value_tps"),
])
def test_a_bad_row_is_one_error_naming_file_line_and_field(change, message):
    with pytest.raises(CorpusError, match=rf"^pi\.jsonl:7: .*{message}"):
        parse_row(json.dumps({**GOOD, **change}), "pi.jsonl:7")


def test_missing_fields_are_named():
    data = dict(GOOD)
    del data["threads"]
    with pytest.raises(CorpusError, match="pi.jsonl:3: missing field.*threads"):
        parse_row(json.dumps(data), "pi.jsonl:3")


def test_explicit_shape_and_doubtful_rows(tmp_path):
    shaped = {**GOOD, "preset": None, "model_shape": {"layers": 22, "hidden": 2048, "ffn": 5632, "heads": 32,
                                                      "kv_heads": 4, "vocab": 32000}}
    doubtful = {**GOOD, "quant": None, "doubt": "quantization not stated"}
    (tmp_path / "a.jsonl").write_text(json.dumps(shaped) + "\n\n" + json.dumps(doubtful) + "\n")
    first, second = load_corpus(tmp_path)
    assert first.architecture().num_kv_heads == 4 and first.unusable == ""
    assert second.where == "a.jsonl:3" and second.unusable.startswith("doubtful")


def test_llama_bench_test_names():
    assert parse_test("pp512").phase == "prefill" and parse_test("tg128").gen == 128
    both = parse_test("pp4096+tg128")
    assert (both.prompt, both.gen, both.phase) == (4096, 128, "both")
    assert parse_test("tg128@d4096").depth == 4096
    assert parse_test("pp512+") is None and parse_test("latency") is None
