"""The Overview's Sources panel: per S3 prefix and mail account, what ``sources status`` prints.

The figures come from ``sources.status.all_statuses`` (the listing and fetch memory in the
database, never a request to S3 or a mail server), so the panel and the command always agree.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from background_tasks.ops.dashboard.view import fmt_seconds, fmt_time, md
from background_tasks.settings import Settings
from background_tasks.sources.status import SourceStatus, all_statuses

COLUMNS = ("kind", "source", "seen", "submitted", "failed", "last run (UTC)", "took", "last success (UTC)", "error")


def sources_table(rows: list[SourceStatus]) -> pd.DataFrame:
    """One line per source; a source never listed or fetched (or never without an error) shows ``never``."""
    return pd.DataFrame(
        [
            {
                "kind": row.kind,
                "source": row.name,
                "seen": row.seen,
                "submitted": row.submitted,
                "failed": row.failed,
                "last run (UTC)": fmt_time(row.last_run_at) if row.last_run_at else "never",
                "took": fmt_seconds(row.last_run_s),
                "last success (UTC)": fmt_time(row.last_success_at) if row.last_success_at else "never",
                "error": row.error or "",
            }
            for row in rows
        ],
        columns=list(COLUMNS),
    )


def sources_panel(settings: Settings) -> None:
    """S3 sources and mail accounts: objects seen, submitted, failed, the last listing (how long it took)
    and the last one without an error."""
    st.subheader("Sources")
    rows = all_statuses(settings)
    if not rows:
        st.caption("No sources configured (MIDAS_S3_SOURCES, MIDAS_MAIL_CONFIG).")
        return
    st.dataframe(sources_table(rows), hide_index=True)
    for row in rows:
        if row.error:
            st.warning(f"{row.kind} source {md(row.name)}: {md(row.error)}")
