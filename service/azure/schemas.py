"""Request and response bodies of the Azure Anomaly Detector v1.1 API, field for field.

Names and types follow ``azure-ai-anomalydetector`` 3.0.0b6 (the SDK's models are the ground
truth: where they and the REST reference differ, the SDK wins). Fields are camelCase on the
wire; unknown request fields are ignored (as the old service did), enum values are matched
without regard to case.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "AlignPolicy",
    "AnomalyDetectionModel",
    "AnomalyInterpretation",
    "AnomalyState",
    "AnomalyValue",
    "CorrelationChanges",
    "DataSource",
    "DiagnosticsInfo",
    "ErrorResponse",
    "ModelInfo",
    "ModelInfoPublic",
    "ModelList",
    "ModelState",
    "MultivariateBatchDetectionOptions",
    "MultivariateBatchDetectionResultSummary",
    "MultivariateDetectionResult",
    "MultivariateLastDetectionOptions",
    "MultivariateLastDetectionResult",
    "TimeSeriesPoint",
    "UnivariateChangePointDetectionOptions",
    "UnivariateChangePointDetectionResult",
    "UnivariateDetectionOptions",
    "UnivariateEntireDetectionResult",
    "UnivariateLastDetectionResult",
    "VariableState",
    "VariableValues",
]


def _camel(name: str) -> str:
    special = {"fill_na_method": "fillNAMethod", "filled_na_ratio": "filledNARatio"}
    return special.get(name, to_camel(name))


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=_camel),
        populate_by_name=True,
        extra="ignore",
        ser_json_inf_nan="null",
    )


def _enum(*values: str) -> Any:
    """A string field matched case-insensitively against ``values`` (returned as spelled here)."""
    lookup = {v.lower(): v for v in values}

    def pick(value: Any) -> Any:
        if isinstance(value, str):
            return lookup.get(value.lower(), value)
        return value

    return BeforeValidator(pick)


def _finite(value: float) -> float:
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("must be a finite number")
    return value


Finite = Annotated[float, AfterValidator(_finite)]
Granularity = Literal[
    "yearly", "monthly", "weekly", "daily", "hourly", "minutely", "secondly", "microsecond", "none"
]
GRANULARITIES = (
    "yearly",
    "monthly",
    "weekly",
    "daily",
    "hourly",
    "minutely",
    "secondly",
    "microsecond",
    "none",
)
ImputeMode = Literal["auto", "previous", "linear", "fixed", "zero", "notFill"]
Status = Literal["CREATED", "RUNNING", "READY", "FAILED"]
#: A ReconAD data URL: ``reconad://files/<name>`` (uploaded with PUT .../files/<name>) or
#: ``s3://bucket/key`` (CSV or Parquet).
DataSource = Annotated[str, Field(min_length=1, max_length=2048)]


# --------------------------------------------------------------------------- errors


class ErrorResponse(_Wire):
    """``{"code", "message"}``: the error body of every call (also ``errors[]`` entries)."""

    code: str
    message: str


# --------------------------------------------------------------------------- univariate


class TimeSeriesPoint(_Wire):
    """One point of a univariate series."""

    timestamp: datetime | None = None
    value: Finite


class UnivariateDetectionOptions(_Wire):
    """Body of ``timeseries/entire/detect`` and ``timeseries/last/detect``."""

    series: list[TimeSeriesPoint]
    granularity: Annotated[Granularity | None, _enum(*GRANULARITIES)] = None
    custom_interval: Annotated[int | None, Field(ge=1)] = None
    period: Annotated[int | None, Field(ge=0)] = None
    max_anomaly_ratio: Annotated[float | None, Field(gt=0, le=0.5)] = None
    sensitivity: Annotated[int | None, Field(ge=0, le=99)] = None
    impute_mode: Annotated[
        ImputeMode | None, _enum("auto", "previous", "linear", "fixed", "zero", "notFill")
    ] = None
    impute_fixed_value: Finite | None = None


class UnivariateChangePointDetectionOptions(_Wire):
    """Body of ``timeseries/changepoint/detect`` (``granularity`` is required here)."""

    series: list[TimeSeriesPoint]
    granularity: Annotated[Granularity, _enum(*GRANULARITIES)]
    custom_interval: Annotated[int | None, Field(ge=1)] = None
    period: Annotated[int | None, Field(ge=0)] = None
    stable_trend_window: Annotated[int | None, Field(ge=3)] = None
    threshold: Annotated[float | None, Field(gt=0, lt=1)] = None


class UnivariateEntireDetectionResult(_Wire):
    """Per-point results of an entire-series detection (arrays in the order of the series)."""

    period: int
    expected_values: list[float]
    upper_margins: list[float]
    lower_margins: list[float]
    is_anomaly: list[bool]
    is_negative_anomaly: list[bool]
    is_positive_anomaly: list[bool]
    severity: list[float]


class UnivariateLastDetectionResult(_Wire):
    """The result of the series' last point."""

    period: int
    suggested_window: int
    expected_value: float
    upper_margin: float
    lower_margin: float
    is_anomaly: bool
    is_negative_anomaly: bool
    is_positive_anomaly: bool
    severity: float


