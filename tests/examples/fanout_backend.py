"""A whole backend in one file: the example of adding a place where ranks run (tests/test_backends.py).

"fanout" starts every rank of the job with ONE command, as pdsh or a site's own fan-out tool
would: a script that runs each LOG<rank>/run.sh in the background and records each rank's
exit status in LOG<rank>/exit_status, which is all the supervisor needs (OneCommandGroup,
launcher/run/mpirun.py, watches those files). Here the command runs on this machine; a
pdsh backend would prefix each line with ``pdsh -w <host>``. To use it, one line:

    LAUNCHERS["fanout"] = lambda options, environ: FanoutBackend()     (launcher/backends/__init__.py)

then ``launch-train --launcher fanout ...`` or ``run_job(LaunchOptions(launcher="fanout", ...))``.
"""
from __future__ import annotations

import shlex

from launcher.atomic_write import write_atomic
from launcher.backends.base import Backend
from launcher.run.mpirun import EXIT_STATUS_FILE, OneCommandGroup


class FanoutGroup(OneCommandGroup):
    script = "fanout.sh"
    output = "fanout.log"

    def _launch(self) -> None:
        lines = ["#!/usr/bin/env bash", 'here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"']
        if self.plan.scheduler is not None:
            log_dir = shlex.quote(self.plan.scheduler.log_dir)
            lines.append(f'bash "$here"/{log_dir}/run.sh >> "$here"/{log_dir}/log.txt 2>&1 &')
        for rank in self.plan.ranks:
            log_dir = shlex.quote(rank.log_dir)
            lines.append(f'( bash "$here"/{log_dir}/run.sh; echo $? > "$here"/{log_dir}/{EXIT_STATUS_FILE} ) &')
        lines.append("wait")
        write_atomic(self.job_dir / self.script, "\n".join(lines) + "\n", executable=True)
        super()._launch()


class FanoutBackend(Backend):
    name = "fanout"

    def groups(self, plan):
        return [FanoutGroup(plan)]

    def describe(self, plan) -> str:
        return f"\nfanout: bash {plan.spec.job_dir / FanoutGroup.script} starts all {plan.rank_size} ranks\n"
