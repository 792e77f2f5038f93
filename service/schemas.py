"""Request and response schemas of the HTTP API (names say their role: ``ModelCreate``,
``ModelPublic``, ``ModelsPublic``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    computed_field,
    field_validator,
    model_validator,
)

from detector import DetectorConfig
from detector.feedback import Verdict
from service.jobs.states import JobState
from service.parsing import (
    CRON_PATTERN,
    TIMESTAMP_SCHEMA,
    VALUE_SCHEMA,
    check_datetime,
    finite_config,
    parse_duration,
)
from service.registry import NAME_PATTERN, PromotionPolicy
from service.scoring import ScoreRequest, ScoreResponse
from service.storage import HistorySummary
from service.tables import ApiKey, Model, Version

__all__ = [
    "DataAppend",
    "DataAppended",
    "DataDropped",
    "DataSummary",
    "Duration",
    "EventLabel",
    "HealthPublic",
    "JobCreate",
    "JobPublic",
    "JobsPublic",
    "KeyCreate",
    "KeyCreated",
    "KeyPublic",
    "KeysPublic",
    "LabelCreate",
    "LabelPublic",
    "LabelsImported",
    "LabelsPublic",
    "ModelCreate",
    "ModelPublic",
    "ModelUpdate",
    "ModelsPublic",
    "PromotionPublic",
    "PromotionsPublic",
    "ScheduleCreate",
    "SchedulePublic",
    "SchedulesPublic",
    "ScoreRequest",
    "ScoreResponse",
    "VersionPublic",
    "VersionsPublic",
]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _duration(value: Any) -> float:
    return parse_duration(value)


Duration = Annotated[
    float,
    BeforeValidator(_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "pattern": r"^\s*(\d*[1-9]\d*(\.\d+)?|\d+\.\d*[1-9]\d*)\s*[smhdw]?\s*$",
                },
                {"type": "number", "exclusiveMinimum": 0, "maximum": 100 * 365 * 86400},
            ],
            "description": "Seconds, or a positive number with a unit: s, m, h, d, w (e.g. "
            "'14d'); at most 100 years.",
            "examples": ["14d", 3600],
        }
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _RowView:
    """A table row seen with extra attributes (its model's name, ...) laid over it."""

    def __init__(self, row: object, extra: dict[str, Any]) -> None:
        self._row, self._extra = row, extra

    def __getattr__(self, name: str) -> Any:
        return self._extra[name] if name in self._extra else getattr(self._row, name)


class _FromRow(BaseModel):
    """A public view of a table row: ``Schema.model_validate(row, from_attributes=True)``.

    What the row does not hold (its model's name, say) comes in the validation context:
    ``model_validate(row, from_attributes=True, context={"model": name})``.
    """

    model_config = ConfigDict(from_attributes=True)

    @model_validator(mode="before")
    @classmethod
    def _overlay(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context and not isinstance(data, dict):
            return _RowView(data, dict(info.context))
        return data

    @classmethod
    def of(cls, row: object, **extra: Any) -> Self:
        """The public view of ``row``, with ``extra`` attributes the row does not hold."""
        return cls.model_validate(row, from_attributes=True, context=extra or None)


#: A detector config whose every number is finite (JSON bodies may spell ``Infinity``/``NaN``,
#: which pydantic's ``ge=0`` bounds let through).
Config = Annotated[DetectorConfig, AfterValidator(finite_config)]


# --------------------------------------------------------------------------- models


class ModelCreate(_Strict):
    """A new model: a name and a detector config."""

    name: str = Field(
        pattern=NAME_PATTERN,
        description="1-64 letters, digits, '-' or '_', starting with a letter or digit.",
        examples=["cpu-load"],
    )
    config: Config = Field(default_factory=DetectorConfig)
    description: str = Field("", max_length=2000)
    promotion_policy: PromotionPolicy = Field(
        "if_better",
        description="How retrained versions become active: 'always', 'if_better' (validation "
        "score no worse than the active version's) or 'manual'. A model's first version is "
        "always activated.",
    )


class ModelUpdate(_Strict):
    """Changes to a model; omitted fields stay as they are."""

    config: Config | None = Field(
        None, description="Config for future trainings; existing versions keep theirs."
    )
    description: str | None = Field(None, max_length=2000)
    promotion_policy: PromotionPolicy | None = None


class DataSummary(BaseModel):
    """How much history a model holds."""

    points: int
    start: datetime | None
    end: datetime | None
    columns: list[str]
    bytes: int

    @classmethod
    def from_summary(cls, summary: HistorySummary) -> DataSummary:
        """Build from a store summary."""
        return cls(
            points=summary.points,
            start=summary.start,
            end=summary.end,
            columns=summary.columns,
            bytes=summary.bytes,
        )


class ModelPublic(_FromRow):
    """A model as the API shows it."""

    id: str
    name: str
    description: str
    config: dict[str, Any]
    promotion_policy: str
    active_version: int | None
    latest_version: int | None = Field(validation_alias="last_version")
    created_at: datetime
    updated_at: datetime
    last_scored_at: datetime | None = Field(
        None,
        description="When a scoring or stream request last scored with this model (null: "
        "never); written at most once per RECONAD_SCORED_AT_RESOLUTION_S (60 s) per process, "
        "so it may be that much late.",
    )

    @field_validator("latest_version", mode="before")
    @classmethod
    def _none_before_first(cls, value: Any) -> Any:
        return value or None  # the table counts 0 before the first version


class ModelsPublic(BaseModel):
    """A page of models."""

    data: list[ModelPublic]
    count: int


# --------------------------------------------------------------------------- versions


class VersionPublic(_FromRow):
    """An immutable trained version."""

    model: str
    version: int
    active: bool
    created_at: datetime
    job_id: str | None
    threshold: float
    validation_score: float | None
    calibration: dict[str, Any]
    metrics: dict[str, Any]
    history: list[Any] = Field(description="Per-epoch losses.")
    features: list[str]
    window: int
    data_start: datetime | None
    data_end: datetime | None
    n_points: int
    config: dict[str, Any]

    @classmethod
    def of_model(cls, model: Model, row: Version) -> VersionPublic:
        """The public view of a version row of ``model``."""
        return cls.of(row, model=model.name, active=model.active_version == row.version)


class VersionsPublic(BaseModel):
    """Every version of a model, newest first."""

    data: list[VersionPublic]
    count: int
    active_version: int | None


class PromotionPublic(_FromRow):
    """One change of a model's active version."""

    from_version: int | None
    to_version: int
    reason: str = Field(
        description="first_version, policy_always, if_better, manual, rollback, ...",
    )
    created_at: datetime


class PromotionsPublic(BaseModel):
    """A model's promotion log, newest first."""

    data: list[PromotionPublic]
    count: int


# --------------------------------------------------------------------------- data


class DataAppend(_Strict):
    """Observations to store: one object per time point."""

    rows: list[dict[str, Any]] = Field(
        min_length=1,
        json_schema_extra={
            "items": {
                "type": "object",
                "required": ["timestamp"],
                "minProperties": 2,  # the timestamp and a value
                "propertyNames": {"minLength": 1, "maxLength": 128},
                "properties": {"timestamp": TIMESTAMP_SCHEMA},
                "additionalProperties": {"anyOf": [VALUE_SCHEMA, {"type": "null"}]},
            }
        },
        description="Each row: 'timestamp' (ISO-8601 string or epoch seconds) and one number "
        "(or null for a missing value) per feature.",
        examples=[[{"timestamp": "2024-01-01T00:00:00Z", "cpu": 0.42, "mem": 0.61}]],
    )


class DataAppended(BaseModel):
    """Result of an append."""

    appended: int
    summary: DataSummary


class DataDropped(BaseModel):
    """Result of dropping a range."""

    dropped: int
    summary: DataSummary


# --------------------------------------------------------------------------- jobs


class JobCreate(_Strict):
    """A training request. Without ``data``, trains on stored history in ``[start, end)`` or
    the ``last`` duration; with ``data``, trains on those rows only."""

    # the pairs that _check refuses, left out by the schema too
    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "anyOf": [
                    {"required": ["start", "last"]},
                    {"required": ["data", "start"]},
                    {"required": ["data", "end"]},
                    {"required": ["data", "last"]},
                ]
            }
        }
    )

    start: datetime | None = Field(None, description="Range start (inclusive), UTC if no zone.")
    end: datetime | None = Field(None, description="Range end (exclusive), UTC if no zone.")
    last: Duration | None = Field(
        None, description="Train on the last duration before 'anchor' (instead of 'start')."
    )
    anchor: Literal["now", "latest"] = Field(
        "now", description="'now' or 'latest' (the newest stored timestamp), for 'last'."
    )
    config: Config | None = Field(
        None, description="Train with this config instead of the model's."
    )
    promote: bool | None = Field(
        None,
        description="null: apply the model's promotion policy; true: activate the new version; "
        "false: keep the current one.",
    )
    data: DataAppend | None = Field(
        None, description="Train on these rows instead of the stored history."
    )

    @field_validator("start", "end")
    @classmethod
    def _zone(cls, v: datetime | None) -> datetime | None:
        utc = _utc(v)
        return None if utc is None else check_datetime(utc)

    @model_validator(mode="after")
    def _check(self) -> JobCreate:
        if self.data is not None and (self.start or self.end or self.last):
            raise ValueError("give either 'data' or a range of stored history, not both")
        if self.last is not None and self.start is not None:
            raise ValueError("give either 'start' or 'last', not both")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError("'start' must be before 'end'")
        return self


