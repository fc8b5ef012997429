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

from edgeprof.analysis.prediction import row_predictor
from edgeprof.errors import EdgeprofError
from edgeprof.hardware.devices import DeviceProfile

FIELDS = ("decode_roof_share", "prefill_roof_share", "decode_bandwidth_roof_tps", "prefill_compute_roof_tps",
          "roof_basis")


def roof_shares(row: dict, profile: DeviceProfile, calibration: dict | None) -> dict:
    """The roof fields (`FIELDS`) of one summary row on `profile`, or {} where they cannot be stated (not
    llama.cpp, a model edgeprof cannot describe from the run and this host's caches, a profile without
    figures)."""
    try:
        chain = row_predictor(row, profile, calibration, mode="datasheet")
        batch, prompt = int(row["batch"]), int(row["prompt_tokens"])
        decode_roof, prefill_roof = chain.roofs(batch, prompt, int(row["gen_tokens"]), row.get("kv_type") or "f16",
                                                int(row.get("n_ubatch") or 512))
    except (EdgeprofError, KeyError, TypeError, ValueError):
        return {}
    roofs = chain.ceilings
    decode, prefill = row.get("decode_tps_mean"), row.get("prefill_tps_mean")
    return {
        "decode_roof_share": decode / decode_roof if _number(decode) else None,
        "prefill_roof_share": prefill / prefill_roof if _number(prefill) else None,
        "decode_bandwidth_roof_tps": decode_roof, "prefill_compute_roof_tps": prefill_roof,
        "roof_basis": f"{roofs.source} {'GPU' if chain.on_gpu else 'CPU'}: {roofs.bytes_per_s / 1e9:g} GB/s, "
                      f"{roofs.flops_per_s / 1e12:g} TFLOP/s",
    }


def _number(value) -> bool:
    return isinstance(value, (int, float)) and value == value and value > 0
