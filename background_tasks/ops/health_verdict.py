"""The health verdict, judged over the stored checks so that one busy moment does not flip it.

Two rules (issue 18, item 8):

- CPU is judged by its mean over the checks of the last ``MIDAS_CPU_WINDOW_SECONDS`` (this one
  included), not by the half-second sample of one check, which a worker starting up or the
  check itself can push to 100 %.
- A *sustained* finding (CPU, memory, a long queue: measures that swing from one moment to the
  next) raises the verdict to its level only once it has been at that level or worse for
  ``MIDAS_HEALTH_HOLD_CHECKS`` checks in a row; until then it is *pending*: listed, not counted.
  Outages (Redis, workers, storage, a full disk, the ledger) count at once. Coming back down is
  immediate, so the verdict never claims what the latest check did not measure.

The verdict is stored with its sample (``health_samples.status``, ``reasons``, ``pending``);
the dashboard's pages, the live check, the alerts and the HTTP API all show that stored verdict
(``stored_verdict``) instead of judging again from a moment of their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from background_tasks.statuses import HealthStatus
from background_tasks.storage import health_samples
from background_tasks.storage.task_history import epoch, utc

OK, WARNING, CRITICAL = HealthStatus.OK.value, HealthStatus.WARNING.value, HealthStatus.CRITICAL.value
RANK = {OK: 0, WARNING: 1, CRITICAL: 2}
#: stored samples read back at most for one judgement
HISTORY_MAX = 200
#: the columns of a stored sample that make the verdict
VERDICT_COLUMNS = ("taken_at", "status", "reasons", "pending", "cpu_percent", "cpu_mean_percent")


@dataclass(frozen=True)
class Finding:
    """One thing a check found wrong: ``key`` names the measure, so checks in a row can be compared."""

    key: str
    level: str
    reason: str  # without the level
    sustained: bool = False  # a swinging measure: counts only once held (see the module doc)

    def line(self, level: str | None = None) -> str:
        return f"{level or self.level}: {self.reason}"


@dataclass(frozen=True)
class PastCheck:
    """What a stored check measured: its time, each finding's level (only those not ok) and its CPU sample."""

    taken_at: float
    levels: Mapping[str, str] = field(default_factory=dict)
    cpu_percent: float | None = None


@dataclass(frozen=True)
class Verdict:
    """Status and reasons that count, the findings still pending, and this check's own levels (kept for the next)."""

    status: str
    reasons: tuple[str, ...]
    pending: tuple[str, ...] = ()
    levels: dict[str, str] = field(default_factory=dict)


def worst(levels: Iterable[str]) -> str:
    return max(levels, key=RANK.__getitem__, default=OK)


def at_once(findings: Sequence[Finding]) -> Verdict:
    """Every finding at its level, worst first: the verdict of one check judged alone."""
    ordered = sorted((f for f in findings if f.level != OK), key=lambda f: -RANK[f.level])
    return Verdict(
        worst(f.level for f in ordered), tuple(f.line() for f in ordered), (), {f.key: f.level for f in ordered}
    )


