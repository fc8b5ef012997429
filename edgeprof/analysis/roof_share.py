"""How much of its device's roof a measured configuration reached: decode's share of the bandwidth roof and
prefill's share of the compute roof, so the headroom shows at a glance.

The roofs are the plain ones, not a fit: decode's bandwidth roof is the batch over the time it takes to read
one step's bytes (weights at llama.cpp's storage, KV cache, activations; `roofline.phase_ops`) at the device's
bandwidth; prefill's compute roof is the prompt's tokens over the time its FLOPs take at the device's peak
for the quantization's matmul dtype (`ceilings.device_ceilings(mode="datasheet")`: the datasheet, or this
host's triad and BLAS figures where the profile has none and `edgeprof calibrate` measured them). A share
near 1 means the run is at the roof; 0.1 means nine tenths of the time is spent on something else
(kernel launches, dequantisation, the host). `roof_basis` says which roofs.
"""

from __future__ import annotations

from edgeprof.analysis.ceilings import device_ceilings
from edgeprof.analysis.roofline import workload_ops
from edgeprof.hardware.devices import DeviceProfile
from edgeprof.errors import EdgeprofError

FIELDS = ("decode_roof_share", "prefill_roof_share", "decode_bandwidth_roof_tps", "prefill_compute_roof_tps",
          "roof_basis")


def roof_shares(row: dict, profile: DeviceProfile, calibration: dict | None) -> dict:
    """The roof fields (`FIELDS`) of one summary row on `profile`, or {} where they cannot be stated (not
    llama.cpp, a model edgeprof cannot describe, a profile without figures)."""
    from edgeprof.quant import kv_bytes_per_element
    from edgeprof.models.source import resolve

    synth = str(row.get("model", "")).startswith("synth:")
    spec = str(row["model"]).split("@")[0] if synth else row.get("model_spec")
    if row.get("backend") != "llama.cpp" or not spec:
        return {}
    try:
        architecture, quant = resolve(str(spec)).roofline_inputs(str(row["quant"]))
        on_gpu = bool(profile.data.get("accelerator")) and row.get("gpu_layers") != 0
        roofs = device_ceilings(profile, quant, on_gpu, calibration, mode="datasheet")
        batch, prompt = int(row["batch"]), int(row["prompt_tokens"])
        phases = workload_ops(architecture, quant, batch, prompt, int(row["gen_tokens"]),
                              kv_bytes_per_element(row.get("kv_type") or "f16"), "none", int(row.get("n_ubatch") or 512))
    except (EdgeprofError, KeyError, TypeError, ValueError):
        return {}
    decode_bytes = sum(op.bytes for op in phases["decode"][0])
    prefill_flops = sum(op.flops for op in phases["prefill"][0])
    decode_roof = batch / (decode_bytes / roofs.bytes_per_s)
    prefill_roof = batch * prompt / (prefill_flops / roofs.flops_per_s)
    decode, prefill = row.get("decode_tps_mean"), row.get("prefill_tps_mean")
    return {
        "decode_roof_share": decode / decode_roof if _number(decode) else None,
        "prefill_roof_share": prefill / prefill_roof if _number(prefill) else None,
        "decode_bandwidth_roof_tps": decode_roof, "prefill_compute_roof_tps": prefill_roof,
        "roof_basis": f"{roofs.source} {'GPU' if on_gpu else 'CPU'}: {roofs.bytes_per_s / 1e9:g} GB/s, "
                      f"{roofs.flops_per_s / 1e12:g} TFLOP/s",
    }


def _number(value) -> bool:
    return isinstance(value, (int, float)) and value == value and value > 0
