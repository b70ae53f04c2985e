"""The dashboard's charts, built with Altair from the shared palette, on 24-hour UTC time axes.

Streamlit's quick charts pick colours by column order, so a "warning" line came out red and
"critical" light blue, and succeeded tasks red. Here every series that means a status gets its
palette colour (``common.STATUS_COLOURS``), and every time axis is UTC with 24-hour labels like
the tables' ``YYYY-MM-DD HH:MM:SS UTC``. Plain functions returning charts, so the specs can be
tested without a browser.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from background_tasks.ops.dashboard.common import AMBER, BLUE, GREEN, GREY, RED

#: a day or less: hours and minutes; longer: the date as well
SHORT_FORMAT, LONG_FORMAT = "%H:%M", "%m-%d %H:%M"
TOOLTIP_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
#: pixels of a chart, its axes and legend included (Streamlit fits the whole chart in it)
CHART_HEIGHT = 320
#: colours of the series that are not a status: measured values
SERIES_COLOURS = (BLUE, "#7f4fc9", "#17becf", "#8c564b")


def label_format(span_hours: float) -> str:
    return SHORT_FORMAT if span_hours <= 24 else LONG_FORMAT


def time_axis(field: str, span_hours: float, title: str = "time (UTC)") -> alt.X:
    """A temporal x axis in UTC on a 24-hour clock (the date too when the span is over a day).

    The labels are written by ``utcFormat`` in a label expression: Vega's own choice of format
    (and an axis ``format``, which the dashboard's Vega-Lite does not apply) is a 12-hour clock.
    """
    return alt.X(
        f"{field}:T",
        title=title,
        scale=alt.Scale(type="utc"),
        axis=alt.Axis(labelExpr=f"utcFormat(datum.value, '{label_format(span_hours)}')", labelOverlap=True),
    )


def _when(values: pd.Series) -> pd.Series:
    """Times as the tables write them, for tooltips."""
    return pd.to_datetime(values, utc=True).dt.strftime(TOOLTIP_FORMAT)


def _long(frame: pd.DataFrame, time_field: str, columns: Sequence[str]) -> pd.DataFrame:
    data = frame[[time_field, *columns]].copy()
    data[time_field] = pd.to_datetime(data[time_field], utc=True)
    long = data.melt(id_vars=[time_field], value_vars=list(columns), var_name="series", value_name="value")
    return long.assign(when=_when(long[time_field]))


def threshold_chart(
    frame: pd.DataFrame,
    time_field: str,
    measures: dict[str, str],
    warn: float,
    crit: float,
    span_hours: float,
    height: int = CHART_HEIGHT,
) -> alt.Chart:
    """Measured series (``{label: column}``) against the warning (amber) and critical (red) lines.

    The threshold lines span the samples (ten minutes around a lone one), so they show even with one
    sample; each sample is a point on its line. The first measure is what health judges, drawn on top;
    the others (e.g. single samples) grey.
    """
    labels = list(measures)
    data = frame[[time_field, *measures.values()]].rename(columns={c: label for label, c in measures.items()})
    measured = _long(data, time_field, list(reversed(labels)))  # the first drawn last, on top
    lines = _long(
        _edges(measured[time_field]).assign(warning=float(warn), critical=float(crit)),
        time_field,
        ["warning", "critical"],
    )
    domain = [*labels, "warning", "critical"]
    colours = [BLUE, *([GREY] * (len(labels) - 1)), AMBER, RED]
    return (
        alt.Chart(pd.concat([measured, lines], ignore_index=True), height=height)
        .mark_line(point=alt.OverlayMarkDef(size=18))
        .encode(
            x=time_axis(time_field, span_hours),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(domainMin=0)),
            color=alt.Color("series:N", scale=alt.Scale(domain=domain, range=colours), legend=_legend()),
            strokeDash=alt.StrokeDash(
                "series:N",
                scale=alt.Scale(domain=domain, range=[[1, 0]] * len(labels) + [[6, 3], [6, 3]]),
                legend=None,
            ),
            tooltip=[alt.Tooltip("when:N", title="time"), "series:N", alt.Tooltip("value:Q", format=".1f")],
        )
    )


def _edges(times: pd.Series) -> pd.DataFrame:
    """First and last sample time, where a threshold line starts and ends (a lone sample gets ten minutes)."""
    first, last = times.min(), times.max()
    if pd.isna(first):
        first = last = pd.Timestamp.now(tz="UTC")
    if first == last:
        first, last = first - pd.Timedelta(minutes=5), last + pd.Timedelta(minutes=5)
    return pd.DataFrame({times.name: [first, last]})


def _legend() -> alt.Legend:
    return alt.Legend(orient="bottom", title=None, columns=2, labelLimit=160)


def series_chart(
    frame: pd.DataFrame, time_field: str, columns: dict[str, str], span_hours: float, height: int = CHART_HEIGHT
) -> alt.Chart:
    """Measured series (``{label: column}``) over time, each in a measured-value colour (never a status colour)."""
    data = frame[[time_field, *columns.values()]].rename(columns={c: label for label, c in columns.items()})
    labels = list(columns)
    colours = [SERIES_COLOURS[i % len(SERIES_COLOURS)] for i in range(len(labels))]
    return (
        alt.Chart(_long(data, time_field, labels), height=height)
        .mark_line(point=alt.OverlayMarkDef(size=18))
        .encode(
            x=time_axis(time_field, span_hours),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(domainMin=0)),
            color=alt.Color("series:N", scale=alt.Scale(domain=labels, range=colours), legend=_legend()),
            tooltip=[alt.Tooltip("when:N", title="time"), "series:N", alt.Tooltip("value:Q", format=",.2f")],
        )
    )


#: the outcomes of finished tasks, in stacking order, with their palette colours
OUTCOMES = {"succeeded": GREEN, "failed": RED, "other": GREY}


def outcome_chart(table: pd.DataFrame, unit: str, span_hours: float, height: int = CHART_HEIGHT) -> alt.Chart:
    """Finished tasks per minute or hour (``table``: bucket index, one column per outcome), stacked by outcome.

    Each bar spans its minute or hour on the time axis.
    """
    data = table.reset_index().rename(columns={table.index.name or "index": "bucket"})
    data["bucket"] = pd.to_datetime(data["bucket"], utc=True)
    long = data.melt(id_vars=["bucket"], value_vars=list(OUTCOMES), var_name="outcome", value_name="tasks")
    step = pd.Timedelta(minutes=1) if unit == "minute" else pd.Timedelta(hours=1)
    long = long.assign(
        end=long["bucket"] + step * 0.85,
        order=long["outcome"].map({name: i for i, name in enumerate(OUTCOMES)}),
        when=_when(long["bucket"]),
    )
    return (
        alt.Chart(long, height=height)
        .mark_bar()
        .encode(
            x=time_axis("bucket", span_hours, title=f"{unit} (UTC)"),
            x2="end:T",
            y=alt.Y("sum(tasks):Q", title=f"tasks per {unit}", stack="zero"),
            color=alt.Color(
                "outcome:N",
                scale=alt.Scale(domain=list(OUTCOMES), range=list(OUTCOMES.values())),
                legend=alt.Legend(orient="bottom", title=None),
            ),
            order=alt.Order("order:Q"),
            tooltip=[alt.Tooltip("when:N", title=f"{unit} from"), "outcome:N", "tasks:Q"],
        )
    )
