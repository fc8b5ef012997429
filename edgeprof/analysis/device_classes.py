"""Achievable-rate device models: per device class, what llama.cpp's kernels reach of a datasheet's peaks.

A datasheet says 989 dense fp16 TFLOP/s for an H200; llama.cpp's quantized matmuls reach about a tenth of
it, and a Raspberry Pi's decode streams its weights at a fraction of the LPDDR4X figure. `edgeprof
calibrate` measures this on a host it runs on; for hardware it never touched, this module fits the same
costs per *class* of device (`devices.DEVICE_CLASSES`), with every quantity divided by the device's own
datasheet roof, so one set of factors transfers across the class:

    decode   stream      weight bytes / datasheet bandwidth          -> factor = 1 / achieved bandwidth share
             matvec      weight-matmul FLOPs / datasheet peak        -> 1 / achieved share of the peak (mat-vec)
             tiled       the same above the mat-vec limit (CUDA)     -> 1 / share (tiled kernels)
             attention   attention FLOPs / datasheet peak            -> 1 / share
             kernels, tiled_kernels  every kernel launch             -> seconds each (absolute)
             logit_bytes logits the host reads to sample greedily    -> seconds per byte (absolute)
    prefill  matmul:<family>  weight FLOPs / peak, per quantization family (legacy q4_0/q8_0..., k-quants,
                         floats)                                     -> 1 / share
             attention, kernels, logit_bytes                         as in decode

"Datasheet peak" for a matmul is the dtype llama.cpp's kernels run on: int8 (or fp16, else fp32) for a
quantized model on a GPU, fp16 for f16, the CPU's fp32 figure times the share of cores the run used.
Each phase is fitted by `fit.fit_costs` (non-negative least squares relative to each sample's time,
deterministic), with every device weighing the same however many rows it published. The samples are the
public corpus (`analysis.corpus`) and this project's own measured runs. A class's factors turned back into
a device's costs (`costs_for`) are a `fit.fitted_ceilings` fit, so a prediction is the same additive sum the
calibrated path uses. `edgeprof calibrate` on a host still overrides them (`analysis.ceilings`).

Within a class, devices run different code paths: llama.cpp's CUDA matmuls by compute capability, ggml's CPU
kernels by instruction set (NEON dot products, i8mm, AVX2, AVX-VNNI, AVX-512 VNNI). A profile states them (`isa`),
`kernel_groups` names a device's groups, and a group with two devices or more in the data gets its own matmul factors
(`fit_group`: prefill per quantization family, and on a CPU decode's mat-vec) with every other cost at its class's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgeprof.analysis.fit import LLAMA_CUDA_MATVEC_MAX_BATCH, fitted_ceilings, op_terms
from edgeprof.analysis.roofline import Ceilings, phase_ops, prefill_calls, time_ops
from edgeprof.models.architecture import Architecture
from edgeprof.catalog import catalog_dirs
from edgeprof.hardware.devices import DeviceProfile
from edgeprof.quant import GGUF_QUANTS, GgufQuant

GPU_CLASSES = ("jetson-gpu", "nvidia-gpu", "apple-gpu", "amd-gpu", "other-gpu")
CUDA_CLASSES = ("jetson-gpu", "nvidia-gpu")  # llama.cpp's CUDA mat-vec limit applies
FAMILIES = ("legacy", "k", "float")
CPU_CLASSES = ("arm-cpu", "apple-cpu", "x86-cpu")
DECODE_TERMS = ("kernels", "tiled_kernels", "stream", "matvec", "tiled", "attention", "logit_bytes")
PREFILL_TERMS = ("kernels", *(f"matmul:{f}" for f in FAMILIES), "attention", "logit_bytes")
# A CPU class fits fewer costs: published CPU rows are llama-bench's pp512 and tg128 of a few model sizes, which
# cannot tell a per-node cost or an attention rate apart from the matmuls (fitted anyway, they came out at
# milliseconds per node and took over small models). On a CPU attention runs through the same ggml matmul and
# dot-product code as the weights, so its FLOPs join the matmul term, and llama.cpp's per-node barrier is left
# to the roofline's default.
CPU_DECODE_TERMS = ("stream", "matvec")
CPU_PREFILL_TERMS = tuple(f"matmul:{f}" for f in FAMILIES)
# A class with fewer devices than this (after leaving one out) is fitted together with its parent class: a
# Jetson's GPU runs llama.cpp's CUDA kernels, an Apple CPU the same NEON code as other Arm cores.
PARENT_CLASS = {"jetson-gpu": "nvidia-gpu", "apple-cpu": "arm-cpu", "other-gpu": "amd-gpu"}
UBATCH = 512
MIN_DEVICES_FOR_INTERVAL = 3
FACTORS_FILE = "device_classes.json"
# Classes whose devices run the same kernel code, so a kernel group (`kernel_groups`) pools their samples: a Jetson
# runs the CUDA kernels a desktop card does, an Apple CPU the NEON / i8mm code of other Arm cores.
KERNEL_FAMILY = {"jetson-gpu": "cuda", "nvidia-gpu": "cuda", "arm-cpu": "arm", "apple-cpu": "arm", "x86-cpu": "x86",
                 "apple-gpu": "metal", "amd-gpu": "rocm", "other-gpu": "other"}
# A kernel group replaces its class's matmul factors once this many devices of the group are in the fit (fewer:
# the class's factors apply). Two, not three: a group fits one rate per quantization family with every other cost
# held at the class's, so two devices already check each other; the interval a prediction states still needs three.
MIN_GROUP_DEVICES = 2
# A CPU group also fits decode's mat-vec compute (dequantise + NEON dot / i8mm / AVX2 / VNNI). A GPU group does not:
# a GPU's one-sequence decode is bound by streaming and launches, so its mat-vec term is too small to be measured in
# the corpus, and fitted per compute capability it soaked up the H100s' lower bandwidth share instead (then scaled
# with the batch: an H200 at batch 8 predicted 1.5x too slow).
GROUP_DECODE_TERMS = ("matvec",)


def quant_family(quant: GgufQuant) -> str:
    """Which prefill matmul factor a quantization uses: floats, k-quants (super-blocks), or the legacy block
    types (q4_0, q8_0, …, iq4_nl) whose kernels llama.cpp optimised first."""
    if quant.base_type in ("f32", "f16", "bf16"):
        return "float"
    return "k" if quant.base_type.endswith("_k") or quant.base_type.startswith(("iq4_xs", "tq")) else "legacy"


def kernel_groups(profile: DeviceProfile, on_gpu: bool) -> tuple[str, ...]:
    """The kernel groups of `profile`'s GPU (`on_gpu`) or CPU, most specific first, from its `isa` field: which of
    llama.cpp's matmul and mat-vec code paths its quantized weights run through.

    CUDA: the compute capability (`sm_90`), then the path llama.cpp takes by it: below 6.1 no dp4a (integer dot
    products emulated), 6.1 to 7.2 dp4a without int8 tensor cores, from 7.5 int8 `mma.sync` (MMQ). AMD: the gfx
    target; Apple GPUs: the Metal family. CPUs: the widest integer dot-product ggml uses, i8mm > dotprod > NEON on
    Arm, AVX-512 VNNI > AVX-VNNI > AVX2 on x86. () where the profile states no `isa`."""
    isa = profile.data.get("isa") or {}
    if on_gpu:
        gpu = isa.get("gpu") or ""
        if gpu.startswith("sm_"):
            cc = int(gpu[3:])
            return gpu, "cuda:no-dp4a" if cc < 61 else "cuda:dp4a" if cc < 75 else "cuda:mma"
        return (gpu,) if gpu else ()
    features = set(isa.get("cpu") or ())
    for feature, group in (("i8mm", "arm:i8mm"), ("dotprod", "arm:dotprod"), ("neon", "arm:neon"),
                           ("avx512_vnni", "x86:avx512-vnni"), ("avx_vnni", "x86:avx-vnni"), ("avx2", "x86:avx2")):
        if feature in features:
            return (group,)
    return ()


@dataclass(frozen=True)
class Roofs:
    """A device side's datasheet roofs for one quantization: bandwidth (B/s), matmul and attention peaks
    (FLOP/s), already scaled to the share of CPU cores a run used."""

    bandwidth: float
    matmul_peak: float
    attention_peak: float


def datasheet_roofs(profile: DeviceProfile, quant: GgufQuant, on_gpu: bool, threads: int | None = None) -> Roofs | None:
    """`profile`'s datasheet roofs for `quant` on its GPU or CPU; None where the profile lacks the figures."""
    data = profile.data
    accel, memory, cpu = data.get("accelerator") or {}, data.get("memory") or {}, data.get("cpu") or {}
    if on_gpu:
        tflops = accel.get("tflops") or {}
        bandwidth = accel.get("bandwidth_gbps") or memory.get("bandwidth_gbps")
        order = {"float": ("fp16", "fp32")}.get(quant_family(quant), ("int8", "fp16", "fp32"))
        if quant.base_type == "f32":
            order = ("fp32",)
        matmul = next((tflops[d] for d in order if tflops.get(d)), None)
        attention = tflops.get("fp16") or tflops.get("fp32")
        share = 1.0
    else:
        bandwidth, matmul = memory.get("bandwidth_gbps"), cpu.get("tflops_fp32")
        attention = matmul
        cores = cpu.get("cores")
        share = min(1.0, threads / cores) if threads and cores else 1.0
    if not (bandwidth and matmul and attention):
        return None
    return Roofs(float(bandwidth) * 1e9, float(matmul) * 1e12 * share, float(attention) * 1e12 * share)


