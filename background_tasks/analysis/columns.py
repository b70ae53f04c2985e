"""Column and table profiles, updated one chunk of rows at a time so memory stays bounded.

* mean and standard deviation are exact (chunk-wise merged moments);
* quartiles are exact up to ``QUANTILE_SAMPLE`` numbers per column, then
  computed from a uniform reservoir sample (flagged ``quartiles_exact: false``);
* value counts are exact until a column has ``MAX_TRACKED_VALUES`` distinct
  values, then the rarest are pruned (flagged ``top_values_exact: false``).

"Missing" means what pandas reads as missing (empty, ``NA``, ``null``…) plus
cells that hold only whitespace. Everything returned is plain JSON.
"""

from __future__ import annotations

import json
import math
import warnings as pywarnings
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from background_tasks.errors import MissingDependency, ResourceLimitExceeded

QUANTILE_SAMPLE = 200_000
MAX_TRACKED_VALUES = 20_000
TOP_VALUES = 10
MAX_COLUMNS = 5_000
#: a column whose values are dates in at least this share is a possible date column
DATE_SHARE = 0.8
_BOOL_WORDS = frozenset({"true", "false"})


def pandas() -> Any:
    """pandas, imported when a profile is first made (the worker's main process never needs it)."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pinned in requirements
        raise MissingDependency("pandas is needed for data analysis") from exc
    return pd


def _plain(value: Any) -> Any:
    """JSON-safe scalar: numpy numbers to Python, NaN/inf to None, dates to ISO text."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "isoformat"):
        try:
            return value.isoformat()
        except ValueError:  # NaT
            return None
    if hasattr(value, "item"):
        return _plain(value.item())
    return str(value)


# --------------------------------------------------------------------------
# Column and table accumulators
# --------------------------------------------------------------------------


