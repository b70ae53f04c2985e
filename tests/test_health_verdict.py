"""The health verdict does not flap on one sample (issue 18, item 8).

The judgement is a plain class with a fake clock, tested directly; then one real worker runs the
health check again and again, and the dashboard's two pages and the live check all show the
verdict it stored.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from background_tasks.keys import WATCHER_HEARTBEAT_KEY
from background_tasks.ops import monitoring
from background_tasks.ops.health_verdict import (
    CRITICAL,
    OK,
    WARNING,
    Finding,
    HealthJudge,
    PastCheck,
    at_once,
    judge_for,
    stored_verdict,
)
from background_tasks.settings import load_settings
from tests import test_alerts

HEALTH = "background_tasks.monitoring_tasks.system_health_check"

webhook_server = test_alerts.webhook_server  # the fixture: a real HTTP server keeping each POST


class FakeClock:
    """Epoch seconds that move only when told."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def cpu(level: str, percent: float = 99.0) -> Finding:
    return Finding("cpu", level, f"CPU at {percent}%", sustained=True)


class Series:
    """Checks judged one after another, each remembered as the stored samples are: the judge's whole life."""

    def __init__(self, judge: HealthJudge, clock: FakeClock, interval: float = 300.0) -> None:
        self.judge, self.clock, self.interval = judge, clock, interval
        self.history: list[PastCheck] = []

    def check(self, *findings: Finding, cpu_percent: float | None = None):
        self.clock.advance(self.interval)
        verdict = self.judge.judge(list(findings), self.history)
        self.history.append(PastCheck(self.clock(), verdict.levels, cpu_percent))
        return verdict


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --------------------------------------------------------------------------
# The judgement, with a fake clock
# --------------------------------------------------------------------------


def test_one_critical_sample_is_pending_not_the_verdict(clock: FakeClock) -> None:
    series = Series(HealthJudge(3, 900, 600, clock), clock)
    assert series.check().status == OK
    spike = series.check(cpu(CRITICAL, 100.0))
    assert spike.status == OK and spike.reasons == ()
    assert spike.pending == ("critical: CPU at 100.0% (critical for 1 of 3 checks in a row)",)
    assert spike.levels == {"cpu": CRITICAL}  # remembered for the checks after it
    calm = series.check()
    assert (calm.status, calm.reasons, calm.pending) == (OK, (), ())


def test_a_level_counts_once_held_for_n_checks_and_stops_at_once(clock: FakeClock) -> None:
    series = Series(HealthJudge(3, 900, 600, clock), clock)
    first, second, third = (series.check(cpu(CRITICAL)) for _ in range(3))
    assert (first.status, second.status) == (OK, OK)
    assert second.pending == ("critical: CPU at 99.0% (critical for 2 of 3 checks in a row)",)
    assert third.status == CRITICAL and third.reasons == ("critical: CPU at 99.0%",) and third.pending == ()
    assert series.check(cpu(CRITICAL)).status == CRITICAL
    recovered = series.check()
    assert (recovered.status, recovered.reasons, recovered.pending) == (OK, (), ())


def test_the_verdict_takes_the_level_every_check_in_the_run_reached(clock: FakeClock) -> None:
    series = Series(HealthJudge(3, 900, 600, clock), clock)
    series.check(cpu(WARNING, 90.0))
    series.check(cpu(CRITICAL))
    mixed = series.check(cpu(CRITICAL))  # warning, critical, critical: warning held for three
    assert mixed.status == WARNING
    assert mixed.reasons == ("warning: CPU at 99.0% (critical for 2 of 3 checks in a row)",)
    down = series.check(cpu(WARNING, 88.0))  # critical, critical, warning
    assert down.status == WARNING and down.reasons == ("warning: CPU at 88.0%",)


def test_a_gap_breaks_the_run(clock: FakeClock) -> None:
    judge = HealthJudge(3, 900, 600, clock)
    series = Series(judge, clock)
    series.check(cpu(CRITICAL))
    series.check(cpu(CRITICAL))
    clock.advance(3600)  # the system was off: the checks before do not lead up to this one
    after = series.check(cpu(CRITICAL))
    assert after.status == OK and "1 of 3" in after.pending[0]
    assert [p.taken_at for p in judge.in_a_row(series.history[:-1])] == []