@dataclass(frozen=True)
class Workload:
    """What one measured figure timed: a prefill of `prompt` tokens per sequence, or `gen` decode steps after
    `depth` tokens (batch sequences at once); `sampler` greedy means the host read the logits."""

    phase: str  # "prefill" or "decode"
    batch: int
    prompt: int = 0
    gen: int = 0
    depth: int = 0
    sampler: str = "none"

    def ops(self, arch: Architecture, quant: GgufQuant, kv_bytes: float = 2.0):
        """(ops, tokens per llama_decode call) of this workload, as `roofline.predict` counts them."""
        greedy = self.sampler == "greedy"
        if self.phase == "prefill":
            calls = prefill_calls(self.batch, self.prompt, UBATCH)
            return (phase_ops(arch, quant, self.batch, self.prompt, self.prompt, kv_bytes, calls, greedy, UBATCH),
                    min(self.batch * self.prompt, UBATCH))
        context = self.depth + max(self.gen, 1) // 2
        return phase_ops(arch, quant, self.batch, 1, context, kv_bytes, 1, greedy, UBATCH), self.batch

    def seconds(self, tps: float) -> float:
        """The phase's time (prefill: all of it; decode: one step) from its tokens-per-second figure."""
        return self.batch * (self.prompt if self.phase == "prefill" else 1) / tps


