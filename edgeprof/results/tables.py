"""Rich tables for summaries and catalogs (presentation only; no measuring here)."""

from __future__ import annotations

import math

from rich.table import Table

from edgeprof.backends.base import BACKEND_OPTIONS
from edgeprof.backends.op_categories import OP_CATEGORIES
from edgeprof.config import execution_settings
from edgeprof.models.presets import Preset
from edgeprof.quant import GGUF_QUANTS
from edgeprof.results.summary import COMPARED, ratio


def _pm(mean: float, std: float) -> str:
    """`mean±std` with precision that suits the magnitude."""
    if mean is None or math.isnan(mean):
        return "-"
    digits = 0 if abs(mean) >= 100 else 1 if abs(mean) >= 10 else 2
    return f"{mean:.{digits}f}±{std:.{digits}f}"


def _short_model(name: str) -> str:
    return name.removeprefix("synth:")


def summary_table(rows: list[dict], title: str = "edgeprof run") -> Table:
    """One row per configuration: settings, then mean±std over repetitions."""
    table = Table(title=title, header_style="bold", pad_edge=False)
    energy = any(not math.isnan(r.get("j_per_token_decode_mean", math.nan)) for r in rows)
    fidelity = any("fidelity_ppl" in r or "fidelity_kl_mean" in r for r in rows)
    columns = ["model", "quant", "B/P/G", "thr/ngl", "TTFT ms", "prefill t/s", "decode t/s", "ITL p50/p99 ms", "RSS MB"]
    columns += ["J/tok dec", "W dec", "max °C"] if energy else []
    columns += ["ppl · top-1/KL vs parent"] if fidelity else []
    roofs = any(r.get("decode_roof_share") is not None for r in rows)  # analysis.compare.add_roof_shares
    columns += ["of roof dec/pre"] if roofs else []
    for column in [*columns, "status"]:
        table.add_column(column, justify="left" if column in ("model", "quant", "status") else "right")
    backends = {r["backend"] for r in rows}
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"[red]{r['status']}[/red]"
        model = _short_model(str(r["model"])) + (f" ({r['backend']})" if len(backends) > 1 else "")
        itl = "-" if math.isnan(r["itl_ms_p50_mean"]) else f"{r['itl_ms_p50_mean']:.2f}/{r['itl_ms_p99_mean']:.2f}"
        table.add_row(
            model, str(r["quant"]), f"{r['batch']}/{r['prompt_tokens']}/{r['gen_tokens']}",
            f"{r['threads']}/{r['gpu_layers'] if r.get('gpu_layers') is not None else r.get('provider')}", _pm(r["ttft_ms_mean"], r["ttft_ms_std"]),
            _pm(r["prefill_tps_mean"], r["prefill_tps_std"]), _pm(r["decode_tps_mean"], r["decode_tps_std"]), itl,
            "-" if math.isnan(r["peak_rss_mb_mean"]) else f"{r['peak_rss_mb_mean']:.0f}",
            *([_pm(r["j_per_token_decode_mean"], r["j_per_token_decode_std"]),
               _pm(r["power_decode_w_mean_mean"], r["power_decode_w_mean_std"]),
               _pm(r["temp_c_max_mean"], r["temp_c_max_std"])] if energy else []),
            *([_fidelity(r)] if fidelity else []),
            *([_roof(r)] if roofs else []),
            status,
        )
    return table


def _roof(row: dict) -> str:
    """Decode's share of the bandwidth roof / prefill's of the compute roof, as percentages."""
    shares = [row.get("decode_roof_share"), row.get("prefill_roof_share")]
    return "/".join("-" if share is None else f"{share:.0%}" for share in shares)


