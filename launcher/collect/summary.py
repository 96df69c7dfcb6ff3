"""Build summary.json from what was gathered; pure (no file system, no clock).

The collection step reads files and hands over typed inputs (RankInputs); this
module turns them into the summary document and the list of problems.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from launcher.collect.evalfile import EvalResult
from launcher.collect.gather import ManifestEntry, Problem
from launcher.job.job_record import JobRecord, RankEntry
from launcher.collect.logparse import TrainingLog, log_tail

SUMMARY_SCHEMA = 1
_BATCH_ARG = re.compile(r"^(?:--set=)?batch_size=(\d+)\Z")


@dataclass(frozen=True)
class Checkpoint:
    path: str  # relative to the results dir
    size: int
    sha256: str | None
    mtime: float


@dataclass
class RankInputs:
    """What collection found for one rank (all optional: a rank may be missing)."""

    collected: bool = False
    log_path: str | None = None  # relative to the results dir
    log_text: str | None = None
    log: TrainingLog | None = None
    evals: list[tuple[str, EvalResult]] = field(default_factory=list)  # (results-relative path, result)
    config_batch_size: int | None = None
    config_path: str | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    stack_path: str | None = None  # LOG<rank>/stack.txt, written by the hang watchdog or --stack
    stack_text: str | None = None


def batch_size_from_args(args: tuple[str, ...] | list[str]) -> int | None:
    """The last `--set batch_size=N` (or `--set=batch_size=N`) in the training args."""
    found = None
    for index, arg in enumerate(args):
        match = _BATCH_ARG.match(arg)
        if match and (arg.startswith("--set=") or (index > 0 and args[index - 1] == "--set")):
            found = int(match.group(1))
    return found


def rank_status(rank: RankEntry, job_state: str | None) -> str:
    if rank.signal or (rank.exit_code is not None and rank.exit_code != 0):
        return "failed"
    if rank.exit_code == 0:
        return "succeeded"
    return "running" if job_state in ("planned", "running") else "unknown"


def _eval_dict(path: str, result: EvalResult) -> dict[str, Any]:
    return {
        "source": path,
        "mIoU": result.miou,
        "per_class_iou": result.per_class_iou,
        "ckpt": result.ckpt,
        "scales": list(result.scales),
        "flip": result.flip,
        "num_images": result.num_images,
        # Rows: ground truth, columns: prediction, pixel counts (deeplab-eval); [] from an older eval.json.
        "confusion_matrix": [list(row) for row in result.confusion_matrix],
    }


def _match_checkpoint(ckpt: str, rank: int, ranks: dict[int, RankInputs]) -> tuple[int, Checkpoint] | None:
    """The collected checkpoint an eval.json's "ckpt" path names (same rank first)."""
    name = ckpt.replace("\\", "/").rsplit("/", 1)[-1]
    if not name:
        return None
    order = [rank] + sorted(r for r in ranks if r != rank)
    for candidate in order:
        for checkpoint in ranks[candidate].checkpoints:
            if checkpoint.path.rsplit("/", 1)[-1] == name:
                return candidate, checkpoint
    return None


def _checkpoint_dict(rank: int, checkpoint: Checkpoint, reason: str, miou: float | None) -> dict[str, Any]:
    return {"rank": rank, "path": checkpoint.path, "size": checkpoint.size, "sha256": checkpoint.sha256,
            "mIoU": miou, "reason": reason}


BEST_IN_TRAINING = "-best.ckpt"  # deeplab-train's checkpoint of the highest mIoU during training


def training_evaluation(ranks: dict[int, RankInputs]) -> dict[str, Any] | None:
    """The mIoU curve of evaluation during training (``eval at step S ...: mIoU = X`` lines) and its best point."""
    for rank, inputs in sorted(ranks.items()):
        if inputs.log is None or not inputs.log.miou_curve:
            continue
        curve = [{"step": step, "mIoU": miou} for step, miou in inputs.log.miou_curve]
        best = max(curve, key=lambda point: (point["mIoU"], -point["step"]))
        kept = next((c for c in inputs.checkpoints if c.path.endswith(BEST_IN_TRAINING)), None)
        return {"rank": rank, "curve": curve, "best_step": best["step"], "best_mIoU": best["mIoU"],
                "best_checkpoint": kept.path if kept else None}
    return None


