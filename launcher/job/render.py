"""Render a plan through the Jinja2 job templates into the files of a job directory.

Pure: ``render_job(plan)`` returns the files as data (path, text, executable); writing
them is ``launcher.launch.write_job_files``. Templates are looked up in the user's
``--templates DIR`` first, then in the built-in ``job_templates`` package, by the same
file names. StrictUndefined: a template naming a variable the plan does not have is an
error before anything starts, never an empty string in a shell script.
"""
from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import jinja2

import job_templates
from launcher.errors import LaunchError
from launcher.job.safe_text import control_character, visible
from launcher.job.plan import Plan

BUILTIN_TEMPLATES = Path(job_templates.__file__).resolve().parent

ENV_TEMPLATE = "env.sh.j2"
RUN_TEMPLATE = "run.sh.j2"
HOSTFILE_TEMPLATE = "hostfile.j2"
SCHEDULER_TEMPLATE = "scheduler.sh.j2"
MPIRUN_TEMPLATE = "mpirun.sh.j2"
MPI_RANK_TEMPLATE = "mpi_rank.sh.j2"


@dataclass(frozen=True)
class RenderedFile:
    """One file of the job directory; ``path`` is relative to it."""

    path: str
    text: str
    executable: bool = False

    def __post_init__(self) -> None:
        if posixpath.isabs(self.path) or ".." in self.path.split("/"):
            raise ValueError(f"rendered file {self.path}: must stay inside the job directory")


class ShellWords(str):
    """Text that the shquote / shjoin filters made: already safe where a shell reads it."""


_ANSI_C_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shell_word(value: object) -> str:
    """One bash word for value, on one line whatever it holds.

    A raw newline inside '...' is fine for bash but not for the other readers of a script:
    sbatch reads `#PBS`/`#BSUB` directives on every line of it, quoted or not, so a value
    holding "\\n#PBS -q evil" would set sbatch options. A value with a control character is
    written in bash's ANSI-C quoting ($'...', every control character as an escape) instead,
    so no value ever starts a line of a rendered script. Every template is a bash script.
    """
    text = str(value)
    if control_character(text) is None:
        return shlex.quote(text)
    escaped = "".join(_ANSI_C_ESCAPES.get(c) or (_byte_escapes(c) if control_character(c) else c) for c in text)
    return f"$'{escaped}'"


def _byte_escapes(char: str) -> str:
    """\\xHH for each byte of char's UTF-8 (bash's \\xHH makes one byte: U+0085 is \\xc2\\x85)."""
    return "".join(f"\\x{byte:02x}" for byte in char.encode("utf-8"))


def shquote(value: object) -> str:
    """Jinja2 filter: one shell word, whatever the value holds."""
    return ShellWords(shell_word(value))


def shjoin(values: object) -> str:
    """Jinja2 filter: every item one shell word, joined by spaces (``{{ rank.command | shjoin }}``)."""
    return ShellWords(" ".join(shell_word(value) for value in values))  # type: ignore[attr-defined]


def no_raw_control(value: object) -> object:
    """Jinja2 finalize: every {{ }} that is not a shquote/shjoin result has its control characters escaped.

    A value in a comment (`# ... in {{ path }}`), a hostfile line or a message is not a
    shell word, and quoting would not help there: a newline in it would end the comment
    and start a command. So whatever reaches a rendered file unquoted -- from the
    built-in templates or the user's --templates -- is made one visible line.
    """
    if isinstance(value, ShellWords) or value is None:
        return value
    text = value if isinstance(value, str) else str(value)
    return visible(text, limit=1 << 30) if control_character(text) else value