@dataclass(frozen=True)
class Sample:
    """One measured figure as the fit sees it (class, device, normalised quantities, time) and what predicting
    it again takes (architecture, workload, the device's roofs, the measured tokens per second)."""

    device_class: str
    device: str
    phase: str
    quant: str
    terms: dict
    seconds: float
    origin: str  # corpus file:line, or the results file
    label: str = ""
    arch: Architecture | None = field(default=None, compare=False, repr=False)
    workload: Workload | None = None
    roofs: Roofs | None = None
    tps: float = 0.0
    groups: tuple[str, ...] = ()  # the device's kernel groups (`kernel_groups`)


def sample_terms(arch: Architecture, quant: GgufQuant, workload: Workload, roofs: Roofs, cuda: bool,
                 on_cpu: bool = False) -> dict:
    """The fit's normalised quantities for one workload on a device with `roofs` (see the module docstring)."""
    ops, per_call = workload.ops(arch, quant)
    matvec_limit = LLAMA_CUDA_MATVEC_MAX_BATCH if cuda and workload.phase == "decode" else 0
    raw = op_terms(ops, per_call, matvec_limit)
    if on_cpu:  # attention joins the matmuls (see CPU_DECODE_TERMS)
        compute = (raw["weight_flops"] + raw["attention_flops"]) / roofs.matmul_peak
        if workload.phase == "decode":
            return {"stream": raw["weight_bytes"] / roofs.bandwidth, "matvec": compute}
        return {f"matmul:{quant_family(quant)}": compute}
    common = {"kernels": raw["kernels"], "attention": raw["attention_flops"] / roofs.attention_peak,
              "logit_bytes": raw["logit_bytes"]}
    if workload.phase == "decode":
        return {**common, "tiled_kernels": raw["tiled_kernels"], "stream": raw["weight_bytes"] / roofs.bandwidth,
                "matvec": raw["weight_flops"] / roofs.matmul_peak, "tiled": raw["tiled_flops"] / roofs.matmul_peak}
    return {**common, f"matmul:{quant_family(quant)}": raw["weight_flops"] / roofs.matmul_peak}


