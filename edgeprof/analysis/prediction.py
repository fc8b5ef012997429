"""The prediction chain, written once: a model → the roofline's inputs (an architecture and a GGUF
quantization) → the device's ceilings → the roofline's prediction.

`predict`, `compare` and the report (through `compare`), `models compare` (`survey`) and the roof shares all
start here, so a fix to any step reaches every figure. Analysis of recorded runs resolves a row's model
with `row_source`, which reads the run's own record and this host's caches and never downloads: a Hub model
that is not in the local cache makes its prediction "unavailable: <why>", not a network request.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprof.analysis.ceilings import CEILING_MODES, device_ceilings
from edgeprof.analysis.device_classes import factors_for, interval_text
from edgeprof.analysis.roofline import Ceilings, Prediction, compute_bound_batch, predict, workload_ops
from edgeprof.bench.plan import BenchConfig
from edgeprof.config import Hyperparameters
from edgeprof.errors import ConfigError, EdgeprofError, PredictionUnavailable
from edgeprof.quant.gguf import gguf_quant
from edgeprof.hardware.devices import DeviceProfile, load_calibration
from edgeprof.hardware.emulation import memory_needed
from edgeprof.models.architecture import Architecture
from edgeprof.models.source import ModelSource, resolve
from edgeprof.quant import GgufQuant, kv_bytes_per_element


def roofline_inputs(source: ModelSource, quant_name: str) -> tuple[Architecture, GgufQuant]:
    """(Architecture, GGUF quantization) the roofline predicts with: a preset's or folder's architecture at
    `quant_name`, or a GGUF file's own family and quantization; `PredictionUnavailable` says why not for a
    family or a quantization the roofline does not model."""
    if not source.is_gguf:
        if source.architecture is None:
            raise PredictionUnavailable(f"{source.spec} has no architecture",
                                        "use a synth preset, an HF folder or a GGUF file")
        return source.architecture, gguf_quant(quant_name)
    facts = source.gguf_facts()
    architecture = facts.architecture()
    if facts.file_type is None:
        raise PredictionUnavailable(f"{source.spec} does not record its quantization")
    try:
        return architecture, gguf_quant(facts.file_type)
    except EdgeprofError:  # a storage type the predictor has no byte table for
        raise PredictionUnavailable(f"quantization {facts.file_type}") from None


@dataclass(frozen=True)
class Predictor:
    """One model at one quantization on one device side (GPU or CPU), with the ceilings chosen for it."""

    source: ModelSource
    architecture: Architecture
    quant: GgufQuant
    ceilings: Ceilings
    on_gpu: bool

    def predict(self, batch: int, prompt: int, gen: int, kv_type: str = "f16", sampler: str = "greedy",
                n_ubatch: int = 512) -> Prediction:
        """TTFT and decode step time (s) of one workload, per operator."""
        return predict(self.architecture, self.quant, self.ceilings, batch, prompt, gen,
                       kv_bytes_per_element(kv_type), sampler, n_ubatch)

    def compute_bound_batch(self, context: int, kv_type: str = "f16") -> int | None:
        """The batch at which decode's weight matmuls turn compute-bound (None: not up to 4096)."""
        return compute_bound_batch(self.architecture, self.quant, self.ceilings, context,
                                   kv_bytes_per_element(kv_type))

    def roofs(self, batch: int, prompt: int, gen: int, kv_type: str = "f16",
              n_ubatch: int = 512) -> tuple[float, float]:
        """(decode bandwidth roof, prefill compute roof) in tokens/s: the batch over the time one decode step's
        bytes take at the ceilings' bandwidth, and the prompt's tokens over the time their FLOPs take at
        the ceilings' peak (no kernel overhead, no host: what the run is measured against)."""
        phases = workload_ops(self.architecture, self.quant, batch, prompt, gen, kv_bytes_per_element(kv_type),
                              "none", n_ubatch)
        decode_bytes = sum(op.bytes for op in phases["decode"][0])
        prefill_flops = sum(op.flops for op in phases["prefill"][0])
        return (batch / (decode_bytes / self.ceilings.bytes_per_s),
                batch * prompt / (prefill_flops / self.ceilings.flops_per_s))


def predictor(source: ModelSource, quant_name: str, profile: DeviceProfile, on_gpu: bool,
              calibration: dict | None, mode: str = "auto") -> Predictor:
    """The chain up to the ceilings (`ceilings.device_ceilings`'s `mode`); a GGUF file predicts at its own
    quantization whatever `quant_name` says. Raises `PredictionUnavailable` or another EdgeprofError."""
    architecture, quant = roofline_inputs(source, quant_name)
    ceilings = device_ceilings(profile, quant, on_gpu, calibration, mode=mode)
    return Predictor(source, architecture, quant, ceilings, on_gpu)


