"""The Azure Anomaly Detector v1.1 calls, answered by ReconAD's own services.

- Univariate calls are stateless: :mod:`service.azure.univariate` fits its method on the
  request's series.
- A multivariate model is a ReconAD model named by the Azure model id, trained by a ReconAD job
  on the data source's rows in the requested range; its Azure request, the variables' states
  and the training data's correlations are kept in ``azure_models``. Its status is its job's.
- A batch detection is an ``azure_results`` row; it runs in a thread of the API process that
  writes a heartbeat, stores the per-timestamp results in the artifact store and marks the row
  ``READY`` (or ``FAILED`` with the reason). A detection whose process died is reported
  ``FAILED`` once its heartbeat is older than ``job_stale_after_s``, never left running.
- Data sources are ``reconad://files/<name>`` (a file uploaded to this API) or ``s3://`` objects
  (read with the service's S3 endpoint); CSV or Parquet with a ``timestamp`` column and one
  column per variable (Azure's ``OneTable`` schema).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from detector import DetectorConfig
from service.azure import schemas as az
from service.azure.errors import AzureError
from service.azure.univariate import (
    DEFAULT_MAX_ANOMALY_RATIO,
    DEFAULT_SENSITIVITY,
    detect_change_points,
    detect_series,
)
from service.data import frame_from_upload
from service.db import Database
from service.deletion import DeletionService
from service.errors import NotFoundError, ServiceError
from service.jobs.service import JobService
from service.parsing import parse_timestamps
from service.registry import ModelRegistry
from service.scoring import ScoringService
from service.settings import Settings
from service.storage import ArtifactStore
from service.storage.objectstore import open_filesystem
from service.tables import AzureModel, AzureResult, Model, utcnow

__all__ = ["AzureService", "prepare_series"]

logger = logging.getLogger(__name__)

_MIN_POINTS = 12
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FILES_PREFIX = "azure-files"
_RESULTS_PREFIX = "azure-results"
_CORRELATION_CHANGE = 0.5  # |corr(now) - corr(training)| that counts as a changed correlation
_MAX_CORRELATION_POINTS = 10_000  # anomalous timestamps given correlation changes per request
_STEPS: dict[str, pd.DateOffset | pd.Timedelta] = {
    "yearly": pd.DateOffset(years=1),
    "monthly": pd.DateOffset(months=1),
    "weekly": pd.Timedelta(weeks=1),
    "daily": pd.Timedelta(days=1),
    "hourly": pd.Timedelta(hours=1),
    "minutely": pd.Timedelta(minutes=1),
    "secondly": pd.Timedelta(seconds=1),
    "microsecond": pd.Timedelta(microseconds=1),
}


def _invalid(message: str, code: str = "InvalidSeries") -> AzureError:
    return AzureError(400, code, message)


# --------------------------------------------------------------------------- univariate input


@dataclass
class PreparedSeries:
    """A request's series on its time grid: ``values`` with imputed points, and where the
    request's own points are in it."""

    values: np.ndarray
    positions: np.ndarray


def _grid_step(granularity: str, custom_interval: int | None) -> pd.DateOffset | pd.Timedelta:
    step = _STEPS[granularity]
    return step * (custom_interval or 1)