def make_sample(device_class: str, device: str, arch: Architecture, quant: GgufQuant, workload: Workload,
                roofs: Roofs, tps: float, origin: str, label: str = "", groups: tuple[str, ...] = ()) -> Sample:
    terms = sample_terms(arch, quant, workload, roofs, device_class in CUDA_CLASSES, device_class in CPU_CLASSES)
    return Sample(device_class, device, workload.phase, quant.name, terms, workload.seconds(tps), origin, label,
                  arch, workload, roofs, tps, groups)


@dataclass(frozen=True)
class ClassFactors:
    """One class's fitted factors per phase (terms as in the module docstring; a term left out had no data),
    which devices and rows they came from, and the held-out error (`heldout`: per phase, measured / predicted
    tokens-per-second quantiles over leave-one-device-out predictions)."""

    device_class: str
    decode: dict
    prefill: dict
    devices: tuple[str, ...]
    rows: int
    heldout: dict = field(default_factory=dict)
    # per kernel group (`kernel_groups`): {"decode": {...}, "prefill": {...}, "devices": [...], "rows": n}, the
    # matmul factors that replace the class's for a device of that group
    groups: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"decode": self.decode, "prefill": self.prefill, "devices": list(self.devices), "rows": self.rows,
                "heldout": self.heldout, "groups": self.groups}

    @classmethod
    def from_dict(cls, name: str, data: dict) -> "ClassFactors":
        return cls(name, dict(data["decode"]), dict(data["prefill"]), tuple(data["devices"]), int(data["rows"]),
                   dict(data.get("heldout") or {}), dict(data.get("groups") or {}))

    def group_for(self, groups: tuple[str, ...]) -> str | None:
        """The first of a device's kernel groups these factors have a fit for (None: the class's factors apply)."""
        return next((g for g in groups if g in self.groups), None)

    def phase_factors(self, groups: tuple[str, ...] = ()) -> tuple[dict, dict]:
        """(decode, prefill) factors for a device of `groups`: the class's, its group's matmul factors over them."""
        group = self.groups.get(self.group_for(groups) or "", {})
        return {**self.decode, **group.get("decode", {})}, {**self.prefill, **group.get("prefill", {})}

    def describe(self, groups: tuple[str, ...] = ()) -> str:
        """One line: the bandwidth and matmul shares the factors stand for, and what they were fitted on."""
        decode, prefill = self.phase_factors(groups)
        parts = []
        if decode.get("stream"):
            parts.append(f"decode streams at {1 / decode['stream']:.0%} of datasheet bandwidth")
        for family in FAMILIES:
            value = prefill.get(f"matmul:{family}")
            if value:
                parts.append(f"{family} prefill matmuls at {1 / value:.1%} of peak")
        group = self.group_for(groups)
        fitted = f"{len(self.devices)} devices, {self.rows} rows"
        if group:
            members = self.groups[group]["devices"]
            fitted += f"; matmuls from kernel group {group}: " + (", ".join(members) if len(members) <= 3 else
                                                                  f"{len(members)} devices")
        return f"{self.device_class} class factors ({', '.join(parts)}; {fitted})"


