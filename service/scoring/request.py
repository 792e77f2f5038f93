"""The score request: the one place where a score body is parsed and checked.

:class:`ScoreRequest` is a pydantic model whose validators turn the parsed body into numpy
arrays and a time index (:meth:`ScoreRequest.from_body`; a series segment may also come as an
Arrow IPC or Parquet table, :meth:`ScoreRequest.from_table`, its options as query parameters);
its JSON schema is the one the OpenAPI document shows. Checks that need the model (window
length, feature names, the series key) are its methods :meth:`~ScoreRequest.windows_for` and
:meth:`~ScoreRequest.frame_for`, so every rule about what can be scored lives here.

Errors say what to fix: malformed JSON (400); NaN/Infinity tokens, out-of-range numbers, wrong
shapes, ragged arrays, strings, unknown fields or features (422); too many points (413).

The bytes are parsed by orjson (:func:`service.parsing.parse_json`) and the result validated
with ``model_validate``, not with ``model_validate_json``: pydantic-core's JSON parser accepts
``NaN``, ``Infinity`` and ``1e999`` (so a NaN token could pass for a missing value) and, measured
on a million-point series, parses about a quarter slower than orjson.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.columnar import JSON, read_table
from service.errors import InvalidInputError, PayloadTooLargeError, format_validation_errors
from service.parsing import (
    MAX_VERSION,
    TIMESTAMP_SCHEMA,
    VALUE_SCHEMA,
    numeric_array,
    parse_json,
    parse_timestamps,
    timestamps_of_column,
)
from service.storage import TIMESTAMP

__all__ = ["ScoreRequest"]

_FIELDS = frozenset(
    ("windows", "values", "timestamps", "version", "reconstruct", "top_k", "fields")
)
#: Default of ``max_values_per_request``: numbers one JSON body may hold.
DEFAULT_MAX_VALUES = 8_000_000
#: Bodies up to this size skip the pre-parse count (the hot path of small windows).
_PRESCREEN_BYTES = 64 * 1024


def _refuse(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as it is."""
    return PydanticCustomError("score_request", message)


def _checked(convert: Any, *args: Any) -> Any:
    """Run a converter of :mod:`service.parsing`, turning its refusal into a validation error."""
    try:
        return convert(*args)
    except InvalidInputError as exc:
        raise _refuse(exc.message) from None


def _windows(raw: Any) -> np.ndarray:
    if not isinstance(raw, list) or not raw:
        raise _refuse("windows must be a non-empty array of shape (n_windows, window, n_features)")
    arr: np.ndarray = _checked(numeric_array, raw, "windows", False)
    if arr.ndim != 3:
        raise _refuse(
            f"windows must be 3-dimensional (n_windows, window, n_features); got "
            f"{arr.ndim} dimension(s) {tuple(arr.shape)} (wrap a single window in [ ])"
        )
    return arr  # (B, W, F) float64


def _column(name: str, raw: Any) -> np.ndarray:
    if isinstance(raw, np.ndarray) and raw.ndim == 1 and raw.size:  # a table's column
        if raw.dtype.kind == "b":
            raise _refuse(f"values[{name!r}] holds booleans; send numbers (0 or 1)")
        if raw.dtype.kind == "O" and all(isinstance(v, str) for v in raw):
            return raw  # strings: a series-key column (features are checked later)
        arr: np.ndarray = raw
    elif not isinstance(raw, list) or not raw:
        raise _refuse(f"values[{name!r}] must be a non-empty list")
    else:
        try:
            arr = np.asarray(raw)  # one pass over the list; numeric_array reuses it
        except (ValueError, OverflowError):
            arr = np.asarray(raw, dtype=object)  # ragged or huge: numeric_array explains
    if arr.ndim != 1 and arr.dtype.kind != "O":
        raise _refuse(f"values[{name!r}] must be a flat list of numbers")
    if arr.dtype.kind in "iu":
        return arr  # integers stay integers: a numeric series key keeps its spelling
    if arr.dtype.kind == "U":
        return arr.astype(object)  # strings: a series-key column (features are checked later)
    arr = _checked(numeric_array, arr, f"values[{name!r}]", True)
    if arr.ndim != 1:
        raise _refuse(f"values[{name!r}] must be a flat list of numbers")
    return arr  # (T,) float64, NaN where null


def _values(raw: Any) -> dict[str, np.ndarray]:
    if not isinstance(raw, dict) or not raw:
        raise _refuse("values must be an object mapping each feature name to a list of numbers")
    columns = {str(name): _column(str(name), column) for name, column in raw.items()}
    lengths = sorted({len(c) for c in columns.values()})
    if len(lengths) != 1:
        raise _refuse(f"every values column must have the same length; got lengths {lengths}")
    return columns


