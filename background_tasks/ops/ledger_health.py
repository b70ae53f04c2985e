"""What the intake ledger says about health: entries waiting too long, a reaper that does not run.

Shared by the health check (``monitoring.system_health``), ``python -m background_tasks ledger
status`` and the dashboard, so all three tell the same story from the same figures.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from background_tasks.settings import Settings
from background_tasks.storage import ledger as ledger_store


def ledger_figures(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """The ledger's counts as plain values (``{"enabled": False}`` when the ledger is off)."""
    if not settings.ledger_enabled:
        return {"enabled": False}
    now = now or datetime.now(UTC)
    # the reaper looks every interval; three missed runs mean it does not run
    overdue_s = max(60.0, 3.0 * settings.ledger_reap_interval)
    try:
        counts = ledger_store.counts(settings.database_url_resolved, now, overdue_s=overdue_s)
    except Exception as exc:  # the store itself is checked (and reported) by the storage probe
        return {"enabled": True, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"enabled": True, "ok": True, "overdue_after_s": overdue_s, **asdict(counts)}


def ledger_findings(settings: Settings, figures: dict[str, Any]) -> list[tuple[str, str]]:
    """(level, reason) pairs for the health check; empty when all is well."""
    if not figures.get("enabled") or not figures.get("ok"):
        return []
    findings: list[tuple[str, str]] = []
    oldest = figures.get("oldest_queued_s")
    if oldest is not None and oldest >= settings.ledger_warn_age_seconds:
        findings.append(
            (
                "warning",
                f"{figures['queued']} submitted tasks wait in the ledger, the oldest for {oldest:.0f} s "
                "(is a worker consuming every queue?)",
            )
        )
    if figures.get("overdue"):
        findings.append(
            (
                "warning",
                f"{figures['overdue']} ledger entries are overdue for the reaper "
                "(is Beat running, and a worker on the monitoring queue?)",
            )
        )
    return findings
