"""collect-results: gather a launch-train job's logs and checkpoints from every host.

Usage:
    collect-results [JOB_DIR] [-o RESULTS_DIR] [--into DIR] [--no-checkpoints] [--json] [--predict N]
                    [--ssh-config FILE] [--ssh-key FILE] [--ssh-known-hosts FILE]
                    [--ssh-timeout S] [--ssh-accept-unknown-host-keys] [--no-hash-cache]

JOB_DIR (default: the newest job under ./jobs) is the directory holding job.json.
Every rank's LOG<rank>/ (log.txt, env.sh, run.sh, ckpt/*.ckpt, config.yaml, eval.json),
plus job.json, rank_table.json, hostfile and scheduler/, are gathered from this host and,
over SFTP, from the remote hosts named in job.json (in parallel) into
RESULTS_DIR/<job-id>/ (default ./results/<job-id>/). Where source and results share a file
system files are hard-linked (logs, which running processes append to, are copied);
otherwise copied. Only what is inside the job dir is taken: a symbolic link is never
followed, a FIFO, socket or device never opened, and a hard link to a file the job did not
write (another user's, or older than the job) never read (all are listed in summary.json
"skipped"). RESULTS_DIR must be outside the job dir. Every copy is read back and compared with its source (size, sha256); a file
whose copy failed (a lost SFTP session, a full disk, a file changed or replaced while
read) is removed and listed in "failed_files", never in the manifest. Then:

    manifest.json   every file: results path, source (path or ssh://user@host:port/path),
                    method (link|copy|sftp), size, sha256
    summary.json    per rank: host, device, status, exit code, signal, steps, final loss,
                    mean step time, images/s, checkpoints (size, sha256), stack.txt; per job:
                    wall time, throughput, best checkpoint, mIoU and per-class IoU, first
                    failure with its log tail, the hang the launcher found (stuck ranks and
                    where they wait), problems, failed_files, skipped
    report.html     self-contained report (timeline of attempts, restarts, hangs and
                    checkpoints; loss curves, step times, rank table, failures, IoU per class
                    beside the confusion matrix, sample predictions); it opens without a network
    predictions/    the report's sample predictions, one PNG each (in the manifest, method
                    "generated"): image | ground truth | prediction | errors

Sample predictions: when an evaluation's eval.json (deeplab-eval --output) was collected,
N of its validation images (default 6), spread over its ranking by per-image mIoU from the
worst up, are segmented with the best checkpoint by deeplab-infer (a separate process, the
evaluation's config, scales and flip). A section without its input (no evaluation, no
checkpoint, an image that cannot be read) is one line in the report saying why.

A second collection of the same job never overwrites the first: it stops with exit 2
unless --into DIR names a new directory. The results directory appears only when
complete (it is assembled under a hidden temporary name and renamed).

Options:
    -o, --results-dir DIR      parent of the results directory (default ./results)
    --into DIR                 collect into exactly DIR (must not exist)
    --no-checkpoints           skip *.ckpt files
    --json                     print summary.json to stdout instead of the human summary
    --predict N                N sample predictions in the report (at most 100; 0: none); without it,
                               6 when an evaluation was collected. With it and no evaluation,
                               deeplab-eval runs first (the job's --config and --data-root, the
                               chosen checkpoint, single scale) into predictions/eval.json
    --ssh-config FILE          OpenSSH client config (default ~/.ssh/config, /etc/ssh/ssh_config)
    --ssh-key FILE             private key for the remote hosts (else IdentityFile / agent)
    --ssh-known-hosts FILE     known_hosts file (default: UserKnownHostsFile from the ssh
                               config, else ~/.ssh/known_hosts); unknown host keys are rejected
    --ssh-timeout S            connect timeout per host (default 10)
    --ssh-accept-unknown-host-keys
                               connect to hosts whose key is not known (insecure)
    --ssh-parallel N           hosts read at once (default 64): threads and SSH connections
                               follow N, not the host count
    --no-hash-cache            do not read or write the sha256 cache
                               ($XDG_CACHE_HOME/deeplab-launch/sha256-cache.json, keyed by
                               device, inode, size and mtime)

Exit status:
    0  everything collected, every rank succeeded
    1  collected with problems: a failed or hung rank, a missing LOG dir, an unreachable or
       lost host, a truncated log, a file that failed to copy, a skipped link or special
       file, a job still running (listed in summary.json "problems" and on stderr); or the
       results could not be written (disk full: one line naming the path, nothing kept)
    2  bad input: no job.json in JOB_DIR, a job.json that is unreadable, not a regular file,
       not UTF-8, not JSON, nested too deeply, or has a number out of range; destination
       exists; one line on stderr and nothing written
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from launcher.collect.collection import CollectOutcome, CollectRequest, collect
from launcher.collect.errors import CollectWriteError
from launcher.job.job_record import JobFileError
from launcher.collect.hashing import default_cache_path


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)  # an abbreviation is an error line, never a guess
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        sys.stderr.write(f"collect-results: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    # The module docstring is the manual: --help shows it whole.
    parser = _Parser(prog="collect-results", usage="%(prog)s [JOB_DIR] [options]", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter, add_help=True)
    parser.add_argument("job_dir", nargs="?", type=Path, metavar="JOB_DIR", help="job directory (default: newest under ./jobs)")
    parser.add_argument("-o", "--results-dir", type=Path, default=Path("results"), metavar="DIR")
    parser.add_argument("--into", type=Path, metavar="DIR")
    parser.add_argument("--no-checkpoints", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--ssh-config", type=Path, metavar="FILE")
    parser.add_argument("--ssh-key", type=Path, metavar="FILE")
    parser.add_argument("--ssh-known-hosts", type=Path, metavar="FILE")
    parser.add_argument("--ssh-timeout", type=float, default=10.0, metavar="S")
    parser.add_argument("--ssh-accept-unknown-host-keys", action="store_true")
    parser.add_argument("--ssh-parallel", type=int, default=64, metavar="N")
    parser.add_argument("--no-hash-cache", action="store_true")
    parser.add_argument("--predict", type=int, default=None, metavar="N")
    return parser


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern % value


def human_summary(outcome: CollectOutcome) -> str:
    s = outcome.summary
    hosts = ", ".join(s["hosts"])
    lines = [f"collected job {s['job_id']} ({s['state'] or 'unknown state'}, {s['rank_size']} ranks on {hosts}, "
             f"wall time {_fmt(s['wall_time_s'], '%.1f s')}) into {outcome.results_dir}"]
    for r in s["ranks"]:
        how = r["status"] + (f" ({r['signal']})" if r["signal"] else
                             f" (exit {r['exit_code']})" if r["exit_code"] not in (None, 0) else "")
        lines.append(f"  rank {r['rank']} {r['host']}: {how}, {r['steps']} steps, loss {_fmt(r['final_loss'], '%.5f')}, "
                     f"{_fmt(r['mean_step_time_ms'], '%.1f')} ms/step, {_fmt(r['images_per_s'], '%.2f')} images/s")
    if s["evaluation"]:
        lines.append(f"  mIoU {s['evaluation']['mIoU']:.4f}")
    if s["best_checkpoint"]:
        lines.append(f"  best checkpoint: {s['best_checkpoint']['path']} ({s['best_checkpoint']['reason']})")
    predictions = s.get("predictions") or {}
    if predictions.get("samples"):
        lines.append(f"  sample predictions: {len(predictions['samples'])} in {outcome.results_dir / 'predictions'}")
    elif predictions.get("note"):
        lines.append(f"  {predictions['note']}")
    if outcome.problems:
        lines.append(f"  {len(outcome.problems)} problem(s), see summary.json: "
                     + "; ".join(p.message for p in outcome.problems[:3]) + (" ..." if len(outcome.problems) > 3 else ""))
    lines.append(f"report: {outcome.report}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from launcher.remote.ssh import SshOptions  # paramiko is slow to import; only needed past this point

    try:
        ssh = SshOptions(config_file=args.ssh_config, key_file=args.ssh_key, timeout_s=args.ssh_timeout,
                         known_hosts=args.ssh_known_hosts, accept_unknown_host_keys=args.ssh_accept_unknown_host_keys,
                         parallel=args.ssh_parallel)
    except ValueError as err:  # names the flag
        sys.stderr.write(f"collect-results: {err}\n")
        return 2
    try:
        request = CollectRequest(
            job_dir=args.job_dir,
            results_root=args.results_dir,
            into=args.into,
            include_checkpoints=not args.no_checkpoints,
            ssh=ssh,
            hash_cache=None if args.no_hash_cache else default_cache_path(),
            predict=args.predict,
            show_progress=True,
        )
    except ValueError as err:  # names the flag
        sys.stderr.write(f"collect-results: {err}\n")
        return 2
    try:
        outcome = collect(request)
    except JobFileError as err:  # job.json unusable, or a CollectInputError
        sys.stderr.write(f"collect-results: {err}\n")
        return 2
    except CollectWriteError as err:
        sys.stderr.write(f"collect-results: {err}\n")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(outcome.summary, indent=2) + "\n")
    else:
        sys.stdout.write(human_summary(outcome) + "\n")
    for problem in outcome.problems:
        sys.stderr.write(f"collect-results: {problem.kind}: {problem.message}\n")
    return outcome.exit_status


if __name__ == "__main__":
    sys.exit(main())
