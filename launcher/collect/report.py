"""Render report.html from summary.json data and the parsed logs (Jinja2, autoescaped)."""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import jinja2

import job_templates
from launcher.collect.logparse import TrainingLog
from launcher.collect.plots import Plot, class_iou, confusion_matrix, loss_curves, miou_curve, step_times, timeline
from launcher.collect.timeline import Timeline

TEMPLATE = "report.html.j2"


def fmt(value: Any, pattern: str) -> str:
    """printf-style number formatting that shows a dash for unknown values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return pattern % value


def make_plots(summary: dict[str, Any], logs: dict[int, TrainingLog], job_timeline: Timeline | None = None
               ) -> dict[str, Plot]:
    """The plots there is data for: "loss", "step_time", "miou_curve", "class_iou", "confusion", "timeline"."""
    evaluation = summary.get("evaluation") or {}
    candidates = {
        "loss": loss_curves(logs),
        "step_time": step_times(logs),
        "miou_curve": miou_curve(summary.get("training_evaluation")),
        "class_iou": class_iou(evaluation.get("per_class_iou") or {}),
        "confusion": confusion_matrix(evaluation.get("confusion_matrix") or [],
                                      list(evaluation.get("per_class_iou") or {})),
        "timeline": timeline(job_timeline),
    }
    return {name: plot for name, plot in candidates.items() if plot is not None}


def section_notes(summary: dict[str, Any], plots: dict[str, Plot]) -> dict[str, str]:
    """One line for each section the report leaves out, saying why (instead of an empty section)."""
    evaluation = summary.get("evaluation") or {}
    notes = {}
    if "timeline" not in plots:
        notes["timeline"] = "Timeline left out: job.json has no start time (the job never started)."
    if not evaluation:
        notes["evaluation"] = ("Evaluation and confusion matrix left out: no evaluation ran "
                               "(deeplab-eval ... --output LOG0/eval.json writes one that collect-results reads).")
    elif "confusion" not in plots:
        notes["confusion"] = (f"Confusion matrix left out: {evaluation.get('source') or 'the evaluation'} has no "
                              "confusion_matrix (written by deeplab-eval --output).")
    predictions = summary.get("predictions") or {}
    if predictions.get("note"):
        notes["predictions"] = predictions["note"]
    return notes


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
    job_timeline: Timeline | None = None,
) -> str:
    template = _template(str(template_dir or Path(job_templates.__file__).parent))
    plots = make_plots(summary, logs, job_timeline)
    return template.render(s=summary, plots=plots, notes=section_notes(summary, plots), tails=tails,
                           generated=generated, fmt=fmt, stacks=stacks or {})
