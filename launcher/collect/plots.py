"""Plots for report.html, rendered to base64 PNG so the report is one self-contained file."""
from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

from launcher.collect.logparse import TrainingLog


@dataclass(frozen=True)
class Plot:
    title: str
    png_base64: str

    def __post_init__(self) -> None:
        if not self.png_base64:
            raise ValueError(f"plot {self.title!r} has no image data")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


_LINE_STYLES = ("-", "--", "-.", ":")


def _integer_ticks(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _render(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def loss_curves(logs: dict[int, TrainingLog]) -> Plot | None:
    ranks = {r: log for r, log in sorted(logs.items()) if log.losses}
    if not ranks:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 4))
    for index, (rank, log) in enumerate(ranks.items()):
        finite = [(p.global_step, p.loss) for p in log.losses if math.isfinite(p.loss)]
        if finite:
            steps, losses = zip(*finite)
            # Ranks of a data-parallel job often log near-identical losses: vary the line
            # style so no rank hides behind another.
            ax.plot(steps, losses, linestyle=_LINE_STYLES[index % len(_LINE_STYLES)],
                    marker="o" if len(finite) < 30 else None, markersize=3, label=f"rank {rank}")
    ax.set_xlabel("step")
    _integer_ticks(ax.xaxis)
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize="small", ncol=max(1, len(ranks) // 8))
    return Plot("Training loss per rank", _render(fig))


def step_times(logs: dict[int, TrainingLog]) -> Plot | None:
    ranks = {r: log for r, log in sorted(logs.items()) if log.epochs}
    if not ranks:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 3.5))
    if max(len(log.epochs) for log in ranks.values()) > 1:
        for index, (rank, log) in enumerate(ranks.items()):
            ax.plot(range(1, len(log.epochs) + 1), [e.step_time_ms for e in log.epochs], marker="o",
                    linestyle=_LINE_STYLES[index % len(_LINE_STYLES)], label=f"rank {rank}")
        ax.set_xlabel("epoch")
        _integer_ticks(ax.xaxis)
        times = [e.step_time_ms for log in ranks.values() for e in log.epochs if e.step_time_ms > 0]
        if times and max(times) > 10 * min(times):
            # The first epoch compiles the graph (seconds): on a linear axis it flattens
            # every later epoch into the floor.
            ax.set_yscale("log")
            ax.set_ylabel("per step time (ms, log scale)")
        else:
            ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize="small")
    else:
        names = [f"rank {r}" for r in ranks]
        values = [log.mean_step_time_ms for log in ranks.values()]
        bars = ax.bar(names, values, color="tab:blue")
        ax.bar_label(bars, fmt="%.1f ms", fontsize="small")
    if not ax.get_ylabel():
        ax.set_ylabel("per step time (ms)")
    ax.grid(True, axis="y", alpha=0.3)
    return Plot("Step time per rank", _render(fig))


def class_iou(per_class: dict[str, float | None]) -> Plot | None:
    known = [(name, value) for name, value in per_class.items() if value is not None]
    if not known:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, max(2.5, 0.28 * len(known) + 0.8)))
    names, values = zip(*known)
    bars = ax.barh(names, values, color="tab:green")
    # Values on the bars: a class at 0.00 has no visible bar otherwise.
    ax.bar_label(bars, fmt="%.2f", padding=3, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU")
    ax.grid(True, axis="x", alpha=0.3)
    return Plot("IoU per class", _render(fig))


def miou_curve(training_evaluation: dict | None) -> Plot | None:
    """Validation mIoU of evaluation during training against the step; the best point marked."""
    if not training_evaluation or not training_evaluation.get("curve"):
        return None
    points = [(p["step"], p["mIoU"]) for p in training_evaluation["curve"] if math.isfinite(p["mIoU"])]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 3.5))
    steps, values = zip(*points)
    ax.plot(steps, values, marker="o", markersize=3, label=f"rank {training_evaluation['rank']}")
    best_step, best = training_evaluation["best_step"], training_evaluation["best_mIoU"]
    ax.plot([best_step], [best], marker="*", markersize=14, color="tab:red", linestyle="none",
            label=f"best: {best:.4f} at step {best_step}")
    ax.set_xlabel("step")
    _integer_ticks(ax.xaxis)
    ax.set_ylabel("val mIoU (single scale)")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return Plot("Validation mIoU during training", _render(fig))
