"""The `edgeprof` command line. Thin: it parses, calls the library, renders.

Errors a user can cause (`EdgeprofError`) print one line and exit with code 2; `--verbose` adds the
traceback for bug reports.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgeprof.errors import ConfigError, EdgeprofError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run and profile LLMs on edge devices and server GPUs under identical settings.")
models_app = typer.Typer(help="Model presets usable as synth:<name>.", invoke_without_command=True)
devices_app = typer.Typer(help="Device profiles and detection.", invoke_without_command=True)
app.add_typer(models_app, name="models")
app.add_typer(devices_app, name="devices")
fleet_app = typer.Typer(help="Fleets: one sweep across many devices (Dask distributed, mutual TLS).", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")

# Piped output (logs, CI) gets a wide fixed width so tables keep whole figures instead of "12…".
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_state = {"verbose": False}


def user_errors(command: Callable) -> Callable:
    """Turn an `EdgeprofError` raised by a command into one red line and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except EdgeprofError as exc:
            if _state["verbose"]:
                traceback.print_exc()
            err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--{name} takes comma-separated integers, got {text!r}") from None


def _duration(text: str) -> float:
    from edgeprof.bench.sustain import parse_duration_s

    return parse_duration_s(text)


def _strs(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks and native logs.")) -> None:
    _state["verbose"] = verbose


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=False)


def _pinned(specs: list[str], revision: str) -> list[str]:
    from edgeprof.models.hub import pin_revisions

    return pin_revisions(specs, revision)


_FIDELITY_TEXT_HELP = "UTF-8 text perplexity and KL are measured over (default: edgeprof's held-out Python text)."
_CALIBRATION_HELP = ("UTF-8 text the calibrated quantizations (iq2_xs…, q4_k_m-imat…, int4-gptq) calibrate on "
                     "(default: the fidelity text).")


def _abs(path: Path | None) -> str | None:
    return str(path.resolve()) if path is not None else None


