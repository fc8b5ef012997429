"""The fidelity Pareto chart: which points are on the front, and that the figure renders."""

from __future__ import annotations

from edgeprof.analysis.pareto import Point, pareto_figure, pareto_front, points_from_rows


def test_front_keeps_only_undominated_points():
    # (MB, KL): 1 MB at KL 0.3 and 2 MB at 0.1 are both optimal; 2.5 MB at 0.2 is beaten by 2 MB at 0.1
    sizes = [(1.0, 0.3), (2.0, 0.1), (2.5, 0.2), (4.0, 0.01)]
    assert pareto_front(sizes, larger_is_better=False) == [0, 1, 3]
    # (tok/s, KL): faster is better; 900 tok/s at 0.2 is beaten by 1000 tok/s at 0.1
    speeds = [(1000.0, 0.1), (900.0, 0.2), (500.0, 0.01)]
    assert pareto_front(speeds, larger_is_better=True) == [0, 2]


def test_chart_renders_from_summary_rows(tmp_path):
    rows = [
        {"backend": "llama.cpp", "quant": "f16", "fidelity_kl_mean": 0.0, "bytes": 4_200_000, "decode_tps_mean": 900},
        {"backend": "llama.cpp", "quant": "iq2_xs", "fidelity_kl_mean": 0.2, "fidelity_kl_se": 0.01,
         "bytes": 900_000, "decode_tps_mean": 1500},
        {"backend": "llama.cpp", "quant": "q4_k_m", "fidelity_kl_mean": 0.01, "bytes": 1_600_000,
         "decode_tps_mean": 1400},
        {"backend": "onnxruntime", "quant": "int4-hqq", "fidelity_kl_mean": 0.002, "bytes": 3_900_000,
         "decode_tps_mean": None},
        {"backend": "onnxruntime", "quant": "fp32", "decode_tps_mean": 300},  # no fidelity: not a point
    ]
    points = points_from_rows(rows)
    assert [p.label for p in points] == ["llama.cpp f16", "llama.cpp iq2_xs", "llama.cpp q4_k_m", "onnxruntime int4-hqq"]
    fig = pareto_figure(points)
    path = tmp_path / "pareto.png"
    fig.savefig(path)
    assert path.stat().st_size > 10_000  # two panels with points and labels, not an empty canvas
    assert pareto_figure([Point("llama.cpp f16", 0.0, 0.0, 4.2, 900)]) is None  # nothing to draw on a log axis
