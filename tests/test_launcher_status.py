"""The live status and tee (pure parts): progress parsing, console lines, redraw on a TTY."""
from __future__ import annotations

import io
from pathlib import Path

from launcher.run.failures import RankExit
from launcher.job.hosts import Host
from launcher.console import LiveStatus
from launcher.run.logs import LogFollower, tail_lines
from launcher.job.plan import plan_job
from launcher.console import RankProgress, update_progress
from launcher.run.group import ProcessGroup
from launcher.job.spec import Entry, JobSpec


class ScriptedGroup(ProcessGroup):
    """A process group without processes whose log lines are given by the test."""

    logs_are_local = False

    def __init__(self, lines):
        job = plan()
        super().__init__(job, "h", job.ranks)
        self.lines = list(lines)

    def _launch(self) -> None: ...
    def _observe(self) -> tuple[RankExit, ...]: return ()
    def _terminate(self, grace: float) -> None: ...

    def _read_lines(self):
        out, self.lines = self.lines, []
        return out


def plan():
    spec = JobSpec(job_id="j", job_dir=Path("/j"), created="t", hosts=(Host("h", "127.0.0.1", cpus=(0, 1)),),
                   devices=(0, 1), platform="GPU", mode="mpirun", entry=Entry(module="m"), python="py")
    return plan_job(spec)


def test_progress_comes_from_step_lines_and_per_step_time():
    p = update_progress(RankProgress(), "epoch: 3 step: 40, loss is 0.11594", now=10.0)
    assert (p.epoch, p.step, p.loss) == (3, 40, 0.11594)
    p = update_progress(p, "epoch: 3 step: 50, loss is 0.1", now=15.0)
    assert p.seconds_per_step == 0.5
    p = update_progress(p, "Epoch time: 78748.379, per step time: 107.378", now=16.0)
    assert abs(p.seconds_per_step - 0.107378) < 1e-9 and p.lines == 3


def test_tee_prefixes_host_and_rank_and_drops_mindspore_chatter_and_timing_lines():
    out, status = io.StringIO(), io.StringIO()
    live = LiveStatus(plan(), tee=[1], out=out, status_out=status, is_tty=False, plain_interval=3600)
    live.tick([ScriptedGroup([(0, "rank zero"), (1, "[WARNING] DISTRIBUTED(1,7f,python):x"),
                              (1, "[ERROR] ME(1,7f,python):broken"), (1, "epoch: 1 step: 2, loss is 0.5"),
                              (1, "timing: steps 1-20, data wait 0.0010 s, step 0.1000 s, device probe 0.0200 s")])])
    assert out.getvalue().splitlines() == ["[h:1] [ERROR] ME(1,7f,python):broken", "[h:1] epoch: 1 step: 2, loss is 0.5"]
    assert status.getvalue() == ""  # not a TTY: plain blocks only every plain_interval
    live.finish([ScriptedGroup([])])
    lines = status.getvalue().splitlines()
    assert lines[1].startswith("launch-train: rank   1 [h] running") and "step      2" in lines[1] and "loss 0.50000" in lines[1]


def test_tty_status_is_redrawn_in_place():
    out, status = io.StringIO(), io.StringIO()
    live = LiveStatus(plan(), tee=[0], out=out, status_out=status, is_tty=True, redraw_interval=0)
    live.tick([ScriptedGroup([(0, "a")])])
    live.tick([ScriptedGroup([(0, "b")])])
    text = status.getvalue()
    assert "\x1b[2A" in text  # cursor moved up over the 2-line block before redrawing it
    assert out.getvalue() == "[h:0] a\n[h:0] b\n"


def test_tty_status_is_not_redrawn_when_nothing_changed():
    out, status = io.StringIO(), io.StringIO()
    live = LiveStatus(plan(), tee=[], out=out, status_out=status, is_tty=True, redraw_interval=0)
    live.tick([], lines=[(0, "epoch: 1 step: 1, loss is 0.5")])
    drawn = status.getvalue()
    assert "step      1" in drawn
    live.tick([], lines=[])  # a sweep's tick with nothing new: the same block is not drawn again
    assert status.getvalue() == drawn
    live.mark(1, "FAILED")
    live.tick([], lines=[])
    assert status.getvalue() != drawn and "FAILED" in status.getvalue()[len(drawn):]


def test_log_follower_returns_complete_lines_only(tmp_path):
    log = tmp_path / "log.txt"
    log.write_bytes(b"old\n")
    follower = LogFollower.from_end(log)
    with open(log, "ab") as handle:
        handle.write(b"one\ntw")
    assert follower.read_lines() == ["one"]
    with open(log, "ab") as handle:
        handle.write(b"o\r\n")
    assert follower.read_lines() == ["two"]
    assert tail_lines(log, 2) == "one\ntwo"
