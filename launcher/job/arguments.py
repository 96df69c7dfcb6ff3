"""launch-train's flags: one parser, and argv -> ``CommandLine`` (LaunchOptions and what to do with them).

Each flag's ``dest`` is the name of its LaunchOptions (or SubmitOptions) field, so turning
the parsed namespace into options is one loop, and ``LaunchOptions.to_argv()`` is its
inverse. No parser of the project accepts abbreviations (``--sub`` for ``--submit``): an
abbreviation that reaches a batch job or a pod would mean something else there.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from launcher.job.hang_policy import DEFAULT_FIRST_STEP_TIMEOUT_S, DEFAULT_HANG_TIMEOUT_S
from launcher.job.options import MAX_RESTARTS, LaunchOptions, SubmitOptions, parse_env_assignment
from launcher.job.platforms import MODES, parse_device_list
from launcher.job.strict_numbers import seconds_arg, whole_number_arg

PROG = "launch-train"
K8S_KINDS = ("volcano", "msjob", "ascendjob")
MAX_NODES = 100_000
MAX_RANK_TABLE_WAIT_S = 7 * 86400


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (the rule for every bad input), still exit status 2; no abbreviations."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


@dataclass(frozen=True)
class CommandLine:
    """What launch-train was asked: a job (options), or a look at a running one (status/stack)."""

    options: Optional[LaunchOptions]
    status: Optional[Path] = None
    stack: Optional[Path] = None


def build_parser(description: str = "") -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        usage=f"{PROG} [options] [-- TRAINING ARGS]",
        description=description,
        epilog="The full manual: python -m pydoc launcher.cli, and docs/launching.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_argument_group("where it runs")
    where.add_argument("--devices", type=whole_number_arg("--devices"), metavar="N", help="devices (ranks) per host")
    where.add_argument("--visible-devices", metavar="LIST", help="device ids per host, e.g. 0,1,4-7")
    where.add_argument("--hosts", metavar="H1,H2", help="hosts in rank order (default: this machine)")
    where.add_argument("--hostfile", type=Path, metavar="FILE",
                       help="hosts, one per line: [user@]host[:port] [slots=N] [spare]; # comments")
    where.add_argument("--spare-hosts", metavar="H1,H2",
                       help="hosts that take the place of a lost host (SSH hosts)")
    where.add_argument("--min-hosts", type=whole_number_arg("--min-hosts", 1, 100_000), metavar="N",
                       help="with no spare left, go on without a lost host while at least N hosts remain")
    where.add_argument("--platform", metavar="Ascend|GPU|CPU", help="default: detected")
    where.add_argument("--mode", choices=MODES, help="start mode (default by platform)")
    where.add_argument("--rank-table", type=Path, metavar="FILE", help="Ascend rank table to use")
    where.add_argument("--hccn-conf", type=Path, metavar="FILE", help="device IPs (default /etc/hccn.conf)")
    where.add_argument("--sched-port", type=whole_number_arg("--sched-port"), metavar="PORT",
                       help="dynamic-mode scheduler port")
    where.add_argument("--topology-check", action=argparse.BooleanOptionalAction, default=None,
                       help="refuse device sets HCCL does not support (default on)")
    where.add_argument("--launcher", metavar="slurm|ssh|local",
                       help="who starts the ranks (default: slurm inside an allocation, else ssh/local by --hosts)")
    what = p.add_argument_group("what each rank runs")
    entry = what.add_mutually_exclusive_group()
    entry.add_argument("--entry", type=Path, metavar="SCRIPT.py", help="run python SCRIPT.py")
    entry.add_argument("--module", metavar="MOD", help="run python -m MOD (default deeplab.train)")
    what.add_argument("--env", action="append", metavar="KEY=VALUE", help="repeatable")
    what.add_argument("--bind-cores", action=argparse.BooleanOptionalAction, default=None,
                      help="bind each rank to its share of the host's cores (default on)")
    what.add_argument("--templates", type=Path, metavar="DIR", help="your own template directory")
    sup = p.add_argument_group("supervision")
    sup.add_argument("--job-dir", type=Path, metavar="DIR", help="default ./jobs/<job-id>")
    sup.add_argument("--max-restarts", type=whole_number_arg("--max-restarts", 0, MAX_RESTARTS), metavar="N",
                     help="restarts after a failure (default 0)")
    sup.add_argument("--tee", metavar="RANKS", help="ranks printed here (default 0)")
    sup.add_argument("--status-interval", dest="status_interval_s", type=float, metavar="S",
                     help="seconds between status blocks when stderr is not a terminal (default 30)")
    sup.add_argument("--hang-timeout", dest="hang_timeout_s", type=float, metavar="S",
                     help=f"a rank with no new training step for S seconds is hung (default {DEFAULT_HANG_TIMEOUT_S:g}; 0: off)")
    sup.add_argument("--grace", dest="grace_s", type=float, metavar="S",
                     help="on SIGTERM/SIGUSR1 every rank may save a checkpoint and stop within S seconds (default 60; 0: stop at once)")
    sup.add_argument("--first-step-timeout", dest="first_step_timeout_s", type=float, metavar="S",
                     help=f"time allowed until a rank's first step (default {DEFAULT_FIRST_STEP_TIMEOUT_S:g}; 0: off)")
    ssh = p.add_argument_group("several hosts (SSH)")
    ssh.add_argument("--ssh-config", type=Path, metavar="FILE", help="OpenSSH client config (default ~/.ssh/config)")
    ssh.add_argument("--ssh-key", type=Path, metavar="FILE", help="private key for every host")
    ssh.add_argument("--ssh-timeout", dest="ssh_timeout_s", type=float, metavar="S", help="connect timeout (default 10)")
    ssh.add_argument("--ssh-known-hosts", type=Path, metavar="FILE",
                     help="known_hosts to check host keys against (default: ssh config, ~/.ssh/known_hosts)")
    ssh.add_argument("--ssh-accept-unknown-host-keys", action="store_true", default=None,
                     help="accept host keys that are not in known_hosts (not recommended)")
    ssh.add_argument("--ssh-parallel", dest="ssh_parallel", type=int, metavar="N",
                     help="SSH connections set up at once (pre-flight, copying, starting agents; default 32)")
    ssh.add_argument("--ssh-tree-width", dest="ssh_tree_width", type=int, metavar="W",
                     help="above W hosts, start W agents that start the others (a tree; 0: no tree; default: "
                          "none up to 64 hosts, 32 wide above)")
    ssh.add_argument("--remote-python", dest="python", metavar="PATH",
                     help="interpreter on the hosts (default: this one's path)")
    ssh.add_argument("--master-addr", metavar="ADDR",
                     help="address of the first host that the others reach (dynamic-mode scheduler)")
    ssh.add_argument("--heartbeat-timeout", dest="heartbeat_timeout_s", type=float, metavar="S",
                     help="agents stop their ranks when the controller is silent this long (default 30)")
    sub = p.add_argument_group("submitting to a cluster (Slurm, Kubernetes)")
    sub.add_argument("--submit", choices=("slurm", "k8s"), help="render the job's batch script / manifests and submit")
    sub.add_argument("--nodes", type=whole_number_arg("--nodes", 1, MAX_NODES), default=1, metavar="N",
                     help="--submit: nodes / worker pods (default 1)")
    sub.add_argument("--partition", metavar="P", help="--submit slurm: sbatch --partition")
    sub.add_argument("--time", metavar="T", help="--submit slurm: sbatch --time (e.g. 2:00:00)")
    sub.add_argument("--account", metavar="A", help="--submit slurm: sbatch --account")
    sub.add_argument("--slurm-arg", dest="slurm_args", action="append", default=[], metavar="ARG",
                     help="--submit slurm: one more sbatch option, e.g. --slurm-arg=--exclusive (repeatable)")
    sub.add_argument("--wait", action="store_true", help="--submit slurm: wait and exit with the job's status")
    sub.add_argument("--k8s-kind", choices=K8S_KINDS,
                     help="--submit k8s: the job object (in a pod with --from-env: whose variables to read)")
    sub.add_argument("--image", metavar="IMG", help="--submit k8s: container image with launch-train and deeplab")
    sub.add_argument("--namespace", default="default", metavar="N", help="--submit k8s: namespace (default default)")
    sub.add_argument("--k8s-set", action="append", default=[], metavar="PATH=VALUE",
                     help="--submit k8s: set a manifest field (pod.*, container.*, or from the job's root)")
    sub.add_argument("--apply", action="store_true", help="--submit k8s: kubectl apply the manifests")
    sub.add_argument("--from-env", action="store_true", default=None,
                     help="in a pod: read the operator's variables and start this pod's ranks")
    sub.add_argument("--rank-table-timeout", dest="rank_table_timeout_s",
                     type=seconds_arg("--rank-table-timeout", 0, MAX_RANK_TABLE_WAIT_S), metavar="S",
                     help="--from-env: how long to wait for the mounted rank table (default 600)")
    sub.add_argument("--job-id", help=argparse.SUPPRESS)
    sub.add_argument("--from-submit", action="store_true", default=None, help=argparse.SUPPRESS)
    look_running = p.add_argument_group("looking at a running job")
    looking = look_running.add_mutually_exclusive_group()
    looking.add_argument("--status", type=Path, metavar="JOB_DIR", help="show the ranks of a (running) job and exit")
    looking.add_argument("--stack", type=Path, metavar="JOB_DIR",
                         help="dump every local rank's stack into LOG<rank>/stack.txt and exit")
    looking.add_argument("--resume", type=Path, metavar="JOB_DIR",
                         help="continue a stopped, failed or preempted job in its job dir from its newest checkpoint")
    look = p.add_argument_group("looking before starting")
    look.add_argument("--dry-run", action="store_true", default=None, help="print the plan, start nothing")
    look.add_argument("--json", action="store_true", default=None, help="with --dry-run: print it as JSON")
    return p


def split_training_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Launcher options before the first ``--``, training args (unchanged) after it."""
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


