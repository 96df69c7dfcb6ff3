"""collect(request): gather a job into a new results directory and summarise it.

The only module with effects on the results tree. Order of events:
  1. read job.json (bad input -> CollectInputError, nothing written);
  2. refuse if the destination exists (never overwrite an earlier collection);
  3. gather every host's files into RESULTS_DIR/.<name>.partial-XXXX (each file
     verified; failed ones removed and listed, links and special files skipped);
  4. check that the staging dir holds exactly the manifest's files;
  5. parse logs / eval.json / config.yaml there, write manifest.json, summary.json,
     report.html;
  6. rename the staging dir to its final name, refusing to replace anything.
On any failure the staging dir is removed: a partial collection never carries the
final name. A results file system that fills up (ENOSPC) ends the collection with one
line naming the path, and nothing is kept.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

from launcher.atomic_write import write_atomic
from launcher.collect.errors import CollectInputError, CollectWriteError
from launcher.collect.evalfile import parse_eval
from launcher.collect.gather import GatherPlan, GatherResult, ManifestEntry, Problem, gather
from launcher.collect.hashing import HashCache, default_cache_path
from launcher.job.job_record import JobRecord, load_job, newest_job_dir
from launcher.collect.logparse import log_tail, parse_training_log
from launcher.collect.predictions import DEFAULT_SAMPLES, evaluate_for_samples, generated_entry, make_predictions
from launcher.collect.report import render_report
from launcher.collect.sources import HostFiles, LocalFiles
from launcher.collect.summary import Checkpoint, RankInputs, best_checkpoint, build_summary
from launcher.collect.timeline import build_timeline, timeline_summary

if TYPE_CHECKING:  # paramiko/fabric are imported only when a remote host is collected
    from launcher.remote.ssh import SshOptions

MANIFEST = "manifest.json"
# Hosts read at once without SSH options given (launcher.remote.ssh.DEFAULT_SSH_PARALLEL, not imported: paramiko is slow).
DEFAULT_GATHER_PARALLEL = 64
MAX_PREDICT = 100
SUMMARY = "summary.json"
REPORT = "report.html"


@dataclass(frozen=True)
class CollectRequest:
    job_dir: Path | None = None  # None: newest job under jobs_root
    results_root: Path = Path("results")
    into: Path | None = None  # exact destination instead of results_root/<job-id>
    include_checkpoints: bool = True
    ssh: SshOptions | None = None  # None: launcher.remote.ssh defaults (ssh config, ~/.ssh/known_hosts)
    jobs_root: Path = Path("jobs")
    hash_cache: Path | None = field(default_factory=default_cache_path)
    allow_links: bool = True
    tail_lines: int = 30
    # Sample predictions in the report: None: DEFAULT_SAMPLES when an evaluation was collected;
    # N: N, running deeplab-eval first when none was; 0: none.
    predict: int | None = None
    show_progress: bool = False  # progress of hosts gathered and files hashed on stderr (the CLI's)

    def __post_init__(self) -> None:
        if self.tail_lines < 1:
            raise ValueError(f"tail_lines must be at least 1, got {self.tail_lines}")
        if self.predict is not None and not 0 <= self.predict <= MAX_PREDICT:
            raise ValueError(f"--predict {self.predict}: must be 0..{MAX_PREDICT}")


@dataclass(frozen=True)
class CollectOutcome:
    results_dir: Path
    summary: dict[str, Any]
    problems: tuple[Problem, ...]

    @property
    def exit_status(self) -> int:
        """0: everything collected and every rank succeeded; 1: collected with problems."""
        return 1 if self.problems else 0

    @property
    def report(self) -> Path:
        return self.results_dir / REPORT


def _write_json(path: Path, doc: Any) -> None:
    write_atomic(path, json.dumps(doc, indent=2, sort_keys=False) + "\n")


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename src to dst, failing with FileExistsError if dst exists (even an empty dir).

    Plain rename(2) silently replaces an empty directory; renameat2(RENAME_NOREPLACE)
    closes that race. Where it is missing (old kernels, other libcs) fall back to
    check-then-rename.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, os.strerror(err), str(dst))
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def _created_epoch(job: JobRecord) -> float | None:
    """job.json's "created" (kept across restarts and --resume) as epoch seconds; None when unreadable."""
    created = job.raw.get("created")
    try:
        return datetime.fromisoformat(created).timestamp() if isinstance(created, str) else None
    except ValueError:
        return None


def _open_files(job_dir: Path, request: CollectRequest, cache: HashCache, made_since: float | None):
    def open_files(plan: GatherPlan) -> HostFiles:
        if plan.host is None or plan.host.local:
            return LocalFiles(str(job_dir), cache, allow_links=request.allow_links, made_since=made_since)
        from launcher.collect.sftp_host import open_host_files
        from launcher.remote.ssh import SshOptions

        return open_host_files(plan.host, request.ssh or SshOptions())

    return open_files


