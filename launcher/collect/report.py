"""Render report.html from summary.json data and the parsed logs (Jinja2, autoescaped)."""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import jinja2

import job_templates
from launcher.collect.logparse import TrainingLog
from launcher.collect.plots import Plot, class_iou, loss_curves, miou_curve, step_times

TEMPLATE = "report.html.j2"


def fmt(value: Any, pattern: str) -> str:
    """printf-style number formatting that shows a dash for unknown values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return pattern % value


def make_plots(summary: dict[str, Any], logs: dict[int, TrainingLog]) -> dict[str, Plot]:
    """The plots there is data for: "loss", "step_time", "miou_curve", "class_iou"."""
    evaluation = summary.get("evaluation") or {}
    candidates = {
        "loss": loss_curves(logs),
        "step_time": step_times(logs),
        "miou_curve": miou_curve(summary.get("training_evaluation")),
        "class_iou": class_iou(evaluation.get("per_class_iou") or {}),
    }
    return {name: plot for name, plot in candidates.items() if plot is not None}


@functools.lru_cache(maxsize=4)
def _template(template_dir: str) -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(TEMPLATE)


def render_report(
    summary: dict[str, Any],
    logs: dict[int, TrainingLog],
    tails: dict[int, str],
    generated: str,
    template_dir: Path | None = None,
    stacks: dict[int, str] | None = None,
) -> str:
    template = _template(str(template_dir or Path(job_templates.__file__).parent))
    return template.render(s=summary, plots=make_plots(summary, logs), tails=tails, generated=generated, fmt=fmt,
                           stacks=stacks or {})
