"""Fidelity against size and against speed: which quantizations are worth shipping (a Pareto chart).

A point is one configuration (backend and quantization of one model): its KL divergence from the
unquantized parent (`fidelity_kl_mean`, nats per token, lower is better; its standard error as a bar),
its file size (`bytes`) and its decode speed (`decode_tps_mean`). A point is on the front when no other
point is at least as good on both axes and better on one; the front is drawn as a step line, the rest
dimmed. Reads summary rows only (run directories' summary or `edgeprof fidelity --format json` rows
merged with a run's speed), so it lives with the other analysis and imports nothing upstream.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    label: str  # "llama.cpp iq2_xs"
    kl: float  # mean KL vs the parent, nats per token
    kl_se: float  # its standard error (0 where unknown)
    mb: float | None  # artifact size, MB (1e6 bytes)
    decode_tps: float | None  # decode tokens/s


def points_from_rows(rows: list[dict]) -> list[Point]:
    """The rows that carry a KL figure, as points (rows of the parent itself, KL 0 by definition, are kept:
    they anchor the front's large-and-exact end)."""
    points = []
    for row in rows:
        kl = row.get("fidelity_kl_mean")
        if kl is None:
            continue
        size = row.get("bytes")
        points.append(Point(f"{row.get('backend', '')} {row.get('quant', '')}".strip(), float(kl),
                            float(row.get("fidelity_kl_se") or 0.0), size / 1e6 if size else None,
                            row.get("decode_tps_mean")))
    return points


def pareto_front(pairs: list[tuple[float, float]], larger_is_better: bool) -> list[int]:
    """Indices of the (cost_or_gain, kl) pairs no other pair dominates: for sizes `larger_is_better` is False
    (smaller and lower KL win), for speeds True (faster and lower KL win)."""
    front = []
    for i, (x, kl) in enumerate(pairs):
        better_x = (lambda o: o >= x) if larger_is_better else (lambda o: o <= x)
        strictly = (lambda o: o > x) if larger_is_better else (lambda o: o < x)
        if not any(better_x(ox) and okl <= kl and (strictly(ox) or okl < kl)
                   for j, (ox, okl) in enumerate(pairs) if j != i):
            front.append(i)
    return front


def pareto_figure(points: list[Point], title: str = "Fidelity against size and speed"):
    """Two panels, KL (log) against MB and against decode tok/s, fronts highlighted; None without points."""
    usable = [p for p in points if p.kl > 0]  # a log axis has no place for the parent's exact 0
    if not usable:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    panels = ((axes[0], "mb", False, "artifact size, MB"), (axes[1], "decode_tps", True, "decode tokens/s"))
    for ax, field, larger_is_better, xlabel in panels:
        shown = [p for p in usable if getattr(p, field) is not None]
        if not shown:
            ax.text(0.5, 0.5, f"no {xlabel} in these rows", ha="center", transform=ax.transAxes)
            continue
        pairs = [(getattr(p, field), p.kl) for p in shown]
        front = set(pareto_front(pairs, larger_is_better))
        for i, p in enumerate(shown):
            on = i in front
            color = "tab:blue" if p.label.startswith("llama.cpp") else "tab:orange"
            ax.errorbar(getattr(p, field), p.kl, yerr=p.kl_se or None, fmt="o" if on else ".", color=color,
                        alpha=1.0 if on else 0.45, capsize=2)
            ax.annotate(p.label.split(" ", 1)[-1], (getattr(p, field), p.kl), fontsize=7,
                        xytext=(3, 3), textcoords="offset points", alpha=1.0 if on else 0.6)
        ordered = sorted((pairs[i] for i in front), key=lambda xy: xy[0])
        ax.step([x for x, _ in ordered], [y for _, y in ordered], where="post", color="gray", lw=1, alpha=0.7)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("KL vs unquantized parent (nats/token)")
        ax.grid(alpha=0.3)
    axes[0].set_title("lower-left is better", fontsize=9)
    axes[1].set_title("lower-right is better (blue: llama.cpp, orange: ONNX Runtime)", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def pareto_rows(runs) -> list[dict]:
    """Summary rows of `analysis.compare.Run`s that carry fidelity, for `pareto_figure(points_from_rows(...))`."""
    return [row for run in runs for row in run.rows if row.get("fidelity_kl_mean") is not None]