class UnivariateChangePointDetectionResult(_Wire):
    """Per-point change-point flags and confidences."""

    period: int
    is_change_point: list[bool]
    confidence_scores: list[float]


# --------------------------------------------------------------------------- multivariate


class AlignPolicy(_Wire):
    """How the variables are put on one time grid and how gaps are filled."""

    align_mode: Annotated[Literal["Inner", "Outer"] | None, _enum("Inner", "Outer")] = None
    fill_na_method: Annotated[
        Literal["Previous", "Subsequent", "Linear", "Zero", "Fixed"] | None,
        _enum("Previous", "Subsequent", "Linear", "Zero", "Fixed"),
    ] = None
    padding_value: Finite | None = None


class ModelInfo(_Wire):
    """Body of ``POST multivariate/models``: where the training data is and which range."""

    data_source: DataSource
    data_schema: Annotated[
        Literal["OneTable", "MultiTable"] | None, _enum("OneTable", "MultiTable")
    ] = None
    start_time: datetime
    end_time: datetime
    display_name: Annotated[str | None, Field(max_length=24)] = None
    sliding_window: Annotated[int | None, Field(ge=28, le=2880)] = None
    align_policy: AlignPolicy | None = None


class VariableState(_Wire):
    """What one variable of the data held."""

    variable: str
    filled_na_ratio: float
    effective_count: int
    first_timestamp: datetime | None
    last_timestamp: datetime | None


class ModelState(_Wire):
    """Training losses per epoch."""

    epoch_ids: list[int] = []
    train_losses: list[float] = []
    validation_losses: list[float] = []
    latencies_in_seconds: list[float] = []


class DiagnosticsInfo(_Wire):
    """Training losses and the variables' states."""

    model_state: ModelState
    variable_states: list[VariableState]


class ModelInfoPublic(ModelInfo):
    """``modelInfo`` of a model: the request plus status, errors and diagnostics."""

    data_schema: Literal["OneTable", "MultiTable"] | None = "OneTable"
    sliding_window: int | None = None
    align_policy: AlignPolicy | None = None
    status: Status
    errors: list[ErrorResponse]
    diagnostics_info: DiagnosticsInfo


class AnomalyDetectionModel(_Wire):
    """A multivariate model."""

    model_id: str
    created_time: datetime
    last_updated_time: datetime
    model_info: ModelInfoPublic


class ModelList(_Wire):
    """A page of models."""

    models: list[AnomalyDetectionModel]
    current_count: int
    max_count: int
    next_link: str | None = None


class MultivariateBatchDetectionOptions(_Wire):
    """Body of ``POST multivariate/models/{id}:detect-batch``."""

    data_source: DataSource
    top_contributor_count: Annotated[int, Field(ge=1, le=1000)] = 10
    start_time: datetime
    end_time: datetime


class CorrelationChanges(_Wire):
    """Variables whose correlation with the interpreted one changed at this timestamp."""

    changed_variables: list[str]


class AnomalyInterpretation(_Wire):
    """One variable's part in a timestamp's score."""

    variable: str
    contribution_score: float
    correlation_changes: CorrelationChanges


class AnomalyValue(_Wire):
    """The detection of one timestamp."""

    is_anomaly: bool
    severity: float
    score: float
    interpretation: list[AnomalyInterpretation]


class AnomalyState(_Wire):
    """One timestamp's result (``value`` absent where ``errors`` say why)."""

    timestamp: datetime
    value: AnomalyValue | None = None
    errors: list[ErrorResponse] = []


class MultivariateBatchDetectionResultSummary(_Wire):
    """Status of a batch detection and what it was asked."""

    status: Status
    errors: list[ErrorResponse]
    variable_states: list[VariableState]
    setup_info: MultivariateBatchDetectionOptions


class MultivariateDetectionResult(_Wire):
    """A batch detection: its id, summary and (once ``READY``) the per-timestamp results."""

    result_id: str
    summary: MultivariateBatchDetectionResultSummary
    results: list[AnomalyState]


class VariableValues(_Wire):
    """One variable's recent values for ``detect-last``."""

    variable: Annotated[str, Field(min_length=1, max_length=128)]
    timestamps: list[str]
    values: list[Finite]


class MultivariateLastDetectionOptions(_Wire):
    """Body of ``POST multivariate/models/{id}:detect-last``."""

    variables: Annotated[list[VariableValues], Field(min_length=1)]
    top_contributor_count: Annotated[int, Field(ge=1, le=1000)] = 10


class MultivariateLastDetectionResult(_Wire):
    """The detection of the last timestamp sent."""

    variable_states: list[VariableState]
    results: list[AnomalyState]