class JobPublic(_FromRow):
    """A training job."""

    id: str
    model: str
    status: JobState
    trigger: str
    schedule_id: str | None
    retry_of: str | None
    params: dict[str, Any]
    progress: dict[str, Any] = Field(
        description="stage, epoch, max_epochs, losses, elapsed_s while running."
    )
    error: str | None
    version: int | None
    promoted: bool | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @field_validator("params", mode="before")
    @classmethod
    def _public_params(cls, value: Any) -> Any:
        return {k: v for k, v in (value or {}).items() if k != "input_key"}

    @field_validator("progress", mode="before")
    @classmethod
    def _empty_progress(cls, value: Any) -> Any:
        return value or {}

    @field_validator("cancel_requested", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> bool:
        return bool(value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end (finished jobs)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 3)


class JobsPublic(BaseModel):
    """A page of jobs, newest first."""

    data: list[JobPublic]
    count: int


# --------------------------------------------------------------------------- schedules


class ScheduleCreate(_Strict):
    """A retraining schedule: exactly one of ``cron`` and ``interval``."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                for name in ("cron", "interval")
            ]
        }
    )

    cron: str | None = Field(
        None,
        max_length=100,
        description="Cron expression in UTC, e.g. '0 3 * * *' (the schema's pattern is the "
        "five-field form; croniter's six- and seven-field forms are accepted too).",
        json_schema_extra={"pattern": CRON_PATTERN},
    )
    interval: Duration | None = Field(None, description="Run every interval (at least 1s).")
    window: Duration = Field(description="Rolling range of history to train on, e.g. '14d'.")
    anchor: Literal["now", "latest"] = Field(
        "now", description="The range ends now, or at the newest stored timestamp."
    )
    paused: bool = False

    @model_validator(mode="after")
    def _one(self) -> ScheduleCreate:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("give exactly one of 'cron' and 'interval'")
        return self


class SchedulePublic(_FromRow):
    """A schedule."""

    id: str
    model: str
    cron: str | None
    interval_s: float | None
    window_s: float
    anchor: str
    paused: bool
    next_run_at: datetime
    last_run_at: datetime | None
    last_job_id: str | None
    last_error: str | None = Field(
        description="Why the last due run queued no job (time and message); null once a run "
        "queues one."
    )
    failures: int = Field(description="Due runs that could not queue a job, ever.")
    created_at: datetime

    @field_validator("failures", mode="before")
    @classmethod
    def _no_failures(cls, v: int | None) -> int:
        return v or 0


class SchedulesPublic(BaseModel):
    """Schedules, oldest first."""

    data: list[SchedulePublic]
    count: int


# --------------------------------------------------------------------------- scoring


# ScoreRequest and ScoreResponse are the scoring package's: they parse and encode the hot path.


# --------------------------------------------------------------------------- keys


class KeyCreate(_Strict):
    """A new API key."""

    scope: Literal["score", "write", "admin"] = Field(
        description="score: scoring and reads; write: also models, data, jobs, schedules, "
        "promotions; admin: also deletions and keys."
    )
    name: str = Field("", max_length=100, description="A label for the key.")
    expires_in: Duration | None = Field(
        None, description="The key stops working after this long (e.g. '90d'); null: never."
    )


KeyStatus = Literal["active", "expired", "revoked"]


class KeyPublic(_FromRow):
    """An API key as listed (never the key itself)."""

    id: str
    name: str
    scope: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    status: KeyStatus

    @classmethod
    def at(cls, row: ApiKey, now: datetime) -> KeyPublic:
        """The public view of ``row`` at time ``now`` (its status then)."""
        status: KeyStatus = "active"
        if row.revoked_at is not None:
            status = "revoked"
        elif row.expires_at is not None and row.expires_at <= now:
            status = "expired"
        return cls.of(row, status=status)


class KeyCreated(KeyPublic):
    """A freshly created key: ``key`` is shown this once and never stored."""

    key: str


class KeysPublic(BaseModel):
    """Every API key, oldest first."""

    data: list[KeyPublic]
    count: int


# --------------------------------------------------------------------------- labels

#: Longest note a label may carry.
MAX_NOTE = 1000


class EventLabel(_Strict):
    """A verdict on an anomaly event."""

    verdict: Verdict = Field(
        description="'anomaly': a real anomaly; 'normal': a false alarm (not an anomaly); "
        "'unsure': seen, no verdict."
    )
    note: str = Field("", max_length=MAX_NOTE, description="Why, for the people after you.")


class LabelCreate(EventLabel):
    """A label of a point (give only ``start``, or ``end`` equal to it) or a time range."""

    start: datetime = Field(description="First labelled time (inclusive), UTC if no zone.")
    end: datetime | None = Field(
        None, description="Last labelled time (inclusive); leave out for a point label."
    )
    series: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="The series (a value of the model's key column); leave out for a model "
        "without one, or to label every series of a model with one.",
    )

    @field_validator("start", "end")
    @classmethod
    def _zone(cls, v: datetime | None) -> datetime | None:
        utc = _utc(v)
        return None if utc is None else check_datetime(utc)

    @model_validator(mode="after")
    def _range(self) -> LabelCreate:
        if self.end is None:
            self.end = self.start
        if self.end < self.start:
            raise ValueError("'end' must not be before 'start' (a point label has end == start)")
        return self


class LabelPublic(_FromRow):
    """A label."""

    id: int
    model: str
    series: str | None
    start: datetime
    end: datetime = Field(description="Inclusive; equal to start for a point label.")
    verdict: Verdict
    note: str
    event_id: int | None = Field(description="The anomaly event it labels, if any.")
    key_id: str | None = Field(description="The id of the API key that gave it.")
    created_at: datetime


class LabelsPublic(BaseModel):
    """A page of labels, newest start first."""

    data: list[LabelPublic]
    count: int


class LabelsImported(BaseModel):
    """The outcome of a CSV import (all rows or none)."""

    imported: int
    count: int = Field(description="Labels the model holds now.")


# --------------------------------------------------------------------------- health


class HealthPublic(BaseModel):
    """Readiness of the service and its stores."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
