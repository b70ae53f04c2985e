"""Streamlit pieces every section of the page draws with: guarded sections, literal text, times, the verdict box.

The page (``Streamlit_Task_Monitoring.py``) and the section modules beside this one
(``health_view``, ``performance_view``, ``upload_view``) import them, so each is written once.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st

from background_tasks.ops.dashboard.common import plain_error, status_colour

log = logging.getLogger("midas.dashboard")

STATUS_ICON = {"ok": ":material/check_circle:", "warning": ":material/warning:", "critical": ":material/error:"}
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~$])")


@contextmanager
def guarded(what: str) -> Iterator[None]:
    """Run a section; on any error show one plain sentence and log the details server-side."""
    try:
        yield
    except Exception as exc:  # the user gets a sentence; the log gets the traceback
        log.warning("dashboard: %s failed: %s", what, exc, exc_info=True)
        st.error(f"{what} could not be shown: {md(plain_error(exc))}")


def md(value: Any) -> str:
    """Text from outside (errors, names, reasons) shown literally inside Markdown."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(value)).replace("\n", " ")


def code(value: Any) -> str:
    """Inline code span for a path or id, whatever backticks it contains."""
    text = str(value).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"`{text}`"


def fmt_rate(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def fmt_time(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return "–"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_seconds(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def fmt_age(seconds: float | None) -> str:
    """An age in the largest unit that fits: 45 s, 12 min, 3.5 h."""
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def show_health(status: str, reasons: Sequence[str], title: str = "Health", pending: Sequence[str] = ()) -> None:
    """The verdict in its palette colour: green ok, amber warning, red critical."""
    text = f"**{title}: {status.upper()}**"
    if reasons:
        text += "\n" + "\n".join(f"- {md(reason)}" for reason in reasons)
    else:
        text += " — every measure is within its thresholds."
    if pending:
        text += "\n\nNot counted yet (must hold for several checks in a row):\n"
        text += "\n".join(f"- {md(line)}" for line in pending)
    alert = {"ok": st.success, "warning": st.warning}.get(status, st.error)
    alert(text, icon=STATUS_ICON.get(status, ":material/help:"))


def coloured(frame: pd.DataFrame, columns: Sequence[str]) -> Any:
    """``frame`` with its status columns written in the palette's colours (a Styler st.dataframe draws).

    Times are shown like everywhere else (``YYYY-MM-DD HH:MM:SS UTC``), numbers without trailing zeros.
    """
    present = [c for c in columns if c in frame.columns]
    if frame.empty or not present:
        return frame
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_datetime64_any_dtype(shown[column]):
            shown[column] = shown[column].map(fmt_time)
    styler = shown.style.map(lambda v: f"color: {status_colour(v)}; font-weight: 600", subset=present)
    return styler.format(_cell)


def _cell(value: Any) -> str:
    """A table cell as text: nothing as "–"; numbers without trailing zeros, to 3 decimals below 10, else 1."""
    if value is None or (isinstance(value, float | int) and pd.isna(value)) or value is pd.NA or value is pd.NaT:
        return "–"
    if isinstance(value, float):
        return (f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}").rstrip("0").rstrip(".")
    return str(value)


#: the "One document" view's id box; clicking a row or a search hit fills it
DOCUMENT_KEY = "doc_id"


def open_document(document_id: int) -> None:
    """Button callback: show ``document_id`` in "One document" (callbacks run before the page, so
    the id box may still be changed)."""
    st.session_state[DOCUMENT_KEY] = int(document_id)


def selected_id(ids: Sequence[int], rows: Sequence[int]) -> int | None:
    """The id of the row picked in a table (single-row selection), or None."""
    if not rows:
        return None
    row = rows[0]
    return int(ids[row]) if 0 <= row < len(ids) else None


#: the document table's widget key, and where the page keeps the ids of the rows it shows
TABLE_KEY, TABLE_IDS_KEY = "doc_table", "doc_table_ids"


def open_selected_document() -> None:
    """``on_select`` callback of the document table: show the picked row in "One document"."""
    event = st.session_state.get(TABLE_KEY) or {}
    try:
        rows = list(event["selection"]["rows"])
    except (KeyError, TypeError):
        rows = []
    picked = selected_id(st.session_state.get(TABLE_IDS_KEY, []), rows)
    if picked is not None:
        open_document(picked)