def prepare_series(
    series: list[az.TimeSeriesPoint],
    granularity: str | None,
    custom_interval: int | None,
    impute_mode: str | None,
    impute_fixed_value: float | None,
    max_points: int,
) -> PreparedSeries:
    """Check a series and put it on its grid, filling the missing grid points.

    With a granularity other than ``none`` every point needs a timestamp; timestamps must
    increase. Grid points between the request's points are filled by ``impute_mode``
    (``auto`` and ``linear``: linear interpolation; ``previous``; ``fixed``; ``zero``;
    ``notFill``: none are added).

    Raises
    ------
    AzureError
        400 with the code of the field at fault.
    """
    n = len(series)
    if n < _MIN_POINTS:
        raise _invalid(f"the series has {n} points; it needs at least {_MIN_POINTS}")
    if n > max_points:
        raise _invalid(
            f"the series has {n} points; at most {max_points} are accepted "
            "(RECONAD_AZURE_MAX_SERIES_POINTS)"
        )
    values = np.array([p.value for p in series], dtype=np.float64)
    if granularity in (None, "none"):
        return PreparedSeries(values, np.arange(n))
    if any(p.timestamp is None for p in series):
        raise _invalid(f"with granularity {granularity!r} every point needs a timestamp")
    stamps = pd.DatetimeIndex([pd.Timestamp(p.timestamp) for p in series])  # type: ignore[arg-type]
    stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
    if not stamps.is_monotonic_increasing or not stamps.is_unique:
        raise _invalid("timestamps must increase: sort the series and remove repeated points")
    mode = impute_mode or "auto"
    if mode == "notFill":
        return PreparedSeries(values, np.arange(n))
    if mode == "fixed" and impute_fixed_value is None:
        raise _invalid("imputeMode 'fixed' needs imputeFixedValue", "InvalidImputeFixedValue")
    step = _grid_step(granularity, custom_interval)
    span_limit = 4 * max_points
    if isinstance(step, pd.Timedelta):
        span = (stamps[-1] - stamps[0]) / step
        if span > span_limit:
            raise _invalid(
                f"the series spans {int(span)} {granularity} steps; fill gaps over at most "
                f"{span_limit} steps or use imputeMode 'notFill'",
                "InvalidCustomInterval",
            )
    grid = pd.date_range(stamps[0], stamps[-1], freq=step)
    if len(grid) > span_limit:
        raise _invalid(
            f"the series spans {len(grid)} grid points; at most {span_limit} can be filled",
            "InvalidCustomInterval",
        )
    full = grid.union(stamps)
    frame = pd.Series(np.nan, index=full)
    frame.loc[stamps] = values
    if mode in ("auto", "linear"):
        filled = frame.interpolate(method="linear", limit_direction="both")
    elif mode == "previous":
        filled = frame.ffill().bfill()
    elif mode == "zero":
        filled = frame.fillna(0.0)
    else:
        filled = frame.fillna(float(impute_fixed_value))  # type: ignore[arg-type]
    positions = full.get_indexer(stamps)
    return PreparedSeries(filled.to_numpy(dtype=np.float64), positions)


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) if math.isfinite(v) else 0.0 for v in values.tolist()]


# --------------------------------------------------------------------------- multivariate data