def _timestamps(raw: Any) -> pd.DatetimeIndex:
    if isinstance(raw, pd.DatetimeIndex):  # a table's, checked by timestamps_of_column
        return raw
    if not isinstance(raw, list):
        raise _refuse("timestamps must be a list with one entry per point")
    index: pd.DatetimeIndex = _checked(parse_timestamps, raw)
    return index


Windows = Annotated[
    np.ndarray,
    PlainValidator(_windows),
    WithJsonSchema(
        {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "array", "minItems": 1, "items": VALUE_SCHEMA},
            },
            "description": "Stand-alone windows, shape (n_windows, window, n_features); each "
            "window is scored on its own.",
        }
    ),
]
Columns = Annotated[
    dict[str, np.ndarray],
    PlainValidator(_values),
    WithJsonSchema(
        {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "anyOf": [
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"anyOf": [VALUE_SCHEMA, {"type": "null"}]},
                    },
                    {"type": "array", "minItems": 1, "items": {"type": "string"}},
                ]
            },
            "description": "A series segment: feature name -> values (null = missing), at least "
            "one window long; the series-key column (if the model has one) holds strings.",
        }
    ),
]
Timestamps = Annotated[
    pd.DatetimeIndex,
    PlainValidator(_timestamps),
    WithJsonSchema(
        {
            "type": "array",
            "items": TIMESTAMP_SCHEMA,
            "description": "One ISO-8601 string or epoch second per point of 'values'.",
        }
    ),
]


