"""``run_job(options) -> JobResult``: the one library entry behind launch-train.

    options --select_backend--> backend --discover--> hosts --resolve_spec--> spec
            --prepare--> plan + rendered files --> dry run (print) | submit | launch (supervise)

Usable from Python and tests without argv::

    from launcher.job.options import LaunchOptions
    from launcher.run_job import run_job
    result = run_job(LaunchOptions(platform="CPU", devices=2, args=("--config", "tiny_synthetic", ...)))
    result.exit_code, result.first_failure, result.check()

Bad input raises LaunchError (one line, nothing written). A job that could not start after
its files were written (a host gone since pre-flight) or that was interrupted before any
rank started is a JobResult with ``message`` saying so.
"""
from __future__ import annotations

import sys
from typing import Mapping, Optional, TextIO

from launcher.backends import Backend, select_backend
from launcher.job.options import LaunchOptions
from launcher.job.resolve import resolve_spec
from launcher.launch import JobResult, LaunchInterrupted, prepare
from launcher.run.supervisor import Interrupt


def run_job(options: LaunchOptions, backend: Optional[Backend] = None, *, environ: Optional[Mapping[str, str]] = None,
            out: Optional[TextIO] = None, interrupt: Optional[Interrupt] = None) -> JobResult:
    """Resolve, prepare, then print the plan (options.dry_run), submit it (options.submit) or run it to its end."""
    out = out if out is not None else sys.stdout
    backend = backend if backend is not None else select_backend(options, environ)
    try:
        if options.submit is not None:
            return JobResult.without_plan("submitted", backend.submit(options))
        discovered = backend.discover(options, check=not options.dry_run)
        spec = resolve_spec(discovered.options, **discovered.resolver_inputs())
        if options.dry_run:
            return _print_plan(spec, backend, options.json, out)
        try:
            return backend.launch(spec, plain_interval=options.status_interval_s, interrupt=interrupt)
        except LaunchInterrupted as exc:
            return JobResult.without_plan("interrupted", exc.exit_code, message=str(exc))
        except OSError as exc:
            # A group that could not start (e.g. a host that went away after pre-flight); every
            # group was closed by the supervisor before this reaches here.
            return JobResult.without_plan("failed", 1, message=f"error: {exc}")
    finally:
        backend.close()


def _print_plan(spec, backend: Backend, as_json: bool, out: TextIO) -> JobResult:
    from launcher.job.dry_run import plan_json, plan_text

    plan, files = prepare(spec)
    out.write(plan_json(plan, files) if as_json else plan_text(plan, files) + backend.describe(plan))
    return JobResult(plan=plan, state="planned", exit_code=0, restarts=0, exits=())