def _fidelity(row: dict) -> str:
    """Perplexity over the fidelity text, then top-1 agreement (a fraction of the scored positions) and mean
    KL against the parent; older runs (8 prompts, no perplexity) show only the latter."""
    ppl = f"{row['fidelity_ppl']:.4g}" if row.get("fidelity_ppl") is not None else ""
    if "fidelity_kl_mean" not in row:
        return ppl or "-"
    against = f"{row['fidelity_top1_agreement']:.3f}/{row['fidelity_kl_mean']:.3g} ({row['fidelity_parent_quant']})"
    return f"{ppl} · {against}" if ppl else against


def fidelity_table(rows: list[dict], title: str = "fidelity over text") -> Table:
    """`edgeprof fidelity`: per artifact, perplexity ± its standard error, then against the parent the mean,
    p99 and max KL (nats), top-1 agreement (% of scored positions) and RMS Δp, as llama-perplexity prints."""
    table = Table(title=title, header_style="bold", pad_edge=False)
    columns = ("model", "backend", "quant", "parent", "positions", "PPL", "KL mean", "KL p99", "KL max", "top-1 %",
               "RMS Δp %", "status")
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "backend", "quant", "parent", "status") else "right")

    def pm(key: str, se_key: str, scale: float = 1.0) -> str:
        if row.get(key) is None:
            return "-"
        return f"{scale * row[key]:.4g}±{scale * row.get(se_key, 0.0):.2g}"

    for row in rows:
        status = row.get("fidelity_status", "ok")
        table.add_row(_short_model(row["model"]), row["backend"], str(row["quant"]),
                      str(row.get("fidelity_parent_quant") or "-"), str(row.get("fidelity_positions", "-")),
                      pm("fidelity_ppl", "fidelity_ppl_se"), pm("fidelity_kl_mean", "fidelity_kl_se"),
                      "-" if row.get("fidelity_kl_p99") is None else f"{row['fidelity_kl_p99']:.4g}",
                      "-" if row.get("fidelity_kl_max") is None else f"{row['fidelity_kl_max']:.4g}",
                      pm("fidelity_top1_agreement", "fidelity_top1_se", 100.0), "-" if row.get("fidelity_dp_rms") is None
                      else f"{100 * row['fidelity_dp_rms']:.3g}",
                      status if status == "ok" else f"[red]{status}[/red]: {row.get('fidelity_error', '')}")
    return table


def op_shares_table(rows: list[dict]) -> Table | None:
    """Operator time shares, prefill | decode, measured (`--profile-ops`) beside predicted (roofline), one
    line per device, configuration and source (rows from `analysis.op_shares.share_rows`), or None."""
    if not rows:
        return None
    table = Table(title="operator time shares, prefill | decode (measured by --profile-ops; predicted by the "
                        "roofline on the same device)", header_style="bold")
    for column in ("device", "model", "quant", "backend", "B/P", "source"):
        table.add_column(column)
    for category in OP_CATEGORIES:
        table.add_column(category, justify="right")
    table.add_column("coverage", justify="right")
    for r in rows:
        coverage = r.get("coverage_decode")
        table.add_row(str(r["device"]), _short_model(str(r["model"])), str(r["quant"]), str(r["backend"]),
                      f"{r['batch']}/{r['prompt_tokens']}", str(r["source"]), *(
                          f"{_pct(r.get(f'prefill_{c}'))} | {_pct(r.get(f'decode_{c}'))}" for c in OP_CATEGORIES),
                      f"{coverage:.2f}" if coverage is not None else "-")
    return table


def layer_shares_table(records: list[dict]) -> Table | None:
    """Decode ms per layer and category from llama.cpp's operator profile, per profiled configuration."""
    table = Table(title="llama.cpp decode step by layer (ms, measured by --profile-ops)", header_style="bold")
    for column in ("model", "quant", "B/P", "layer", *OP_CATEGORIES, "total"):
        table.add_column(column, justify="left" if column in ("model", "quant") else "right")
    seen = set()
    for record in records:
        by_layer = (record.get("metrics", {}).get("op_profile") or {}).get("decode_by_layer")
        key = record.get("config_id")
        if not by_layer or key in seen:
            continue
        seen.add(key)
        hp, model = record.get("hyperparameters", {}), record.get("model", {})
        for layer, ms in sorted(by_layer.items(), key=lambda item: int(item[0])):
            table.add_row(_short_model(str(model.get("name"))), str(model.get("quant")),
                          f"{hp.get('batch')}/{hp.get('prompt_tokens')}", layer,
                          *(f"{ms.get(c, 0.0):.3f}" for c in OP_CATEGORIES), f"{sum(ms.values()):.3f}")
    return table if seen else None


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f}"


