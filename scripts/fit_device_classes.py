"""Fit the per-class achievable-rate factors and validate them leave-one-device-out.

Samples: every usable row of the public corpus (data/published, `edgeprof.analysis.corpus`) whose device has a
profile with datasheet figures, plus this project's own measured runs (the 2-core CPU host's calibration and
validation runs, the H100's; see OWN_RUNS). For each class, each device in turn is left out, the class is
refitted on the rest, and the device's figures are predicted through the same path `edgeprof predict` uses.

Writes (all deterministic: the same inputs give byte-identical files):
  data/device_classes.json              factors fitted on every sample, with each class's held-out error
  results/predictions/loo.json       every held-out prediction: device, origin, measured, predicted, ratio
  results/predictions/loo.md         the error distribution per class (docs/benchmarks.md §19 quotes it)
  results/predictions/h200_uncalibrated.md   the issue's H200 figures against the class prediction

    PYTHONPATH=$PWD python scripts/fit_device_classes.py

The own runs default to the committed ones (results/INDEX.md: roofline/, families/, predictions/); to refit
with another session's runs, pass them (paths relative to the repository root, as data/device_classes.json
records them): --h100-calibration, --h100-validation (one or more), --cpu-calibration, --cpu-validation,
--h200-set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgeprof.analysis.corpus import load_corpus  # noqa: E402
from edgeprof.analysis.device_classes import (MIN_DEVICES_FOR_INTERVAL, ClassFactors, Roofs,  # noqa: E402
                                              Sample, Workload, corpus_sample, datasheet_roofs, fit_class,
                                              heldout_key, heldout_summary, kernel_groups, leave_one_device_out,
                                              make_sample, within)
import functools  # noqa: E402

from edgeprof.hardware.devices import get_profile as _get_profile  # noqa: E402
from edgeprof.errors import CatalogError  # noqa: E402
from edgeprof.models.presets import get_preset as _get_preset  # noqa: E402

# each reads every YAML of its catalog; this script asks for the same few hundred times
get_profile, get_preset = functools.cache(_get_profile), functools.cache(_get_preset)


def _known(device: str) -> bool:
    try:
        get_profile(device)
        return True
    except CatalogError:
        return False


from edgeprof.quant import GGUF_QUANTS  # noqa: E402

CPU_HOST = "this-cpu-host"  # the 2-core AMD EPYC VM (generic-x86-64) the CPU results were measured on
H100_CALIBRATION = "results/roofline/h100/fitted/h100-sxm.json"
H100_VALIDATION = ("results/roofline/h100/fitted/roofline_validation_gpu_p128.json",
                   "results/roofline/h100/fitted/roofline_validation_gpu_p512.json",
                   "results/roofline/h100/fitted/roofline_validation_gpu_p128_8b.json")
CPU_CALIBRATION = "results/families/cpu-host/calibration_cpu_two_presets.json"
CPU_VALIDATION = "results/roofline/cpu-host/roofline_validation_cpu.json"
H200_SET = "results/predictions/issue23_uncalibrated.json"


def corpus_samples(rows) -> tuple[list[Sample], list[str]]:
    """Samples of the usable corpus rows; and why each other row was left out."""
    out, skipped = [], []
    for row in rows:
        profile = get_profile(row.device) if _known(row.device) else None
        sample, why = corpus_sample(row, profile)
        if sample is None:
            skipped.append(f"{row.where} {row.device}: {why}")
        else:
            out.append(sample)
    return out, skipped


def _run_pair(device_class, device, roofs, preset, quant, batch, prompt, gen, sampler, decode_tps, ttft_ms, origin,
              groups=()):
    """Two samples (decode, prefill) of one measured configuration of our own."""
    arch, q = get_preset(preset).architecture, GGUF_QUANTS[quant]
    pairs = []
    label = f"{preset} {quant} b{batch} p{prompt} {sampler}"
    for workload, tps in ((Workload("decode", batch, prompt=prompt, gen=gen, depth=prompt, sampler=sampler),
                           decode_tps),
                          (Workload("prefill", batch, prompt=prompt, sampler=sampler), batch * prompt / (ttft_ms / 1e3))):
        pairs.append(make_sample(device_class, device, arch, q, workload, roofs, tps, origin, label, groups))
    return pairs


def own_samples(h100_calibration: str = H100_CALIBRATION, h100_validation: tuple[str, ...] = H100_VALIDATION,
                cpu_calibration: str = CPU_CALIBRATION, cpu_validation: str = CPU_VALIDATION) -> list[tuple]:
    """The project's own runs: the H100 (datasheet roofs of h100-sxm) and this CPU host (no datasheet: its
    own triad and BLAS figures stand in, from the same calibration file)."""
    out = []
    h100 = get_profile("h100-sxm")
    groups = kernel_groups(h100, True)
    calibration = json.loads((REPO / h100_calibration).read_text())["llama_cpp_gpu"]
    for quant in ("q4_k_m", "q8_0", "f16"):
        roofs = datasheet_roofs(h100, GGUF_QUANTS[quant], True)
        for key, run in sorted(calibration[quant]["measured"].items()):
            preset, batch, prompt, sampler = _parse_key(key)
            out += _run_pair("nvidia-gpu", "h100-sxm", roofs, preset, quant, batch, prompt, 64,
                             sampler, run["decode_tps"], run["ttft_ms"], h100_calibration, groups)
    for path in h100_validation:
        data = json.loads((REPO / path).read_text())
        args = data["command"]
        prompt, gen = int(args[args.index("--prompt") + 1]), int(args[args.index("--gen") + 1])
        roofs = datasheet_roofs(h100, GGUF_QUANTS["q4_k_m"], True)
        for row in data["rows"]:
            if row.get("in_fit"):
                continue  # the calibration runs above already hold these presets
            out += _run_pair("nvidia-gpu", "h100-sxm", roofs, row["model"].removeprefix("synth:"),
                             "q4_k_m", row["batch"], prompt, gen, "greedy", row["decode_tps_measured"],
                             row["ttft_ms_measured"], path, groups)
    cpu = json.loads((REPO / cpu_calibration).read_text())
    roofs = Roofs(cpu["memory_bandwidth_gbps"] * 1e9, cpu["cpu_tflops_fp32"] * 1e12, cpu["cpu_tflops_fp32"] * 1e12)
    for key, run in sorted(cpu["llama_cpp_cpu"]["q4_k_m"]["measured"].items()):
        preset, batch, prompt, sampler = _parse_key(key)
        out += _run_pair("x86-cpu", CPU_HOST, roofs, preset, "q4_k_m", batch, prompt, 64, sampler,
                         run["decode_tps"], run["ttft_ms"], cpu_calibration)
    data = json.loads((REPO / cpu_validation).read_text())
    for row in data["rows"]:
        if not row.get("in_fit"):
            out += _run_pair("x86-cpu", CPU_HOST, roofs, row["model"].removeprefix("synth:"), "q4_k_m",
                             row["batch"], 128, 32, "greedy", row["decode_tps_measured"], row["ttft_ms_measured"],
                             cpu_validation)
    return out


def _parse_key(key: str) -> tuple[str, int, int, str]:
    preset, batch, prompt, sampler = key.rsplit("_", 3)
    return preset, int(batch[1:]), int(prompt[1:]), sampler


def summarise(results: list[dict], corpus_only: bool, key: str = "ratio") -> dict:
    """Per class and phase, the held-out ratios' summary (`key` "ratio_class": the class factors alone)."""
    summary = {}
    for device_class in sorted({r["class"] for r in results}):
        summary[device_class] = {}
        for phase in ("decode", "prefill"):
            for batched in (False, True):
                chosen = [r for r in results if r["class"] == device_class and r["phase"] == phase and r[key]
                          and (r["corpus"] or not corpus_only) and (r["batch"] > 1) == batched]
                if chosen or not batched:
                    summary[device_class][heldout_key(phase, 2 if batched else 1)] = heldout_summary(
                        [r[key] for r in chosen], len({r["device"] for r in chosen}))
    return summary