class ScoreRequest(BaseModel):
    """Windows or a series segment to score (send exactly one of ``windows`` and ``values``).

    Validate a body with :meth:`from_body`; ``model_validate(data, context={"max_points": n})``
    does the same for parsed JSON, with pydantic's own errors.
    """

    model_config = ConfigDict(
        arbitrary_types_allowed=True,
        extra="forbid",
        # what _envelope asks, in the schema too: windows, or values (with timestamps)
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["windows"],
                    "properties": {"windows": {"type": "array"}},
                    "not": {"anyOf": [{"required": ["timestamps"]}, {"required": ["values"]}]},
                },
                {
                    "required": ["values"],
                    "properties": {"values": {"type": "object"}},
                    "not": {"required": ["windows"]},
                },
            ]
        },
    )

    windows: Windows | None = None
    values: Columns | None = None
    timestamps: Timestamps | None = None
    version: int | None = Field(
        None, ge=1, le=MAX_VERSION, strict=True, description="Pin a version (default: the active)."
    )
    reconstruct: bool = Field(False, strict=True, description="Also return the expected values.")
    top_k: int = Field(
        3, ge=0, le=1000, strict=True, description="Top contributing features per point."
    )
    fields: list[Literal["scores", "normalized", "anomalous", "anomalous_indices"]] | None = Field(
        None,
        max_length=4,
        description="Per-point fields to return (default: scores, normalized, anomalous). "
        "For long series, ['anomalous_indices'] with top_k 0 returns only the indices of the "
        "anomalous points.",
    )
    #: Media type of the answer: JSON, or a columnar format the ``Accept`` header chose
    #: (:mod:`service.columnar`); set by the service with :meth:`answer_as`, never in the body.
    _response_type: str = PrivateAttr(default=JSON)

    @property
    def response_type(self) -> str:
        """Media type the response is encoded in."""
        return self._response_type

    def answer_as(self, media_type: str) -> None:
        """Encode the response as ``media_type`` (JSON or a :mod:`service.columnar` type).

        Raises
        ------
        service.errors.InvalidInputError
            For ``anomalous_indices`` in a columnar answer (a table has one row per point).
        """
        if media_type != JSON and self.fields is not None and "anomalous_indices" in self.fields:
            raise InvalidInputError(
                "fields 'anomalous_indices' is for JSON answers: an Arrow or Parquet answer has "
                "one row per point, and its 'anomalous' column takes one bit a point; ask for "
                "fields ['anomalous']"
            )
        self._response_type = media_type

    @model_validator(mode="before")
    @classmethod
    def _envelope(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise _refuse("the body must be a JSON object with 'windows' or 'values'")
        unknown = data.keys() - _FIELDS
        if unknown:
            raise _refuse(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
        if (data.get("windows") is not None) == (data.get("values") is not None):
            raise _refuse(
                "send exactly one of 'windows' (array of shape (n_windows, window, n_features)) "
                "or 'values' (object: feature name -> list of numbers, with optional "
                "'timestamps')"
            )
        if data.get("windows") is not None and data.get("timestamps") is not None:
            raise _refuse("'timestamps' goes with 'values', not with 'windows'")
        return data

    @model_validator(mode="after")
    def _sizes(self, info: ValidationInfo) -> ScoreRequest:
        n = self.n_points
        if self.timestamps is not None and len(self.timestamps) != n:
            raise _refuse(f"timestamps must be a list with one entry per point ({n})")
        limit = (info.context or {}).get("max_points")
        if limit is not None and n > limit:
            # Not a validation error: the request is valid but too big for this deployment.
            raise PayloadTooLargeError(
                f"the request holds {n} points; the limit is {limit} "
                "(max_points_per_request): split it into several requests"
            )
        return self

    @property
    def n_points(self) -> int:
        """Points in the request (a window of W points counts W)."""
        if self.windows is not None:
            return int(self.windows.shape[0] * self.windows.shape[1])
        assert self.values is not None
        return len(next(iter(self.values.values())))

    @classmethod
    def from_body(
        cls,
        body: bytes,
        max_points: int,
        max_values: int = DEFAULT_MAX_VALUES,
        options: Mapping[str, str] | None = None,
    ) -> ScoreRequest:
        """Parse and check a raw JSON body.

        Parameters
        ----------
        body
            ``{"windows": [[[...]]]}`` (shape (B, W, F)) or ``{"timestamps": [...], "values":
            {"feature": [...]}}``, plus optional ``version``, ``reconstruct`` and ``top_k``.
        max_points
            Most points allowed (a window of W points counts W).
        max_values
            Most numbers a JSON body may hold (points times features).
        options
            Query parameters (``version``, ``reconstruct``, ``top_k``, ``fields``, as for
            :meth:`from_table`): each takes the place of the body's field of that name.

        Raises
        ------
        service.errors.BadRequestError
            For a body that is not JSON.
        service.errors.InvalidInputError
            For JSON that cannot be scored, with what to fix.
        service.errors.PayloadTooLargeError
            For more than ``max_points`` points.
        """
        if len(body) > _PRESCREEN_BYTES:  # smaller bodies cannot grow large when parsed
            _prescreen(body, max_points, max_values)
        data = parse_json(body)
        if options and isinstance(data, dict):
            data.update(_table_options(options))
        try:
            # model_validate without its wrapper (the hot path)
            request: ScoreRequest = cls.__pydantic_validator__.validate_python(
                data, context={"max_points": max_points}
            )
        except ValidationError as exc:
            raise _service_error(exc) from None
        if request.windows is not None and _may_hold_booleans(body):
            flat = np.asarray(data["windows"], dtype=object).ravel()
            if any(isinstance(v, bool) for v in flat):
                raise InvalidInputError("windows must hold numbers, not booleans: send 0 or 1")
        return request

    @classmethod
    def from_table(
        cls, body: bytes, media_type: str, options: Mapping[str, str], max_points: int
    ) -> ScoreRequest:
        """Parse and check a series segment sent as a table (:mod:`service.columnar`).

        Parameters
        ----------
        body
            An Arrow IPC stream or a Parquet file: an optional ``timestamp`` column (datetimes,
            ISO-8601 strings or epoch seconds) and one column per feature (and series key).
        media_type
            Its format.
        options
            The other request fields, as query parameters: ``version``, ``reconstruct``
            (``true``/``false``), ``top_k`` and ``fields`` (comma-separated).
        max_points
            Most points allowed.

        Raises
        ------
        service.errors.BadRequestError
            For a body that is not a readable table.
        service.errors.InvalidInputError
            For a table or options that cannot be scored, with what to fix.
        service.errors.PayloadTooLargeError
            For more than ``max_points`` rows.
        """
        frame = read_table(body, media_type)
        if len(frame) > max_points:
            raise PayloadTooLargeError(
                f"the table holds {len(frame)} rows; the limit is {max_points} "
                "(max_points_per_request): split it into several requests"
            )
        data: dict[str, Any] = _table_options(options)
        if TIMESTAMP in frame.columns:
            data["timestamps"] = timestamps_of_column(frame[TIMESTAMP], "column 'timestamp'")
        data["values"] = {str(c): frame[c].to_numpy() for c in frame.columns if str(c) != TIMESTAMP}
        try:
            return cls.model_validate(data, context={"max_points": max_points})
        except ValidationError as exc:
            raise _service_error(exc) from None

    # -- checks against the model that scores the request

    def windows_for(self, window: int, features: list[str]) -> np.ndarray:
        """The windows, checked against a model's window length and features.

        Raises
        ------
        service.errors.InvalidInputError
            For the wrong shape or values that are not finite.
        """
        x = self.windows
        assert x is not None
        w, f = window, len(features)
        if x.shape[1] != w or x.shape[2] != f:
            raise InvalidInputError(
                f"windows have shape {tuple(x.shape)}; this model needs (n_windows, {w}, {f}): "
                f"{w} points per window and the features {features} in that order"
            )
        finite = np.isfinite(x)
        if not finite.all():
            where = [int(i) for i in np.argwhere(~finite)[0]]
            raise InvalidInputError(
                f"windows{where} is not finite; windows must hold finite numbers"
            )
        return x

    def frame_for(self, features: list[str], key_column: str | None) -> pd.DataFrame:
        """The series segment as a frame of a model's features (and series key).

        Raises
        ------
        service.errors.InvalidInputError
            For missing or unknown columns, strings in a feature, or timestamps that are not
            increasing (strictly, unless the model has a series key).
        """
        values = self.values
        assert values is not None
        missing = [f for f in features if f not in values]
        if missing:
            raise InvalidInputError(
                f"values lacks the feature(s) {missing}; this model needs {features}"
            )
        allowed = set(features) | ({key_column} if key_column else set())
        extra = sorted(set(values) - allowed)
        if extra:
            raise InvalidInputError(
                f"values has unknown column(s) {extra}; this model's features are {features}"
            )
        columns: dict[str, Any] = {}
        for name in features:
            if values[name].dtype.kind not in "iuf":
                raise InvalidInputError(f"values[{name!r}] must hold numbers, not strings")
            columns[name] = values[name].astype(np.float64, copy=False)
        if key_column and key_column in values:
            columns[key_column] = [str(v) for v in values[key_column]]
        # order and repeats of timestamps follow the model's timestamp_order, in the library
        index: pd.Index = (
            self.timestamps if self.timestamps is not None else pd.RangeIndex(self.n_points)
        )
        return pd.DataFrame(columns, index=index)


def _prescreen(body: bytes, max_points: int, max_values: int) -> None:
    """Refuse a body too big by shape before parsing it: parsed JSON costs about 32 bytes per
    number, so a 228 MB body of windows would take gigabytes before its points could be counted.

    Both counts are bounds that a body within the limits never exceeds: windows of shape
    (B, W, F) open ``1 + B + B*W`` arrays for ``B*W`` points, so more than ``2 * max_points + 2``
    brackets means more than ``max_points`` points; and an array of n numbers has n - 1 commas.
    """
    brackets = body.count(b"[")
    if brackets > 2 * max_points + 2:
        raise PayloadTooLargeError(
            f"the body holds more than {max_points} points ({brackets} arrays; "
            "max_points_per_request): split it into several requests"
        )
    commas = body.count(b",")
    if commas > max_values:
        raise PayloadTooLargeError(
            f"the body holds about {commas} numbers, more than {max_values} "
            "(max_values_per_request): split it, or send a columnar body (Arrow IPC or Parquet)"
        )


def _table_options(options: Mapping[str, str]) -> dict[str, Any]:
    """The request fields of a table body, from query parameters (strings) to their types."""
    unknown = sorted(set(options) - _TABLE_OPTIONS)
    if unknown:
        raise InvalidInputError(
            f"unknown query parameter(s) {unknown}; a table body takes {sorted(_TABLE_OPTIONS)}"
        )
    out: dict[str, Any] = {}
    for name in ("version", "top_k"):
        if name in options:
            try:
                out[name] = int(options[name])
            except ValueError:
                raise InvalidInputError(
                    f"query parameter {name} must be an integer, not {options[name][:40]!r}"
                ) from None
    if "reconstruct" in options:
        flag = options["reconstruct"].lower()
        if flag not in ("true", "false"):
            raise InvalidInputError("query parameter reconstruct must be true or false")
        out["reconstruct"] = flag == "true"
    if "fields" in options:
        out["fields"] = [f.strip() for f in options["fields"].split(",") if f.strip()]
    return out


#: Request fields a table body takes as query parameters.
_TABLE_OPTIONS = frozenset({"version", "reconstruct", "top_k", "fields"})


def _may_hold_booleans(body: bytes) -> bool:
    """Whether a body may spell ``true`` or ``false`` (numpy reads them as 1.0 and 0.0).

    The one-letter searches come first: they cost a tenth of the four-letter ones, and a body of
    numbers holds neither letter.
    """
    return (b"t" in body and b"true" in body) or (b"f" in body and b"false" in body)


def _service_error(exc: ValidationError) -> InvalidInputError:
    """The service error for a body the model refused: our messages as they are, pydantic's
    prefixed with the field they are about."""
    errors = exc.errors()
    custom = [e["msg"] for e in errors if e["type"] == "score_request"]
    if custom:
        return InvalidInputError("; ".join(custom))
    summary, _ = format_validation_errors(errors)
    return InvalidInputError(summary)