def _weights(samples: list[Sample]) -> np.ndarray:
    """Each device weighs the same in a fit: its samples share one unit (a device that published 20 rows
    must not outvote five that published two)."""
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.device] = counts.get(s.device, 0) + 1
    return np.array([1.0 / np.sqrt(counts[s.device]) for s in samples])


def _fit_phase(samples: list[Sample], names: tuple[str, ...], fixed: dict | None = None) -> dict:
    """Non-negative costs per term, least squares relative to each sample's time, devices weighted alike.
    A term no sample varies is left out of the result (no data: not fittable); one whose best cost is
    negative is dropped and the rest refitted (it is then 0: the data say it costs nothing measurable).
    `fixed`: costs of other terms held as given (a kernel group's fit keeps its class's); the fit explains the
    rest of each sample's time."""
    if not samples:
        return {}
    # a fixed order, so the same samples in any order give bit-identical costs
    samples = sorted(samples, key=lambda s: (s.device, s.origin, s.label, s.phase, s.quant, s.seconds))
    a = np.array([[s.terms.get(n, 0.0) for n in names] for s in samples], dtype=np.float64)
    t = np.array([s.seconds for s in samples], dtype=np.float64)
    w = _weights(samples)
    held = np.array([sum(c * s.terms.get(k, 0.0) for k, c in sorted((fixed or {}).items())) for s in samples])
    a, target = a / t[:, None] * w[:, None], w * (1.0 - held / t)
    present = [i for i in range(len(names)) if a[:, i].any()]
    keep = list(present)
    solution = np.zeros(0)
    while keep:
        solution = np.linalg.lstsq(a[:, keep], target, rcond=None)[0]
        if (solution >= 0).all():
            break
        keep = [k for k, v in zip(keep, solution) if v > 0]
    costs = {names[i]: 0.0 for i in present}
    for index, value in zip(keep, solution if keep else []):
        costs[names[index]] = float(value)
    return costs


def fit_class(device_class: str, samples: list[Sample]) -> ClassFactors:
    """A class's factors from its samples. A prefill family no sample has takes the pooled fit of all
    families (`matmul:<family>` then equals the class's `matmul` factor)."""
    mine = [s for s in samples if s.device_class == device_class]
    parent = PARENT_CLASS.get(device_class)
    if len({s.device for s in mine}) < MIN_DEVICES_FOR_INTERVAL and parent:
        mine += [s for s in samples if s.device_class == parent]
    cpu = device_class in CPU_CLASSES
    decode = _fit_phase([s for s in mine if s.phase == "decode"], CPU_DECODE_TERMS if cpu else DECODE_TERMS)
    prefill_samples = [s for s in mine if s.phase == "prefill"]
    prefill = _fit_phase(prefill_samples, CPU_PREFILL_TERMS if cpu else PREFILL_TERMS)
    pooled = _fit_phase([replace(s, terms=_pool(s.terms)) for s in prefill_samples],
                        ("kernels", "matmul", "attention", "logit_bytes"))
    if pooled.get("matmul"):
        prefill["matmul"] = pooled["matmul"]
    family = [s for s in samples if KERNEL_FAMILY.get(s.device_class) == KERNEL_FAMILY.get(device_class)]
    groups = {}
    for group in sorted({g for s in family for g in s.groups}):
        fitted = fit_group([s for s in family if group in s.groups], decode, prefill, device_class in CPU_CLASSES)
        if fitted:
            groups[group] = fitted
    return ClassFactors(device_class, decode, prefill, tuple(sorted({s.device for s in mine})), len(mine),
                        groups=groups)