def best_checkpoint(ranks: dict[int, RankInputs]) -> dict[str, Any] | None:
    """The evaluated checkpoint with the highest mIoU, else the one kept by evaluation during
    training (deeplab-best.ckpt), else the newest checkpoint of rank 0."""
    evaluated = [(result.miou, rank, path, result) for rank, inputs in ranks.items() for path, result in inputs.evals]
    for miou, rank, path, result in sorted(evaluated, key=lambda e: (-e[0], e[1], e[2])):
        match = _match_checkpoint(result.ckpt, rank, ranks)
        if match is not None:
            return _checkpoint_dict(match[0], match[1], f"highest mIoU ({path})", miou)
        return {"rank": rank, "path": None, "evaluated_ckpt": result.ckpt, "size": None, "sha256": None,
                "mIoU": miou, "reason": f"highest mIoU ({path}); that checkpoint was not collected"}
    during = training_evaluation(ranks)
    if during is not None and during["best_checkpoint"] is not None:
        kept = next(c for c in ranks[during["rank"]].checkpoints if c.path == during["best_checkpoint"])
        return _checkpoint_dict(during["rank"], kept, f"highest mIoU during training (step {during['best_step']}, "
                                "single scale)", during["best_mIoU"])
    rank0 = ranks.get(0)
    if rank0 is not None and rank0.checkpoints:
        newest = max(rank0.checkpoints, key=lambda c: (c.mtime, c.path))
        return _checkpoint_dict(0, newest, "newest checkpoint of rank 0 (none evaluated)", None)
    return None


def first_failure(job: JobRecord, ranks: dict[int, RankInputs], tail_lines: int = 20) -> dict[str, Any] | None:
    """The launcher's recorded first failure, with the tail from the collected log."""
    recorded = job.status.get("first_failure")
    failed = [r for r in job.ranks if rank_status(r, None) == "failed"]
    if recorded:
        rank_id = recorded.get("rank")
        entry = {"rank": rank_id, "host": recorded.get("host"), "exit_code": recorded.get("exit_code"),
                 "signal": recorded.get("signal"), "log": recorded.get("log"), "tail": recorded.get("tail") or ""}
    elif failed:
        # No record of the order: the rank with a non-signal exit code is the likely cause
        # (the others were stopped by the launcher), then the lowest rank.
        first = sorted(failed, key=lambda r: (r.signal is not None, r.duration_s or 0.0, r.rank))[0]
        rank_id = first.rank
        entry = {"rank": first.rank, "host": first.host, "exit_code": first.exit_code, "signal": first.signal,
                 "log": f"{first.log_dir}/log.txt", "tail": ""}
    else:
        return None
    inputs = ranks.get(rank_id) if isinstance(rank_id, int) else None
    if inputs is not None and inputs.log_text is not None:
        entry["tail"] = log_tail(inputs.log_text, tail_lines)
        entry["log"] = inputs.log_path
    return entry


def _short(value: Any, limit: int = 300) -> str | None:
    return None if value is None else str(value)[:limit]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def straggler_records(job: JobRecord) -> list[dict[str, Any]]:
    """job.json status.stragglers (launcher/run/stragglers.py), each field of a known type, the rest dropped."""
    out = []
    for entry in job.status.get("stragglers") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("rank"), int) or isinstance(entry.get("rank"), bool):
            continue
        numbers = {key: float(entry[key]) for key in ("step_s", "median_s", "ratio")
                   if isinstance(entry.get(key), (int, float)) and not isinstance(entry.get(key), bool)}
        texts = {key: str(entry[key])[:300] for key in ("host", "metric", "reason", "at") if entry.get(key) is not None}
        out.append({"rank": entry["rank"], **texts, **numbers})
    return out