class HealthJudge:
    """Judges a check against the checks before it; plain, so it can be tested with a fake clock.

    ``hold_checks``: checks in a row a sustained finding must hold its level; ``cpu_window_s``:
    the span whose CPU samples are averaged; ``max_gap_s``: checks further apart than this are
    not "in a row" (the system was off, or Beat was).
    """

    def __init__(
        self, hold_checks: int, cpu_window_s: float, max_gap_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.hold = max(1, int(hold_checks))
        self.cpu_window_s = float(cpu_window_s)
        self.max_gap_s = float(max_gap_s)
        self.clock = clock

    @property
    def history_span_s(self) -> float:
        """How far back the stored checks matter for one judgement."""
        return max(self.cpu_window_s, (self.hold - 1) * self.max_gap_s)

    def cpu_mean(self, current: float | None, history: Sequence[PastCheck]) -> tuple[float | None, int]:
        """Mean CPU of this check and the stored ones within the window: (mean, checks averaged)."""
        now = self.clock()
        values = [
            float(h.cpu_percent)
            for h in history
            if h.cpu_percent is not None and 0 <= now - h.taken_at <= self.cpu_window_s
        ]
        if current is not None:
            values.append(float(current))
        if not values:
            return None, 0
        return round(sum(values) / len(values), 1), len(values)

    def in_a_row(self, history: Sequence[PastCheck]) -> list[PastCheck]:
        """The stored checks right before this one, newest first, up to ``hold - 1``, with no gap between."""
        run: list[PastCheck] = []
        later = self.clock()
        for past in sorted(history, key=lambda h: h.taken_at, reverse=True):
            if len(run) >= self.hold - 1 or later - past.taken_at > self.max_gap_s or past.taken_at > later:
                break
            run.append(past)
            later = past.taken_at
        return run

    def judge(self, findings: Sequence[Finding], history: Sequence[PastCheck]) -> Verdict:
        """The verdict of this check given the checks before it (see the module doc)."""
        measured = at_once(findings)
        if self.hold == 1:
            return measured
        run = self.in_a_row(history)
        counted: list[tuple[str, str]] = []
        pending: list[str] = []
        for finding in (f for f in findings if f.level != OK):
            if not finding.sustained:
                counted.append((finding.level, finding.line()))
                continue
            held = [finding.level, *(past.levels.get(finding.key, OK) for past in run)]
            streak = 0
            for level in held:  # checks in a row, newest first, at this level or worse
                if RANK[level] < RANK[finding.level]:
                    break
                streak += 1
            confirmed = min(held, key=RANK.__getitem__) if len(held) >= self.hold else OK
            note = f"{finding.level} for {streak} of {self.hold} checks in a row"
            if confirmed == finding.level:
                counted.append((confirmed, finding.line()))
            elif confirmed == OK:
                pending.append(f"{finding.line()} ({note})")
            else:
                counted.append((confirmed, f"{confirmed}: {finding.reason} ({note})"))
        counted.sort(key=lambda c: -RANK[c[0]])
        status = worst(level for level, _ in counted)
        return Verdict(status, tuple(text for _, text in counted), tuple(pending), measured.levels)


def past_checks(rows: Iterable[Mapping[str, Any]]) -> list[PastCheck]:
    """Stored samples (``taken_at``, ``levels``, ``cpu_percent``) as ``PastCheck``s."""
    checks = []
    for row in rows:
        taken = epoch(row.get("taken_at"))
        if taken is not None:
            checks.append(PastCheck(taken, dict(row.get("levels") or {}), row.get("cpu_percent")))
    return checks


def judge_for(settings: Any, clock: Callable[[], float] = time.time) -> HealthJudge:
    """The judge the settings ask for: checks in a row are at most two check intervals apart."""
    return HealthJudge(
        settings.health_hold_checks, settings.cpu_window_seconds, 2.0 * settings.health_check_interval, clock
    )


def stored_history(url: str, judge: HealthJudge) -> list[PastCheck]:
    """The stored checks that matter for the next judgement, oldest first."""
    rows = health_samples.since(
        url,
        utc(judge.clock() - judge.history_span_s),
        ("taken_at", "levels", "cpu_percent"),
        newest=max(HISTORY_MAX, judge.hold),
    )
    return past_checks(rows)


def stored_verdict(settings: Any, now: float | None = None) -> dict[str, Any] | None:
    """The newest stored verdict, or None when no check was stored yet.

    ``status``, ``reasons``, ``pending``, ``taken_at`` (epoch), ``age_s``, and ``stale`` when it
    is older than two check intervals (Beat, Redis or the monitoring worker may be down).
    """
    row = health_samples.latest(settings.database_url_resolved, VERDICT_COLUMNS)
    if row is None:
        return None
    now = time.time() if now is None else now
    taken = epoch(row["taken_at"])
    age = max(0.0, now - taken) if taken is not None else None
    return {
        "status": row["status"],
        "reasons": list(row.get("reasons") or []),
        "pending": list(row.get("pending") or []),
        "taken_at": taken,
        "age_s": None if age is None else round(age, 1),
        "stale": age is None or age > 2.0 * settings.health_check_interval,
        "cpu_percent": row.get("cpu_percent"),
        "cpu_mean_percent": row.get("cpu_mean_percent"),
    }
