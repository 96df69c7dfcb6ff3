"""What ``--dry-run`` prints: the whole plan and every rendered file, as text or JSON (pure)."""
from __future__ import annotations

import json
import shlex
from typing import Sequence

from launcher.job.job_json import job_document
from launcher.job.plan import Plan
from launcher.job.render import RenderedFile


def plan_json(plan: Plan, files: Sequence[RenderedFile]) -> str:
    """job.json as it would be written ("planned"), plus ``files``: {path: text} of every rendered file."""
    document = job_document(plan)
    document["files"] = {f.path: f.text for f in files}
    return json.dumps(document, indent=2) + "\n"


def plan_text(plan: Plan, files: Sequence[RenderedFile]) -> str:
    spec = plan.spec
    lines = [
        f"job {spec.job_id}: {plan.rank_size} ranks, {spec.platform} platform, {spec.mode} start",
        f"job dir: {spec.job_dir}",
        "hosts: " + ", ".join(f"{h.host.name} ({h.host.address}, {h.slots} slots)" for h in plan.hosts),
    ]
    if plan.scheduler is not None:
        s = plan.scheduler
        lines.append(f"scheduler: {s.host} {s.address}:{s.port}  $ {shlex.join(s.command)}")
    for rank in plan.ranks:
        cpus = ",".join(map(str, rank.cpus)) if rank.cpus else "not bound"
        lines.append("")
        lines.append(
            f"rank {rank.rank}: host {rank.host}, local {rank.local_index}, device {rank.device_id}, "
            f"cpus {cpus}, cwd {spec.job_dir / rank.log_dir}"
        )
        lines.append(f"  $ {shlex.join(rank.command)}")
        for key, value in sorted(rank.env.items()):
            lines.append(f"  {key}={shlex.quote(value)}")
    for item in files:
        lines.append("")
        lines.append(f"---- {item.path}{' (executable)' if item.executable else ''} ----")
        lines.append(item.text.rstrip("\n"))
    lines.append("")
    lines.append("dry run: nothing was written or started")
    return "\n".join(lines) + "\n"
