"""The report's picture: throughput against p99 for every load step of every trial, the Pareto
frontier, the target and the chosen point (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from inferd.tune.search import Trial, pareto_front

if TYPE_CHECKING:  # for annotations only: matplotlib is imported when a plot is drawn
    from matplotlib.axes import Axes


def plot_available() -> str | None:
    """None when plots can be drawn; otherwise why not."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "No plot: matplotlib is not installed (pip install 'inferd[tune]')."
    return None


def plot_trials(
    path: Path,
    trials: Sequence[Trial],
    best: Trial | None,
    slo_p99_ms: float,
    title: str,
    unit: str = "inferences",
    metric: str = "p99",
) -> None:
    """Draw every trial's load steps, the frontier, the target and ``best`` into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    try:
        _draw_steps(ax, trials)
        _draw_front(ax, trials)
        ax.axvline(
            slo_p99_ms, color="tab:red", linestyle="--", linewidth=1, label=f"{metric} target"
        )
        if best is not None:
            _draw_best(ax, best)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{metric} latency (ms, log scale)")
        ax.set_ylabel(f"throughput ({unit}/s)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _draw_best(ax: Axes, best: Trial) -> None:
    m = best.measurement
    label = f"chosen: {best.candidate.key()}"
    ax.scatter([m.p99_ms], [m.throughput], marker="*", s=320, color="gold", zorder=5,
               edgecolors="black", label=label)  # fmt: skip


def _draw_steps(ax: Axes, trials: Sequence[Trial]) -> None:
    """Every load step, light; each trial's operating point, solid; a colour per replica count."""
    steps: dict[int, list[tuple[float, float]]] = {}
    chosen: dict[int, list[tuple[float, float]]] = {}
    for trial in trials:
        r = trial.candidate.replicas()
        for p in trial.measurement.points:
            if math.isfinite(p.p99_ms) and p.num_ok:
                steps.setdefault(r, []).append((p.p99_ms, p.throughput))
        m = trial.measurement
        if m.meets_slo:
            chosen.setdefault(r, []).append((m.p99_ms, m.throughput))
    for r, points in sorted(steps.items()):
        color = f"C{(r - 1) % 10}"
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, s=12, alpha=0.35, color=color, label=f"load steps, {r} replica(s)")
        if r in chosen:
            cx, cy = zip(*chosen[r], strict=True)
            ax.scatter(cx, cy, s=45, color=color, edgecolors="black", linewidths=0.5,
                       label=f"trial operating points, {r} replica(s)")  # fmt: skip


def _draw_front(ax: Axes, trials: Sequence[Trial]) -> None:
    points = [
        (p.throughput, p.p99_ms)
        for t in trials
        for p in t.measurement.points
        if math.isfinite(p.p99_ms) and p.num_ok
    ]
    front = [points[i] for i in pareto_front(points)]
    if front:
        xs = [p99 for _, p99 in front]
        ys = [tput for tput, _ in front]
        ax.plot(xs, ys, color="black", linewidth=1.2, drawstyle="steps-post",
                label="Pareto frontier")  # fmt: skip