def fit_group(members: list[Sample], decode: dict, prefill: dict, cpu: bool) -> dict | None:
    """A kernel group's own matmul factors (prefill's per quantization family; on a CPU also decode's mat-vec) with
    every other cost held at its class's (`decode`, `prefill`); None where fewer than `MIN_GROUP_DEVICES` devices
    are in it. A phase or family the group has no rows of keeps the class's factor."""
    devices = sorted({s.device for s in members})
    if len(devices) < MIN_GROUP_DEVICES:
        return None
    out: dict = {"decode": {}, "prefill": {}, "devices": devices, "rows": len(members)}
    for phase, costs, free in (("decode", decode, GROUP_DECODE_TERMS if cpu else ()),
                               ("prefill", prefill, tuple(f"matmul:{f}" for f in FAMILIES))):
        # decode's mat-vec rate from one-sequence steps: batched steps (this project's own runs only) already
        # shape the class's tiled-kernel costs, and would bend the mat-vec rate towards them
        chosen = [s for s in members if s.phase == phase and (phase == "prefill" or s.workload.batch == 1)]
        if not free or len({s.device for s in chosen}) < MIN_GROUP_DEVICES:
            continue
        fixed = {k: v for k, v in costs.items() if k not in free and k != "matmul"}
        fitted = _fit_phase(chosen, free, fixed)
        # a family only some devices of the group ran: its factor needs two devices as well
        for name, value in fitted.items():
            if len({s.device for s in chosen if s.terms.get(name)}) >= MIN_GROUP_DEVICES and value > 0:
                out[phase][name] = value
    return out if out["decode"] or out["prefill"] else None


def _pool(terms: dict) -> dict:
    pooled = {k: v for k, v in terms.items() if not k.startswith("matmul:")}
    pooled["matmul"] = sum(v for k, v in terms.items() if k.startswith("matmul:"))
    return pooled


def costs_for(factors: ClassFactors, roofs: Roofs, quant: GgufQuant, cuda: bool,
              groups: tuple[str, ...] = ()) -> dict | None:
    """The class's factors (its kernel group's matmul factors where it has them) on one device's datasheet roofs,
    as a `fit.fitted_ceilings` fit (seconds per kernel, per byte, per FLOP); None where the class has no decode or
    no matmul factor to give."""
    d, p = factors.phase_factors(groups)
    matmul = p.get(f"matmul:{quant_family(quant)}") or p.get("matmul")
    if "stream" not in d or not matmul:
        return None
    cpu = factors.device_class in CPU_CLASSES  # attention at the matmuls' rate (CPU_DECODE_TERMS)
    decode = {"kernels": d.get("kernels", 0.0), "weight_bytes": d["stream"] / roofs.bandwidth,
              "weight_flops": d.get("matvec", 0.0) / roofs.matmul_peak,
              "attention_flops": (d.get("matvec", 0.0) / roofs.matmul_peak if cpu else
                                  d.get("attention", 0.0) / roofs.attention_peak)}
    if cuda:
        decode.update({"tiled_kernels": d.get("tiled_kernels", 0.0),
                       "tiled_flops": (d.get("tiled") or d.get("matvec", 0.0)) / roofs.matmul_peak})
    prefill = {"kernels": p.get("kernels", 0.0), "weight_flops": matmul / roofs.matmul_peak,
               "attention_flops": (matmul / roofs.matmul_peak if cpu else p.get("attention", 0.0) / roofs.attention_peak)}
    for phase, costs in (("decode", decode), ("prefill", prefill)):
        source = d if phase == "decode" else p
        if "logit_bytes" in source:  # else the base roofs price the host's argmax
            costs["logit_bytes"] = source["logit_bytes"]
    return {"decode": decode, "prefill": prefill, "matvec_max_batch": LLAMA_CUDA_MATVEC_MAX_BATCH if cuda else 0}


def class_ceilings(factors: ClassFactors, roofs: Roofs, quant: GgufQuant, cuda: bool, kernel_overhead_s: float,
                   groups: tuple[str, ...] = ()) -> Ceilings | None:
    """Ceilings from a class's factors on a device's datasheet roofs (norms and the embedding keep the roofs)."""
    costs = costs_for(factors, roofs, quant, cuda, groups)
    if costs is None:
        return None
    base = Ceilings(roofs.matmul_peak, roofs.bandwidth, kernel_overhead_s, "datasheet")
    return fitted_ceilings(costs, base, factors.describe(groups))