_SUBMIT_FIELDS = tuple(f.name for f in dataclasses.fields(SubmitOptions) if f.name != "target")


def options_from_namespace(ns: argparse.Namespace, training_args: Sequence[str]) -> LaunchOptions:
    """The parsed flags as LaunchOptions (LaunchError on a bad value); flags not given keep the defaults."""
    given = {f.name: getattr(ns, f.name) for f in dataclasses.fields(LaunchOptions)
             if f.name not in ("args", "submit", "resume") and getattr(ns, f.name, None) is not None}
    if "visible_devices" in given:
        given["visible_devices"] = parse_device_list(given["visible_devices"])
    if "env" in given:
        given["env"] = tuple(parse_env_assignment(item) for item in given["env"])
    submit = None
    if ns.submit is not None:
        values = {name: getattr(ns, name) for name in _SUBMIT_FIELDS}
        submit = SubmitOptions(target=ns.submit, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    return LaunchOptions(args=tuple(training_args), submit=submit, **given)


def parse_command_line(argv: Sequence[str], description: str = "") -> CommandLine:
    """argv (without the program name) -> what to do; usage errors exit 2 (argparse), bad values raise LaunchError."""
    own, training_args = split_training_args(argv)
    ns = build_parser(description).parse_args(own)
    if ns.status is not None or ns.stack is not None:
        return CommandLine(None, status=ns.status, stack=ns.stack)
    if ns.resume is not None:
        from launcher.job.resume import resume_options

        return CommandLine(resume_options(ns.resume, options_from_namespace(ns, training_args)))
    return CommandLine(options_from_namespace(ns, training_args))
