"""The hang watchdog's rules, platform timeouts that agree with it, and the safe-text checks (pure)."""
from __future__ import annotations

import pytest

from launcher.job.platform_timeouts import platform_timeout_env
from launcher.job.safe_text import check_env_name, check_env_value, refuse_control, visible
from launcher.run.watchdog import HangPolicy, Watchdog


def watchdog(hang=10.0, first=100.0) -> Watchdog:
    return Watchdog.start(HangPolicy(hang, first), [(0, "a"), (1, "b"), (2, "b")], now=0.0)


def test_no_verdict_while_every_rank_steps_within_the_timeout():
    dog = watchdog()
    for t in range(1, 50):
        for rank in (0, 1, 2):
            dog.step(rank, 1, t, now=float(t))
        assert dog.check(float(t) + 9.9) is None


def test_first_step_timeout_covers_compile_then_hang_timeout_applies():
    dog = watchdog()
    assert dog.check(99.0) is None  # compiling
    verdict = dog.check(100.5)
    assert verdict.kind == "no first step" and verdict.stuck == (0, 1, 2) and verdict.timeout_s == 100.0
    dog = watchdog()
    for rank in (0, 1, 2):
        dog.step(rank, 1, 1, now=50.0)
    assert dog.check(59.0) is None
    assert dog.check(60.5).kind == "no new step"


def test_the_rank_furthest_behind_is_named_stuck():
    dog = watchdog()
    for t in range(1, 6):
        for rank in (0, 1, 2):
            if not (rank == 1 and t > 3):  # rank 1 froze after step 3; the others wait one step later
                dog.step(rank, 1, t, now=float(t))
    verdict = dog.check(16.0)
    assert verdict.hung == (0, 1, 2) and verdict.stuck == (1,)
    assert verdict.message().startswith("hung: rank 1 on b (epoch 1 step 3, quiet for 13 s) made no new step within 10 s")
    assert "also quiet: ranks 0, 2" in verdict.message()


def test_a_peer_that_logged_the_same_step_a_moment_earlier_does_not_hide_the_frozen_rank():
    """Rank 1 froze right after its step 3; rank 0 logged step 3 20 ms earlier and now waits for it."""
    from launcher.run.hang import RankLook, narrow_stuck

    dog = Watchdog.start(HangPolicy(10.0, 100.0), [(0, "a"), (1, "a")], now=0.0)
    for t in (1.0, 2.0, 3.0):
        dog.step(0, 1, int(t), now=t - 0.02)
        dog.step(1, 1, int(t), now=t)
    verdict = dog.check(13.0 - 0.01)  # rank 0 is past the limit, rank 1 not yet
    assert verdict.hung == (0,) and verdict.stuck == (0, 1)
    looks = {0: RankLook(0, "a", (10,), "sleeping", "all_reduce", None), 1: RankLook(1, "a", (11,), "stopped", None, None)}
    assert narrow_stuck(verdict, looks) == (1,)


def test_ended_ranks_are_not_watched_and_off_means_off():
    dog = watchdog()
    for rank in (0, 1, 2):
        dog.step(rank, 1, 1, now=1.0)
        dog.ended(rank)
    assert dog.check(1e6) is None
    off = Watchdog.start(HangPolicy(None, 0), [(0, "a")], now=0.0)
    assert not off.policy.enabled and off.check(1e9) is None


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), 1e12, True])
def test_timeouts_out_of_range_are_refused(value):
    with pytest.raises(ValueError, match="--hang-timeout"):
        HangPolicy(hang_timeout_s=value)


def test_platform_timeouts_fire_after_the_watchdog():
    env = platform_timeout_env(HangPolicy(1800, 3600), "Ascend", "dynamic")
    assert env["MS_NODE_TIMEOUT"] == "1860" and env["MS_TOPO_TIMEOUT"] == "3660"
    assert env["MS_RECEIVE_MSG_TIMEOUT"] == "1860"
    assert env["HCCL_CONNECT_TIMEOUT"] == "3660"
    assert int(env["HCCL_EXEC_TIMEOUT"]) % 68 == 0 and int(env["HCCL_EXEC_TIMEOUT"]) >= 1860
    small = platform_timeout_env(HangPolicy(5, 10), "Ascend", "rank-table")
    assert small == {"HCCL_CONNECT_TIMEOUT": "120", "HCCL_EXEC_TIMEOUT": "68"}  # clamped into HCCL's ranges
    huge = platform_timeout_env(HangPolicy(10 ** 6, 10 ** 6), "Ascend", "rank-table")
    assert huge == {"HCCL_CONNECT_TIMEOUT": "7200", "HCCL_EXEC_TIMEOUT": str(17340 // 68 * 68)}
    assert platform_timeout_env(HangPolicy(None, None), "CPU", "dynamic") == {}
    assert platform_timeout_env(HangPolicy(20, 300), "CPU", "dynamic") == {
        "MS_NODE_TIMEOUT": "80", "MS_RECEIVE_MSG_TIMEOUT": "300", "MS_TOPO_TIMEOUT": "360"}


@pytest.mark.parametrize("value, found", [("a\nb", "a newline at position 1"), ("x\x00", "a NUL byte at position 1"),
                                          ("\x1b[2J", "an escape at position 0"), ("a\x7f", "control character 0x7f")])
def test_control_characters_are_refused_and_shown_escaped(value, found):
    with pytest.raises(ValueError) as err:
        refuse_control(value, "--job-dir")
    assert found in str(err.value) and "\n" not in str(err.value) and "\x00" not in str(err.value)
    assert "\n" not in visible(value) and "\x1b" not in visible(value)


def test_env_names_and_values():
    assert check_env_name("MS_NODE_TIMEOUT") == "MS_NODE_TIMEOUT"
    for bad in ("A\nB", "1A", "A-B", "", "A B", "A=B"):
        with pytest.raises(ValueError, match="not a valid environment variable name"):
            check_env_name(bad)
    assert check_env_value("K", "two\nlines; $(rm -rf /)") == "two\nlines; $(rm -rf /)"  # quoted where rendered
    with pytest.raises(ValueError, match="NUL"):
        check_env_value("K", "a\x00b")