class ColumnProfile:
    """Everything known about one column, updated chunk by chunk."""

    def __init__(self, name: str, seed: int = 0) -> None:
        import numpy as np

        self.name = name
        self.rows = 0
        self.missing = 0
        self.numeric = 0
        self.integral = True
        self.booleans = 0
        self.dates = 0
        self.texts = 0
        self.n = 0  # finite numbers
        self.mean = 0.0
        self.m2 = 0.0
        self.min: float | None = None
        self.max: float | None = None
        self.sample = np.empty(0, dtype=np.float64)
        self.seen = 0  # finite numbers offered to the reservoir
        self.counts: dict[str, int] = {}
        self.counts_exact = True
        self.date_format: str | None = None
        self.date_min: Any = None
        self.date_max: Any = None
        self.date_has_time = False
        self._rng = np.random.default_rng(seed)

    # -- updates -----------------------------------------------------------

    def add_missing(self, count: int) -> None:
        self.rows += count
        self.missing += count

    def update(self, values: Any) -> None:
        """Take one chunk of the column (a pandas Series of strings and/or native values)."""
        pd = pandas()
        self.rows += len(values)
        present = values[~values.isna()]
        if present.empty:
            self.missing += len(values)
            return
        if pd.api.types.is_string_dtype(present.dtype) and not pd.api.types.is_object_dtype(present.dtype):
            strings, natives = present, present.iloc[0:0]
        else:
            is_text = present.map(lambda v: isinstance(v, str)).astype(bool)
            strings, natives = present[is_text], present[~is_text]
        strings = strings.astype(str).str.strip()
        blank = strings == ""
        self.missing += len(values) - len(present) + int(blank.sum())
        strings = strings[~blank]
        if len(natives):
            self._natives(natives)
        if len(strings):
            self._strings(strings)

    def _natives(self, values: Any) -> None:
        pd = pandas()
        kinds = values.map(_native_kind)
        bools = values[kinds == "bool"]
        if len(bools):
            self.booleans += len(bools)
            self._count(bools.map(lambda v: "true" if v else "false"))
        numbers = values[kinds == "number"]
        if len(numbers):
            floats = pd.to_numeric(numbers, errors="coerce").astype("float64")
            self.numeric += len(numbers)
            if self.integral and not numbers.map(lambda v: isinstance(v, int) or float(v).is_integer()).all():
                self.integral = False
            self._numbers(floats.to_numpy())
        dates = values[kinds == "date"]
        if len(dates):
            stamps = pd.to_datetime(dates.map(_as_datetime), errors="coerce")
            self._dates(stamps[stamps.notna()], has_time=bool((dates.map(_has_time)).any()))
        other = values[kinds == "other"]
        if len(other):
            self._strings(other.map(_as_text).str.strip())

    def _strings(self, strings: Any) -> None:
        pd = pandas()
        lowered = strings.str.lower()
        is_bool = lowered.isin(_BOOL_WORDS)
        if is_bool.any():
            self.booleans += int(is_bool.sum())
            self._count(lowered[is_bool])
            strings = strings[~is_bool]
        if strings.empty:
            return
        numbers = pd.to_numeric(strings, errors="coerce")
        is_number = numbers.notna()
        if is_number.any():
            found = strings[is_number]
            self.numeric += len(found)
            if self.integral and found.str.contains(r"[.eE]", regex=True).any():
                self.integral = False
            self._numbers(numbers[is_number].astype("float64").to_numpy())
        rest = strings[~is_number]
        if rest.empty:
            return
        stamps = self._parse_dates(rest)
        is_date = stamps.notna()
        if is_date.any():
            self._dates(stamps[is_date], has_time=self.date_has_time)
        texts = rest[~is_date]
        self.texts += len(texts)
        if len(texts):
            self._count(texts)

    def _parse_dates(self, strings: Any) -> Any:
        pd = pandas()
        if self.date_format is None:
            self.date_format = _guess_date_format(strings.head(50).tolist()) or "ISO8601"
            self.date_has_time = "%H" in self.date_format or self.date_format == "ISO8601"
        with pywarnings.catch_warnings():
            pywarnings.simplefilter("ignore")
            try:
                stamps = pd.to_datetime(strings, format=self.date_format, errors="coerce")
            except (ValueError, TypeError):  # mixed time zones
                stamps = pd.to_datetime(strings, format=self.date_format, errors="coerce", utc=True)
        if self.date_format == "ISO8601" and stamps.notna().any():
            valid = stamps[stamps.notna()]
            self.date_has_time = bool(((valid - valid.dt.normalize()) != pd.Timedelta(0)).any())
        return stamps

    def _numbers(self, array: Any) -> None:
        import numpy as np

        finite = array[np.isfinite(array)]
        count = len(finite)
        if not count:
            return
        chunk_mean = float(finite.mean())
        chunk_m2 = float(((finite - chunk_mean) ** 2).sum())
        total = self.n + count
        delta = chunk_mean - self.mean
        self.mean += delta * count / total
        self.m2 += chunk_m2 + delta * delta * self.n * count / total
        self.n = total
        low, high = float(finite.min()), float(finite.max())
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)
        self._reservoir(finite)

    def _reservoir(self, finite: Any) -> None:
        import numpy as np

        room = QUANTILE_SAMPLE - len(self.sample)
        if room > 0:
            self.sample = np.concatenate([self.sample, finite[:room]])
            self.seen += min(room, len(finite))
            finite = finite[room:]
        if not len(finite):
            return
        # Algorithm R, vectorised: item i (0-based overall) replaces a random slot with probability R/(i+1).
        positions = np.arange(self.seen, self.seen + len(finite))
        slots = self._rng.integers(0, positions + 1)
        keep = slots < QUANTILE_SAMPLE
        self.sample[slots[keep]] = finite[keep]
        self.seen += len(finite)

    def _dates(self, stamps: Any, has_time: bool) -> None:
        if stamps.empty:
            return
        self.dates += len(stamps)
        self.date_has_time = self.date_has_time or has_time
        low, high = stamps.min(), stamps.max()
        try:
            self.date_min = low if self.date_min is None else min(self.date_min, low)
            self.date_max = high if self.date_max is None else max(self.date_max, high)
        except TypeError:  # time-zone aware against naive: keep the first range
            pass

    def _count(self, values: Any) -> None:
        for value, count in values.value_counts().items():
            key = str(value)[:200]
            self.counts[key] = self.counts.get(key, 0) + int(count)
        if len(self.counts) > MAX_TRACKED_VALUES:
            kept = sorted(self.counts.items(), key=lambda kv: -kv[1])[: MAX_TRACKED_VALUES // 2]
            self.counts = dict(kept)
            self.counts_exact = False

    # -- result ------------------------------------------------------------

    @property
    def present(self) -> int:
        return self.rows - self.missing

    def kind(self) -> str:
        present = self.present
        if present == 0:
            return "empty"
        if self.numeric == present:
            return "integer" if self.integral else "float"
        if self.booleans == present:
            return "boolean"
        if self.dates == present:
            return "datetime" if self.date_has_time else "date"
        return "text"

    def result(self) -> dict[str, Any]:
        import numpy as np

        present = self.present
        kind = self.kind()
        out: dict[str, Any] = {
            "name": self.name,
            "type": kind,
            "count": present,
            "missing": self.missing,
            "missing_ratio": round(self.missing / self.rows, 4) if self.rows else 0.0,
        }
        kinds = {"number": self.numeric, "boolean": self.booleans, "date": self.dates, "text": self.texts}
        if sum(1 for v in kinds.values() if v) > 1:
            out["value_kinds"] = {k: v for k, v in kinds.items() if v}
        if self.n and self.numeric * 2 >= present:
            q25, q50, q75 = (float(v) for v in np.percentile(self.sample, [25, 50, 75]))
            out["numeric"] = {
                "count": self.n,
                "min": _plain(self.min),
                "max": _plain(self.max),
                "mean": _plain(self.mean),
                "std": _plain(math.sqrt(self.m2 / (self.n - 1))) if self.n > 1 else None,
                "q25": _plain(q25),
                "median": _plain(q50),
                "q75": _plain(q75),
                "quartiles_exact": self.seen <= QUANTILE_SAMPLE,
            }
        if self.counts and kind not in ("integer", "float"):
            top = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_VALUES]
            out["top_values"] = [{"value": value, "count": count} for value, count in top]
            out["top_values_exact"] = self.counts_exact
            if self.counts_exact and self.numeric == 0:
                out["distinct"] = len(self.counts)
        if self.dates:
            out["dates"] = {
                "count": self.dates,
                "min": _plain(self.date_min),
                "max": _plain(self.date_max),
                "format": self.date_format if self.date_format != "ISO8601" else "ISO 8601",
            }
            out["possible_date"] = self.dates >= DATE_SHARE * present
        return out


