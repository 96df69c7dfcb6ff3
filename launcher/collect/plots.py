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
    # Half the page wide: the confusion matrix is beside it.
    fig, ax = plt.subplots(figsize=(6.5, max(2.5, 0.28 * len(known) + 0.8)))
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


def confusion_matrix(matrix: list[list[int]], names: list[str]) -> Plot | None:
    """Row-normalised confusion heatmap: row = ground-truth class, share of its pixels per predicted class.

    A class with no ground-truth pixels has an empty (grey) row rather than a row of zeros,
    which would read as "never right".
    """
    import numpy as np

    counts = np.asarray(matrix, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0 or counts.shape[0] != counts.shape[1] or counts.sum() <= 0:
        return None
    size = counts.shape[0]
    labels = list(names) if len(names) == size else [str(index) for index in range(size)]
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), np.nan)
    plt = _pyplot()
    side = max(4.5, 0.3 * size + 1.5)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    colours = plt.get_cmap("Blues").with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(shares), cmap=colours, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(size), labels, rotation=90, fontsize="small")
    ax.set_yticks(range(size), labels, fontsize="small")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    if size <= 24:  # numbers stay legible up to VOC's 21 classes
        for row in range(size):
            for column in range(size):
                share = shares[row, column]
                if np.isfinite(share) and share >= 0.005:
                    ax.text(column, row, f"{share * 100:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if share > 0.6 else "#333333")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row's pixels")
    return Plot("Confusion matrix (rows: ground truth, normalised; %)", _render(fig))


_SPAN_COLOURS = {"succeeded": "#4caf50", "failed": "#d32f2f", "stopped": "#ff9800", "running": "#90a4ae",
                 "unknown": "#bdbdbd", "restarted": "#b39ddb"}
_EVENT_STYLES = {  # kind: (marker, colour, size, legend label)
    "checkpoint": ("D", "#37474f", 5, "checkpoint"),
    "hang": ("X", "#b71c1c", 11, "hang (stuck rank)"),
    "straggler": ("v", "#ef6c00", 9, "straggler"),
    "failure": ("x", "#d32f2f", 10, "failure"),
    "excluded": ("s", "#000000", 8, "host excluded"),
    "spare": ("P", "#1565c0", 9, "spare host taken"),
}
_JOB_LINES = {"restart": ("#673ab7", "restart"), "hang": ("#b71c1c", "hang"), "excluded": ("#000000", "host excluded"),
              "spare": ("#1565c0", "spare host taken")}


def timeline(tl) -> Plot | None:
    """The job's attempts per rank (or host), with restarts, hangs, stragglers, host changes and checkpoints."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if tl is None or not tl.rows:
        return None
    plt = _pyplot()
    rows = list(tl.rows)
    index = {row: position for position, row in enumerate(rows)}
    fig, ax = plt.subplots(figsize=(11, min(14.0, max(2.2, 0.32 * len(rows) + 1.4))))
    outcomes = []
    for span in tl.spans:
        if span.row in index:
            ax.barh(index[span.row], max(span.end - span.start, tl.duration * 0.002), left=span.start, height=0.6,
                    color=_SPAN_COLOURS.get(span.outcome, "#bdbdbd"), edgecolor="none")
            outcomes.append(span.outcome)
    handles = [Patch(color=_SPAN_COLOURS[o], label=f"attempt: {o}") for o in _SPAN_COLOURS if o in outcomes]
    kinds_drawn = set()
    for kind, (marker, colour, size, _label) in _EVENT_STYLES.items():
        points = [(e.at, index[e.row]) for e in tl.events if e.kind == kind and e.row in index]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, linestyle="none", marker=marker, color=colour, markersize=size, zorder=3)
            handles.append(Line2D([], [], linestyle="none", marker=marker, color=colour, markersize=size * 0.8,
                                  label=_label))
            kinds_drawn.add(kind)
    for event in tl.events:
        if event.row is None and event.kind in _JOB_LINES:
            colour, label = _JOB_LINES[event.kind]
            ax.axvline(event.at, color=colour, linestyle="--", linewidth=1.2, zorder=2)
            ax.annotate(event.label, (event.at, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -2),
                        textcoords="offset points", va="top", fontsize="small", color=colour, rotation=0)
            if ("line", event.kind) not in kinds_drawn:
                handles.append(Line2D([], [], color=colour, linestyle="--", label=label))
                kinds_drawn.add(("line", event.kind))
    ax.set_yticks(range(len(rows)))
    # At hundreds of hosts every name cannot fit: label a readable subset, keep every bar.
    step = max(1, len(rows) // 40)
    ax.set_yticklabels([row if position % step == 0 else "" for position, row in enumerate(rows)], fontsize="small")
    ax.set_ylim(len(rows) - 0.5, -0.5 - (0.8 if any(e.row is None for e in tl.events) else 0))
    ax.set_xlim(0, tl.duration * 1.02)
    ax.set_xlabel("seconds since the job started")
    ax.grid(True, axis="x", alpha=0.3)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    what = "host" if tl.by_host else "rank"
    return Plot(f"Timeline per {what}", _render(fig))
