"""Groups whose ranks are all started by one command: OneCommandGroup, and MpirunGroup on it.

``mpirun`` (or ``srun``) reports one exit code for the whole job, so each of its
processes runs a wrapper (``mpi_rank.sh``) that runs LOG<rank>/run.sh and records that
rank's exit status in LOG<rank>/exit_status. The group watches those files: it learns
which rank failed as soon as it fails, without waiting for the command's own clean-up.
The command's own output goes to <job-dir>/<name>.log. A new launcher of this kind
(say srun) is one subclass naming its script and log.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Iterable, Optional

from launcher.job.plan import Plan
from launcher.run.failures import RankExit
from launcher.run.group import ProcessGroup
from launcher.run.local import popen_script
from launcher.run.logs import tail_lines
from launcher.run.process_tree import stop_trees, sweep_group

EXIT_STATUS_FILE = "exit_status"


class OneCommandGroup(ProcessGroup):
    """Every rank of the plan, started by ``<job-dir>/<script>`` on the plan's first host."""

    script = ""  # the rendered script that starts every rank, relative to the job dir
    output = ""  # where that command's own output goes, relative to the job dir

    def __init__(self, plan: Plan) -> None:
        if not self.script or not self.output:
            raise TypeError(f"{type(self).__name__}: set the class attributes script and output")
        super().__init__(plan, plan.hosts[0].host.name, plan.ranks)
        self._proc: Optional[subprocess.Popen] = None

    def _status_file(self, rank: int) -> Path:
        return self.rank_dir(rank) / EXIT_STATUS_FILE

    def _read_status(self, rank: int) -> Optional[tuple[int, int]]:
        """(file mtime, status) once the rank's wrapper recorded it."""
        path = self._status_file(rank)
        try:
            return path.stat().st_mtime_ns, int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _launch(self) -> None:
        for rank in self.ranks:
            self._status_file(rank).unlink(missing_ok=True)  # a restart's ranks write new ones
        self._proc = popen_script(self.job_dir / self.script, self.job_dir, self.job_dir / self.output, self.host)

    def _observe(self) -> Iterable[RankExit]:
        pending = self.pending_ranks()
        found = [(status, rank) for rank in pending if (status := self._read_status(rank)) is not None]
        # The command stops the other ranks itself once one fails; several statuses can appear between
        # two polls, and the one written first is the rank that failed first.
        exits = [self.exit_from_status(rank, code) for (_, code), rank in sorted(found)]
        code = self._proc.poll() if self._proc is not None else None
        if code is not None and not exits:
            # The command is gone; ranks that left no status never ran their wrapper to the end.
            exits = [self.exit_from_returncode(rank, code if code != 0 else 1) for rank in pending]
        return exits

    def _terminate(self, grace: float) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                stop_trees([self._proc.pid], grace)
            self._proc.wait()
        sweep_group(str(self.job_dir), self.host)

    def _exit_after_stop(self, rank: int) -> RankExit:
        status = self._read_status(rank)
        return self.exit_from_status(rank, status[1]) if status is not None else super()._exit_after_stop(rank)

    def _helpers_done(self) -> bool:
        return self._proc is None or self._proc.poll() is not None

    def _ask_to_save(self) -> bool:
        """SIGUSR1 to the command (through its keeper): mpirun and srun pass it to every task, whose
        wrapper (mpi_rank.sh, slurm_rank.sh) passes it to its rank."""
        if self._proc is None or self._proc.poll() is not None:
            return False
        try:
            os.kill(self._proc.pid, signal.SIGUSR1)
        except ProcessLookupError:
            return False
        return True

    def _tail(self, rank: int, lines: int) -> str:
        return super()._tail(rank, lines) or tail_lines(self.job_dir / self.output, lines)


class MpirunGroup(OneCommandGroup):
    """mpirun mode: ``mpirun.sh`` runs ``mpirun -n N --hostfile hostfile ... mpi_rank.sh``."""

    script = "mpirun.sh"
    output = "mpirun.log"


MPIRUN_LOG = MpirunGroup.output
