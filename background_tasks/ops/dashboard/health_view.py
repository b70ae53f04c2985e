"""The health verdict box every page shows, and the System health section.

Both the Overview and System health show the verdict of the newest *stored* health check
(``ops.health_verdict``: CPU judged over a window, swinging measures held for several checks),
never one judged again from the page's own moment, so the two pages, the live check and the
alerts always say the same. What the page measures itself is shown as figures, next to their
thresholds, not as a verdict.
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from background_tasks.ops.dashboard import charts, history, live
from background_tasks.ops.dashboard.view import coloured, fmt_age, fmt_time, guarded, show_health
from background_tasks.settings import Settings

log = logging.getLogger("midas.dashboard")

PERIOD_HOURS = {"last hour": 1, "last 6 hours": 6, "last 24 hours": 24, "last 7 days": 168}


def verdict_panel(settings: Settings) -> dict[str, Any] | None:
    """The stored verdict in its colour, when it was judged, and a warning when it is stale."""
    verdict = history.stored_verdict(settings)
    if verdict is None:
        st.info(
            "No health check stored yet: Beat runs one every "
            f"{settings.health_check_interval} s while Redis and a worker run (Actions → Run a health check now)."
        )
        return None
    show_health(verdict["status"], verdict["reasons"], pending=verdict["pending"])
    st.caption(
        f"Verdict of the health check stored at {fmt_time(verdict['taken_at'])} ({fmt_age(verdict['age_s'])} ago); "
        f"CPU is judged over {settings.cpu_window_seconds} s, and CPU, memory and queue length count only after "
        f"{settings.health_hold_checks} checks in a row."
    )
    if verdict["stale"]:
        st.warning(
            f"This verdict is {fmt_age(verdict['age_s'])} old, while a check is due every "
            f"{settings.health_check_interval} s: Beat, Redis or the monitoring worker may be down."
        )
    return verdict


def choose_period(key: str) -> tuple[str, float]:
    """The period a section's figures cover (last 24 hours unless chosen otherwise): (name, hours)."""
    period = st.selectbox("Period", list(PERIOD_HOURS), index=2, key=key, persist_state="session")
    return period, PERIOD_HOURS[period]


def section_health(settings: Settings, app: Any) -> None:
    url = settings.database_url_resolved
    st.header("System health")
    period, hours = choose_period("health_period")
    with guarded("The stored verdict"):
        verdict_panel(settings)
    with guarded("The current values"):
        snap = live.live_snapshot(settings, app)
        system = snap["system"]
        try:
            mean, checks = history.cpu_over_window(settings, system.get("cpu_percent"))
        except Exception as exc:  # the database is down: this moment alone, still worth showing
            log.warning("dashboard: stored CPU samples unavailable: %s", exc)
            mean, checks = system.get("cpu_percent"), 1
        snap = {**snap, "system": {**system, "cpu_percent": mean}}
        st.subheader("Now, against the thresholds")
        st.dataframe(coloured(live.threshold_table(settings, snap), ["level now"]), hide_index=True)
        st.caption(
            f"Measured by this page now; CPU is the mean of this moment and the {max(0, checks - 1)} stored "
            f"check(s) of the last {settings.cpu_window_seconds} s. A level here is not the verdict above."
        )
    with guarded("The health history"):
        series = history.health_series(url, hours)
        if series.empty:
            st.info(
                f"No health samples in the {period}. The health check stores one every "
                f"{settings.health_check_interval} s while Beat and a worker run, or when you run it under Actions."
            )
            return
        series = series.assign(cpu_judged=series["cpu_mean_percent"].fillna(series["cpu_percent"]))
        columns = st.columns(3)
        threshold_charts = (
            ("CPU %", {"CPU % (judged mean)": "cpu_judged", "CPU % (one sample)": "cpu_percent"}, "cpu"),
            ("Memory %", {"Memory %": "memory_percent"}, "memory"),
            ("Disk % (data folder)", {"Disk %": "data_disk_percent"}, "disk"),
        )
        for column, (title, measures, kind) in zip(columns, threshold_charts, strict=True):
            warn, crit = getattr(settings, f"{kind}_warn_percent"), getattr(settings, f"{kind}_crit_percent")
            column.markdown(f"**{title}**")
            column.altair_chart(charts.threshold_chart(series, "taken_at", measures, warn, crit, hours))
        left, right = st.columns(2)
        left.markdown("**Redis memory (MiB)**")
        left.altair_chart(charts.series_chart(series, "taken_at", {"Redis MiB": "redis_used_mib"}, hours))
        right.markdown("**Workers and tasks**")
        workers = {"workers": "workers", "active tasks": "active_tasks", "waiting tasks": "waiting_tasks"}
        right.altair_chart(charts.series_chart(series, "taken_at", workers, hours))
        st.subheader("Recent checks")
        shown = ["taken_at", "status", "cpu_mean_percent", "cpu_percent", "memory_percent", "reasons"]
        recent = series.tail(50).iloc[::-1][shown]
        recent = recent.assign(reasons=recent["reasons"].map(lambda r: "; ".join(r or [])))
        st.dataframe(coloured(recent, ["status"]), hide_index=True)