def test_outages_count_at_once_and_other_findings_are_kept_apart(clock: FakeClock) -> None:
    series = Series(HealthJudge(3, 900, 600, clock), clock)
    redis_down = Finding("redis", CRITICAL, "Redis unreachable at 127.0.0.1:1 (refused)")
    disk = Finding("disk:data_dir", WARNING, "disk of data_dir (/d) 90% full")
    verdict = series.check(cpu(CRITICAL), redis_down, disk)
    assert verdict.status == CRITICAL
    assert verdict.reasons == (
        "critical: Redis unreachable at 127.0.0.1:1 (refused)",
        "warning: disk of data_dir (/d) 90% full",
    )
    assert verdict.pending == ("critical: CPU at 99.0% (critical for 1 of 3 checks in a row)",)
    # memory held three checks, CPU only the last: each measure has its own run
    memory = Finding("memory", WARNING, "memory at 90%", sustained=True)
    series.check(memory)
    series.check(memory)
    both = series.check(memory, cpu(CRITICAL))
    assert both.status == WARNING and both.reasons == ("warning: memory at 90%",)
    assert both.pending == ("critical: CPU at 99.0% (critical for 1 of 3 checks in a row)",)


def test_hold_of_one_and_no_history_judge_each_check_alone(clock: FakeClock) -> None:
    once = HealthJudge(1, 900, 600, clock).judge([cpu(CRITICAL)], [])
    assert (once.status, once.reasons, once.pending) == (CRITICAL, ("critical: CPU at 99.0%",), ())
    assert at_once([cpu(WARNING), Finding("redis", CRITICAL, "down")]).reasons == (
        "critical: down",
        "warning: CPU at 99.0%",
    )
    # a fresh installation: nothing is proven yet, so a swinging measure waits like any other time
    assert HealthJudge(3, 900, 600, clock).judge([cpu(CRITICAL)], []).status == OK


def test_cpu_is_the_mean_of_the_checks_within_the_window(clock: FakeClock) -> None:
    judge = HealthJudge(3, 900, 600, clock)
    now = clock()
    history = [
        PastCheck(now - 1200, {}, 100.0),  # outside the 900 s window
        PastCheck(now - 600, {}, 10.0),
        PastCheck(now - 300, {}, 15.0),
        PastCheck(now - 200, {}, None),  # a check that could not measure CPU
    ]
    assert judge.cpu_mean(100.0, history) == (41.7, 3)  # (10 + 15 + 100) / 3: one spike is not 100 %
    assert judge.cpu_mean(None, history) == (12.5, 2)
    assert judge.cpu_mean(None, []) == (None, 0)
    clock.advance(700)  # the window moves with the clock
    assert judge.cpu_mean(20.0, history) == (20.0, 1)


def test_the_judge_follows_the_settings() -> None:
    settings = load_settings(
        {
            **os.environ,
            "MIDAS_HEALTH_HOLD_CHECKS": "4",
            "MIDAS_CPU_WINDOW_SECONDS": "120",
            "MIDAS_HEALTH_CHECK_INTERVAL": "30",
        },
        env_file=Path(os.devnull),
    )
    judge = judge_for(settings)
    assert (judge.hold, judge.cpu_window_s, judge.max_gap_s) == (4, 120.0, 60.0)
    assert judge.history_span_s == 180.0


def test_evaluate_marks_the_swinging_measures(tmp_path: Path) -> None:
    settings = load_settings(
        {**os.environ, "MIDAS_DATA_DIR": str(tmp_path), "MIDAS_LEDGER": "false", "MIDAS_QUEUE_WARN_LENGTH": "5"},
        env_file=Path(os.devnull),
    )
    found = monitoring.findings(
        settings,
        {"cpu_percent": 100.0, "cpu_mean_percent": 96.0, "cpu_mean_checks": 3, "memory_percent": 99.0},
        {"data_dir": {"path": "/d", "percent": 99.0}},
        {"ok": True},
        {"ok": True, "responding": 1},
        {"analysis": {"waiting": 7}},
        {},
    )
    by_key = {f.key: f for f in found}
    assert by_key["cpu"].reason == "CPU at 96.0% on average over the last 3 checks" and by_key["cpu"].sustained
    assert by_key["cpu"].level == CRITICAL  # the mean, not the 100 % sample, against 95
    assert by_key["memory"].sustained and by_key["queue:analysis"].sustained
    assert not by_key["disk:data_dir"].sustained and by_key["disk:data_dir"].level == CRITICAL