def variable_states(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Azure's ``variableStates`` of a frame before gaps are filled."""
    states = []
    n = max(len(frame), 1)
    for column in frame.columns:
        observed = frame[column].notna()
        stamps = frame.index[observed.to_numpy()]
        states.append(
            {
                "variable": str(column),
                "filledNARatio": float(1 - observed.sum() / n),
                "effectiveCount": int(observed.sum()),
                "firstTimestamp": stamps[0].isoformat() if len(stamps) else None,
                "lastTimestamp": stamps[-1].isoformat() if len(stamps) else None,
            }
        )
    return states


def fill_frame(frame: pd.DataFrame, policy: dict[str, Any] | None) -> pd.DataFrame:
    """Apply an Azure ``alignPolicy``: ``Inner`` keeps rows where every variable is present,
    ``Outer`` (the default) keeps every row and fills by ``fillNAMethod`` (default
    ``Linear``)."""
    policy = policy or {}
    if (policy.get("alignMode") or "Outer") == "Inner":
        return frame.dropna(how="any")
    method = policy.get("fillNAMethod") or "Linear"
    if method == "Linear":
        return frame.interpolate(method="linear", limit_direction="both")
    if method == "Previous":
        return frame.ffill().bfill()
    if method == "Subsequent":
        return frame.bfill().ffill()
    if method == "Zero":
        return frame.fillna(0.0)
    padding = policy.get("paddingValue")
    if padding is None:
        raise AzureError(400, "InvalidInput", "fillNAMethod 'Fixed' needs alignPolicy.paddingValue")
    return frame.fillna(float(padding))


def correlation_matrix(frame: pd.DataFrame) -> dict[str, Any]:
    """The variables' correlation matrix (JSON: names and rows; 0 where undefined)."""
    corr = frame.corr().fillna(0.0)
    return {"variables": [str(c) for c in corr.columns], "matrix": corr.to_numpy().tolist()}


def _iso(value: datetime) -> str:
    return pd.Timestamp(value).isoformat()


class AzureService:
    """The Azure v1.1 calls over ReconAD's registry, jobs, scoring and artifact store.

    Parameters
    ----------
    settings, db, registry, jobs, scoring, artifacts, deletion
        The app's settings and services.
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        registry: ModelRegistry,
        jobs: JobService,
        scoring: ScoringService,
        artifacts: ArtifactStore,
        deletion: DeletionService,
    ) -> None:
        self.settings = settings
        self.db = db
        self.registry = registry
        self.jobs = jobs
        self.scoring = scoring
        self.artifacts = artifacts
        self.deletion = deletion
        self.base_config = json.loads(settings.azure_model_config or "{}")
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ univariate
    def _prepare(self, opts: az.UnivariateDetectionOptions) -> PreparedSeries:
        return prepare_series(
            opts.series,
            opts.granularity,
            opts.custom_interval,
            opts.impute_mode,
            opts.impute_fixed_value,
            self.settings.azure_max_series_points,
        )

    def detect_entire(
        self, opts: az.UnivariateDetectionOptions
    ) -> az.UnivariateEntireDetectionResult:
        """Every point of the series (``timeseries/entire/detect``)."""
        prepared = self._prepare(opts)
        r = detect_series(
            prepared.values, opts.period, _sensitivity(opts), _ratio(opts), last_only=False
        )
        at = prepared.positions
        return az.UnivariateEntireDetectionResult(
            period=r.period,
            expected_values=_floats(r.expected[at]),
            upper_margins=_floats(r.upper_margins[at]),
            lower_margins=_floats(r.lower_margins[at]),
            is_anomaly=r.is_anomaly[at].tolist(),
            is_negative_anomaly=r.is_negative[at].tolist(),
            is_positive_anomaly=r.is_positive[at].tolist(),
            severity=_floats(r.severity[at]),
        )

    def detect_last(self, opts: az.UnivariateDetectionOptions) -> az.UnivariateLastDetectionResult:
        """The series' last point (``timeseries/last/detect``)."""
        prepared = self._prepare(opts)
        r = detect_series(
            prepared.values, opts.period, _sensitivity(opts), _ratio(opts), last_only=True
        )
        i = int(prepared.positions[-1])
        return az.UnivariateLastDetectionResult(
            period=r.period,
            suggested_window=max(_MIN_POINTS, 3 * r.window + 1, 2 * r.period + 1),
            expected_value=float(r.expected[i]),
            upper_margin=float(r.upper_margins[i]),
            lower_margin=float(r.lower_margins[i]),
            is_anomaly=bool(r.is_anomaly[i]),
            is_negative_anomaly=bool(r.is_negative[i]),
            is_positive_anomaly=bool(r.is_positive[i]),
            severity=float(r.severity[i]),
        )

    def detect_change_points(
        self, opts: az.UnivariateChangePointDetectionOptions
    ) -> az.UnivariateChangePointDetectionResult:
        """Trend change points (``timeseries/changepoint/detect``)."""
        prepared = prepare_series(
            opts.series,
            opts.granularity,
            opts.custom_interval,
            None,
            None,
            self.settings.azure_max_series_points,
        )
        r = detect_change_points(
            prepared.values,
            opts.period,
            opts.stable_trend_window,
            opts.threshold if opts.threshold is not None else 0.99,
        )
        at = prepared.positions
        return az.UnivariateChangePointDetectionResult(
            period=r.period,
            is_change_point=r.is_change_point[at].tolist(),
            confidence_scores=_floats(r.confidence[at]),
        )

    # ------------------------------------------------------------------ data sources
    def put_file(self, name: str, content: bytes) -> str:
        """Store an uploaded data file; return its data source URL."""
        if not _FILE_NAME.match(name):
            raise AzureError(
                400,
                "InvalidInput",
                "file names have 1-128 letters, digits, '.', '_' or '-' and start with a "
                "letter or digit",
            )
        if not content:
            raise AzureError(400, "InvalidInput", "the file is empty")
        frame_from_upload(content, name, None)  # refuse what could never train or detect
        key = f"{_FILES_PREFIX}/{name}"
        if not self.artifacts.exists(key):
            stored = self.artifacts.list(_FILES_PREFIX)
            if len(stored) >= self.settings.azure_max_files:
                raise AzureError(
                    409,
                    "TooManyFiles",
                    f"{len(stored)} files are stored (RECONAD_AZURE_MAX_FILES); delete one first",
                )
        self.artifacts.put_bytes(key, content)
        return f"reconad://files/{name}"

    def delete_file(self, name: str) -> None:
        """Delete an uploaded data file."""
        key = f"{_FILES_PREFIX}/{name}"
        if not _FILE_NAME.match(name) or not self.artifacts.exists(key):
            raise AzureError(404, "FileNotExist", f"no uploaded file named {name[:128]!r}")
        self.artifacts.delete(key)

    def read_source(self, url: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Rows ``start <= timestamp <= end`` of a data source, gaps still NaN.

        Raises
        ------
        AzureError
            400 for an unsupported URL, an unreadable file, an empty range or too many rows.
        """
        if url.startswith("reconad://files/"):
            name = url.removeprefix("reconad://files/")
            key = f"{_FILES_PREFIX}/{name}"
            if not _FILE_NAME.match(name) or not self.artifacts.exists(key):
                raise AzureError(
                    400,
                    "InvalidDataSource",
                    f"no uploaded file named {name[:128]!r}: upload it with "
                    f"PUT /anomalydetector/v1.1/files/{name[:128]}",
                )
            content = self.artifacts.get_bytes(key)
        elif url.startswith("s3://"):
            try:
                fs, path = open_filesystem(url, self.settings.s3_endpoint_url)
                content = fs.cat_file(path)
            except (OSError, ServiceError, ValueError) as exc:
                raise AzureError(
                    400, "InvalidDataSource", f"could not read {url[:200]!r}: {exc}"
                ) from None
        else:
            raise AzureError(
                400,
                "InvalidDataSource",
                "dataSource must be reconad://files/<name> (uploaded with PUT "
                "/anomalydetector/v1.1/files/<name>) or an s3:// URL of a CSV or Parquet file",
            )
        frame = frame_from_upload(content, url.rsplit("/", 1)[-1], None)
        frame = frame.sort_index()
        frame = frame[~frame.index.duplicated(keep="last")]
        lo, hi = pd.Timestamp(start), pd.Timestamp(end)
        lo = lo.tz_localize("UTC") if lo.tz is None else lo.tz_convert("UTC")
        hi = hi.tz_localize("UTC") if hi.tz is None else hi.tz_convert("UTC")
        if lo >= hi:
            raise AzureError(400, "InvalidInput", "startTime must be before endTime")
        frame = frame[(frame.index >= lo) & (frame.index <= hi)]
        if frame.empty:
            raise AzureError(400, "InvalidInput", f"the data source has no rows from {lo} to {hi}")
        if len(frame) > self.settings.max_points_per_request:
            raise AzureError(
                400,
                "InvalidInput",
                f"the range holds {len(frame)} rows; at most "
                f"{self.settings.max_points_per_request} are accepted "
                "(RECONAD_MAX_POINTS_PER_REQUEST): ask for a shorter range",
            )
        return frame

    # ------------------------------------------------------------------ models
    def _config(self, info: az.ModelInfo) -> DetectorConfig:
        raw = dict(self.base_config)
        if info.sliding_window is not None:
            raw["window"] = info.sliding_window
        return self.registry.validate_config(raw)

    def create_model(self, info: az.ModelInfo) -> az.AnomalyDetectionModel:
        """Read the training range, create the ReconAD model and queue its training."""
        if (info.data_schema or "OneTable") != "OneTable":
            raise AzureError(
                400,
                "InvalidInput",
                "only the OneTable schema is supported: one CSV or Parquet file with a "
                "timestamp column and one column per variable",
            )
        with self.db.session() as session:
            count = int(session.scalar(select(func.count()).select_from(AzureModel)) or 0)
        if count >= self.settings.azure_max_models:
            raise AzureError(
                409,
                "TooManyModels",
                f"{count} models exist (RECONAD_AZURE_MAX_MODELS); delete one first",
            )
        config = self._config(info)
        raw = self.read_source(info.data_source, info.start_time, info.end_time)
        states = variable_states(raw)
        frame = fill_frame(
            raw, info.align_policy.model_dump(by_alias=True) if info.align_policy else None
        )
        if len(frame) < 2:
            raise AzureError(400, "InvalidInput", "too few rows remain to train on")
        model_id = str(uuid.uuid4())
        model = self.registry.create_model(
            model_id, config, info.display_name or "Azure-compatible API model", "always"
        )
        now = utcnow()
        stored = info.model_dump(mode="json", by_alias=True)
        row = AzureModel(
            id=model_id,
            model_id=model.id,
            job_id=None,
            info=stored,
            variable_states=states,
            correlations=correlation_matrix(frame),
            errors=[],
            created_at=now,
            updated_at=now,
        )
        with self.db.transaction() as session:
            session.add(row)
        try:
            job = self.jobs.create(model_id, inline=frame, promote=True, trigger="api")
        except Exception:
            self.registry.delete_model(model_id)
            raise
        with self.db.transaction() as session:
            stored_row = session.get(AzureModel, model_id)
            assert stored_row is not None
            stored_row.job_id = job.id
        logger.info("azure model created", extra={"model": model_id, "job_id": job.id})
        return self.get_model(model_id)

    def _row(self, model_id: str) -> AzureModel:
        with self.db.session() as session:
            row = session.get(AzureModel, model_id)
        if row is None:
            raise AzureError(404, "ModelNotExist", f"no model with id {model_id[:64]!r}")
        return row

    def _public(self, row: AzureModel) -> az.AnomalyDetectionModel:
        status, errors, history = "CREATED", list(row.errors), []
        updated = row.updated_at
        if row.job_id is not None:
            try:
                job, _ = self.jobs.get(row.job_id)
            except NotFoundError:
                job = None
            if job is not None:
                status = {
                    "queued": "CREATED",
                    "running": "RUNNING",
                    "succeeded": "READY",
                }.get(job.status, "FAILED")
                if status == "FAILED":
                    errors.append(
                        {
                            "code": "TrainingFailed",
                            "message": f"training {job.status}: {job.error or 'no reason given'}",
                        }
                    )
                updated = job.finished_at or job.started_at or updated
                if job.status == "succeeded" and job.version is not None:
                    _, version = self.registry.get_version(row.id, job.version)
                    history = list(version.history)
                elif job.progress.get("epoch") is not None:
                    history = []
        info = {
            **row.info,
            "status": status,
            "errors": errors,
            "diagnosticsInfo": {
                "modelState": {
                    "epochIds": [int(h.get("epoch", i + 1)) for i, h in enumerate(history)],
                    "trainLosses": [_num(h.get("train")) for h in history],
                    "validationLosses": [_num(h.get("val")) for h in history],
                    "latenciesInSeconds": _latencies(history),
                },
                "variableStates": row.variable_states,
            },
        }
        if info.get("slidingWindow") is None:
            info["slidingWindow"] = self._window(row)
        return az.AnomalyDetectionModel.model_validate(
            {
                "modelId": row.id,
                "createdTime": row.created_at,
                "lastUpdatedTime": updated,
                "modelInfo": info,
            }
        )

    def _window(self, row: AzureModel) -> int | None:
        with self.db.session() as session:
            model = session.get(Model, row.model_id)
        if model is None or model.active_version is None:
            return None
        _, version = self.registry.get_version(row.id, model.active_version)
        return int(version.window)

    def get_model(self, model_id: str) -> az.AnomalyDetectionModel:
        """A model with its status and training diagnostics."""
        return self._public(self._row(model_id))

    def list_models(self, skip: int, top: int, base: str) -> az.ModelList:
        """A page of models, oldest first, with the link to the next page."""
        with self.db.session() as session:
            count = int(session.scalar(select(func.count()).select_from(AzureModel)) or 0)
            rows = list(
                session.scalars(
                    select(AzureModel)
                    .order_by(AzureModel.created_at, AzureModel.id)
                    .offset(skip)
                    .limit(top)
                )
            )
        link = (
            f"{base}/multivariate/models?skip={skip + top}&top={top}"
            if skip + top < count
            else None
        )
        return az.ModelList(
            models=[self._public(r) for r in rows],
            current_count=count,
            max_count=self.settings.azure_max_models,
            next_link=link,
        )

    async def delete_model(self, model_id: str) -> None:
        """Delete a model with its training job, versions and batch results (through the
        service's one deletion path)."""
        await asyncio.to_thread(self._row, model_id)
        keys = await asyncio.to_thread(self._result_keys, model_id)
        await self.deletion.delete_model(model_id)
        for key in keys:
            await asyncio.to_thread(self.artifacts.delete, key)

    def _result_keys(self, model_id: str) -> list[str]:
        with self.db.session() as session:
            keys = session.scalars(
                select(AzureResult.result_key).where(AzureResult.azure_model_id == model_id)
            )
            return [k for k in keys if k]

    # ------------------------------------------------------------------ detection
    async def _loaded(self, row: AzureModel) -> Any:
        status = self._public(row).model_info.status
        if status != "READY":
            raise AzureError(
                409,
                "ModelNotReady",
                f"model {row.id} is {status}; detection needs a READY model",
            )
        return await self.scoring.resolve(row.id, None)

    def _detect(
        self,
        loaded: Any,
        row: AzureModel,
        frame: pd.DataFrame,
        top: int,
        only_last: bool,
    ) -> list[dict[str, Any]]:
        features = list(loaded.features)
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise AzureError(
                400,
                "InvalidInput",
                f"the data lacks the model's variables {missing[:10]}; the model was trained "
                f"on {features[:20]}",
            )
        frame = frame[features]
        if len(frame) < loaded.window:
            raise AzureError(
                400,
                "InvalidInput",
                f"{len(frame)} timestamps were sent; the model needs at least its sliding "
                f"window of {loaded.window}",
            )
        details = loaded.detector.score_details(frame)
        scores = details.scores.to_numpy(dtype=np.float64)
        shares = details.contributions.to_numpy(dtype=np.float64)
        threshold = float(loaded.threshold)
        train_corr = _corr_lookup(row.correlations)
        values = frame.to_numpy(dtype=np.float64)
        rows = range(len(frame) - 1, len(frame)) if only_last else range(len(frame))
        out: list[dict[str, Any]] = []
        given_corr = 0
        for i in rows:
            stamp = frame.index[i].isoformat()
            score = scores[i]
            if not math.isfinite(score):
                out.append(
                    {
                        "timestamp": stamp,
                        "errors": [
                            {
                                "code": "InsufficientHistoricalData",
                                "message": "no variable was observed here",
                            }
                        ],
                    }
                )
                continue
            normalized = score / threshold if threshold > 0 else 0.0
            anomalous = normalized > 1.0
            total = float(np.nansum(shares[i]))
            order = np.argsort(-np.nan_to_num(shares[i], nan=-np.inf))[:top]
            window = values[max(0, i - loaded.window + 1) : i + 1]
            changed_for = anomalous and given_corr < _MAX_CORRELATION_POINTS
            given_corr += int(changed_for)
            interpretation = []
            for j in order:
                variable = features[j]
                changed = (
                    _changed_correlations(window, features, j, train_corr) if changed_for else []
                )
                interpretation.append(
                    {
                        "variable": variable,
                        "contributionScore": float(shares[i, j] / total) if total > 0 else 0.0,
                        "correlationChanges": {"changedVariables": changed},
                    }
                )
            out.append(
                {
                    "timestamp": stamp,
                    "value": {
                        "isAnomaly": bool(anomalous),
                        "severity": float(normalized / (1 + normalized)) if anomalous else 0.0,
                        "score": float(normalized),
                        "interpretation": interpretation if anomalous else [],
                    },
                    "errors": [],
                }
            )
        return out

    async def detect_last_multivariate(
        self, model_id: str, opts: az.MultivariateLastDetectionOptions
    ) -> az.MultivariateLastDetectionResult:
        """Detect the last timestamp of the values sent (synchronous)."""
        row = await asyncio.to_thread(self._row, model_id)
        loaded = await self._loaded(row)
        frame = _frame_of(opts.variables, self.settings.max_points_per_request)
        states = variable_states(frame)
        filled = fill_frame(frame, row.info.get("alignPolicy"))
        results = await asyncio.to_thread(
            self._detect, loaded, row, filled, opts.top_contributor_count, True
        )
        self.scoring.note_scored(loaded.model_id)
        return az.MultivariateLastDetectionResult.model_validate(
            {"variableStates": states, "results": results}
        )

    async def start_batch(
        self, model_id: str, opts: az.MultivariateBatchDetectionOptions
    ) -> az.MultivariateDetectionResult:
        """Register a batch detection and start it; its result id is returned at once."""
        row = await asyncio.to_thread(self._row, model_id)
        loaded = await self._loaded(row)
        result_id = str(uuid.uuid4())
        setup = opts.model_dump(mode="json", by_alias=True)
        now = utcnow()
        await asyncio.to_thread(self._insert_result, result_id, row.id, setup, now)
        task = asyncio.create_task(self._run_batch(result_id, row, loaded, opts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.to_thread(self.get_result, result_id)

    def _insert_result(
        self, result_id: str, model_id: str, setup: dict[str, Any], now: datetime
    ) -> None:
        with self.db.transaction() as session:
            session.add(
                AzureResult(
                    id=result_id,
                    azure_model_id=model_id,
                    status="CREATED",
                    setup=setup,
                    errors=[],
                    variable_states=[],
                    result_key=None,
                    created_at=now,
                    heartbeat_at=now,
                )
            )
        self._prune_results()

    def _prune_results(self) -> None:
        """Keep the newest ``azure_max_results`` results."""
        with self.db.transaction() as session:
            old = list(
                session.scalars(
                    select(AzureResult)
                    .order_by(AzureResult.created_at.desc(), AzureResult.id)
                    .offset(self.settings.azure_max_results)
                )
            )
            keys = [r.result_key for r in old if r.result_key]
            for r in old:
                session.delete(r)
        for key in keys:
            self.artifacts.delete(key)

    def _update_result(self, result_id: str, **values: Any) -> None:
        with self.db.transaction() as session:
            row = session.get(AzureResult, result_id)
            if row is None:  # deleted with its model meanwhile
                return
            for name, value in values.items():
                setattr(row, name, value)
            row.heartbeat_at = utcnow()

    async def _run_batch(
        self,
        result_id: str,
        row: AzureModel,
        loaded: Any,
        opts: az.MultivariateBatchDetectionOptions,
    ) -> None:
        def work() -> None:
            self._update_result(result_id, status="RUNNING")
            raw = self.read_source(opts.data_source, opts.start_time, opts.end_time)
            self._update_result(result_id, variable_states=variable_states(raw))
            frame = fill_frame(raw, row.info.get("alignPolicy"))
            results = self._detect(loaded, row, frame, opts.top_contributor_count, False)
            key = f"{_RESULTS_PREFIX}/{result_id}.json"
            self.artifacts.put_bytes(key, json.dumps(results).encode())
            self._update_result(result_id, status="READY", result_key=key)

        thread = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            while True:
                done, _ = await asyncio.wait({thread}, timeout=self.settings.job_heartbeat_s)
                if done:
                    thread.result()
                    self.scoring.note_scored(loaded.model_id)
                    return
                await asyncio.to_thread(self._update_result, result_id)
        except Exception as exc:
            message = exc.message if isinstance(exc, ServiceError) else str(exc)
            code = getattr(exc, "code", None) or "DetectionFailed"
            if not isinstance(exc, ServiceError | ValueError):
                logger.exception("batch detection %s failed", result_id)
            await asyncio.to_thread(
                self._update_result,
                result_id,
                status="FAILED",
                errors=[{"code": code, "message": message[:2000]}],
            )

    def get_result(self, result_id: str) -> az.MultivariateDetectionResult:
        """A batch detection: status, and the per-timestamp results once ``READY``."""
        with self.db.session() as session:
            row = session.get(AzureResult, result_id)
        if row is None:
            raise AzureError(
                404, "ResultNotExist", f"no detection result with id {result_id[:64]!r}"
            )
        status, errors = row.status, list(row.errors)
        stale = utcnow() - row.heartbeat_at > timedelta(seconds=self.settings.job_stale_after_s)
        if status in ("CREATED", "RUNNING") and stale:
            status = "FAILED"
            errors = [
                {
                    "code": "DetectionInterrupted",
                    "message": "the server running this detection stopped; submit it again",
                }
            ]
            self._update_result(result_id, status=status, errors=errors)
        results: list[Any] = []
        if status == "READY" and row.result_key:
            results = json.loads(self.artifacts.get_bytes(row.result_key))
        return az.MultivariateDetectionResult.model_validate(
            {
                "resultId": row.id,
                "summary": {
                    "status": status,
                    "errors": errors,
                    "variableStates": row.variable_states,
                    "setupInfo": row.setup,
                },
                "results": results,
            }
        )

    async def close(self) -> None:
        """Wait for running batch detections (they finish their rows)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


# --------------------------------------------------------------------------- helpers


def _sensitivity(opts: az.UnivariateDetectionOptions) -> int:
    return DEFAULT_SENSITIVITY if opts.sensitivity is None else int(opts.sensitivity)


def _ratio(opts: az.UnivariateDetectionOptions) -> float:
    return (
        DEFAULT_MAX_ANOMALY_RATIO
        if opts.max_anomaly_ratio is None
        else float(opts.max_anomaly_ratio)
    )


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return 0.0
    return out if math.isfinite(out) else 0.0


def _latencies(history: list[dict[str, Any]]) -> list[float]:
    """Seconds each epoch took (the history records the time since training started)."""
    ends = [_num(h.get("seconds")) for h in history]
    if not ends:
        return []
    return [round(b - a, 6) for a, b in zip([0.0, *ends[:-1]], ends, strict=True)]


def _frame_of(variables: list[az.VariableValues], max_points: int) -> pd.DataFrame:
    columns: dict[str, pd.Series] = {}
    total = 0
    for v in variables:
        if len(v.timestamps) != len(v.values):
            raise AzureError(
                400,
                "InvalidInput",
                f"variable {v.variable!r} has {len(v.timestamps)} timestamps and "
                f"{len(v.values)} values; send one value per timestamp",
            )
        if v.variable in columns:
            raise AzureError(400, "InvalidInput", f"variable {v.variable!r} is sent twice")
        total += len(v.values)
        if total > max_points:
            raise AzureError(
                400,
                "InvalidInput",
                f"more than {max_points} values were sent (RECONAD_MAX_POINTS_PER_REQUEST)",
            )
        try:
            stamps = parse_timestamps(list(v.timestamps), f"variables[{v.variable}].timestamps")
        except ServiceError as exc:
            raise AzureError(400, "InvalidInput", exc.message) from None
        series = pd.Series(v.values, index=stamps, dtype=np.float64)
        columns[v.variable] = series[~series.index.duplicated(keep="last")]
    frame = pd.DataFrame(columns).sort_index()
    frame.index.name = "timestamp"
    return frame


def _corr_lookup(stored: dict[str, Any]) -> tuple[dict[str, int], np.ndarray]:
    names = {str(n): i for i, n in enumerate(stored.get("variables", []))}
    return names, np.asarray(stored.get("matrix", []), dtype=np.float64)


def _changed_correlations(
    window: np.ndarray,
    features: list[str],
    j: int,
    train: tuple[dict[str, int], np.ndarray],
) -> list[str]:
    """Variables whose correlation with ``features[j]`` over the last window differs from
    the training data's by more than 0.5."""
    names, matrix = train
    if len(window) < 3 or features[j] not in names:
        return []
    x = window[:, j]
    if np.std(x) == 0:
        return []
    changed = []
    for k, other in enumerate(features):
        if k == j or other not in names or np.std(window[:, k]) == 0:
            continue
        now = float(np.corrcoef(x, window[:, k])[0, 1])
        before = float(matrix[names[features[j]], names[other]])
        if math.isfinite(now) and abs(now - before) > _CORRELATION_CHANGE:
            changed.append(other)
    return changed
