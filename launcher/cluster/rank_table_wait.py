"""Wait for the rank table an Ascend operator mounts into the pod, then load and validate it.

ascend-operator (and MindX DL's Volcano set-up) hand each pod its rank table as the
``hccl.json`` key of the ConfigMap ``rings-config-<job>``, mounted as a file. The
ConfigMap is created with ``{"status": "initializing"}`` and rewritten once every pod
has its devices; the kubelet then swaps the mounted file. So a pod polls: while the
file is missing, not yet JSON (caught mid-update) or says "initializing", it waits;
then the table is loaded and validated with hccl/, and any problem in it is an error
naming the file. Bounded: after ``timeout_s`` the wait ends with an error that says
what it saw last.
"""
from __future__ import annotations

import codecs
import json
import math
import time
from pathlib import Path
from typing import Callable

from hccl import rank_table, strict_json
from hccl.errors import HcclError
from hccl.model import RankTable
from hccl.text_file import NotARegularFile, read_regular_bytes
from launcher.job.safe_text import visible

INITIALIZING = "initializing"
COMPLETED = "completed"
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_POLL_S = 1.0


class RankTableWaitError(Exception):
    """The table never completed, or completed with something wrong in it; one line naming the file."""


def table_state(path: Path) -> tuple[str, str]:
    """("waiting", why) or ("ready", text): one look at the file, which never blocks and reads a bounded amount.

    Waiting is only for what the kubelet's swap of the mounted file can show on the way to a
    complete table (no file yet, "initializing", JSON cut short); what can never become one
    (a FIFO or device, a byte-order mark, bytes that are not UTF-8, JSON nested or numbers
    too large to read) is an error at once.
    """
    try:
        data = read_regular_bytes(path)
    except FileNotFoundError:
        return "waiting", "the file does not exist yet"
    except IsADirectoryError:
        raise RankTableWaitError(f"RANK_TABLE_FILE {visible(path, 1000)}: is a directory, not a rank table") from None
    except NotARegularFile as err:
        raise RankTableWaitError(f"RANK_TABLE_FILE {visible(path, 1000)}: {err}, not a rank table") from None
    except OSError as err:
        return "waiting", f"cannot read it ({err.strerror or err})"
    if data.startswith(codecs.BOM_UTF8):
        raise RankTableWaitError(f"RANK_TABLE_FILE {visible(path, 1000)}: starts with a UTF-8 byte-order mark; "
                                 "a rank table is plain UTF-8 JSON")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.end == len(data) and err.reason == "unexpected end of data":
            return "waiting", "not complete yet (ends inside a character)"
        raise RankTableWaitError(f"RANK_TABLE_FILE {visible(path, 1000)}: not UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        # The same strict reading as hccl's loader: numbers too large to mean anything are errors.
        obj = strict_json.loads(text, rank_table.MAX_INT_DIGITS)
    except json.JSONDecodeError as err:
        return "waiting", f"not complete JSON yet ({err.msg} at line {err.lineno})"
    except RecursionError:
        raise RankTableWaitError(f"RANK_TABLE_FILE {visible(path, 1000)}: JSON nested too deeply") from None
    except ValueError as err:  # StrictJsonError, or int()'s own limits inside the decoder
        raise RankTableWaitError(f"RANK_TABLE_FILE {visible(path, 1000)}: {visible(err, 120)}") from None
    status = obj.get("status") if isinstance(obj, dict) else None
    if status == INITIALIZING:
        return "waiting", f'"status": "{INITIALIZING}"'
    if status not in (COMPLETED, None):
        raise RankTableWaitError(f'RANK_TABLE_FILE {visible(path, 1000)}: "status": {visible(status, 60)!r}; expected '
                                 f'"{INITIALIZING}" (wait) or "{COMPLETED}"')
    return "ready", text


def wait_for_rank_table(path: "Path | str", timeout_s: float = DEFAULT_TIMEOUT_S,
                        poll_s: float = DEFAULT_POLL_S, topology_check: bool = True, *,
                        clock: Callable[[], float] = time.monotonic,
                        sleep: Callable[[float], None] = time.sleep,
                        on_wait: Callable[[str], None] = lambda why: None) -> RankTable:
    """The completed, validated table at ``path``; RankTableWaitError on timeout or a bad table.

    on_wait(why) is called once per distinct reason for waiting (for one progress line).
    """
    path = Path(path)
    if not (math.isfinite(timeout_s) and timeout_s >= 0 and math.isfinite(poll_s) and poll_s > 0):
        raise ValueError(f"rank table wait: timeout {timeout_s} s / poll {poll_s} s must be >= 0 / > 0")
    deadline = clock() + timeout_s
    last_why = ""
    while True:
        state, detail = table_state(path)
        if state == "ready":
            return _load(path, detail, topology_check)
        if detail != last_why:
            on_wait(detail)
            last_why = detail
        if clock() >= deadline:
            raise RankTableWaitError(
                f"RANK_TABLE_FILE {visible(path, 1000)}: still waiting after {timeout_s:g} s ({detail}); the operator "
                f"has not filled the rings-config ConfigMap (check the job's events and ascend-operator's log)")
        sleep(poll_s)


def _load(path: Path, text: str, topology_check: bool) -> RankTable:
    try:
        table = rank_table.loads(text)
        rank_table.validate(table, topology_check=topology_check)
    except HcclError as err:
        raise RankTableWaitError(f"RANK_TABLE_FILE {visible(path, 1000)}: {err}") from None
    return table