def hang_record(job: JobRecord) -> dict[str, Any] | None:
    """The launcher's hang watchdog record from job.json status.hang, in a known shape (or None).

    job.json is input: only the fields the report shows are kept, each of a known type.
    """
    hang = job.status.get("hang")
    if not isinstance(hang, dict):
        return None
    ranks = []
    for entry in hang.get("ranks") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("rank"), int):
            continue
        ranks.append({
            "rank": entry["rank"],
            "host": _short(entry.get("host")),
            "last_step": entry.get("last_step") if isinstance(entry.get("last_step"), int) else None,
            "seconds_since_progress": _number(entry.get("seconds_since_progress")),
            "state": _short(entry.get("state"), 80),
            "waiting_in": _short(entry.get("waiting_in")),
            "stack": _short(entry.get("stack")),
        })
    stuck = [r for r in hang.get("stuck_ranks") or [] if isinstance(r, int) and not isinstance(r, bool)]
    return {
        "detected": _short(hang.get("detected"), 40),
        "kind": _short(hang.get("kind"), 40),
        "timeout_s": _number(hang.get("timeout_s")),
        "stuck_ranks": stuck,
        "action": _short(hang.get("action"), 40),
        "message": _short(hang.get("message"), 500),
        "ranks": ranks,
    }