def template_environment(user_dir: Optional[Path] = None, *, shell: bool = True) -> jinja2.Environment:
    """The Jinja2 environment of the job templates.

    shell=True (scripts, hostfiles): every {{ }} not made by shquote/shjoin has its control
    characters escaped (no_raw_control). shell=False is for templates whose every value
    goes through a quoting filter of their own format and that assemble multi-line blocks
    (the Kubernetes manifests: yq, macros piped through indent).
    """
    loaders: list[jinja2.BaseLoader] = []
    if user_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(user_dir)))
    loaders.append(jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=no_raw_control if shell else None,
    )
    env.filters["shquote"] = shquote
    env.filters["shjoin"] = shjoin
    return env


def check_templates_dir(path: Path) -> Path:
    """``--templates DIR`` must be a directory holding at least one known template."""
    path = Path(path)
    if not path.is_dir():
        raise LaunchError(f"--templates {path}: not a directory")
    known = {ENV_TEMPLATE, RUN_TEMPLATE, HOSTFILE_TEMPLATE, SCHEDULER_TEMPLATE, MPIRUN_TEMPLATE, MPI_RANK_TEMPLATE}
    if not any((path / name).is_file() for name in known):
        raise LaunchError(f"--templates {path}: holds none of {', '.join(sorted(known))}")
    return path.resolve()


def render_job(plan: Plan) -> tuple[RenderedFile, ...]:
    """Every file the plan needs, rendered; LaunchError (one line) on a template problem."""
    env = template_environment(plan.spec.templates_dir)
    common = {"plan": plan, "spec": plan.spec}
    files = _rank_files(env, plan, common)
    if plan.scheduler is not None:
        text = _render(env, SCHEDULER_TEMPLATE, scheduler=plan.scheduler, **common)
        files.append(RenderedFile(f"{plan.scheduler.log_dir}/run.sh", text, True))
    if plan.spec.mode == "mpirun":
        files.append(RenderedFile("hostfile", _render(env, HOSTFILE_TEMPLATE, **common)))
        files.append(RenderedFile("mpirun.sh", _render(env, MPIRUN_TEMPLATE, **common), True))
        files.append(RenderedFile("mpi_rank.sh", _render(env, MPI_RANK_TEMPLATE, **common), True))
    if plan.spec.mode == "rank-table" and plan.spec.rank_table_json is not None:
        files.append(RenderedFile("rank_table.json", plan.spec.rank_table_json))
    return tuple(files)


def render_rank_files(plan: Plan) -> tuple[RenderedFile, ...]:
    """Only the per-rank env.sh and run.sh files (what changes between restart attempts)."""
    env = template_environment(plan.spec.templates_dir)
    return tuple(_rank_files(env, plan, {"plan": plan, "spec": plan.spec}))


def _rank_files(env: jinja2.Environment, plan: Plan, common: dict) -> list[RenderedFile]:
    """Every rank's env.sh and run.sh; each template is looked up once, not once per rank (a lookup
    stats the template file)."""
    files: list[RenderedFile] = []
    if not plan.ranks:
        return files
    env_sh, run_sh = _template(env, ENV_TEMPLATE), _template(env, RUN_TEMPLATE)
    for rank in plan.ranks:
        files.append(RenderedFile(f"{rank.log_dir}/env.sh", _fill(env_sh, ENV_TEMPLATE, rank=rank, **common)))
        files.append(RenderedFile(f"{rank.log_dir}/run.sh", _fill(run_sh, RUN_TEMPLATE, rank=rank, **common), True))
    return files


def _render(env: jinja2.Environment, name: str, **context: object) -> str:
    return _fill(_template(env, name), name, **context)


def _template(env: jinja2.Environment, name: str) -> jinja2.Template:
    try:
        return env.get_template(name)
    except jinja2.TemplateNotFound:
        raise LaunchError(f"template {name}: not found in --templates or the built-in job_templates") from None
    except jinja2.TemplateSyntaxError as exc:
        raise LaunchError(f"template {exc.filename or name} line {exc.lineno}: {exc.message}") from None


def _fill(template: jinja2.Template, name: str, **context: object) -> str:
    try:
        return template.render(**context)
    except jinja2.UndefinedError as exc:
        raise LaunchError(f"template {template.filename or name}: {exc.message}") from None