def group_summary(results: list[dict]) -> list[str]:
    """Corpus rows per kernel group the held-out prediction used: within 25 % with the group, and with the class."""
    lines = ["| class | kernel group | phase | devices | rows | within 25 % (group) | within 25 % (class only) |",
             "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["class"], r["group"], r["phase"]) for r in results if r["corpus"] and r["group"]})
    for device_class, group, phase in keys:
        chosen = [r for r in results if r["corpus"] and (r["class"], r["group"], r["phase"]) == (device_class, group, phase)]
        hits = {k: sum(1 for r in chosen if r[k] and abs(r[k] - 1) <= 0.25) for k in ("ratio", "ratio_class")}
        lines.append(f"| {device_class} | {group} | {phase} | {len({r['device'] for r in chosen})} | {len(chosen)} | "
                     f"{hits['ratio']} | {hits['ratio_class']} |")
    return lines


def markdown(results: list[dict], summary: dict, skipped: list[str]) -> str:
    lines = ["# Leave-one-device-out validation of the class factors", "",
             "Generated by `scripts/fit_device_classes.py`. Ratio = measured / predicted tokens per second; each "
             "device predicted from a fit that never saw it. Corpus rows only in the totals and the class table "
             "(all batch 1); a predicted figure that could not be made (the class had no other device) counts as a "
             "miss. The intervals `predict` prints also use this project's own held-out runs, batched ones apart "
             "(`data/device_classes.json`, `heldout`).", ""]
    for phase, target in (("decode", 0.75), ("prefill", 0.60)):
        good, total = within(results, phase)
        alone, _ = within(results, phase, key="ratio_class")
        share = good / total if total else 0.0
        lines.append(f"- **{phase}**: {good} of {total} corpus rows within 25 % ({share:.0%}; target {target:.0%}); "
                     f"with the class factors alone (no kernel groups) {alone} of {total} ({alone / total:.0%})")
    by_class = summarise(results, True, "ratio_class")
    lines += ["", "Classes with fewer than 3 held-out devices are marked; their rows count in the totals.", "",
              "| class | phase | devices | rows | within 25 % | class alone | median ratio | 80 % of rows within (ratio) |",
              "|---|---|---|---|---|---|---|---|"]
    for device_class, phases in summary.items():
        for phase, s in phases.items():
            if not s.get("rows"):
                continue
            note = "" if s["devices"] >= MIN_DEVICES_FOR_INTERVAL else " (too few devices for an interval)"
            alone = by_class.get(device_class, {}).get(phase, {}).get("within_25pct", 0.0)
            lines.append(f"| {device_class} | {phase} | {s['devices']} | {s['rows']} | {s['within_25pct']:.0%} | "
                         f"{alone:.0%} | {s['median_ratio']:.2f} | {s['p10_ratio']:.2f}–{s['p90_ratio']:.2f}{note} |")
    lines += ["", "## By kernel group (the group whose matmul factors a held-out prediction used)", ""]
    lines += group_summary(results)
    lines += ["", "## Every held-out prediction", "",
              "| class | device | group | phase | figure | measured t/s | predicted t/s | ratio | ratio, class alone | source |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        pred = "-" if r["predicted_tps"] is None else f"{r['predicted_tps']:.4g}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        alone = "-" if r["ratio_class"] is None else f"{r['ratio_class']:.2f}"
        lines.append(f"| {r['class']} | {r['device']} | {r['group'] or '-'} | {r['phase']} | {r['label']} | "
                     f"{r['measured_tps']:.4g} | {pred} | {ratio} | {alone} | {r['origin']} |")
    lines += ["", f"## Rows left out of the fit ({len(skipped)})", ""] + [f"- {line}" for line in skipped]
    return "\n".join(lines) + "\n"


def h200_table(factors: dict[str, ClassFactors], h200_set: str = H200_SET) -> str:
    """The issue's uncalibrated H200 measurements against the class prediction (the H200 is in no fit)."""
    from edgeprof.analysis.ceilings import device_ceilings
    from edgeprof.analysis.roofline import predict

    data = json.loads((REPO / h200_set).read_text())
    profile = get_profile("h200")
    lines = ["# H200, uncalibrated: measured (issue 23) vs predicted from the nvidia-gpu class factors", "",
             f"Source of the measured figures: {data['source']}. The H200 is in no fit.", "",
             "| model | batch | sampler | decode measured | class predicted | ratio | datasheet predicted | "
             "TTFT ms measured | class predicted | ratio | datasheet predicted |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    hits = {"decode": 0, "ttft": 0}
    for row in data["rows"]:
        q = GGUF_QUANTS[row["quant"]]
        arch = get_preset(row["preset"]).architecture
        cls = device_ceilings(profile, q, True, None, class_factors=factors)
        sheet = device_ceilings(profile, q, True, None, mode="datasheet")
        p = predict(arch, q, cls, row["batch"], row["prompt"], row["gen"], sampler=row["sampler"])
        d = predict(arch, q, sheet, row["batch"], row["prompt"], row["gen"], sampler=row["sampler"])
        dr, tr = row["decode_tps"] / p.decode_tps, row["ttft_ms"] / (p.ttft_s * 1e3)
        hits["decode"] += abs(dr - 1) <= 0.25
        hits["ttft"] += abs(tr - 1) <= 0.25
        lines.append(f"| {row['preset']} | {row['batch']} | {row['sampler']} | {row['decode_tps']:,} | {p.decode_tps:,.0f} | "
                     f"{dr:.2f} | {d.decode_tps:,.0f} | {row['ttft_ms']} | {p.ttft_s * 1e3:.1f} | {tr:.2f} | "
                     f"{d.ttft_s * 1e3:.1f} |")
    n = len(data["rows"])
    lines += ["", f"Decode within 25 %: {hits['decode']} of {n}; TTFT within 25 %: {hits['ttft']} of {n}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "results" / "predictions"))
    parser.add_argument("--factors", default=str(REPO / "data" / "device_classes.json"))
    parser.add_argument("--h100-calibration", default=H100_CALIBRATION, help="an H100 calibration (llama_cpp_gpu)")
    parser.add_argument("--h100-validation", nargs="+", default=list(H100_VALIDATION),
                        help="validate_roofline.py JSONs from the same H100")
    parser.add_argument("--cpu-calibration", default=CPU_CALIBRATION, help="the CPU host's calibration")
    parser.add_argument("--cpu-validation", default=CPU_VALIDATION, help="a validate_roofline.py JSON from the CPU host")
    parser.add_argument("--h200-set", default=H200_SET, help="measured H200 figures to check the class prediction on")
    args = parser.parse_args()
    runs = (args.h100_calibration, tuple(args.h100_validation), args.cpu_calibration, args.cpu_validation)
    corpus_pairs, skipped = corpus_samples(load_corpus())
    own_pairs = own_samples(*runs)
    samples: list[Sample] = corpus_pairs + own_pairs
    results = leave_one_device_out(samples)
    heldout = summarise(results, corpus_only=False)
    classes = {}
    for device_class in sorted({s.device_class for s in samples}):
        fitted = fit_class(device_class, samples)
        classes[device_class] = ClassFactors(device_class, fitted.decode, fitted.prefill, fitted.devices, fitted.rows,
                                             heldout[device_class], fitted.groups).to_dict()
    Path(args.factors).write_text(json.dumps({
        "generated_by": "scripts/fit_device_classes.py",
        "inputs": {"corpus_rows_used": len(corpus_pairs), "own_samples": len(own_pairs),
                   "own_runs": [runs[0], *runs[1], runs[2], runs[3]]},
        "classes": classes}, indent=1, sort_keys=True) + "\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "loo.json").write_text(json.dumps({"summary_all": heldout, "summary_corpus": summarise(results, True),
                                              "results": results, "skipped": skipped}, indent=1) + "\n")
    (out / "loo.md").write_text(markdown(results, summarise(results, True), skipped))
    from edgeprof.analysis.device_classes import load_class_factors

    if (REPO / args.h200_set).is_file():
        (out / "h200_uncalibrated.md").write_text(h200_table(load_class_factors(Path(args.factors)), args.h200_set))
    for phase in ("decode", "prefill"):
        good, total = within(results, phase)
        alone, _ = within(results, phase, key="ratio_class")
        print(f"{phase}: {good}/{total} corpus rows within 25 % held out ({alone}/{total} with the class factors alone)")


if __name__ == "__main__":
    main()