def workload_seconds(ceilings: Ceilings, arch: Architecture, quant: GgufQuant, workload: Workload) -> float:
    """The predicted time of `workload` (prefill: all of it; decode: one step) under `ceilings`."""
    ops, per_call = workload.ops(arch, quant)
    return sum(t.seconds for t in time_ops(ops, ceilings, workload.phase, per_call))


# ---- samples from the corpus, and leave-one-device-out validation

def corpus_sample(row, profile: DeviceProfile | None) -> tuple[Sample | None, str]:
    """A corpus row as a sample on `profile` (the row's device), or (None, why the fit leaves it out)."""
    why = row.unusable
    if not why and row.test.phase == "both":
        why = "combined pp+tg test"
    on_gpu = row.device_class in GPU_CLASSES
    arch = row.architecture() if not why else None
    if not why and on_gpu and row.n_gpu_layers is not None and 0 <= row.n_gpu_layers < min(99, arch.num_layers):
        why = f"partial offload (ngl {row.n_gpu_layers})"
    if not why and profile is None:
        why = "no device profile"
    cores = ((profile.data.get("cpu") or {}).get("cores") if profile else None)
    if not why and not on_gpu and row.threads and cores and row.threads * 2 < cores:
        why = f"{row.threads} threads of {cores} cores: the device model is the whole device (`predict` uses every core)"
    if why:
        return None, why
    quant = GGUF_QUANTS[row.quant]
    roofs = datasheet_roofs(profile, quant, on_gpu, row.threads)
    if roofs is None:
        return None, "profile lacks datasheet figures"
    test = row.test
    workload = (Workload("prefill", 1, prompt=test.prompt, depth=test.depth) if test.phase == "prefill" else
                Workload("decode", 1, gen=test.gen, depth=test.depth))
    if workload.phase == "decode":
        streamed = arch.gguf_weight_bytes(quant) * row.value_tps
        if streamed > 1.1 * roofs.bandwidth:  # weights read once per token (+10 %: the embedding table is counted too)
            return None, (f"decode implies {streamed / 1e9:.0f} GB/s of weights, above the profile's "
                          f"{roofs.bandwidth / 1e9:.0f} GB/s (likely another device or model)")
    label = f"{row.model} {row.quant} {row.test_name}" + (f" t{row.threads}" if row.threads and not on_gpu else "")
    return make_sample(row.device_class, profile.name, arch, quant, workload, roofs, row.value_tps,
                       f"data/published/{row.where}", label, kernel_groups(profile, on_gpu)), ""


def predict_sample(factors: ClassFactors, sample: Sample, by_group: bool = True) -> float | None:
    """Tokens per second `factors` predict for `sample`'s workload on its device (None: the class has none);
    `by_group` False: the class's factors alone, ignoring the device's kernel group."""
    quant = GGUF_QUANTS[sample.quant]
    ceilings = class_ceilings(factors, sample.roofs, quant, sample.device_class in CUDA_CLASSES, 0.0,
                              sample.groups if by_group else ())
    if ceilings is None:
        return None
    workload = sample.workload
    seconds = workload_seconds(ceilings, sample.arch, quant, workload)
    return workload.batch * (workload.prompt if workload.phase == "prefill" else 1) / seconds


def leave_one_device_out(samples: list[Sample]) -> list[dict]:
    """Each device predicted from its class's fit on every other device (measured / predicted as `ratio`)."""
    results = []
    for device_class in sorted({s.device_class for s in samples}):
        for device in sorted({s.device for s in samples if s.device_class == device_class}):
            factors = fit_class(device_class, [s for s in samples if s.device != device])
            for sample in (s for s in samples if s.device == device and s.device_class == device_class):
                predicted = predict_sample(factors, sample)
                by_class = predict_sample(factors, sample, by_group=False)
                results.append({"class": device_class, "device": device, "phase": sample.phase,
                                "batch": sample.workload.batch, "group": factors.group_for(sample.groups),
                                "origin": sample.origin, "label": sample.label, "measured_tps": round(sample.tps, 4),
                                "predicted_tps": None if predicted is None else round(predicted, 4),
                                "ratio": None if predicted is None else round(sample.tps / predicted, 4),
                                "ratio_class": None if by_class is None else round(sample.tps / by_class, 4),
                                "corpus": sample.origin.startswith("data/published")})
    return results