@app.command()
@user_errors
def fidelity(
    models: list[str] = typer.Argument(..., help="synth:<preset>, trained:stdlib-llama, an HF folder or a .gguf/.onnx file."),
    quant: str = typer.Option("f16,q8_0,q4_k_m", "--quant", "-q", help="Quantizations, comma-separated (GGUF or ONNX names)."),
    backend: str = typer.Option("llama.cpp", "--backend", help="Backends, comma-separated: llama.cpp, onnxruntime."),
    text: Path | None = typer.Option(None, "--fidelity-text", "--text", help=_FIDELITY_TEXT_HELP),
    calibration_text: Path | None = typer.Option(None, "--calibration-text", help=_CALIBRATION_HELP),
    chunks: int = typer.Option(10, "--chunks", help="Chunks of the text scored; 0 = all."),
    ctx: int = typer.Option(512, "--ctx", "-c", help="Tokens per chunk; the second half of each is scored."),
    threads: int = typer.Option(0, "--threads", "-t", help="CPU threads; 0 = physical cores."),
    gpu_layers: int = typer.Option(0, "--gpu-layers", "-ngl", help="llama.cpp layers on the GPU; -1 = all."),
    provider: str = typer.Option("cpu", "--provider", help="ONNX Runtime execution provider."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
) -> None:
    """Perplexity of each artifact over a text, and KL divergence, top-1 agreement and Δp against its
    unquantized parent at every scored position (llama-perplexity's method), on llama.cpp or ONNX Runtime."""
    import json

    from edgeprof.bench.fidelity_run import measure_fidelity_of
    from edgeprof.fidelity import FidelitySettings
    from edgeprof.results.tables import fidelity_table

    if fmt not in ("table", "json"):
        raise ConfigError(f"unknown format {fmt!r} for fidelity (table, json)")
    settings = FidelitySettings(_abs(text), ctx, chunks).validate()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("fidelity", total=None)

        def on_event(event: str, **info) -> None:
            if event == "config_started":
                progress.update(task, description=info["label"], completed=0, total=None)
            elif event == "config_progress" and info.get("total"):
                progress.update(task, description=f"{info['label']} · {info['step']}", completed=info["done"],
                                total=info["total"])

        rows = measure_fidelity_of(_strs(",".join(models)), _strs(quant), _strs(backend),
                                   settings, threads, gpu_layers, provider,
                                   notify=on_event, calibration_text=_abs(calibration_text))
    if fmt == "json":
        console.print_json(json.dumps(rows))
    else:
        console.print(fidelity_table([row for row in rows if row.get("fidelity_status") != "skipped"]))
        for row in rows:
            if row.get("fidelity_status") == "skipped":
                err_console.print(f"skipped {row['quant']} on {row['backend']}: {row['fidelity_error']}", highlight=False)
    if any(row.get("fidelity_status") not in ("ok", "skipped") for row in rows):
        raise typer.Exit(1)


@app.command()
@user_errors
def run(
    model: str = typer.Option("synth:smollm2-135m", "--model", "-m",
                              help="synth:<preset>, an HF folder or a .gguf file; comma-separated for several."),
    revision: str = typer.Option("", "--revision", help="Branch, tag or commit for Hugging Face Hub ids (as org/repo@REV)."),
    quant: str = typer.Option("q4_k_m,f16", "--quant", "-q",
                              help="Quantizations, comma-separated: GGUF (q4_k_m, q8_0, f16, ...) for llama.cpp, "
                                   "ONNX (fp32, fp16, int8, int4, int4-b<block>) for onnxruntime; f32/f16 serve both."),
    backend: str = typer.Option("llama.cpp", "--backend", help="Backends, comma-separated: llama.cpp, onnxruntime."),
    batch: str = typer.Option("1", "--batch", "-b", help="Sequences decoded together, e.g. 1,4,16."),
    prompt: str = typer.Option("128", "--prompt", "-p", help="Prompt tokens per sequence."),
    gen: str = typer.Option("64", "--gen", "-n", help="Decode steps per sequence (as llama-bench -n)."),
    context: str = typer.Option("0", "--context", "-c", help="Context per sequence; 0 = depth + prompt + gen."),
    depth: str = typer.Option("0", "--depth", help="Tokens already in the KV cache before the prompt (llama-bench -d), e.g. 0,512,4096."),
    threads: str = typer.Option("0", "--threads", "-t", help="CPU threads; 0 = physical cores."),
    gpu_layers: str = typer.Option("auto", "--gpu-layers", "-ngl",
                                   help="Layers offloaded to the GPU; -1 = all; auto = all on a GPU build with an "
                                        "NVIDIA GPU, else 0."),
    flash_attn: str = typer.Option("auto", "--flash-attn", help="auto, on or off."),
    kv_type: str = typer.Option("f16", "--kv-type", help="KV-cache type: f16, q8_0, q4_0, f32, ..."),
    n_batch: str = typer.Option("2048", "--n-batch", help="Logical batch (tokens per decode call in prefill)."),
    n_ubatch: str = typer.Option("512", "--n-ubatch", help="Physical micro-batch."),
    sampler: str = typer.Option("greedy", "--sampler", help="greedy, or none (no logits read, as llama-bench)."),
    provider: str = typer.Option("cpu", "--provider", help="ONNX Runtime execution providers: cpu, cuda, tensorrt, ..."),
    graph_opt: str = typer.Option("all", "--graph-opt", help="ONNX Runtime graph optimization: disable, basic, extended, all."),
    profile_ops: bool = typer.Option(False, "--profile-ops",
                                     help="After measuring, a profiled pass gives time by operator category (llama.cpp and ONNX Runtime; never mixed into the timed figures)."),
    fidelity: bool = typer.Option(True, "--fidelity/--no-fidelity",
                                  help="After measuring: perplexity over a text, and KL/top-1/Δp against the unquantized parent at every scored position."),
    fidelity_text: Path | None = typer.Option(None, "--fidelity-text", help=_FIDELITY_TEXT_HELP),
    calibration_text: Path | None = typer.Option(None, "--calibration-text", help=_CALIBRATION_HELP),
    fidelity_chunks: int = typer.Option(10, "--fidelity-chunks", help="Chunks of the text scored; 0 = all (llama-perplexity's --chunks)."),
    fidelity_ctx: int = typer.Option(512, "--fidelity-ctx", help="Tokens per chunk (llama-perplexity's -c); the second half is scored."),
    repetitions: int = typer.Option(3, "--repetitions", "-r", min=1, help="Measured repetitions."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Unmeasured warm-up repetitions."),
    timeout: float = typer.Option(900.0, "--timeout", help="Seconds one configuration may take."),
    device: str = typer.Option("", "--device", "-d",
                               help="Device profile (NAME or NAME:MODE); default: detected; 'jetson' = this Jetson."),
    emulate: bool = typer.Option(False, "--emulate", help="Emulate --device on this host (cores, no GPU, memory fit)."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Folder that receives the run directory."),
    sample_hz: float = typer.Option(10.0, "--sample-hz", help="Sensor sampling rate; 0 turns sampling off."),
    idle_s: float = typer.Option(3.0, "--idle-s", min=0, help="Seconds of idle baseline before the first run."),
    energy_window: float = typer.Option(2.0, "--energy-window", min=0,
                                        help="Energy: after the timed repetitions, hold prefill and decode at steady "
                                             "state for one window per repetition of at least this many seconds (longer "
                                             "where the power sensor needs it); 0 = energy from the timed phases only, "
                                             "unresolved where they are too short for the sensor."),
    gpus: str = typer.Option("", "--gpus",
                             help="GPUs the run uses and measures: NVML indices or UUIDs, comma-separated, or all; "
                                  "default one (the first CUDA_VISIBLE_DEVICES allows)."),
    sustain: str = typer.Option("0", "--sustain", help="After the repetitions, generate back to back this long "
                                "(10m, 90s): tokens/s, power, temperatures, clocks and throttling per window."),
    sustain_window: float = typer.Option(10.0, "--sustain-window", min=0.1, help="Seconds per sustained window (at least "
                                         "what the power sensor resolves)."),
    until_steady: bool = typer.Option(False, "--until-steady", help="End a sustained run early once throughput and "
                                      "temperature have settled."),
    power_mode: str = typer.Option("", "--power-mode", help="Jetson nvpmodel modes to run each configuration under, "
                                   "e.g. MAXN,25W,15W (needs root; the mode found is restored on exit)."),
    jetson_clocks: bool = typer.Option(False, "--jetson-clocks", help="With --power-mode: pin clocks at each mode's "
                                       "maximum (jetson_clocks; restored on exit)."),
    allow_long_context: bool = typer.Option(False, "--allow-long-context",
                                            help="Run prompt + generated tokens past the model's trained context "
                                                 "(refused otherwise)."),
    fleet: str = typer.Option("", "--fleet", help="Run on the devices of the fleet at tls://HOST:PORT instead of here."),
    fleet_devices: str = typer.Option("", "--devices", help="With --fleet: device names, comma-separated; default all joined."),
    credentials: Path | None = typer.Option(None, "--credentials", help="With --fleet: the fleet's credentials folder "
                                            "(default ~/.config/edgeprof/fleet)."),
    live: bool = typer.Option(False, "--live", help="Show power, temperature, clocks and memory as the run's own "
                              "sampler reads them, refreshed while the worker measures (nothing more is read)."),
) -> None:
    """Run models on this machine (or a fleet's devices) and record speed, memory, energy and temperature for
    every configuration."""
    from edgeprof.bench.sweep import SweepSpec

    grid = {
        "batch": _ints(batch, "batch"), "prompt_tokens": _ints(prompt, "prompt"), "gen_tokens": _ints(gen, "gen"),
        "context": _ints(context, "context"), "depth": _ints(depth, "depth"), "threads": _ints(threads, "threads"),
        "gpu_layers": _gpu_layers(gpu_layers), "flash_attn": _strs(flash_attn), "kv_type": _strs(kv_type),
        "n_batch": _ints(n_batch, "n-batch"), "n_ubatch": _ints(n_ubatch, "n-ubatch"), "sampler": _strs(sampler),
        "provider": _strs(provider), "graph_opt": _strs(graph_opt), "power_mode": _strs(power_mode) or [None],
    }
    spec = SweepSpec(models=_pinned(_strs(model), revision), quants=_strs(quant), backends=_strs(backend), grid=grid,
                     repetitions=repetitions, warmup=warmup, timeout_s=timeout, device=device, emulate=emulate,
                     fidelity=fidelity, fidelity_text=_abs(fidelity_text), fidelity_chunks=fidelity_chunks,
                     fidelity_ctx=fidelity_ctx, profile_ops=profile_ops, sample_hz=sample_hz, idle_s=idle_s,
                     energy_window_s=energy_window, allow_long_context=allow_long_context, gpus=gpus,
                     sustain_s=_duration(sustain), sustain_window_s=sustain_window, sustain_until_steady=until_steady,
                     jetson_clocks=jetson_clocks, calibration_text=_abs(calibration_text))
    _devices_need_a_fleet(fleet_devices, fleet)
    if fleet:
        if device or emulate or gpus:
            raise ConfigError("--device, --emulate and --gpus do not apply with --fleet: each device runs as it "
                              "joined (`fleet join --device X --emulate`)")
        _execute_fleet(spec, fleet, _strs(fleet_devices), credentials, out)
        return
    _execute(spec, out, live=live)


@app.command()
@user_errors
def sweep(
    file: Path | None = typer.Argument(None, help="Sweep YAML (examples: scripts/sweeps/)."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue this run directory where it stopped."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Folder that receives the run directory."),
    device: str = typer.Option("", "--device", "-d", help="Override the file's device."),
    fidelity_text: Path | None = typer.Option(None, "--fidelity-text", help=_FIDELITY_TEXT_HELP),
    calibration_text: Path | None = typer.Option(None, "--calibration-text", help=_CALIBRATION_HELP),
    fleet: str = typer.Option("", "--fleet", help="Run on the devices of the fleet at tls://HOST:PORT instead of here."),
    fleet_devices: str = typer.Option("", "--devices", help="With --fleet: device names, comma-separated; default all joined."),
    credentials: Path | None = typer.Option(None, "--credentials", help="With --fleet: the fleet's credentials folder "
                                            "(default ~/.config/edgeprof/fleet)."),
    live: bool = typer.Option(False, "--live", help="Show the run's sensors (power, temperature, clocks, memory) live."),
) -> None:
    """Run a sweep file (models x quants x backends x hyperparameters) here or on a fleet, or resume an
    interrupted run (a fleet sweep's folder resumes on its devices)."""
    from edgeprof.bench.sweep import load_sweep_file, resumed_spec
    from edgeprof.fleet import FLEET_FILE

    if resume is not None and file is not None:
        raise ConfigError("give either a sweep file or --resume RUN_DIR, not both")
    if resume is not None and (resume / FLEET_FILE).exists():
        _execute_fleet(None, fleet, [], credentials, resume.parent, resume_dir=resume)
        return
    if resume is not None:
        _execute(resumed_spec(resume), resume.parent, resume_dir=resume, live=live)
        return
    if file is None:
        raise ConfigError("give a sweep file (e.g. scripts/sweeps/batch.yaml) or --resume RUN_DIR")
    _devices_need_a_fleet(fleet_devices, fleet)
    spec = load_sweep_file(file)
    if fleet:
        if device:
            raise ConfigError("--device does not apply with --fleet: each device runs as its own profile")
        _execute_fleet(spec, fleet, _strs(fleet_devices), credentials, out)
        return
    if device:
        spec.device = device
    if fidelity_text is not None:
        spec.fidelity_text = _abs(fidelity_text)
    if calibration_text is not None:
        spec.calibration_text = _abs(calibration_text)
    _execute(spec, out, live=live)


def _devices_need_a_fleet(devices: str, fleet: str | None) -> None:
    """`--devices` picks fleet devices; without `--fleet` it would be ignored and the run made here instead."""
    if devices and not fleet:
        raise ConfigError("--devices names fleet devices and needs --fleet tls://HOST:PORT; without it the run "
                          "is made on this machine")


@app.command()
@user_errors
def compare(
    runs: list[Path] = typer.Argument(..., help="Two or more run directories (e.g. an edge run and a server run)."),
    loose: bool = typer.Option(False, "--loose", help="Join on model, quant, backend, batch, prompt, gen only."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, md, csv or json."),
    predicted: bool = typer.Option(True, "--predicted/--no-predicted", help="Add the roofline prediction per device."),
) -> None:
    """Set runs side by side, joined on identical configurations, with ratios to the first run."""
    from edgeprof.analysis.compare import compare_runs
    from edgeprof.results.formats import to_csv, to_json, to_markdown
    from edgeprof.results.tables import compare_table

    if fmt not in ("table", "md", "csv", "json"):
        raise ConfigError(f"unknown format {fmt!r} for compare (table, md, csv, json)")
    found = compare_runs(runs, loose, predicted)
    for note in found.notes:
        err_console.print(note, highlight=False, soft_wrap=True)
    if fmt == "table":
        console.print(compare_table(found.joined, found.runs, loose))
        _print_op_shares(runs, predicted)
        return
    flat = found.flat_rows()
    text = {"md": lambda: to_markdown(flat, tuple(flat[0])), "csv": lambda: to_csv(flat),
            "json": lambda: to_json(flat)}[fmt]()
    sys.stdout.write(text)


@app.command()
@user_errors
def results(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, md, csv, json, jsonl or llama-bench."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
    by_layer: bool = typer.Option(False, "--ops-by-layer", help="Also the llama.cpp operator profile per layer "
                                  "(decode ms by category), where the run used --profile-ops."),
) -> None:
    """Print a run's summary in another format (llama-bench JSON for llama.cpp records)."""
    from edgeprof.analysis.compare import run_rows
    from edgeprof.results.formats import FORMATS, to_csv, to_json, to_jsonl, to_llama_bench, to_markdown
    from edgeprof.results.tables import layer_shares_table, summary_table

    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r} (available: {', '.join(FORMATS)})")
    manifest, records, rows = run_rows(run_dir)
    if fmt == "table":
        console.print(summary_table(rows, title=f"run {manifest.get('run_id')} on {manifest['device']['profile']}"))
        _print_op_shares([run_dir])
        if by_layer:
            console.print(layer_shares_table(records))
        return
    text = {"md": lambda: to_markdown(rows), "csv": lambda: to_csv(rows), "json": lambda: to_json(rows),
            "jsonl": lambda: to_jsonl(rows), "llama-bench": lambda: to_llama_bench(records, manifest)}[fmt]()
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        console.print(f"wrote {out}")


@app.command()
@user_errors
def report(
    runs: list[Path] = typer.Argument(..., help="Run directories (an edge run and a server run, say)."),
    out: Path = typer.Option(Path("report"), "--out", "-o", help="Folder for report.html and the PNGs."),
) -> None:
    """Write one self-contained HTML report (inline CSS and images) with its figures as PNGs."""
    from edgeprof.analysis.report import write_report
    from edgeprof.paths import ensure_writable_dir

    ensure_writable_dir(out, "report folder")
    console.print(f"report: {write_report(runs, out)}")


def _print_op_shares(run_dirs: list[Path], predicted: bool = True) -> None:
    """The measured operator shares of these runs beside the roofline's, where any run profiled them."""
    from edgeprof.analysis.compare import disambiguate, load_run
    from edgeprof.analysis.op_shares import share_rows
    from edgeprof.results.tables import op_shares_table

    runs = [load_run(path) for path in run_dirs]
    disambiguate(runs)
    table = op_shares_table(share_rows(runs, predicted))
    if table is not None:
        console.print(table)


def _gpu_layers(text: str) -> list:
    """--gpu-layers values; `auto` (the default) means all layers on a GPU build with a GPU (NVML lists one,
    or a Jetson's integrated GPU), else 0."""
    values = []
    for part in _strs(text):
        values.append(part if part == "auto" else _ints(part, "gpu-layers")[0])
    return values


def _execute(spec, out: Path, resume_dir: Path | None = None, live: bool = False) -> None:
    """Run a sweep through the library with progress bars (and, `live`, the sensors' latest readings above
    them), then print its summary and exit as it ended."""
    from rich.console import Group
    from rich.live import Live
    from rich.progress import TimeRemainingColumn

    from edgeprof.bench.execute import execute
    from edgeprof.fidelity import FidelitySettings
    from edgeprof.results.tables import summary_table
    from edgeprof.sensors.live import LiveReadout

    if spec.fidelity:  # a text that cannot be scored is one line before the idle baseline, not after
        FidelitySettings(spec.fidelity_text, spec.fidelity_ctx, spec.fidelity_chunks).validate()

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=err_console, transient=False)
    readout = LiveReadout() if live else None
    display = Live(Group(readout, progress), console=err_console, refresh_per_second=2) if live else progress
    with display:
        overall = None
        export_task = None

        def on_event(event: str, **info) -> None:
            nonlocal overall, export_task
            if event == "message":
                progress.console.print(info["text"], soft_wrap=True, highlight=False)
            elif event == "run_started":
                overall = progress.add_task("configurations", total=info["configurations"])
            elif event == "export":
                if export_task is None:
                    export_task = progress.add_task(info["step"], total=info["total"])
                progress.update(export_task, description=info["step"], completed=info["done"], total=info["total"])
            elif event == "sensors_started" and readout is not None:
                readout.attach(info["latest"], info["metrics"])
            elif event == "config_started":
                progress.update(overall, description=info["label"])
            elif event == "config_progress":  # where the worker is: a repetition, a long warm-up prefill
                done = f" {info['done']}/{info['total']} {info.get('unit', 'tokens')}" if info.get("total") else ""
                progress.update(overall, description=f"{info['label']} · {info['step']}{done}")
            elif event in ("config_finished", "config_already_done"):
                progress.advance(overall)

        result = execute(spec, out, resume_dir, on_event)
    rows = result.rows
    title = f"edgeprof run on {result.profile}" + (" (EMULATED on this host)" if result.emulated else "")
    console.print(summary_table(rows, title=title))
    _print_op_shares([result.run_dir])
    for row in rows:
        if row["status"] == "skipped":
            err_console.print(f"[yellow]skipped[/yellow] {row['model']} {row['quant']} on {row['backend']}: "
                              f"{row['error']}", highlight=False)
    for row in result.failed:
        err_console.print(f"[red]{row['model']} {row['quant']}: {row['status']}[/red]: {row['error']}", highlight=False)
    console.print(f"run directory: {result.run_dir}")
    if result.interrupted:
        err_console.print(f"interrupted; continue with: edgeprof sweep --resume {result.run_dir}", soft_wrap=True,
                          highlight=False)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _execute_fleet(spec, address: str, devices: list[str], credentials: Path | None, out: Path,
                   resume_dir: Path | None = None) -> None:
    """Run a sweep on a fleet with one progress bar per device, then print each device's summary."""
    from edgeprof.fleet.credentials import FleetCredentials, default_credentials_dir
    from edgeprof.fleet.sweep import run_fleet
    from edgeprof.results.tables import summary_table

    creds = FleetCredentials(credentials or default_credentials_dir())
    with _progress() as progress:
        bars: dict[str, int] = {}

        def on_event(event: str, **info) -> None:
            if event == "message":
                progress.console.print(info["text"], soft_wrap=True, highlight=False)
            elif event == "ship":
                progress.console.print(f"shipping {info['file']} ({info['bytes'] / 2**20:.1f} MiB) to {info['device']}",
                                       highlight=False)
            elif event == "device_started" and not info["configurations"]:  # a resumed device with nothing left
                progress.console.print(f"{info['device']}: nothing left to run", highlight=False)
            elif event == "device_started":
                bars[info["device"]] = progress.add_task(info["device"], total=info["configurations"])
            elif event == "config_finished":
                progress.update(bars[info["device"]], description=f"{info['device']} · {info['label']}")
                progress.advance(bars[info["device"]])
            elif event == "device_lost":
                progress.console.print(f"[red]{info['device']} left the fleet[/red]: {info['lost']} configuration(s) "
                                       "recorded as lost", highlight=False)

        result = run_fleet(spec, address, creds, devices, out, resume_dir, on_event)
    for name, rows in result.rows.items():
        console.print(summary_table(rows, title=f"{name} (fleet)"))
        console.print(f"run directory: {result.run_dirs[name]}")
    if len(result.run_dirs) > 1:
        console.print("side by side: edgeprof compare " + " ".join(str(p) for p in result.run_dirs.values()),
                      soft_wrap=True, highlight=False)
    if result.ended:
        err_console.print(f"[red]{result.ended}[/red]", soft_wrap=True, highlight=False)
    if any(result.lost.values()) or result.absent:
        err_console.print(f"unfinished configurations remain; once the devices are back: edgeprof sweep --resume "
                          f"{result.folder}", soft_wrap=True, highlight=False)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@fleet_app.command("init")
@user_errors
def fleet_init(
    credentials: Path | None = typer.Option(None, "--credentials", help="Folder for the credentials "
                                            "(default ~/.config/edgeprof/fleet)."),
    force: bool = typer.Option(False, "--force", help="Replace credentials already there."),
) -> None:
    """Create a fleet's TLS credentials: one private CA and one bundle per role (head/, device/, client/)."""
    from edgeprof.fleet.credentials import default_credentials_dir, init_credentials

    creds = init_credentials(credentials or default_credentials_dir(), overwrite=force)
    console.print(f"fleet credentials in {creds.folder}: ship each machine only its role's folder (head/, device/, "
                  "client/) into the same place, or pass --credentials", soft_wrap=True, highlight=False)


@fleet_app.command("head")
@user_errors
def fleet_head(
    address: str = typer.Option("tls://127.0.0.1:8786", "--address", help="Where to listen; localhost unless "
                                "given (e.g. tls://0.0.0.0:8786 for a LAN)."),
    credentials: Path | None = typer.Option(None, "--credentials", help="The fleet's credentials folder."),
) -> None:
    """Run the fleet's head (the scheduler devices join and sweeps go to) until Ctrl-C."""
    from edgeprof.fleet.credentials import FleetCredentials, default_credentials_dir
    from edgeprof.fleet.head import check_address, serve_head

    creds = FleetCredentials(credentials or default_credentials_dir())
    check_address(address)
    creds.check("scheduler")
    err_console.print(f"fleet head at {address} (mutual TLS); Ctrl-C stops it", highlight=False)
    serve_head(address, creds)


@fleet_app.command("join")
@user_errors
def fleet_join(
    address: str = typer.Argument(..., help="The head, tls://HOST:PORT."),
    device: str = typer.Option("", "--device", "-d", help="Device profile; default: detected."),
    emulate: bool = typer.Option(False, "--emulate", help="Emulate --device on this host."),
    name: str = typer.Option("", "--name", help="This device's name in the fleet; default: its profile name."),
    store: Path | None = typer.Option(None, "--store", help="Where shipped models and scratch runs live "
                                      "(default <cache>/fleet)."),
    credentials: Path | None = typer.Option(None, "--credentials", help="The fleet's credentials folder."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to look for the head before giving up (0: "
                                  "forever); once joined, a device waits for a restarted head on its own."),
) -> None:
    """Join this machine to a fleet as one device, and measure what the head sends until Ctrl-C."""
    from edgeprof.hardware.devices import host_facts, resolve_device
    from edgeprof.fleet.credentials import FleetCredentials, default_credentials_dir
    from edgeprof.fleet.head import check_address
    from edgeprof.fleet.node import NodeSettings, serve_node
    from edgeprof.paths import cache_root

    check_address(address)
    if emulate and not device:
        raise ConfigError("--emulate needs --device NAME (the device to emulate); `edgeprof devices` lists them")
    profile = resolve_device(device, host_facts(), emulate=emulate)
    settings = NodeSettings(name or profile.name, device or profile.name, emulate, store or cache_root() / "fleet")
    security = FleetCredentials(credentials or default_credentials_dir()).security("worker")
    err_console.print(f"joining {address} as {settings.name} ({profile.name}{', emulated' if emulate else ''}); "
                      "Ctrl-C leaves", highlight=False)
    serve_node(address, security, settings, timeout, say=lambda text: err_console.print(text, highlight=False))


@fleet_app.command("status")
@user_errors
def fleet_status(
    address: str = typer.Argument("tls://127.0.0.1:8786", help="The head, tls://HOST:PORT."),
    credentials: Path | None = typer.Option(None, "--credentials", help="The fleet's credentials folder."),
) -> None:
    """List the fleet's devices, what each is measuring, and when the head last heard from it."""
    from rich.table import Table

    from edgeprof.fleet.credentials import FleetCredentials, default_credentials_dir
    from edgeprof.fleet.head import connect, list_devices

    client = connect(address, FleetCredentials(credentials or default_credentials_dir()))
    try:
        devices = list_devices(client)
    finally:
        client.close()
    table = Table(title=f"fleet at {address}: {len(devices)} device(s)")
    for column in ("device", "host", "running", "queued", "last heartbeat"):
        table.add_column(column)
    for d in devices:
        table.add_row(d.name, d.host, ", ".join(d.running) or "idle", str(d.queued), f"{d.last_heartbeat_s:.1f} s ago")
    console.print(table)


@app.command()
@user_errors
def sensors(
    once: bool = typer.Option(False, "--once", help="One reading, then exit."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    duration: float = typer.Option(0.0, "--duration", help="Seconds of live readout; 0 = until Ctrl-C."),
    hz: float = typer.Option(2.0, "--hz", help="Live readout refresh rate."),
    tegrastats_log: Path | None = typer.Option(None, "--tegrastats-log", help="Summarise a recorded tegrastats log."),
    interval_ms: float = typer.Option(1000.0, "--interval-ms", help="The log's tegrastats --interval."),
) -> None:
    """Which sensors this host has (and why not the others), then a live readout."""
    import json
    import time

    from edgeprof.sensors.registry import candidate_sensors, probe_sensors
    from edgeprof.sensors.views import readings_table, states_table, summarise_tegrastats_log

    if tegrastats_log is not None:
        summary = summarise_tegrastats_log(tegrastats_log, interval_ms)
        console.print_json(json.dumps(summary)) if as_json else console.print(summary)
        return
    available, states = probe_sensors(candidate_sensors())
    try:
        reading: dict[str, float] = {}
        for sensor in available:
            reading.update(sensor.read())
        if as_json:
            console.print_json(json.dumps({
                "sensors": {s.name: {"available": s.availability.available, "reason": s.availability.reason,
                                     "fix": s.availability.fix} for s in states},
                "reading": reading}))
            return
        console.print(states_table(states))
        if once:
            console.print(readings_table(reading, [m for s in available for m in s.metrics()]))
            return
        from rich.live import Live

        metrics = [m for s in available for m in s.metrics()]
        end = time.monotonic() + duration if duration else float("inf")
        with Live(readings_table(reading, metrics), console=console, refresh_per_second=max(hz, 1)) as live:
            while time.monotonic() < end:
                time.sleep(1 / hz)
                reading = {}
                for sensor in available:
                    reading.update(sensor.read())
                live.update(readings_table(reading, metrics))
    except KeyboardInterrupt:
        pass
    finally:
        for sensor in available:
            sensor.close()


@app.command()
@user_errors
def export(
    model: str = typer.Argument(..., help="synth:<preset> or a local HF folder."),
    to: str = typer.Option("gguf", "--to", help="Artifact format: gguf or onnx."),
    revision: str = typer.Option("", "--revision", help="Branch, tag or commit for Hugging Face Hub ids (as org/repo@REV)."),
    quant: str = typer.Option("", "--quant", "-q",
                              help="Quantizations, comma-separated (default q4_k_m for gguf, fp32,int4 for onnx; "
                                   "int4-b<block> sets the MatMulNBits block size)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also copy artifacts (and sidecars) here."),
    calibration_text: Path | None = typer.Option(None, "--calibration-text", help=_CALIBRATION_HELP),
) -> None:
    """Export (and quantize) a model into the artifact cache, optionally copying it out."""
    from edgeprof.backends import registry
    from edgeprof.export.artifacts import copy_artifact_out
    from edgeprof.paths import ensure_writable_dir
    from edgeprof.models.source import resolve

    if to not in registry.formats():
        raise ConfigError(f"unknown export format {to!r} (available: {', '.join(registry.formats())})")
    source = resolve(_pinned([model], revision)[0])
    if source.is_file:
        raise ConfigError(f"{model} is already a {source.kind.upper()} file; export takes synth:<preset> or an HF folder")
    backend = registry.for_format(to)  # the format's exporter and quantization table are its backend's
    quants = [backend.quants.canonical(q) for q in _strs(quant or ",".join(backend.quants.defaults))]
    exporter = backend.export
    if out is not None:
        ensure_writable_dir(out, "output folder")
    with _progress() as progress:
        task = progress.add_task("export", total=None)

        def on_step(step: str, done: int, total: int) -> None:
            progress.update(task, description=step, completed=done, total=total)

        artifacts = [exporter(source, q, progress=on_step, calibration_text=_abs(calibration_text)) for q in quants]
    for artifact in artifacts:
        path = Path(artifact.path) if out is None else copy_artifact_out(artifact, out)
        console.print(f"{artifact.quant:8} {artifact.bytes / 1e6:10.1f} MB  sha256 {artifact.sha256[:16]}  {path}")


@models_app.callback()
@user_errors
def models_list(ctx: typer.Context) -> None:
    """List model presets with parameter counts, weight sizes and KV-cache cost."""
    if ctx.invoked_subcommand is None:
        from edgeprof.models.presets import list_presets
        from edgeprof.results.tables import presets_table

        console.print(presets_table(list_presets()))


@models_app.command("show")
@user_errors
def models_show(
    name: str,
    revision: str = typer.Option("", "--revision", help="Branch, tag or commit for Hugging Face Hub ids (as org/repo@REV)."),
) -> None:
    """Details of one preset (its HF config fields and derived sizes), or of a GGUF file's model."""
    from edgeprof.models.presets import get_preset
    from edgeprof.results.tables import gguf_facts_table, preset_detail_table

    if name.lower().endswith(".gguf") or "/" in name:  # a file or a Hub id
        from edgeprof.models.source import resolve

        source = resolve(_pinned([name], revision)[0])
        if not source.is_gguf:
            raise ConfigError(f"{name} is a {source.kind} model; `models compare {name}` describes any model")
        console.print(gguf_facts_table(source.gguf_facts()))
        return
    console.print(preset_detail_table(get_preset(name)))


@models_app.command("compare")
@user_errors
def models_compare(
    models: list[str] = typer.Argument(..., help="Presets (NAME or synth:NAME), HF folders or GGUF files."),
    context: int = typer.Option(4096, "--context", "-c", min=1, help="Context for the KV-cache column and the prediction."),
    device: str = typer.Option("", "--device", "-d", help="Also predict batch-1 decode t/s on this device profile."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, md, csv or json."),
    revision: str = typer.Option("", "--revision", help="Branch, tag or commit for Hugging Face Hub ids (as org/repo@REV)."),
) -> None:
    """The converged-architecture table: shape, attention, FFN, positions, windows, experts, parameters,
    KV-cache and weight bytes, side by side."""
    from edgeprof.analysis.survey import survey
    from edgeprof.results.formats import to_csv, to_json, to_markdown
    from edgeprof.results.tables import survey_table

    if fmt not in ("table", "md", "csv", "json"):
        raise ConfigError(f"unknown format {fmt!r} for models compare (table, md, csv, json)")
    rows = survey(models, context, device, revision)
    if fmt == "table":
        console.print(survey_table(rows, context, device))
        return
    flat = [row.to_dict() for row in rows]
    sys.stdout.write({"md": lambda: to_markdown(flat, tuple(flat[0])), "csv": lambda: to_csv(flat),
                      "json": lambda: to_json(flat)}[fmt]())


@devices_app.callback()
@user_errors
def devices_list(ctx: typer.Context) -> None:
    """List device profiles with their memory, bandwidth, compute and power figures."""
    if ctx.invoked_subcommand is None:
        from edgeprof.hardware.devices import list_profiles
        from edgeprof.results.tables import devices_table

        console.print(devices_table(list_profiles()))


@devices_app.command("show")
@user_errors
def devices_show(name: str) -> None:
    """One profile in full (NAME or NAME:MODE), with the sources of its figures."""
    import yaml

    from edgeprof.hardware.devices import get_profile

    profile = get_profile(name)
    console.print(f"[bold]{profile.display_name}[/bold] ({profile.name}, {profile.kind})")
    console.print(yaml.safe_dump(profile.data, sort_keys=False).rstrip(), highlight=False)


@devices_app.command("detect")
@user_errors
def devices_detect() -> None:
    """Show the profile and facts detected for this host."""
    from edgeprof.hardware.devices import detect_profile, host_facts

    facts = host_facts()
    console.print(f"profile: {detect_profile(facts).name}")
    for key, value in facts.to_dict().items():
        console.print(f"{key}: {value}")


@app.command("calibrate")
@user_errors
def calibrate_command(
    threads: int = typer.Option(0, "--threads", "-t", help="Threads for the bandwidth test; 0 = physical cores."),
    gpu: bool = typer.Option(True, "--gpu/--no-gpu", help="Also measure the GPU (needs torch with CUDA)."),
    llama: bool = typer.Option(True, "--llama/--no-llama",
                               help="Also fit effective costs from short llama.cpp runs of SmolLM2-135M and "
                                    "Llama-3.2-1B (about ten minutes on 2 cores the first time; on a GPU build, the "
                                    "GPU's too)."),
) -> None:
    """Measure this host's memory bandwidth and matmul rates; the predictor then uses them."""
    from edgeprof.analysis.fit import describe
    from edgeprof.analysis.calibration import LLAMA_QUANTS as LLAMA_FIT_QUANTS
    from edgeprof.analysis.calibration import calibrate
    from edgeprof.hardware.devices import detect_profile, host_facts

    facts = host_facts()
    profile = detect_profile(facts)
    how_long = "about ten minutes: real llama.cpp runs of two presets" if llama else "about a minute"
    err_console.print(f"calibrating {profile.name} ({how_long})…")
    result = calibrate(profile.name, threads or None, facts, with_gpu=gpu, with_llama=llama)
    console.print(f"memory bandwidth (triad, {result['threads']} threads): {result['memory_bandwidth_gbps']:.1f} GB/s")
    console.print(f"CPU fp32 matmul: {result['cpu_tflops_fp32'] * 1e3:.1f} GFLOP/s; int8: {result['cpu_int8']}")
    if "gpu_bandwidth_gbps" in result:
        console.print(f"GPU {result['gpu']}: copy {result['gpu_bandwidth_gbps']:.0f} GB/s, "
                      f"bf16 {result['gpu_tflops']['bf16']:.0f} TFLOP/s, fp32 {result['gpu_tflops']['fp32']:.1f} TFLOP/s")
    else:
        console.print(f"GPU: {result.get('gpu', 'not measured')}")
    for kind in ("cpu", "gpu"):
        fits = result.get(f"llama_cpp_{kind}") or {}
        for quant in LLAMA_FIT_QUANTS:
            if quant in fits:
                text = describe(fits[quant]) if isinstance(fits[quant], dict) else fits[quant]
                console.print(f"llama.cpp {kind.upper()} {quant} ({', '.join(fits['presets'])}): {text}")
    console.print(f"saved: {result['path']}")


@app.command()
@user_errors
def predict(
    model: str = typer.Option("synth:llama-3.2-1b", "--model", "-m",
                              help="synth:<preset>, an HF folder, or a GGUF file (predicted at its own quantization)."),
    device: str = typer.Option("", "--device", "-d", help="Device profile (NAME or NAME:MODE); default: detected."),
    quant: str = typer.Option("q4_k_m", "--quant", "-q", help="GGUF quantization (not for a GGUF file)."),
    batch: str = typer.Option("1", "--batch", "-b", help="Batch sizes, comma-separated."),
    prompt: int = typer.Option(512, "--prompt", "-p", min=1),
    gen: int = typer.Option(128, "--gen", "-n", min=1),
    kv_type: str = typer.Option("f16", "--kv-type"),
    sampler: str = typer.Option("greedy", "--sampler", help="greedy (the host reads every logit) or none."),
    cpu: bool = typer.Option(False, "--cpu", help="Predict for the CPU even where the device has a GPU."),
    revision: str = typer.Option("", "--revision", help="Branch, tag or commit for Hugging Face Hub ids (as org/repo@REV)."),
    ceilings_mode: str = typer.Option("auto", "--ceilings",
                                      help="auto: this host's calibration, else the device class's achievable-rate "
                                           "factors, else the datasheet; datasheet: the datasheet peaks alone."),
) -> None:
    """Predict TTFT, decode speed, each operator's share and bound, and whether the model fits."""
    from edgeprof.analysis.prediction import predict_workloads
    from edgeprof.hardware.devices import get_profile, host_facts, resolve_device
    from edgeprof.models.source import resolve
    from edgeprof.results.tables import prediction_tables

    profile = get_profile(device) if device else resolve_device("", host_facts())
    found = predict_workloads(resolve(_pinned([model], revision)[0]), profile, quant, _ints(batch, "batch"), prompt,
                              gen, kv_type, sampler, cpu, ceilings_mode)
    if found.chain.ceilings.note:
        err_console.print(f"warning: {found.chain.ceilings.note}", highlight=False, soft_wrap=True)
    for table in prediction_tables(found.predictions, found.memory, profile.memory_gb, found.title):
        console.print(table)
    for line in filter(None, found.intervals):
        console.print(line, highlight=False)
    knee = found.compute_bound_batch
    console.print(f"decode's weight matmuls turn compute-bound at batch {knee}; attention over the KV cache stays "
                  "memory-bound at any batch" if knee else "decode's weight matmuls stay memory-bound up to batch 4096")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="edgeprof")
