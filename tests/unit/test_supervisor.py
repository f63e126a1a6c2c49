"""The restart policy, driven by a fake clock."""

from __future__ import annotations

from recorder.service.supervisor import RestartPolicy


def test_backoff_grows_and_is_capped() -> None:
    """Consecutive quick crashes wait initial, then twice as long, up to max_delay."""
    p = RestartPolicy(initial=0.1, factor=2, max_delay=0.5, max_restarts=100, window=60)
    delays = [p.on_exit(now=float(i), uptime=0.01) for i in range(6)]
    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]


def test_gives_up_after_max_restarts_within_window() -> None:
    """More than max_restarts crashes inside the window means give up (None)."""
    p = RestartPolicy(max_restarts=3, window=10)
    assert all(p.on_exit(now=t, uptime=0.1) is not None for t in (0.0, 1.0, 2.0))
    assert p.on_exit(now=3.0, uptime=0.1) is None


def test_old_crashes_leave_the_window() -> None:
    """Crashes older than the window no longer count toward the limit."""
    p = RestartPolicy(max_restarts=2, window=10)
    assert p.on_exit(now=0.0, uptime=0.1) is not None
    assert p.on_exit(now=1.0, uptime=0.1) is not None
    assert p.on_exit(now=20.0, uptime=0.1) is not None


def test_stable_run_resets_backoff() -> None:
    """A run longer than stable_after resets the delay to the initial one."""
    p = RestartPolicy(initial=0.1, factor=2, stable_after=30)
    p.on_exit(now=0.0, uptime=0.1)
    p.on_exit(now=1.0, uptime=0.1)
    assert p.on_exit(now=100.0, uptime=60.0) == 0.1
