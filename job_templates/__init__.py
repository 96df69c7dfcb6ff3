"""Jinja2 templates rendered by the launcher (per-rank env.sh/run.sh, hostfile, scheduler, report)."""