def within(results: list[dict], phase: str, tolerance: float = 0.25, key: str = "ratio") -> tuple[int, int]:
    """(rows within `tolerance`, rows) of one phase's held-out corpus predictions (no prediction = a miss);
    `key` "ratio_class": the class factors alone, without kernel groups."""
    chosen = [r for r in results if r["phase"] == phase and r["corpus"]]
    return sum(1 for r in chosen if r[key] and abs(r[key] - 1) <= tolerance), len(chosen)


# ---- the committed factors (data/device_classes.json, written by scripts/fit_device_classes.py)

def factors_path() -> Path | None:
    """The shipped factors file: the checkout's (or wheel's) `data/device_classes.json`."""
    for folder in reversed(catalog_dirs("data")):
        if (folder / FACTORS_FILE).is_file():
            return folder / FACTORS_FILE
    return None


def load_class_factors(path: Path | None = None) -> dict[str, ClassFactors]:
    """Every class's committed factors by class name ({} where no file ships)."""
    path = path or factors_path()
    if path is None:
        return {}
    data = json.loads(Path(path).read_text())
    return {name: ClassFactors.from_dict(name, entry) for name, entry in data["classes"].items()}


# ---- held-out error and the interval a prediction states

def quantiles(ratios: list[float], coverage: float = 0.8) -> tuple[float, float]:
    """The central `coverage` range of measured / predicted ratios (numpy's linear interpolation)."""
    tail = (1 - coverage) / 2
    return float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1 - tail))


def heldout_summary(ratios: list[float], devices: int) -> dict:
    """What the leave-one-device-out ratios (measured / predicted tokens per second) say for one phase."""
    if not ratios:
        return {"rows": 0, "devices": devices}
    low, high = quantiles(ratios)
    within = sum(1 for r in ratios if abs(r - 1) <= 0.25) / len(ratios)
    return {"rows": len(ratios), "devices": devices, "within_25pct": within, "median_ratio": float(np.median(ratios)),
            "p10_ratio": low, "p90_ratio": high}


def heldout_key(phase: str, batch: int) -> str:
    """Where a phase's held-out error is kept: batch 1 (llama-bench's, all the corpus) apart from batched runs,
    whose costs (tiled kernels, per-sequence work) the corpus cannot show."""
    return phase if batch <= 1 else f"{phase}@batch>1"


def interval_text(factors: ClassFactors | None, phase: str, value: float, unit: str = "t/s",
                  is_time: bool = False, batch: int = 1) -> str:
    """"80 % of held-out devices within 9.8–14.0 t/s" for a predicted rate `value` (or, with `is_time`, a
    predicted time such as TTFT, whose interval inverts the rate ratios) at `batch`, or why none can be stated."""
    if factors is None:
        return "no class factors: datasheet roofs, error unknown"
    held = factors.heldout.get(heldout_key(phase, batch)) or {}
    if batch > 1 and not held.get("rows"):
        return f"no {factors.device_class} device held out at batch > 1: no interval"
    if held.get("devices", 0) < MIN_DEVICES_FOR_INTERVAL or not held.get("rows"):
        return (f"{factors.device_class} has too few devices to state an interval "
                f"({held.get('devices', 0)} held out, {MIN_DEVICES_FOR_INTERVAL} needed)")
    low, high = (value / held["p90_ratio"], value / held["p10_ratio"]) if is_time else \
        (value * held["p10_ratio"], value * held["p90_ratio"])
    return f"80 % of held-out devices within {_fmt(low)}–{_fmt(high)} {unit}"


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def factors_for(profile: DeviceProfile, on_gpu: bool) -> ClassFactors | None:
    """The committed factors of `profile`'s class on that side (None: no class, or no factors for it)."""
    device_class = profile.device_class(on_gpu)
    return load_class_factors().get(device_class) if device_class else None
