"""The batch script ``launch-train --submit slurm`` writes to <job-dir>/submit.sbatch, as data.

Pure: ``render_sbatch(SbatchRequest(...))`` renders job_templates/slurm/submit.sbatch.j2
(or ``--templates DIR/slurm/submit.sbatch.j2``). The script asks for ``nodes`` x
``tasks_per_node`` and runs ``launch_command`` (``launch-train --launcher slurm ...``)
inside the allocation. sbatch splits ``#SBATCH`` lines into words with quotes much as a
shell does, so every value is shell-quoted there too (a job name with a quote or ``;`` stays
one value); but it reads a backslash as an escape even inside single quotes (``'p\\x'``
arrives as ``px``, a trailing ``'p\\'`` is fatal) and a control character would end the
line, so a value with either is refused. Every other line of the script is bash (the
``shquote`` filter writes control characters as ``$'\\n'`` escapes): sbatch also reads
``#PBS``/``#BSUB`` directives on any line, so no value may start one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import jinja2

from launcher.job.safe_text import control_character, visible

SBATCH_TEMPLATE = "slurm/submit.sbatch.j2"
SCRIPT_NAME = "submit.sbatch"
# Slurm's own --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (and UNLIMITED).
# ASCII digits only (\\d takes fullwidth ones too) and fullmatch (`$` takes a trailing newline).
_TIME = re.compile(r"[0-9]{1,9}(:[0-9]{1,2}){0,2}|[0-9]{1,9}-[0-9]{1,9}(:[0-9]{1,2}){0,2}|UNLIMITED|INFINITE")


class SubmitError(ValueError):
    """A --submit slurm request that cannot make a batch script; one line naming the flag."""


@dataclass(frozen=True)
class SbatchRequest:
    job_id: str
    job_name: str
    job_dir: Path
    nodes: int
    tasks_per_node: int
    launch_command: tuple[str, ...]
    # What a requeued run of the script does instead: continue the job in its job dir.
    resume_command: tuple[str, ...] = ()
    partition: Optional[str] = None
    time: Optional[str] = None
    account: Optional[str] = None
    slurm_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not Path(self.job_dir).is_absolute():
            raise SubmitError(f"--job-dir {self.job_dir}: the batch script needs an absolute path")
        if self.nodes < 1:
            raise SubmitError(f"--nodes {self.nodes}: at least 1")
        if self.tasks_per_node < 1:
            raise SubmitError(f"--devices {self.tasks_per_node}: at least 1 rank per node")
        if self.time is not None and not _TIME.fullmatch(self.time):
            raise SubmitError(f"--time {self.time!r}: use Slurm's formats, e.g. 30, 2:00:00 or 1-12:00:00")
        for arg in self.slurm_args:
            if not arg.startswith("-"):
                raise SubmitError(f"--slurm-arg {arg!r}: give an sbatch option, e.g. --slurm-arg=--exclusive")
        for flag, value in (("--partition", self.partition), ("--account", self.account)):
            if value is not None and (not value or any(c.isspace() for c in value)):
                raise SubmitError(f"{flag} {value!r}: a Slurm name has no spaces")
        for flag, value in self._directive_values():
            _check_directive_value(flag, value)
        if not self.launch_command:
            raise SubmitError("launch command: empty")
        object.__setattr__(self, "launch_command", tuple(str(w) for w in self.launch_command))
        object.__setattr__(self, "resume_command", tuple(str(w) for w in self.resume_command))
        object.__setattr__(self, "slurm_args", tuple(self.slurm_args))

    def _directive_values(self) -> tuple[tuple[str, str], ...]:
        """(flag, value) of every user value that lands on an #SBATCH line."""
        given = (("--job-name", self.job_name), ("--job-dir", str(self.job_dir)), ("--partition", self.partition),
                 ("--time", self.time), ("--account", self.account))
        return tuple((flag, value) for flag, value in given if value is not None) + tuple(
            ("--slurm-arg", arg) for arg in self.slurm_args)


def _check_directive_value(flag: str, value: str) -> None:
    found = control_character(value)
    if found is not None:
        raise SubmitError(f"{flag} {visible(value)}: contains {found}; an #SBATCH line cannot hold it")
    if "\\" in value:
        raise SubmitError(f"{flag} {visible(value)}: contains a backslash, which sbatch reads as an escape "
                          "even inside quotes; an #SBATCH line cannot hold it")


def render_sbatch(request: SbatchRequest, env: jinja2.Environment) -> str:
    """The batch script's text; SubmitError (one line) on a template problem."""
    try:
        return env.get_template(SBATCH_TEMPLATE).render(submit=request)
    except jinja2.TemplateNotFound:
        raise SubmitError(f"template {SBATCH_TEMPLATE}: not found in --templates or the built-in job_templates") from None
    except jinja2.TemplateSyntaxError as exc:
        raise SubmitError(f"template {exc.filename or SBATCH_TEMPLATE} line {exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise SubmitError(f"template {SBATCH_TEMPLATE}: {exc.message}") from None
