"""Everything one app instance owns, built from its settings: database, stores, services."""

from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import dataclass

import torch

from service.auth import AuthService
from service.data import DataService
from service.db import Database, upgrade_schema
from service.deletion import DeletionService
from service.jobs.runner import JobRunner, create_job_runner
from service.jobs.service import JobService
from service.labels import LabelService
from service.live.service import LiveServices
from service.observability import Metrics
from service.registry import ModelRegistry
from service.schedules import Scheduler, ScheduleService
from service.scoring import ScoringService
from service.settings import Settings
from service.storage import ArtifactStore, HistoryStore, open_stores
from service.ui.series import SeriesService
from service.ui.sessions import ConsoleSessions

__all__ = ["BOOTSTRAP_KEY_FILE", "AppContext"]

#: File in the data dir holding the first admin key (mode 0600).
BOOTSTRAP_KEY_FILE = "bootstrap-admin-key.txt"

logger = logging.getLogger(__name__)


@dataclass
class AppContext:
    """The services of one app; built by :meth:`build`, started and stopped by the lifespan."""

    settings: Settings
    db: Database
    artifacts: ArtifactStore
    history: HistoryStore
    metrics: Metrics
    auth: AuthService
    registry: ModelRegistry
    jobs: JobService
    runner: JobRunner
    schedules: ScheduleService
    scheduler: Scheduler
    scoring: ScoringService
    data: DataService
    deletion: DeletionService
    live: LiveServices
    labels: LabelService
    console: ConsoleSessions
    series: SeriesService

    @classmethod
    def build(cls, settings: Settings) -> AppContext:
        """Create every component (nothing starts running yet)."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.database_url)
        artifacts, history = open_stores(settings, db)
        metrics = Metrics()
        registry = ModelRegistry.for_settings(settings, db, artifacts, history)
        runner = create_job_runner(
            settings, db, sweep=functools.partial(registry.sweep_orphans, shared_workers=True)
        )
        jobs = JobService(
            db,
            registry,
            artifacts,
            history,
            notify=runner.notify,
            max_queued_per_model=settings.max_queued_jobs_per_model,
            max_queued=settings.max_queued_jobs,
            retry_after_s=settings.retry_after_s,
            max_finished_per_model=settings.max_finished_jobs_per_model,
        )
        schedules = ScheduleService(
            db, registry, jobs, metrics, max_per_model=settings.max_schedules_per_model
        )
        scoring = ScoringService(
            registry,
            artifacts,
            metrics,
            device=settings.device,
            cache_size=settings.model_cache_size,
            max_points=settings.max_points_per_request,
            max_values=settings.max_values_per_request,
            batch_max_windows=settings.batch_max_windows,
            batch_wait_s=settings.batch_wait_ms / 1000.0,
            inference_threads=settings.inference_threads,
            meta_ttl_s=settings.model_meta_ttl_s,
            inline_max_cells=settings.inline_inference_max_cells,
            scored_at_resolution_s=settings.scored_at_resolution_s,
            bulk_torch_threads=settings.bulk_torch_threads,
            bulk_torch_min_points=settings.bulk_torch_min_points,
        )
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        metrics.track_jobs(jobs.counts_by_state)
        auth = AuthService(db, settings.auth_cache_ttl_s)
        live = LiveServices.build(settings, db, scoring, history, metrics)
        return cls(
            settings=settings,
            db=db,
            artifacts=artifacts,
            history=history,
            metrics=metrics,
            auth=auth,
            registry=registry,
            jobs=jobs,
            runner=runner,
            schedules=schedules,
            scheduler=Scheduler(schedules, settings.scheduler_interval_s),
            scoring=scoring,
            data=DataService(
                registry, history, settings.max_points_per_request, settings.max_body_bytes
            ),
            deletion=DeletionService(registry, jobs, scoring),
            live=live,
            labels=LabelService(
                db,
                registry,
                settings.max_labels_per_model,
                settings.max_label_import_bytes,
                on_event_verdict=live.streams.refresh_memory,
            ),
            console=ConsoleSessions(
                db, auth, settings.ui_session_ttl_s, settings.ui_max_sessions_per_key
            ),
            series=SeriesService(
                registry,
                history,
                scoring,
                live.events,
                settings.ui_series_cache,
                settings.ui_max_points,
            ),
        )

    def prepare(self) -> None:
        """Migrate the schema, recover from a crash and create the first admin key if needed."""
        upgrade_schema(self.db)
        if self.runner.exclusive:
            # With shared workers, running jobs are not ours: the runner's reaper watches them
            # and its periodic sweep removes the orphans of jobs that ended.
            self.jobs.recover_after_restart()
            self.registry.sweep_orphans()
        if self.settings.bootstrap_admin_key:
            key = self.auth.bootstrap_admin()
            if key is not None:
                self._announce_bootstrap_key(key)

    def _announce_bootstrap_key(self, key: str) -> None:
        """Write the first admin key to a 0600 file in the data dir and print a banner that no
        log line can hide (plain text on stderr, whatever the log format)."""
        path = self.settings.data_dir / BOOTSTRAP_KEY_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(key + "\n")
            os.chmod(path, 0o600)
            saved = f"  It is also saved, readable only by you, in:\n    {path}\n"
        except OSError as exc:
            saved = f"  (It could not be saved to {path}: {exc}.)\n"
        rule = "=" * 78
        banner = (
            f"\n{rule}\n"
            "  ReconAD: no API keys existed, so an ADMIN KEY was created:\n\n"
            f"    {key}\n\n"
            f"{saved}\n"
            "  Use it as 'Authorization: Bearer <key>'. Make more with\n"
            f"    RECONAD_DATA_DIR={self.settings.data_dir} reconad keys create --scope score\n"
            "  or POST /v1/keys; delete the file once the key is stored elsewhere.\n"
            f"{rule}\n\n"
        )
        sys.stderr.write(banner)
        sys.stderr.flush()
        logger.warning(
            "bootstrap admin key created: printed on stderr and saved to %s (mode 0600)", path
        )

    async def start(self) -> None:
        """Start the job runner, the scheduler, the alert dispatcher and the stream flusher."""
        self.runner.start()
        self.scheduler.start()
        self.live.start()

    async def stop(self) -> None:
        """Stop the scheduler, the runner (interrupting running jobs) and the inference pool."""
        await self.scheduler.stop()
        await self.live.stop()
        self.runner.stop()
        self.scoring.close()
        self.db.dispose()
