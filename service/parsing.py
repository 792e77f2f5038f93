"""Parsing of request bodies: JSON with clear errors, numeric arrays, timestamps, durations.

Timestamps are accepted from 1900-01-01 up to (not including) 2200-01-01 UTC, everywhere
(scoring, stored rows, uploads, job ranges). pandas represents nanosecond timestamps from 1677
to 2262; the narrower range leaves room for the durations the service adds (``last`` up to 100
years, gap filling, calendar features), so nothing accepted at the door breaks a later retrain.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd

from service.errors import BadRequestError, InvalidInputError

__all__ = [
    "MAX_TIMESTAMP",
    "MAX_VERSION",
    "MIN_TIMESTAMP",
    "check_datetime",
    "check_timestamps",
    "finite_config",
    "numeric_array",
    "parse_duration",
    "parse_json",
    "parse_timestamps",
    "timestamps_of_column",
]

#: Largest version number anywhere in the API (a 32-bit column holds it on every database).
MAX_VERSION = 2_000_000_000
MIN_TIMESTAMP = pd.Timestamp("1900-01-01", tz="UTC")
MAX_TIMESTAMP = pd.Timestamp("2200-01-01", tz="UTC")
_RANGE_TEXT = "timestamps must be from 1900-01-01 to before 2200-01-01 (UTC)"

_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: The JSON schema of a value that can be scored: a number within float32's range.
VALUE_SCHEMA: dict[str, Any] = {"type": "number", "minimum": -_FLOAT32_MAX, "maximum": _FLOAT32_MAX}
#: The JSON schema of a timestamp: an ISO-8601 string or epoch seconds, in range.
TIMESTAMP_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {
            "type": "number",
            "minimum": MIN_TIMESTAMP.timestamp(),
            "exclusiveMaximum": MAX_TIMESTAMP.timestamp(),
        },
    ]
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def _cron_field(value: str) -> str:
    item = rf"(\*|{value}(-{value})?)(/[1-9][0-9]?)?"
    return rf"{item}(,{item})*"


#: The five-field cron form (minute, hour, day of month, month, day of week; numbers, ``*``,
#: ranges, lists and steps in range), as a JSON schema pattern: what it matches croniter accepts.
CRON_PATTERN = (
    "^ *"
    + " +".join(
        _cron_field(v)
        for v in (
            "[0-5]?[0-9]",
            "([01]?[0-9]|2[0-3])",
            "(0?[1-9]|[12][0-9]|3[01])",
            "(0?[1-9]|1[0-2])",
            "[0-7]",
        )
    )
    + " *$"
)
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class _BadConstantError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _BadConstantError(name)


class _OutOfRangeError(ValueError):
    pass


def _checked_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _OutOfRangeError(text)
    return value


def _checked_int(text: str) -> float:
    value = float(int(text)) if len(text) < 400 else math.inf
    if not math.isfinite(value):
        raise _OutOfRangeError(text if len(text) < 40 else text[:20] + "...")
    return value


def parse_json(body: bytes) -> Any:
    """Parse a JSON body, explaining NaN/Infinity and out-of-range numbers.

    Raises
    ------
    service.errors.BadRequestError
        For malformed JSON (with the position).
    service.errors.InvalidInputError
        For NaN, Infinity or numbers beyond the float64 range.
    """
    if not body.strip():
        raise BadRequestError("the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        if "recursion limit" in str(fast_error):  # orjson stops at 1024 levels
            raise BadRequestError(
                "the JSON body is nested too deeply (more than 1024 levels); send flat arrays"
            ) from None
        try:
            json.loads(
                body,
                parse_constant=_reject_constant,
                parse_float=_checked_float,
                parse_int=_checked_int,
            )
        except _BadConstantError as exc:
            raise InvalidInputError(
                f"the body contains {exc.args[0]}, which is not a JSON number: values must be "
                "finite; send null for a missing value"
            ) from None
        except _OutOfRangeError as exc:
            raise InvalidInputError(
                f"the number {exc.args[0]} is out of range: values must be finite floats "
                "(within +/-1.8e308)"
            ) from None
        except (ValueError, UnicodeDecodeError):
            raise BadRequestError(f"malformed JSON: {fast_error}") from None
        if "infinity" in str(fast_error):
            raise InvalidInputError(
                f"a number is out of range ({fast_error}); send finite float values"
            ) from None
        raise BadRequestError(f"malformed JSON: {fast_error}") from None  # pragma: no cover


def numeric_array(raw: Any, what: str, allow_null: bool) -> np.ndarray:
    """Convert nested JSON lists to a float64 array, explaining what is wrong.

    Parameters
    ----------
    raw
        Parsed JSON (lists of numbers; ``null`` becomes NaN when ``allow_null``).
    what
        How the value is named in error messages.
    allow_null
        Whether ``null`` (a missing value) is acceptable.

    Raises
    ------
    service.errors.InvalidInputError
        For ragged arrays, strings, nulls (unless allowed) or values beyond the float32 range.
    """
    try:
        arr = np.asarray(raw)
    except ValueError:
        raise InvalidInputError(
            f"{what} must be a regular array: every row needs the same length"
        ) from None
    except OverflowError:
        raise InvalidInputError(f"{what} holds an integer too large for a float") from None
    if arr.dtype.kind == "b":
        raise InvalidInputError(f"{what} must hold numbers, not booleans: send 0 or 1")
    if arr.dtype.kind in "iuf":
        out = arr.astype(np.float64, copy=False)
    elif arr.dtype.kind == "O":
        flat = arr.ravel().tolist()
        if any(isinstance(v, list | dict) for v in flat):
            raise InvalidInputError(
                f"{what} must be a regular array: every row needs the same length"
            )
        if any(isinstance(v, str) for v in flat):
            raise InvalidInputError(f"{what} must hold numbers, not strings")
        if any(isinstance(v, bool) for v in flat):
            raise InvalidInputError(f"{what} must hold numbers, not booleans: send 0 or 1")
        if not allow_null and any(v is None for v in flat):
            raise InvalidInputError(
                f"{what} holds null: windows must be complete; score a series segment "
                "(timestamps + values) to send missing values"
            )
        try:
            out = arr.astype(np.float64)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInputError(f"{what} must hold numbers") from None
    else:
        raise InvalidInputError(
            f"{what} must hold numbers, not {'strings' if arr.dtype.kind in 'US' else arr.dtype}"
        )
    big = np.abs(out) > _FLOAT32_MAX
    if big.any():
        where = tuple(int(i) for i in np.argwhere(big)[0])
        raise InvalidInputError(
            f"{what}{list(where)} = {out[where]:g} is too large: values must be within "
            f"+/-{_FLOAT32_MAX:.3g}"
        )
    return out


def check_timestamps(index: pd.DatetimeIndex, what: str = "timestamps") -> pd.DatetimeIndex:
    """Return ``index`` (UTC) if every timestamp is in the accepted range.

    Raises
    ------
    service.errors.InvalidInputError
        Naming the first timestamp outside it.
    """
    if len(index) == 0:
        return index
    outside = (index < MIN_TIMESTAMP) | (index >= MAX_TIMESTAMP)
    if outside.any():
        at = int(np.argmax(outside))
        raise InvalidInputError(f"{what}[{at}] = {index[at].isoformat()}: {_RANGE_TEXT}")
    return index


def check_datetime(value: datetime, what: str = "the time") -> datetime:
    """Return a timezone-aware ``value`` if it is in the accepted range (a ``ValueError``
    otherwise, for pydantic validators)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not MIN_TIMESTAMP.to_pydatetime() <= aware < MAX_TIMESTAMP.to_pydatetime():
        raise ValueError(f"{what} {value.isoformat()} is out of range: {_RANGE_TEXT}")
    return value


