"""Service configuration: one pydantic-settings class read from ``RECONAD_*`` environment variables.

The app factory builds a :class:`Settings` (``create_app(settings)``); nothing reads the
environment at import time, so tests build apps with their own settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "settings_to_env"]

_ENV_PREFIX = "RECONAD_"


class Settings(BaseSettings):
    """Every knob of the service, with its environment variable ``RECONAD_<NAME>``.

    Paths and URLs left empty are derived from ``data_dir`` after validation.
    """

    model_config = SettingsConfigDict(env_prefix=_ENV_PREFIX, extra="ignore", frozen=True)

    data_dir: Path = Field(
        Path("./reconad-data"),
        description="Folder holding the embedded database, model artifacts and stored history.",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the metadata database "
        "(default: sqlite:///<data_dir>/reconad.db).",
    )
    artifact_url: str = Field(
        "", description="Where model versions are stored (default: <data_dir>/artifacts)."
    )
    history_url: str = Field(
        "", description="Where stored observations live (default: <data_dir>/history)."
    )
    history_max_points: int = Field(
        10_000_000,
        ge=1000,
        le=10_000_000_000,
        description="Rows of stored history each model keeps: once an append takes it an "
        "eighth past this, the oldest rows are dropped back to it (uploads and streamed "
        "points alike).",
    )
    history_max_age_days: float = Field(
        0.0,
        ge=0,
        le=36_500,
        description="Rows of stored history each model keeps no older than this many days "
        "before its newest row (trimmed like history_max_points); 0 keeps them at any age.",
    )
    job_backend: Literal["inprocess", "celery"] = Field(
        "inprocess",
        description="How training jobs run: 'inprocess' = one child process per job of the API "
        "process; 'celery' = on `reconad worker` processes through the broker.",
    )
    broker_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Celery broker (job_backend 'celery'): redis://... or amqp://... (RabbitMQ).",
    )
    s3_endpoint_url: str = Field(
        "",
        description="Endpoint of an S3-compatible store (MinIO) for s3:// artifact and history "
        "URLs; empty: AWS. Credentials come from the usual AWS_* variables.",
    )
    job_heartbeat_s: float = Field(
        5.0, gt=0, le=300, description="How often a running job writes its heartbeat."
    )
    job_stale_after_s: float = Field(
        60.0,
        gt=0,
        description="job_backend 'celery': a running job whose heartbeat is older than this "
        "lost its worker; it is queued again, or failed after job_max_attempts.",
    )
    job_max_attempts: int = Field(
        3, ge=1, le=100, description="job_backend 'celery': runs a job gets before it is failed."
    )
    orphan_sweep_s: float = Field(
        600.0,
        ge=0,
        description="job_backend 'celery': how often each API replica deletes the artifacts that "
        "jobs which ended (failed, lost their worker) published but never registered; 0: never.",
    )
    max_concurrent_jobs: int = Field(
        1, ge=0, le=64, description="Training jobs running at once; 0 keeps jobs queued."
    )
    job_timeout_s: float = Field(
        3600.0, gt=0, description="A training job still running after this is killed and failed."
    )
    job_niceness: int = Field(
        5,
        ge=0,
        le=19,
        description="Added to the nice value of job processes so the API stays responsive.",
    )
    cancel_grace_s: float = Field(
        3.0,
        ge=0,
        description="Seconds a cancelled job gets to stop on its own before it is killed.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Device for scoring and training; 'cpu' forces CPU."
    )
    model_cache_size: int = Field(
        8, ge=1, le=1024, description="Loaded model versions kept in memory (LRU)."
    )
    max_points_per_request: int = Field(
        2_000_000,
        ge=1,
        description="Time points one request may carry (a window of W points counts W); "
        "more is refused with 413.",
    )
    max_values_per_request: int = Field(
        8_000_000,
        ge=1,
        description="Numbers one JSON score body may hold (points times features), counted "
        "before it is parsed (parsed JSON costs about 32 bytes a number); more is a 413.",
    )
    max_body_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest request body in bytes; more is a 413."
    )
    max_model_parameters: int = Field(
        20_000_000,
        ge=1_000,
        description="Most network parameters a model config may ask for (counted from the "
        "config without allocating; about 4 bytes each); larger configs are refused with 422.",
    )
    max_models: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="Models the deployment may hold (Azure-compatible multivariate models "
        "included); creating one more is a 409 until one is deleted.",
    )
    max_versions_per_model: int = Field(
        50,
        ge=2,
        le=100_000,
        description="Versions each model keeps: a new version beyond this deletes the oldest "
        "ones that are not active (their rows and artifacts), so scheduled retraining does "
        "not fill the artifact store.",
    )
    max_finished_jobs_per_model: int = Field(
        500,
        ge=10,
        le=1_000_000,
        description="Finished training jobs each model keeps (with their loss curves and "
        "uploaded data): queuing a job beyond it deletes the oldest finished ones, except "
        "those a schedule or an Azure-compatible model names.",
    )
    max_queued_jobs_per_model: int = Field(
        5, ge=1, le=10_000, description="Queued training jobs one model may have; more get 429."
    )
    max_queued_jobs: int = Field(
        50, ge=1, le=100_000, description="Queued training jobs in total; more get 429."
    )
    retry_after_s: int = Field(
        30, ge=1, le=3600, description="Seconds a 429 answer asks the client to wait (Retry-After)."
    )
    batch_max_windows: int = Field(
        4096, ge=1, description="Most windows scored together in one micro-batch."
    )
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="How long a micro-batch waits for more requests (0: batch whatever queued "
        "while the previous batch ran).",
    )
    inference_threads: int = Field(
        1, ge=1, le=64, description="Threads running model inference for large batches."
    )
    torch_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="Torch intra-op threads of the API process (0: torch's default, one per "
        "core). One keeps small-request latency steady next to the event loop; job processes "
        "always use torch's default.",
    )
    bulk_torch_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="Torch intra-op threads while a series of at least bulk_torch_min_points is "
        "scored (0: the cores this process may use). A long series is one large forward pass that "
        "more threads speed up; small requests keep torch_threads.",
    )
    bulk_torch_min_points: int = Field(
        100_000, ge=1, description="Points of a series from which bulk_torch_threads apply."
    )
    inline_inference_max_cells: int = Field(
        8192,
        ge=0,
        description="Micro-batches of at most this many cells (windows x points x features) run "
        "on the event loop, where they cost less than a thread hop; 0 sends every batch to the "
        "inference threads.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of the service loggers."
    )
    log_json: bool = Field(True, description="One JSON object per log line (False: plain text).")
    public_docs: bool = Field(
        False,
        description="Serve /openapi.json, /docs and /redoc without a key (otherwise "
        "/openapi.json needs one and the HTML docs are off).",
    )
    bootstrap_admin_key: bool = Field(
        True,
        description="On a start with no API keys at all, create an admin key and print it once.",
    )
    scheduler_interval_s: float = Field(
        10.0, gt=0, le=3600, description="How often the scheduler looks for due schedules."
    )
    auth_cache_ttl_s: float = Field(
        5.0,
        ge=0,
        description="Seconds a verified key is trusted before the database is asked again.",
    )
    model_meta_ttl_s: float = Field(
        1.0,
        ge=0,
        description="Seconds a model's active version is cached for scoring (promotions made by "
        "this process apply at once).",
    )
    scored_at_resolution_s: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="A model's last scoring time is written at most once this many seconds per "
        "process (the Models page may show it this much late; 0: on every request).",
    )
    ui_session_ttl_s: float = Field(
        12 * 3600.0,
        gt=0,
        le=30 * 86400,
        description="Console: how long a sign-in lasts before the key must be entered again.",
    )
    ui_max_sessions_per_key: int = Field(
        20,
        ge=1,
        le=10_000,
        description="Console: signed-in browsers per API key; a new sign-in ends the oldest.",
    )
    ui_series_cache: int = Field(
        4,
        ge=1,
        le=256,
        description="Console: scored series (model version x stored history) kept in memory for "
        "zooming; each holds every point of the series.",
    )
    ui_max_points: int = Field(
        2_000_000,
        ge=1000,
        description="Console: most stored points the model page scores; a longer history shows "
        "its latest points (the page says so).",
    )
    stream_max_points_per_request: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Points one stream request may carry (over all series of a batch); more is "
        "a 413.",
    )
    stream_max_series: int = Field(
        100_000, ge=1, description="Live series one model may hold; a new series beyond is a 409."
    )
    stream_dedup_points: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Accepted points per series remembered for duplicate detection: a resent "
        "point among them is skipped, an older or different one at or before the last accepted "
        "point is a 409.",
    )
    stream_cache_size: int = Field(
        20_000,
        ge=1,
        description="Live monitors kept in memory per process (LRU); others are restored from "
        "the database on their next point.",
    )
    stream_batch_max: int = Field(
        256,
        ge=1,
        le=10_000,
        description="Stream requests applied in one database transaction (group commit); 1 "
        "applies each request alone.",
    )
    stream_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="How long the stream batcher waits for more requests before it starts a "
        "batch that is not full (0: it takes what queued while the previous batch ran).",
    )
    stream_queue_max: int = Field(
        4096,
        ge=1,
        le=1_000_000,
        description="Stream requests waiting for a batch; more get 429 with Retry-After.",
    )
    stream_max_buffered_points: int = Field(
        2_000_000,
        ge=1000,
        le=1_000_000_000,
        description="Streamed points that may wait in the database for the stored history "
        "(all models); beyond it, as the last flush counted them, stream requests get 503 "
        "with Retry-After until the history store takes points again.",
    )
    stream_flush_interval_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How often streamed points are appended to the stored history that "
        "retraining reads.",
    )
    gc_freeze_interval_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="reconad serve: how often the objects alive are frozen out of Python's "
        "full garbage collections (service/gc_policy.py: a full collection of a server with "
        "many live series paused every request for 150 ms); 0 keeps the default collector.",
    )
    gc_full_interval_s: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="reconad serve: how often everything is unfrozen and collected in full, "
        "which frees garbage cycles that a freeze held back (one full pause per interval).",
    )
    max_schedules_per_model: int = Field(
        20, ge=1, le=1000, description="Training schedules one model may have; more get 409."
    )
    max_channels_per_model: int = Field(
        20, ge=1, le=1000, description="Notification channels one model may have."
    )
    normal_memory_events: int = Field(
        16,
        ge=1,
        le=256,
        description="Events labelled 'not an anomaly' a live series remembers (the newest); "
        "each adds its points to the series' stored state, written on every stream request.",
    )
    max_labels_per_model: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="Feedback labels one model may hold; more is refused with 409.",
    )
    max_label_import_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest labels CSV one import may send; more is refused with 413.",
    )
    alert_poll_interval_s: float = Field(
        1.0, gt=0, le=300, description="How often the alert dispatcher looks for due alerts."
    )
    alert_batch_size: int = Field(
        100, ge=1, le=10_000, description="Alerts one dispatcher pass claims at most."
    )
    alert_claim_s: float = Field(
        60.0,
        gt=0,
        description="How long a claimed alert is reserved for its dispatcher; a replica that "
        "dies mid-delivery leaves it due again after this.",
    )
    alert_backoff_s: float = Field(
        1.0, gt=0, description="First retry delay of a failed delivery (doubles each attempt)."
    )
    alert_retention_days: float = Field(
        30.0,
        ge=1,
        le=36_500,
        description="How long delivered and given-up alerts of closed events stay listed "
        "before they are deleted (checked hourly); pending alerts and those of open events "
        "are never deleted.",
    )
    alert_backoff_max_s: float = Field(
        300.0, gt=0, description="Longest delay between two delivery attempts."
    )
    public_url: str = Field(
        "",
        max_length=500,
        description="Base URL of this API as receivers reach it (alert links, Alertmanager "
        "generatorURL); empty: links are relative paths.",
    )
    azure_max_series_points: int = Field(
        8640,
        ge=12,
        le=1_000_000,
        description="Azure-compatible API: most points of a univariate series (the old "
        "service's limit); more is refused with 400 InvalidSeries.",
    )
    azure_max_models: int = Field(
        300,
        ge=1,
        description="Azure-compatible API: most multivariate models at once; creating one more "
        "is refused with 409 until one is deleted.",
    )
    azure_max_results: int = Field(
        1000,
        ge=1,
        description="Azure-compatible API: batch detection results kept; older ones are "
        "deleted when a new detection starts.",
    )
    azure_max_files: int = Field(
        100,
        ge=1,
        description="Azure-compatible API: most uploaded data files (PUT .../files/<name>) "
        "kept at once; more is refused with 409 until one is deleted.",
    )
    azure_model_config: str = Field(
        "{}",
        description="Azure-compatible API: detector config (JSON object, the fields of "
        "DetectorConfig) of the models trained through POST multivariate/models; "
        "slidingWindow sets the window.",
    )
    test_promotion_pause_s: float = Field(
        0.0,
        ge=0,
        description="Testing only: sleep inside the promotion transaction (crash-safety tests).",
    )

    @field_validator("azure_model_config")
    @classmethod
    def _detector_config(cls, v: str) -> str:
        from detector import DetectorConfig

        DetectorConfig.model_validate_json(v or "{}")
        return v or "{}"

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @model_validator(mode="after")
    def _check_gc_intervals(self) -> Settings:
        if self.gc_freeze_interval_s > self.gc_full_interval_s:
            raise ValueError(
                "gc_freeze_interval_s must be at most gc_full_interval_s (or 0: no freezing)"
            )
        return self

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        derived: dict[str, Any] = {}
        if not self.database_url:
            derived["database_url"] = f"sqlite:///{self.data_dir / 'reconad.db'}"
        if not self.artifact_url:
            derived["artifact_url"] = str(self.data_dir / "artifacts")
        if not self.history_url:
            derived["history_url"] = str(self.data_dir / "history")
        for key, value in derived.items():
            object.__setattr__(self, key, value)
        return self


def settings_to_env(settings: Settings) -> dict[str, str]:
    """Environment variables that rebuild ``settings`` in a child process.

    Parameters
    ----------
    settings
        The settings to export.

    Returns
    -------
    dict[str, str]
        The current environment plus one ``RECONAD_<NAME>`` variable per field.
    """
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        env[f"{_ENV_PREFIX}{name.upper()}"] = text
    return env