def presets_table(presets: list[Preset]) -> Table:
    table = Table(title="model presets (synth:<name>)", header_style="bold")
    for column in ("name", "params", "layers", "hidden", "heads/kv", "vocab", "f16 GB", "q8_0 GB",
                   "q4_k_m GB", "KV KiB/tok"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for p in presets:
        a = p.architecture
        table.add_row(
            p.name, f"{a.parameter_count / 1e6:,.0f}M" if a.parameter_count >= 1e7 else f"{a.parameter_count / 1e6:.1f}M", str(a.num_layers), str(a.hidden_size),
            f"{a.num_heads}/{a.num_kv_heads}", str(a.vocab_size),
            _gb(a.gguf_weight_bytes(GGUF_QUANTS["f16"])), _gb(a.gguf_weight_bytes(GGUF_QUANTS["q8_0"])),
            _gb(a.gguf_weight_bytes(GGUF_QUANTS["q4_k_m"])), f"{a.kv_cache_bytes_per_token() / 1024:.1f}",
        )
    return table


def survey_table(rows: list, context: int, device: str = "") -> Table:
    """`models compare`: one column per model, one line per architectural fact."""
    table = Table(title=f"converged architectures (KV cache f16 at {context:,} tokens"
                        + (f"; predicted on {device}" if device else "") + ")", header_style="bold")
    table.add_column("")
    for row in rows:
        table.add_column(_short_model(row.model), justify="right")

    def line(label: str, render) -> None:
        table.add_row(label, *(render(row) for row in rows))

    dash = lambda value: "-" if value is None else str(value)  # noqa: E731
    line("family", lambda r: r.family)
    line("parameters", lambda r: f"{r.parameters / 1e6:,.0f}M")
    line("active per token", lambda r: "-" if r.active_parameters in (None, r.parameters)
         else f"{r.active_parameters / 1e6:,.0f}M")
    line("layers", lambda r: str(r.layers))
    line("hidden", lambda r: str(r.hidden))
    line("heads / KV heads", lambda r: f"{r.heads}/{r.kv_heads} ({'MQA' if r.kv_heads == 1 else 'MHA' if r.gqa_ratio == 1 else f'GQA {r.gqa_ratio:g}'})")
    line("head dim", lambda r: str(r.head_dim))
    line("FFN / hidden", lambda r: "-" if r.ffn_ratio is None else f"{r.ffn_ratio:.2f}")
    line("activation", lambda r: dash(r.activation))
    line("norms", lambda r: dash(r.norms))
    line("positions", lambda r: dash(r.positional))
    line("sliding window", lambda r: dash(r.window) + (f" ({r.window_pattern})" if r.window_pattern else ""))
    line("experts (total/active)", lambda r: dash(r.experts))
    line("tied embeddings", lambda r: "yes" if r.tied_embeddings else "no")
    line("KV bytes / token", lambda r: f"{r.kv_bytes_per_token / 1024:,.1f} KiB")
    line(f"KV at {context:,} tokens", lambda r: f"{r.kv_bytes_at_context / 1e6:,.1f} MB")
    quants = sorted({q for r in rows for q in r.weight_bytes})
    for quant in quants:
        line(f"weights {quant}", lambda r, q=quant: "-" if q not in r.weight_bytes else f"{r.weight_bytes[q] / 1e9:.2f} GB")
    if device:
        line("decode t/s (b1, q4_k_m)", lambda r: r.predicted_decode_tps if isinstance(r.predicted_decode_tps, str)
             else f"{r.predicted_decode_tps:,.1f}")
    return table


def gguf_facts_table(facts) -> Table:
    """A GGUF file's model as its metadata states it (`gguf_facts.GgufFacts`), and whether it is predicted."""
    table = Table(title=f"{facts.name or facts.family} (GGUF, {facts.family})", header_style="bold", show_header=False)
    table.add_column("field")
    table.add_column("value")
    rows = [("family", facts.family), ("quantization", facts.file_type or "-"),
            ("parameters", f"{facts.parameters:,}"), ("file", f"{facts.file_bytes / 1e6:,.1f} MB"),
            ("layers", facts.layers), ("hidden", facts.hidden), ("FFN", facts.ffn or "-"),
            ("heads / KV heads", f"{facts.heads}/{facts.kv_heads}"),
            ("head dim (K/V)", f"{facts.key_length}/{facts.value_length}"), ("vocab", facts.vocab),
            ("tied embeddings", facts.tied_embeddings), ("trained context", facts.context_length or "-"),
            ("sliding window", facts.sliding_window or "-"),
            ("experts (total/used)", f"{facts.experts}/{facts.experts_used}" if facts.experts else "-"),
            ("rope base", facts.rope_base or "-"),
            ("KV cache per token (f16)", f"{facts.kv_cache_bytes_per_token():,.0f} bytes"),
            ("roofline", "modelled" if facts.modelled else f"prediction unavailable: {facts.family}")]
    for field, value in rows:
        table.add_row(field, str(value))
    return table


def preset_detail_table(preset: Preset) -> Table:
    a = preset.architecture
    table = Table(title=f"{preset.display_name} ({preset.name})", header_style="bold", show_header=False)
    table.add_column("field")
    table.add_column("value")
    table.add_row("source", preset.source)
    for key, value in preset.hf_config.items():
        table.add_row(key, str(value))
    table.add_row("parameters", f"{a.parameter_count:,}")
    table.add_row("KV cache per token (f16)", f"{a.kv_cache_bytes_per_token():,.0f} bytes")
    for name, quant in GGUF_QUANTS.items():
        if quant.imatrix and not quant.imatrix_required:
            continue  # an -imat variant stores what its plain type does
        table.add_row(f"GGUF {name} weights", f"{a.gguf_weight_bytes(quant) / 1e6:,.1f} MB")
    return table


def devices_table(profiles) -> Table:
    """Device profiles side by side: memory, bandwidth, peak compute, power (datasheet figures)."""
    table = Table(title="device profiles (figures from the sources in each YAML; `devices show NAME`)",
                  header_style="bold")
    for column in ("name", "kind", "class", "CPU cores", "memory GB", "bandwidth GB/s", "fp16 TFLOPS", "int8 TOPS", "TDP W",
                   "modes"):
        table.add_column(column, justify="left" if column in ("name", "kind", "class", "modes") else "right")
    for p in profiles:
        d = p.data
        accel, memory = d.get("accelerator") or {}, d.get("memory") or {}
        bandwidth = accel.get("bandwidth_gbps") or memory.get("bandwidth_gbps")
        tflops = accel.get("tflops") or {}

        def fmt(value) -> str:
            return "-" if value is None else f"{value:g}"

        table.add_row(p.name, p.kind, d.get("class") or "-", fmt((d.get("cpu") or {}).get("cores")), fmt(p.memory_gb), fmt(bandwidth),
                      fmt(tflops.get("fp16")), fmt(tflops.get("int8")), fmt((d.get("power") or {}).get("tdp_w")),
                      ", ".join(d.get("modes") or {}) or "-")
    return table


def prediction_tables(predictions, fits: list[dict], memory_gb: float | None, title: str) -> list[Table]:
    """Per batch: TTFT, decode speed, bound and memory fit; then operator shares of the last batch."""
    summary = Table(title=title, header_style="bold")
    for column in ("batch", "TTFT ms", "prefill t/s", "decode ms/step", "decode t/s", "prefill bound", "decode bound",
                   "memory GB", "fits"):
        summary.add_column(column, justify="right")
    for p, need in zip(predictions, fits):
        fits_text = "-" if not memory_gb else ("yes" if need["total"] <= memory_gb * 1e9 else
                                               f"[red]no ({need['total'] / 1e9 - memory_gb:.1f} GB over)[/red]")
        summary.add_row(str(p.batch), f"{p.ttft_s * 1e3:.1f}", f"{p.prefill_tps:,.0f}", f"{p.decode_step_s * 1e3:.2f}",
                        f"{p.decode_tps:,.1f}", p.bound("prefill"), p.bound("decode"),
                        f"{need['total'] / 1e9:.2f}" + (f" / {memory_gb:g}" if memory_gb else ""), fits_text)
    last = predictions[-1]
    ops = Table(title=f"footsteps of operations at batch {last.batch} (share of phase time, bound)", header_style="bold")
    for column in ("operator", "category", "prefill share", "prefill bound", "decode share", "decode bound"):
        ops.add_column(column, justify="left" if column in ("operator", "category") else "right")
    prefill_total = sum(t.seconds for t in last.prefill)
    decode_total = sum(t.seconds for t in last.decode)
    for pre, dec in zip(last.prefill, last.decode):
        ops.add_row(pre.op.name, pre.op.category, f"{pre.seconds / prefill_total:.1%}", pre.bound,
                    f"{dec.seconds / decode_total:.1%}", dec.bound)
    return [summary, ops]


def _num(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _settings_cells(item) -> list[str]:
    """How each side ran a joined workload (threads, GPU layers, ...), and how many settings it chose from."""
    cells = []
    for row, count in zip(item.by_run, item.choices or [1] * len(item.by_run)):
        more = f" (fastest of {count})" if count > 1 else ""
        cells.append("-" if row is None else execution_settings(row, BACKEND_OPTIONS.get(row["backend"])) + more)
    return cells


def compare_table(joined: list, runs: list, loose: bool) -> Table:
    """Per joined configuration: each run's figures, then the ratio of each later run to the first."""
    letters = [chr(ord("A") + i) for i in range(len(runs))]
    title = "compare: " + ", ".join(f"{letter} = {r.label}" for letter, r in zip(letters, runs)) + (
        " (LOOSE join: workloads may differ)" if loose else "")
    table = Table(title=title, header_style="bold")
    for column in ("model", "quant", "backend", "B/P/G", "metric", *letters, *[f"{x}/A" for x in letters[1:]]):
        table.add_column(column, justify="left" if column in ("model", "quant", "backend", "metric") else "right")
    for item in joined:
        ident = item.identity
        head = [_short_model(str(ident["model"])), str(ident["quant"]), str(ident["backend"]),
                f"{ident['batch']}/{ident['prompt_tokens']}/{ident['gen_tokens']}"]
        shown = [(col, label) for col, label, _ in COMPARED
                 if any(row is not None and not math.isnan(row.get(col, math.nan)) for row in item.by_run)]
        for index, (column, label) in enumerate(shown):
            values = [None if row is None else row.get(column) for row in item.by_run]
            cells = [_num(v) for v in values] + [
                "-" if math.isnan(r := ratio(v, values[0])) else f"{r:.2f}x" for v in values[1:]]
            table.add_row(*(head if index == 0 else [""] * 4), label, *cells)
        why = getattr(item, "unavailable", None) or [None] * len(item.predicted)
        if any(item.predicted) or any(why):
            cells = [f"{p['decode_tps']:.3g} ({p['decode_bound']})" if p else (f"unavailable: {w}" if w else "-")
                     for p, w in zip(item.predicted, why)]
            table.add_row("", "", "", "", "predicted decode t/s", *cells, *[""] * (len(runs) - 1))
        table.add_row("", "", "", "", "run with", *_settings_cells(item), *[""] * (len(runs) - 1), style="dim")
        table.add_section()
    return table