def finite_config(config: Any) -> Any:
    """Return a pydantic config if every number in it is finite (a ``ValueError`` naming the
    field otherwise: ``Infinity`` and ``NaN`` pass ``ge``/``gt`` bounds)."""

    def walk(value: Any, path: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{path} is {value}: every number in a config must be finite")
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")

    walk(config.model_dump(), "")
    return config


def parse_timestamps(raw: list[Any], what: str = "timestamps") -> pd.DatetimeIndex:
    """Parse ISO-8601 strings or epoch seconds into a UTC index.

    Raises
    ------
    service.errors.InvalidInputError
        For mixed, unparseable or out-of-range values (see the module docstring).
    """
    # isinstance of every value, asked of the set of their types: one C-level pass (a
    # generator over a million values costs half a second)
    types = set(map(type, raw))
    if all(issubclass(t, str) for t in types):
        try:
            index = pd.DatetimeIndex(pd.to_datetime(raw, utc=True, format="ISO8601"))
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInputError(
                f"{what} must be ISO-8601 strings (2024-01-31T12:00:00Z) or epoch seconds: {exc}"
            ) from None
    elif all(issubclass(t, int | float) and not issubclass(t, bool) for t in types):
        arr = np.asarray(raw, dtype=np.float64)
        low, high = MIN_TIMESTAMP.timestamp(), MAX_TIMESTAMP.timestamp()
        if not np.isfinite(arr).all() or ((arr < low) | (arr >= high)).any():
            bad = int(np.argmax(~np.isfinite(arr) | (arr < low) | (arr >= high)))
            raise InvalidInputError(
                f"{what}[{bad}] = {arr[bad]:g} epoch seconds: {_RANGE_TEXT} "
                f"(epoch {low:.0f} to {high:.0f})"
            )
        index = pd.DatetimeIndex(pd.to_datetime(arr, unit="s", utc=True))
    else:
        raise InvalidInputError(
            f"{what} must all be ISO-8601 strings or all epoch seconds (no nulls, no mixing)"
        )
    return check_timestamps(index.as_unit("us"), what)


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"6h"``, ``"14d"`` or ``"2w"``.

    Raises
    ------
    ValueError
        For anything else, or a duration that is not positive.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '14d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match is None:
            raise ValueError(
                f"invalid duration {value[:40]!r}: use seconds or a number with s, m, h, d or w "
                "(e.g. '14d')"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError("a duration is a number of seconds or a string like '14d'")
    if not math.isfinite(seconds) or seconds <= 0 or seconds > 100 * 365 * 86400:
        raise ValueError("a duration must be positive and at most 100 years")
    return seconds


def timestamps_of_column(raw: pd.Series, what: str) -> pd.DatetimeIndex:
    """The UTC index of a table's time column: datetimes (naive ones are UTC), ISO-8601
    strings or epoch seconds.

    Raises
    ------
    service.errors.InvalidInputError
        For empty, unparseable or out-of-range values (see the module docstring).
    """
    if pd.api.types.is_datetime64_any_dtype(raw):
        stamps = pd.DatetimeIndex(raw)
        stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
        if stamps.hasnans:
            raise InvalidInputError(f"{what} has empty timestamps")
        return check_timestamps(stamps.as_unit("us"), what)
    values = raw.tolist()
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
        raise InvalidInputError(f"{what} has empty timestamps")
    return parse_timestamps(values, what)