# --------------------------------------------------------------------------
# A real worker, the dashboard and the live check
# --------------------------------------------------------------------------


def test_a_real_worker_alerts_once_held_and_every_page_and_the_live_check_show_its_verdict(
    isolated_stack, tmp_path, webhook_server
) -> None:
    """Memory over its (tiny) critical threshold on every check: pending twice, then critical and one alert."""
    from test_background_processing import SystemCheck
    from tests.test_dashboard import page, visible_text

    (tmp_path / "watch").mkdir()
    stack = isolated_stack(
        MIDAS_WATCH_DIRS=str(tmp_path / "watch"),
        MIDAS_LOG_DIR=str(tmp_path / "logs"),
        MIDAS_HEALTH_HOLD_CHECKS="3",
        MIDAS_MEMORY_WARN_PERCENT="0.001",
        MIDAS_MEMORY_CRIT_PERCENT="0.002",
        # nothing else may count: the machine may be busy running tests, its disk fuller than usual
        MIDAS_CPU_WARN_PERCENT="1000",
        MIDAS_CPU_CRIT_PERCENT="1001",
        MIDAS_DISK_WARN_PERCENT="100",
        MIDAS_DISK_CRIT_PERCENT="100",
        MIDAS_WATCHER_HEARTBEAT_MAX_AGE="3600",
        MIDAS_ALERT_WEBHOOK_URL=webhook_server.url,
        MIDAS_DASHBOARD_PASSWORD="",
    )
    settings = stack.settings
    client = stack.redis.client()
    client.set(WATCHER_HEARTBEAT_KEY, json.dumps({"time": time.time(), "state": "running"}))
    stack.start_worker(queues=("default", "monitoring"), concurrency=1)

    results = [stack.send(HEALTH).get(timeout=60) for _ in range(3)]
    first, second, third = results
    assert all(r["stored"] for r in results)
    assert (first["status"], second["status"]) == (OK, OK)
    assert first["reasons"] == [] and second["reasons"] == []
    assert first["pending"][0].startswith("critical: memory at ") and "1 of 3 checks" in first["pending"][0]
    assert "2 of 3 checks" in second["pending"][0]
    assert first["levels"] == {"memory": CRITICAL}
    assert "alert" not in first and "alert" not in second  # one busy moment, or two, alert nobody
    assert third["status"] == CRITICAL and third["pending"] == []
    (reason,) = third["reasons"]
    assert reason.startswith("critical: memory at ")
    assert third["alert"]["sent"] is True
    (posted,) = [r["body"] for r in webhook_server.received]
    assert posted["kind"] == "health_critical" and posted["details"]["reasons"] == [reason]
    # the stored sample carries the verdict the task returned
    stored = stored_verdict(settings)
    assert (stored["status"], stored["reasons"], stored["pending"]) == (CRITICAL, [reason], [])
    assert stored["stale"] is False and stored["age_s"] < 60

    # both pages show that stored verdict, in red, and agree
    shown = {}
    for section in ("Overview", "System health"):
        at = page(settings, section)
        assert not at.exception, [e.value for e in at.exception]
        boxes = [e.value for e in at.error if "Health:" in e.value]
        assert boxes, visible_text(at)
        shown[section] = boxes[0]
        assert not [e.value for e in (*at.success, *at.warning) if "Health:" in e.value]  # no other verdict
    assert shown["Overview"] == shown["System health"]
    assert shown["Overview"] == f"**Health: CRITICAL**\n- {reason}"

    # the live check runs one more check and reports the stored verdict, the same one
    checker = SystemCheck(settings, timeout=60)
    checker._app = stack.app
    detail = checker.check_monitoring()
    latest = stored_verdict(settings)
    assert latest["status"] == CRITICAL and latest["taken_at"] > stored["taken_at"]
    assert detail == f"health critical (stored verdict: {latest['reasons'][0]})"
    assert len(webhook_server.received) == 1  # the quiet period holds the next one back