def _batch_size_from_config(path: Path) -> int | None:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, ValueError, RecursionError):
        return None
    if isinstance(doc, dict):
        value = doc.get("batch_size")
        if value is None:  # a config nested one level ({"train": {"batch_size": ...}})
            value = next((v["batch_size"] for v in doc.values() if isinstance(v, dict) and "batch_size" in v), None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def read_rank_inputs(stage: Path, job: JobRecord, found: set[int], entries: list[ManifestEntry]) -> tuple[dict[int, RankInputs], list[Problem]]:
    """Parse what was gathered for each rank (from the staging dir)."""
    sha = {e.path: e.sha256 for e in entries}
    ranks: dict[int, RankInputs] = {}
    problems: list[Problem] = []
    for rank in job.ranks:
        inputs = RankInputs(collected=rank.rank in found)
        ranks[rank.rank] = inputs
        log_dir = stage / rank.log_dir
        if not inputs.collected or not log_dir.is_dir():
            continue
        log_file = log_dir / "log.txt"
        if log_file.is_file():
            inputs.log_path = f"{rank.log_dir}/log.txt"
            inputs.log_text = log_file.read_text(encoding="utf-8", errors="replace")
            inputs.log = parse_training_log(inputs.log_text)
        stack_file = log_dir / "stack.txt"
        if stack_file.is_file():
            inputs.stack_path = f"{rank.log_dir}/stack.txt"
            inputs.stack_text = stack_file.read_text(encoding="utf-8", errors="replace")
        for eval_file in sorted(log_dir.rglob("eval.json")):
            rel = eval_file.relative_to(stage).as_posix()
            try:
                inputs.evals.append((rel, parse_eval(eval_file.read_text(encoding="utf-8", errors="replace"))))
            except ValueError as err:
                problems.append(Problem("bad_eval_json", f"{rel}: {err}", rank.rank, rank.host))
        for config in (log_dir / "config.yaml", log_dir / "ckpt" / "config.yaml", *sorted(log_dir.rglob("config.yaml"))):
            if config.is_file():
                batch = _batch_size_from_config(config)
                if batch is not None:
                    inputs.config_batch_size = batch
                    inputs.config_path = config.relative_to(stage).as_posix()
                    break
        # From the manifest, not a glob: only verified files count as checkpoints.
        for rel in sorted(p for p in sha if p.startswith(f"{rank.log_dir}/") and p.endswith(".ckpt")):
            st = stage.joinpath(*rel.split("/")).stat()
            inputs.checkpoints.append(Checkpoint(rel, st.st_size, sha[rel], st.st_mtime))
    return ranks, problems


def _announcer(request: CollectRequest) -> Callable[[str], None]:
    """Where a step that takes a while says it started: stderr when showing progress, else nowhere."""
    def announce(line: str) -> None:
        if request.show_progress:
            sys.stderr.write(f"collect-results: {line}\n")
            sys.stderr.flush()

    return announce


def _evaluate_for_samples(stage: Path, job: JobRecord, ranks: dict[int, RankInputs], entries: list[ManifestEntry],
                          announce: Callable[[str], None]) -> tuple[str | None, list[ManifestEntry]]:
    """--predict N without a collected evaluation: run one (deeplab-eval) and read it as rank 0's."""
    checkpoint = (best_checkpoint(ranks) or {}).get("path")
    relative, why_not = evaluate_for_samples(stage, job.args, checkpoint, announce=announce)
    if relative is None:
        return why_not, entries
    result = parse_eval((stage / relative).read_text(encoding="utf-8"))
    owner = min(ranks) if ranks else 0
    ranks.setdefault(owner, RankInputs()).evals.append((relative, result))
    return None, entries + [generated_entry(stage, relative, f"deeplab-eval {checkpoint}")]


def _collection_facts(results_dir: Path, result: GatherResult, include_checkpoints: bool) -> dict[str, Any]:
    entries = result.entries
    return {
        "results_dir": str(results_dir),
        "collected_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoints_collected": include_checkpoints,
        "bytes": sum(e.size for e in entries),
        "linked": sum(e.method == "link" for e in entries),
        "copied": sum(e.method == "copy" for e in entries),
        "sftp": sum(e.method == "sftp" for e in entries),
        "transfer_s": round(result.transfer_s, 4),
        "hash_s": round(result.hash_s, 4),
        "hashed_bytes_after_link": result.hashed_bytes,
        "hashes_from_cache": result.hashed_from_cache,
        "failed": len(result.failed),
        "skipped": len(result.skipped),
        "hosts": [
            {"host": h.host, "source": h.uri, "succeeded": h.succeeded, "error": h.error,
             "files": len(h.entries), "failed": len(h.failed), "seconds": round(h.seconds, 4)}
            for h in result.hosts
        ],
    }


def check_stage(stage: Path, entries: list[ManifestEntry]) -> list[Problem]:
    """Make the staging dir hold exactly the manifest's files (before summary files exist).

    Gathering removes what failed, so this finds nothing unless something else wrote
    there; whatever it finds is removed and reported rather than kept unlisted.
    """
    listed = {e.path for e in entries}
    parents = {"/".join(p.split("/")[:i]) for p in listed for i in range(1, p.count("/") + 1)}
    problems = []
    for path in sorted(stage.rglob("*"), key=lambda p: -len(p.parts)):  # children before their directory
        rel = path.relative_to(stage).as_posix()
        if path.is_symlink() or not path.is_dir():
            if rel not in listed:
                path.unlink()
                problems.append(Problem("unlisted_file", f"{rel}: in the results but not verified; removed"))
        elif rel not in parents:
            path.rmdir()  # a directory no collected file is in (only unlisted ones were, now removed)
    missing = [p for p in sorted(listed) if not stage.joinpath(*p.split("/")).is_file()]
    if missing:  # a bug, not an input: never finalise a manifest that lies
        raise RuntimeError(f"manifest lists files that are not in {stage}: {missing[:5]}")
    return problems


def _writing(path: Path, err: OSError) -> CollectWriteError:
    return CollectWriteError(f"{path}: cannot write the results: {err.strerror or err}; nothing was kept")


def collect(request: CollectRequest) -> CollectOutcome:
    job_dir = (request.job_dir or newest_job_dir(request.jobs_root)).resolve()
    job = load_job(job_dir)
    final = (request.into or request.results_root / job.job_id).absolute()
    if final.resolve() == job_dir or job_dir in final.resolve().parents:
        flag = "--into" if request.into else "--results-dir"
        raise CollectInputError(f"{flag} {final}: inside the job directory {job_dir}; put the results outside it "
                                "(a later collection of the job would take them in)")
    if os.path.lexists(final):
        raise CollectInputError(
            f"{final}: already exists (job {job.job_id} was collected before); nothing was changed; "
            "use --into DIR to collect again into a new directory"
        )
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CollectInputError(f"{final.parent}: cannot create results directory: {err.strerror}") from None
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    except OSError as err:
        raise _writing(final.parent, err) from None
    try:
        os.chmod(stage, 0o755)  # mkdtemp makes 0700; results are meant to be shared
        cache = HashCache(request.hash_cache)
        result = gather(job, stage, _open_files(job_dir, request, cache, _created_epoch(job)), cache,
                        request.include_checkpoints, show_progress=request.show_progress,
                        parallel=request.ssh.parallel if request.ssh is not None else DEFAULT_GATHER_PARALLEL)
        entries = result.entries
        stage_problems = check_stage(stage, entries)
        ranks, parse_problems = read_rank_inputs(stage, job, result.ranks_found, entries)
        evaluation_note = None
        if request.predict and not any(r.per_image for i in ranks.values() for _, r in i.evals):
            evaluation_note, entries = _evaluate_for_samples(stage, job, ranks, entries, _announcer(request))
        summary, problems = build_summary(
            job, ranks, entries, result.problems + stage_problems + parse_problems,
            _collection_facts(final, result, request.include_checkpoints),
            failed=[f.to_dict() for f in result.failed], skipped=[k.to_dict() for k in result.skipped],
        )
        logs = {r: i.log for r, i in ranks.items() if i.log is not None}
        tails = {r: log_tail(i.log_text, request.tail_lines) for r, i in ranks.items() if i.log_text is not None}
        stacks = {r: i.stack_text for r, i in ranks.items() if i.stack_text is not None}
        evaluation = summary["evaluation"] or {}
        evaluated = next((result for inputs in ranks.values() for path, result in inputs.evals
                          if path == evaluation.get("source")), None)
        count = DEFAULT_SAMPLES if request.predict is None else request.predict
        if evaluation_note:
            from launcher.collect.predictions import left_out

            predictions = left_out(evaluation_note)
        else:
            predictions = make_predictions(stage, evaluated, evaluation.get("source"),
                                           (summary["best_checkpoint"] or {}).get("path"), count,
                                           list(evaluation.get("per_class_iou") or {}), announce=_announcer(request))
        entries = entries + predictions.entries
        summary["files"] = len(entries)
        summary["predictions"] = predictions.to_summary()
        job_timeline = build_timeline(job.raw, [(r, c.path, c.mtime) for r, i in ranks.items() for c in i.checkpoints])
        summary["timeline"] = timeline_summary(job_timeline)
        report = render_report(summary, logs, tails, summary["collection"]["collected_at"], stacks=stacks,
                               job_timeline=job_timeline)
        for name, write in ((MANIFEST, lambda p: _write_json(p, {"job_id": job.job_id, "files": [e.__dict__ for e in entries]})),
                            (SUMMARY, lambda p: _write_json(p, summary)), (REPORT, lambda p: _write_text(p, report))):
            try:
                write(stage / name)
            except OSError as err:
                raise _writing(final / name, err) from None
        try:
            rename_no_replace(stage, final)
        except FileExistsError:
            raise CollectInputError(f"{final}: appeared while collecting; nothing was changed there") from None
        except OSError as err:
            raise _writing(final, err) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return CollectOutcome(final, summary, tuple(problems))
