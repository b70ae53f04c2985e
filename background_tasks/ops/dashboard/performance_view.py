"""The Performance section: throughput by outcome (green succeeded, red failed) and per-task timings."""

from __future__ import annotations

from typing import Any

import streamlit as st

from background_tasks.ops.dashboard import charts, history
from background_tasks.ops.dashboard.health_view import choose_period
from background_tasks.ops.dashboard.view import fmt_rate, guarded
from background_tasks.settings import Settings


def section_performance(settings: Settings, app: Any) -> None:
    url = settings.database_url_resolved
    st.header("Performance")
    period, hours = choose_period("perf_period")
    with guarded("The throughput"):
        table, unit = history.throughput(url, hours)
        if table.empty:
            st.info(f"No task finished in the {period}.")
        else:
            finished = int(table.to_numpy().sum())
            failed = int(table["failed"].sum())
            decided = int(table["succeeded"].sum()) + failed
            cols = st.columns(3)
            cols[0].metric("Finished", f"{finished:,}")
            cols[1].metric(f"Per {unit} (average)", f"{finished / (hours * (60 if unit == 'minute' else 1)):.2f}")
            cols[2].metric("Failure rate", fmt_rate(failed / decided if decided else None))
            st.markdown(f"**Tasks finished per {unit}**")
            st.altair_chart(charts.outcome_chart(table, unit, hours))
    with guarded("The per-task figures"):
        per_name = history.performance_by_name(url, hours)
        if not per_name.empty:
            st.subheader("Per task")
            st.dataframe(per_name, hide_index=True)
            st.caption("Run time of finished tasks; wait time from sending to starting; failure rate among outcomes.")