def build_summary(
    job: JobRecord,
    ranks: dict[int, RankInputs],
    entries: list[ManifestEntry],
    gather_problems: list[Problem],
    collection: dict[str, Any],
    failed: list[dict[str, Any]] | None = None,
    skipped: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], list[Problem]]:
    """(summary document, all problems). Problems decide the exit status.

    failed / skipped: files that were not collected (a copy that failed; a link or
    special file that was never opened), as listed by gathering.
    """
    problems = list(gather_problems)
    hang = hang_record(job)
    if hang is not None:
        where = ", ".join(f"rank {r['rank']} in {r['waiting_in']}" if r["waiting_in"] else f"rank {r['rank']}"
                          for r in hang["ranks"] if r["rank"] in hang["stuck_ranks"]) or "no rank named"
        problems.append(Problem("hung_rank", f"the launcher found the job hung ({hang['kind'] or 'no progress'}): {where}"))
    state = job.status.get("state")
    if state in ("planned", "running"):
        problems.append(Problem("job_not_finished", f"job {job.job_id} is still {state}: this collection is a snapshot"))
    args_batch = batch_size_from_args(job.args)
    # Every rank runs the same args, and the trainer writes config.yaml on rank 0 only:
    # the lowest rank's resolved config speaks for the ranks without one.
    job_config = next(((i.config_batch_size, i.config_path) for _, i in sorted(ranks.items())
                       if i.config_batch_size is not None), (None, None))
    rank_docs = []
    throughputs: list[float | None] = []
    for rank in job.ranks:
        inputs = ranks.get(rank.rank) or RankInputs()
        log = inputs.log
        status = rank_status(rank, state)
        if status == "failed":
            how = f"signal {rank.signal}" if rank.signal else f"exit code {rank.exit_code}"
            problems.append(Problem("failed_rank", f"rank {rank.rank} on {rank.host} failed ({how})", rank.rank, rank.host))
        failed_paths = {f.get("path") for f in failed or []}
        if inputs.collected and inputs.log_text is None and f"{rank.log_dir}/log.txt" not in failed_paths:
            problems.append(Problem("missing_log", f"rank {rank.rank}: {rank.log_dir}/log.txt was not found", rank.rank, rank.host))
        if log is not None and log.truncated:
            problems.append(Problem("truncated_log", f"rank {rank.rank}: last line of {inputs.log_path} is cut off "
                                    f"({log.dropped_line[:60]!r}); it was ignored", rank.rank, rank.host))
        if inputs.config_batch_size is not None:
            batch, batch_source = inputs.config_batch_size, inputs.config_path
        elif job_config[0] is not None:
            batch, batch_source = job_config
        elif args_batch is not None:
            batch, batch_source = args_batch, "job args --set batch_size"
        else:
            batch, batch_source = None, "unknown (no config.yaml and no --set batch_size in the job args)"
        step_ms = log.mean_step_time_ms if log is not None else None
        images_per_s = batch * 1000.0 / step_ms if batch is not None and step_ms else None
        throughputs.append(images_per_s)
        miou_from_log = log.miou if log is not None else None
        evals = [_eval_dict(path, result) for path, result in inputs.evals]
        rank_docs.append({
            "rank": rank.rank,
            "host": rank.host,
            "device_id": rank.device_id,
            "status": status,
            "exit_code": rank.exit_code,
            "signal": rank.signal,
            "duration_s": rank.duration_s,
            "collected": inputs.collected,
            "log": inputs.log_path,
            "log_truncated": bool(log is not None and log.truncated),
            "steps": log.steps if log is not None else 0,
            "epochs": len(log.epochs) if log is not None else 0,
            "final_loss": log.final_loss if log is not None else None,
            "mean_step_time_ms": step_ms,
            "first_epoch_step_time_ms": log.first_epoch_step_time_ms if log is not None else None,
            "batch_size": batch,
            "batch_size_source": batch_source,
            "images_per_s": images_per_s,
            "mIoU": evals[0]["mIoU"] if len(evals) == 1 else (max(e["mIoU"] for e in evals) if evals else miou_from_log),
            "evaluations": evals,
            "miou_curve": [{"step": step, "mIoU": miou} for step, miou in log.miou_curve] if log is not None else [],
            "checkpoints": [{"path": c.path, "size": c.size, "sha256": c.sha256} for c in inputs.checkpoints],
            "stack": inputs.stack_path,
        })
    best = best_checkpoint(ranks)
    evaluation = None
    all_evals = [(result.miou, path, result) for inputs in ranks.values() for path, result in inputs.evals]
    if all_evals:
        miou, path, result = max(all_evals, key=lambda e: (e[0], e[1]))
        evaluation = _eval_dict(path, result)
    else:
        logged = [(d["rank"], d["mIoU"]) for d in rank_docs if d["mIoU"] is not None]
        if logged:
            # The same keys as an eval.json's (the report reads them all), unknown ones empty.
            evaluation = {"source": f"LOG{logged[0][0]} log.txt 'mIoU =' line", "mIoU": logged[0][1], "per_class_iou": {},
                          "ckpt": None, "scales": [], "flip": False, "num_images": None,
                          "confusion_matrix": []}
    total = sum(t for t in throughputs if t is not None) if throughputs and all(t is not None for t in throughputs) else None
    summary = {
        "schema": SUMMARY_SCHEMA,
        "job_id": job.job_id,
        "job_dir": job.job_dir,
        "state": state,
        "platform": job.raw.get("platform"),
        "mode": job.raw.get("mode"),
        "rank_size": job.raw.get("rank_size", len(job.ranks)),
        "hosts": [h.name for h in job.hosts],
        "started": job.status.get("started"),
        "ended": job.status.get("ended"),
        "wall_time_s": job.status.get("wall_time_s"),
        "exit_code": job.status.get("exit_code"),
        "restarts": job.status.get("restarts", 0),
        "throughput_images_per_s": total,
        "ranks": rank_docs,
        "best_checkpoint": best,
        "evaluation": evaluation,
        "training_evaluation": training_evaluation(ranks),
        "first_failure": first_failure(job, ranks),
        "hang": hang,
        "stragglers": straggler_records(job),
        "problems": [p.to_dict() for p in problems],
        "collection": collection,
        "files": len(entries),
        "failed_files": list(failed or []),
        "skipped": list(skipped or []),
    }
    return summary, problems
