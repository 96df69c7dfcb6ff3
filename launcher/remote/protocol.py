"""The agent's wire protocol: one JSON object per line, shared by the agent and the controller.

The agent writes events on stdout; the controller (launcher.remote.session) reads them
from the SSH channel. Lines that are not protocol lines (a login banner, a shell's
chatter) are ignored, never an error. Controller -> agent is plain text on stdin:
``ping`` (heartbeat), ``stop [GRACE_S]``, ``stack RANKS TITLE`` (dump those ranks' stacks:
the controller's hang watchdog).

    {"event": "hello", "host": ..., "pid": ..., "ranks": [...]}
    {"event": "started", "rank": 3}
    {"event": "progress", "rank": 3, "epoch": 1, "step": 20, "loss": 0.11594, "line": "..."}
    {"event": "line", "rank": 0, "line": "..."}      (every log line of the --tee ranks)
    {"event": "exited", "rank": 3, "code": 1, "signal": null, "stopped": false, "tail": "...", ...}
    {"event": "helper", "problem": null, "done": true}     (the scheduler, on the first host)
    {"event": "error", "message": "..."}
    {"event": "done", "reason": "stop-requested" | "controller-lost" | "signal" | "error", "code": 0}
    {"event": "alive"}                                  (every second: the controller gives up a
                                                        host it hears nothing from for its
                                                        --heartbeat-timeout)
    {"event": "stacks", "ranks": {"3": {...}}}          (answer to "stack": each rank's state,
                                                        where it waits, its LOG<rank>/stack.txt)

The controller adds one event of its own when the channel closes before "done":
``{"event": "lost", "host": ..., "reason": ...}``.

A tree start (launcher.remote.relay): a relay agent also passes up every event of the hosts
it started, with ``"via": <host index>`` (their "alive" stays with the relay, which sends
``{"event": "lost", "via": ..., "reason": ...}`` for a host it lost or could not start), and
takes ``to INDEX LINE`` from above: LINE for that host.
"""
from __future__ import annotations

import json
from typing import Any, Optional

from launcher.log_format import parse_epoch_time_line, parse_loss_line, parse_timing_line

EVENTS = ("hello", "started", "progress", "line", "exited", "helper", "done", "error", "alive", "stacks", "lost")
# The agent says "alive" this often, so the controller can tell a host that stopped answering.
ALIVE_INTERVAL_S = 1.0


def encode_event(event: str, **fields: Any) -> str:
    """One protocol line (no newline)."""
    if event not in EVENTS:
        raise ValueError(f"unknown agent event {event!r}")
    return json.dumps({"event": event, **fields}, separators=(",", ":"))


def decode_event(line: str) -> Optional[dict]:
    """A protocol line -> dict, or None for anything else (noise a login shell may print)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(message, dict) or message.get("event") not in EVENTS:
        return None
    return message


def progress_event(rank: int, line: str) -> Optional[dict]:
    """The fields of a ``progress`` event for a log line the live status uses, else None."""
    loss = parse_loss_line(line)
    if loss is not None:
        epoch, step, value = loss
        return {"rank": rank, "epoch": epoch, "step": step, "loss": value, "line": line}
    if parse_epoch_time_line(line) is not None or parse_timing_line(line) is not None:
        return {"rank": rank, "line": line}  # the timing lines name stragglers (launcher/run/stragglers.py)
    return None