def row_source(row: dict) -> ModelSource:
    """The model of one summary row, from this host without downloading: a preset by name, a file or
    folder by its recorded spec, a Hub id from the local cache at the commit the run recorded."""
    model = str(row.get("model") or "")
    if model.startswith("synth:"):
        return resolve(model.split("@")[0])
    spec = row.get("model_spec")
    if not spec:
        raise PredictionUnavailable("the record names no model spec")
    hub = row.get("hub") if isinstance(row.get("hub"), dict) else {}
    return resolve(str(spec), download=False, hub_commit=hub.get("commit") or row.get("hub_commit"))


def row_predictor(row: dict, profile: DeviceProfile, calibration: dict | None, mode: str = "auto") -> Predictor:
    """The chain for one summary row on the device it ran on: llama.cpp rows only (the roofline models
    llama.cpp's kernels), on the GPU where the device has one and the row offloaded layers."""
    if row.get("backend") != "llama.cpp":
        raise PredictionUnavailable(f"the roofline models llama.cpp, not {row.get('backend')}")
    on_gpu = bool(profile.data.get("accelerator")) and row.get("gpu_layers") != 0
    return predictor(row_source(row), str(row["quant"]), profile, on_gpu, calibration, mode)


def unavailable_reason(exc: Exception) -> str:
    """The short "why" of a failed prediction, for a table cell ("unavailable: <why>")."""
    if isinstance(exc, PredictionUnavailable):
        return exc.reason
    if isinstance(exc, KeyError):
        return f"the record has no {exc.args[0]}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class WorkloadPredictions:
    """What `edgeprof predict` shows: one prediction and memory fit per batch, the batch at which decode turns
    compute-bound, and (where class factors set the ceilings) each batch's interval from their held-out error."""

    chain: Predictor
    profile: DeviceProfile
    predictions: list[Prediction]
    memory: list[dict]  # per batch: bytes of weights, KV cache, working memory and their total
    compute_bound_batch: int | None
    intervals: list[str]  # per batch, "" where the ceilings are not class factors

    @property
    def title(self) -> str:
        ceilings = self.chain.ceilings
        roofs = (("costs fitted from real runs" if ceilings.source.startswith("calibrated") else
                  "datasheet roofs times the class factors") if ceilings.by_category else
                 f"{ceilings.flops_per_s / 1e12:g} TFLOP/s, {ceilings.bytes_per_s / 1e9:g} GB/s")
        return (f"{self.chain.source.name} {self.chain.quant.name} on {self.profile.name} "
                f"({'GPU' if self.chain.on_gpu else 'CPU'}, {ceilings.source} ceilings: {roofs})")


def predict_workloads(source: ModelSource, profile: DeviceProfile, quant: str, batches: list[int], prompt: int,
                      gen: int, kv_type: str = "f16", sampler: str = "greedy", cpu: bool = False,
                      mode: str = "auto") -> WorkloadPredictions:
    """`edgeprof predict`: the chain on `profile` (its GPU unless `cpu`) with this host's calibration for it,
    one workload per batch; `mode` as `ceilings.device_ceilings` takes it (a ConfigError names the modes)."""
    if mode not in CEILING_MODES:
        raise ConfigError(f"--ceilings must be one of {', '.join(CEILING_MODES)}, not {mode!r}")
    on_gpu = bool(profile.data.get("accelerator")) and not cpu
    chain = predictor(source, quant, profile, on_gpu, load_calibration(profile.name), mode)
    predictions, memory = [], []
    for batch in batches:
        hp = Hyperparameters(batch=batch, prompt_tokens=prompt, gen_tokens=gen, kv_type=kv_type,
                             sampler=sampler).validate()
        predictions.append(chain.predict(batch, prompt, gen, kv_type, sampler, hp.n_ubatch))
        memory.append(memory_needed(BenchConfig(source, chain.quant.name, "llama.cpp", hp), hp))
    factors = factors_for(profile, on_gpu) if "class factors" in chain.ceilings.source else None
    intervals = [f"batch {p.batch}: decode ≈ {p.decode_tps:,.1f} t/s, "
                 f"{interval_text(factors, 'decode', p.decode_tps, batch=p.batch)}; TTFT ≈ {p.ttft_s * 1e3:,.1f} ms, "
                 f"{interval_text(factors, 'prefill', p.ttft_s * 1e3, 'ms', True, p.batch)}" if factors else ""
                 for p in predictions]
    return WorkloadPredictions(chain, profile, predictions, memory, chain.compute_bound_batch(prompt + gen // 2, kv_type),
                               intervals)