def _native_kind(value: Any) -> str:
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "bool"
    if isinstance(value, int | float) or type(value).__module__ == "numpy":
        return "number"
    if isinstance(value, datetime | date):
        return "date"
    return "other"


def _as_datetime(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo else value
    return datetime(value.year, value.month, value.day)


def _has_time(value: Any) -> bool:
    return isinstance(value, datetime) and (value.hour, value.minute, value.second, value.microsecond) != (0, 0, 0, 0)


def _as_text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)[:1000]
    return str(value)


def _guess_date_format(samples: Sequence[str]) -> str | None:
    """The most common strftime format pandas guesses for the samples (None if none looks like a date)."""
    try:
        from pandas.tseries.api import guess_datetime_format
    except ImportError:  # pragma: no cover - pandas < 2.2
        return None
    formats: Counter[str] = Counter()
    with pywarnings.catch_warnings():
        pywarnings.simplefilter("ignore")
        for sample in samples:
            if not isinstance(sample, str) or not any(ch.isdigit() for ch in sample) or len(sample) > 40:
                continue
            try:
                guessed = guess_datetime_format(sample)
            except (ValueError, TypeError):
                guessed = None
            if guessed:
                formats[guessed] += 1
    return formats.most_common(1)[0][0] if formats else None


class TableProfile:
    """One table: its columns' profiles, updated with DataFrame chunks."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows = 0
        self.columns: dict[str, ColumnProfile] = {}
        self.notes: list[str] = []

    def update(self, frame: Any) -> None:
        for column in frame.columns:
            key = str(column)
            if key not in self.columns:
                if len(self.columns) >= MAX_COLUMNS:
                    raise ResourceLimitExceeded(f"table {self.name!r} has more than {MAX_COLUMNS} columns")
                profile = ColumnProfile(key, seed=len(self.columns))
                profile.add_missing(self.rows)
                self.columns[key] = profile
        for key, profile in self.columns.items():
            if key in frame.columns:
                profile.update(frame[key])
            else:
                profile.add_missing(len(frame))
        self.rows += len(frame)

    def result(self) -> dict[str, Any]:
        columns = [c.result() for c in self.columns.values()]
        out: dict[str, Any] = {
            "name": self.name,
            "row_count": self.rows,
            "column_count": len(columns),
            "column_types": {c["name"]: c["type"] for c in columns},
            "missing_cells": sum(c["missing"] for c in columns),
            "numeric_columns": [c["name"] for c in columns if c["type"] in ("integer", "float")],
            "text_columns": [c["name"] for c in columns if c["type"] == "text"],
            "date_columns": [c["name"] for c in columns if c.get("possible_date")],
            "columns": columns,
        }
        if self.notes:
            out["notes"] = list(self.notes)
        return out
