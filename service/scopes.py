"""The scope every route needs: one table, checked against the running app by a test
(``tests/service/test_svc_scopes.py``) and shown in the README's "Routes and scopes" table.

Scopes are ordered (``admin`` > ``write`` > ``score``). The rules behind the table:

- ``score`` reads and scores: every GET (models, versions, the promotion log, data summaries and
  exports, jobs, schedules, metrics, readiness, the OpenAPI schema and its docs) and scoring;
- ``write`` changes what can be changed back or re-run: models, appended data, jobs, schedules
  (create, pause, resume, run now), promotions and roll-backs, and feedback labels (a newer
  label overrides an older one);
- ``admin`` destroys or grants: every DELETE (a model, a version, a data range, a schedule, a
  label) and API keys. Dropping a data range or a schedule cannot be undone (the rows are gone;
  a deleted schedule silently stops retraining), and write keys are the ones handed to
  ingestion pipelines, so a leaked write key must not be able to erase history;
- ``None``: no key at all (the liveness probe, and the console's sign-in and sign-out).

A route an engineer adds without a row here fails the test, which names the route and this file.
"""

from __future__ import annotations

from service.auth import Scope

__all__ = ["ROUTE_SCOPES"]

#: (method, path template) -> the scope the route needs, or None for no key.
ROUTE_SCOPES: dict[tuple[str, str], Scope | None] = {
    ("GET", "/livez"): None,
    ("GET", "/readyz"): "score",
    ("GET", "/metrics"): "score",
    ("GET", "/openapi.json"): "score",
    ("GET", "/docs"): "score",
    ("GET", "/redoc"): "score",
    ("GET", "/docs/assets/{asset}"): "score",
    ("POST", "/v1/models/{name}/score"): "score",
    ("POST", "/v1/models"): "write",
    ("GET", "/v1/models"): "score",
    ("GET", "/v1/models/{name}"): "score",
    ("PATCH", "/v1/models/{name}"): "write",
    ("DELETE", "/v1/models/{name}"): "admin",
    ("GET", "/v1/models/{name}/versions"): "score",
    ("GET", "/v1/models/{name}/versions/{version}"): "score",
    ("POST", "/v1/models/{name}/versions/{version}/promote"): "write",
    ("DELETE", "/v1/models/{name}/versions/{version}"): "admin",
    ("GET", "/v1/models/{name}/promotions"): "score",
    ("POST", "/v1/models/{name}/rollback"): "write",
    ("POST", "/v1/models/{name}/data"): "write",
    ("POST", "/v1/models/{name}/data/upload"): "write",
    ("GET", "/v1/models/{name}/data"): "score",
    ("GET", "/v1/models/{name}/data/export"): "score",
    ("DELETE", "/v1/models/{name}/data"): "admin",
    ("POST", "/v1/models/{name}/jobs"): "write",
    ("GET", "/v1/models/{name}/jobs"): "score",
    ("GET", "/v1/jobs"): "score",
    ("GET", "/v1/jobs/{job_id}"): "score",
    ("POST", "/v1/jobs/{job_id}/cancel"): "write",
    ("POST", "/v1/jobs/{job_id}/retry"): "write",
    ("POST", "/v1/models/{name}/schedules"): "write",
    ("GET", "/v1/models/{name}/schedules"): "score",
    ("GET", "/v1/schedules"): "score",
    ("GET", "/v1/schedules/{schedule_id}"): "score",
    ("POST", "/v1/schedules/{schedule_id}/pause"): "write",
    ("POST", "/v1/schedules/{schedule_id}/resume"): "write",
    ("POST", "/v1/schedules/{schedule_id}/run"): "write",
    ("DELETE", "/v1/schedules/{schedule_id}"): "admin",
    ("POST", "/v1/keys"): "admin",
    ("GET", "/v1/keys"): "admin",
    ("DELETE", "/v1/keys/{key_id}"): "admin",
    # Live detection (streams, events, channels); their DELETEs drop live state, events or
    # queued alerts, so they take 'admin' like every other DELETE.
    ("POST", "/v1/models/{name}/stream"): "write",
    ("GET", "/v1/models/{name}/streams"): "score",
    ("DELETE", "/v1/models/{name}/streams/{series}"): "admin",
    ("DELETE", "/v1/models/{name}/stream"): "admin",
    ("GET", "/v1/events"): "score",
    ("GET", "/v1/events/{event_id}"): "score",
    ("POST", "/v1/events/{event_id}/acknowledge"): "write",
    ("POST", "/v1/events/{event_id}/label"): "write",
    # Feedback labels: giving them is 'write', reading 'score', deleting 'admin'.
    ("POST", "/v1/models/{name}/labels"): "write",
    ("GET", "/v1/models/{name}/labels"): "score",
    ("POST", "/v1/models/{name}/labels/import"): "write",
    ("GET", "/v1/models/{name}/labels/export"): "score",
    ("GET", "/v1/models/{name}/labels/{label_id}"): "score",
    ("DELETE", "/v1/models/{name}/labels/{label_id}"): "admin",
    ("POST", "/v1/models/{name}/channels"): "write",
    ("GET", "/v1/models/{name}/channels"): "score",
    ("GET", "/v1/models/{name}/channels/{channel_id}"): "score",
    ("PATCH", "/v1/models/{name}/channels/{channel_id}"): "write",
    ("DELETE", "/v1/models/{name}/channels/{channel_id}"): "admin",
    ("GET", "/v1/models/{name}/channels/{channel_id}/alerts"): "score",
    # The console (/ui): a session cookie stands for the key; the same scope as the API route
    # doing the same thing (service/ui/auth.py reads this table; tests/service/test_svc_ui.py
    # checks each row with signed-in browsers of every scope).
    ("GET", "/ui"): None,
    ("GET", "/ui/login"): None,
    ("POST", "/ui/login"): None,
    ("POST", "/ui/logout"): None,
    ("GET", "/ui/models"): "score",
    ("GET", "/ui/models/{name}"): "score",
    ("GET", "/ui/models/{name}/versions"): "score",
    ("GET", "/ui/models/{name}/data"): "score",
    ("GET", "/ui/jobs"): "score",
    ("GET", "/ui/jobs/{job_id}"): "score",
    ("GET", "/ui/schedules"): "score",
    ("GET", "/ui/events"): "score",
    ("POST", "/ui/api/events/{event_id}/acknowledge"): "write",
    ("POST", "/ui/api/events/{event_id}/label"): "write",
    ("GET", "/ui/api/events/{event_id}/plot.svg"): "score",
    ("GET", "/ui/api/models/{name}/series"): "score",
    ("GET", "/ui/api/models/{name}/live"): "score",
    ("GET", "/ui/api/models/{name}/explain"): "score",
    ("GET", "/ui/api/models/{name}/compare"): "score",
    ("GET", "/ui/api/jobs"): "score",
    ("GET", "/ui/api/jobs/{job_id}"): "score",
    ("GET", "/ui/api/schedules/preview"): "score",
    ("POST", "/ui/api/models/{name}/train"): "write",
    ("POST", "/ui/api/jobs/{job_id}/cancel"): "write",
    ("POST", "/ui/api/jobs/{job_id}/retry"): "write",
    ("POST", "/ui/api/models/{name}/versions/{version}/promote"): "write",
    ("POST", "/ui/api/models/{name}/rollback"): "write",
    ("POST", "/ui/api/models/{name}/versions/{version}/delete"): "admin",
    ("POST", "/ui/api/models/{name}/schedules"): "write",
    ("POST", "/ui/api/schedules/{schedule_id}/delete"): "admin",
    ("POST", "/ui/api/schedules/{schedule_id}/{action}"): "write",
    ("POST", "/ui/api/models/{name}/data/{step}"): "write",
}
