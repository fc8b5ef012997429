"""The figures of sustained runs (`edgeprof run --sustain`) as a Markdown table, for docs/findings.md.

    python scripts/sustain_summary.py RUN_DIR [RUN_DIR ...] [--out FILE.md]

One row per sustained configuration: the figures of `bench.sustain.summarize` (first minute, steady state,
drop, time to throttle, limit), computed here from the run's window series `sustain/<run_key>.csv` so
runs recorded by older code are read by today's rule, and the spread of the per-window decode rate (min,
median, max and the coefficient of variation), which on a shared host is the drift the machine adds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeprof.bench.sustain import read_rows, summarize  # noqa: E402
from edgeprof.results.records import read_records  # noqa: E402
from edgeprof.sensors.throttle import limit_of  # noqa: E402


def _fmt(value, digits: int = 1) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def rows_of(run: Path) -> list[dict]:
    manifest = json.loads((run / "manifest.json").read_text())
    out, seen = [], set()
    for record in read_records(run / "records.jsonl"):
        metrics = record.get("metrics") or {}
        if record.get("status") != "ok" or "sustain_series" not in metrics or record["run_key"] in seen:
            continue
        seen.add(record["run_key"])
        windows = read_rows(run / metrics["sustain_series"])
        metrics = summarize(windows, limit_of)
        rates = [w["decode_tps"] for w in windows if "decode_tps" in w]
        temps = [w["temp_c_max"] for w in windows if "temp_c_max" in w]
        hp = record["hyperparameters"]
        out.append({
            "device": manifest["device"]["profile"], "model": record["model"]["name"].removeprefix("synth:"),
            "quant": record["model"]["quant"], "b/p/g": f"{hp['batch']}/{hp['prompt_tokens']}/{hp['gen_tokens']}",
            "windows": len(windows), "minutes": metrics["sustain_duration_s"] / 60,
            "first-minute tok/s": metrics.get("sustain_first_minute_decode_tps"),
            "steady tok/s": metrics.get("sustain_steady_decode_tps"), "steady from s": metrics.get("sustain_steady_from_s"),
            "last 3 windows tok/s": metrics.get("sustain_end_decode_tps"),
            "drop %": metrics.get("sustain_drop_pct"), "drop to": metrics.get("sustain_drop_basis"),
            "window tok/s min/median/max": "/".join(f"{v:.1f}" for v in (min(rates), statistics.median(rates), max(rates)))
            if rates else None,
            "window CV %": 100 * statistics.pstdev(rates) / statistics.mean(rates) if len(rates) > 1 else None,
            "temp °C first/max": f"{temps[0]:.0f}/{max(temps):.0f}" if temps else None,
            "steady W": metrics.get("sustain_steady_power_w"),
            "time to throttle s": metrics.get("sustain_time_to_throttle_s"), "limit": metrics.get("sustain_limit"),
        })
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = [row for run in args.runs for row in rows_of(run)]
    if not rows:
        print("no sustained configuration in these runs", file=sys.stderr)
        return 1
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in columns) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
