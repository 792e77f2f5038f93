"""The alert dispatcher: delivers the outbox, a background task in every API replica.

One pass claims due alerts in a short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
replicas never claim the same row; SQLite's ``BEGIN IMMEDIATE`` serialises the claim): each
claimed row gets ``attempts + 1`` and a lease (``next_attempt_at = now + alert_claim_s``). The
deliveries then run outside any transaction, and each result is written back only if the row
still carries this claim's attempt number. A replica killed mid-delivery leaves its rows to
come due again when the lease ends: nothing is lost, and a receiver that had already got the
alert sees the same idempotency key again.

A delivery that fails is retried with exponential backoff (``alert_backoff_s`` doubling up to
``alert_backoff_max_s``, with jitter) until the channel's ``max_attempts``; a 4xx answer other
than 408 and 429 is final at once (the receiver refuses the message, sending it again will not
help). Each channel delivers at most ``rate_limit_per_minute`` alerts a minute: the rest wait
(they are postponed, never dropped). Delivered and given-up alerts of closed events are kept
for ``retention`` (``alert_retention_days``), then :meth:`AlertDispatcher.prune` deletes them
(hourly, with the live path's other housekeeping in :mod:`service.live.service`); pending ones
and those of open events are never deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import delete, func, select, update

from service.db import Database
from service.live.channels import ChannelConfig, sign
from service.tables import Alert, AnomalyEvent, Channel, utcnow

__all__ = ["AlertDispatcher", "Delivery"]

logger = logging.getLogger(__name__)


@dataclass
class Delivery:
    """One claimed alert, with what sending it needs."""

    alert_id: int
    attempt: int
    key: str
    state: str
    kind: str
    config: ChannelConfig
    body: Any


class AlertDispatcher:
    """Claims due alerts, delivers them and records the outcome.

    Parameters
    ----------
    db
        The database holding the outbox.
    poll_interval_s, batch_size, claim_s, backoff_s, backoff_max_s
        See :class:`service.settings.Settings` (``alert_*``).
    retention
        How long delivered and given-up alerts are kept (``alert_retention_days``).
    """

    def __init__(
        self,
        db: Database,
        *,
        poll_interval_s: float,
        batch_size: int,
        claim_s: float,
        backoff_s: float,
        backoff_max_s: float,
        retention: timedelta = timedelta(days=30),
    ) -> None:
        self.db = db
        self.retention = retention
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        self.claim_s = claim_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._starts = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the background loop on the running event loop.

        Starts nest: while the loop runs, another ``start`` (an app's lifespan entered again,
        from another event loop) only counts, and the matching :meth:`stop` only uncounts, so
        one loop on one event loop delivers, and the last ``stop`` ends it.
        """
        self._starts += 1
        if self._task is not None and not self._task.done():
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(follow_redirects=False)
        self._task = self._loop.create_task(self._run(self._wake))

    def notify(self) -> None:
        """Wake the loop now (thread-safe, from any thread or event loop; called after a commit
        queued alerts). After the loop has closed it does nothing: the outbox keeps the alerts
        and the next start delivers them."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # closed between the check and the call
            loop.call_soon_threadsafe(wake.set)

    async def stop(self) -> None:
        """Stop the loop (the last of nested starts); alerts being delivered stay claimed until
        their lease ends."""
        self._starts = max(self._starts - 1, 0)
        if self._starts > 0:
            return
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self, wake: asyncio.Event) -> None:
        while True:
            try:
                busy = await self.run_once()
            except Exception:  # a database hiccup must not end delivery for good
                logger.exception("alert dispatch pass failed")
                busy = 0
            if busy >= self.batch_size:
                continue  # more are due: no pause
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.poll_interval_s)

    def prune(self, now: datetime | None = None) -> int:
        """Delete the alerts created more than :attr:`retention` before ``now`` that were
        delivered or given up, of closed events; return how many. Pending ones stay, however
        old, and so do those of open events: their rows are what keeps an event's
        ``firing`` from being queued twice and lets its ``resolved`` follow
        (:func:`service.live.channels.queue_alerts`); a closed event changes no more."""
        cutoff = (now or utcnow()) - self.retention
        closed = select(AnomalyEvent.id).where(AnomalyEvent.status == "closed")
        with self.db.transaction() as session:
            result = session.execute(
                delete(Alert).where(
                    Alert.status != "pending",
                    Alert.created_at < cutoff,
                    Alert.event_id.in_(closed),
                )
            )
        gone = int(getattr(result, "rowcount", 0) or 0)
        if gone:
            logger.info("old alerts deleted", extra={"alerts": gone})
        return gone

    # ------------------------------------------------------------------ one pass
    async def run_once(self) -> int:
        """Claim and deliver one batch of due alerts; return how many were claimed."""
        claimed = await asyncio.to_thread(self._claim)
        if claimed:
            # One at a time, in claim order (oldest first): an event's "resolved" must never
            # reach a receiver before its "firing", which concurrent sends allowed.
            results = [await self._send(d) for d in claimed]
            await asyncio.to_thread(self._record, list(zip(claimed, results, strict=True)))
        return len(claimed)

    def _claim(self) -> list[Delivery]:
        now = utcnow()
        with self.db.transaction() as session:
            rows = session.execute(
                select(Alert, Channel)
                .join(Channel, Channel.id == Alert.channel_id)
                .where(Alert.status == "pending", Alert.next_attempt_at <= now)
                .order_by(Alert.next_attempt_at, Alert.id)
                .limit(self.batch_size)
                .with_for_update(of=Alert, skip_locked=True)
            ).all()
            if not rows:
                return []
            channel_ids = {ch.id for _, ch in rows}
            minute_ago = now - timedelta(minutes=1)
            sent = dict(
                session.execute(
                    select(Alert.channel_id, func.count())
                    .where(
                        Alert.channel_id.in_(channel_ids),
                        Alert.delivered_at.is_not(None),
                        Alert.delivered_at > minute_ago,
                    )
                    .group_by(Alert.channel_id)
                ).all()
            )
            out: list[Delivery] = []
            lease = now + timedelta(seconds=self.claim_s)
            for alert, channel in rows:
                used = sent.get(channel.id, 0)
                if used >= channel.rate_limit_per_minute:
                    # Over the channel's rate: wait for the minute to move on (never dropped).
                    alert.next_attempt_at = now + timedelta(
                        seconds=60.0 / channel.rate_limit_per_minute
                    )
                    continue
                sent[channel.id] = used + 1
                alert.attempts += 1
                alert.next_attempt_at = lease
                out.append(
                    Delivery(
                        alert_id=alert.id,
                        attempt=alert.attempts,
                        key=alert.idempotency_key,
                        state=alert.state,
                        kind=channel.kind,
                        config=ChannelConfig.model_validate(channel.config),
                        body=alert.payload["body"],
                    )
                )
            return out

    async def _send(self, delivery: Delivery) -> tuple[bool, bool, str | None]:
        """Deliver once; return ``(delivered, retryable, error)``."""
        assert self._client is not None
        config = delivery.config
        body = orjson.dumps(delivery.body)
        headers = {"Content-Type": "application/json", "User-Agent": "reconad-alerts"}
        url = str(config.url)
        if delivery.kind == "webhook":
            assert config.secret is not None
            headers["X-ReconAD-Signature"] = sign(config.secret, body)
            headers["X-ReconAD-Idempotency-Key"] = delivery.key
            headers["X-ReconAD-Event-State"] = delivery.state
        else:
            url = url.rstrip("/") + "/api/v2/alerts"
        try:
            response = await self._client.post(
                url, content=body, headers=headers, timeout=config.timeout_s
            )
        except httpx.HTTPError as exc:
            return False, True, f"{type(exc).__name__}: {exc}"[:1000]
        if 200 <= response.status_code < 300:
            return True, False, None
        error = f"HTTP {response.status_code}: {response.text[:500]}"
        retryable = response.status_code >= 500 or response.status_code in (408, 429)
        return False, retryable, error

    def _record(self, results: list[tuple[Delivery, tuple[bool, bool, str | None]]]) -> None:
        now = utcnow()
        with self.db.transaction() as session:
            for delivery, (delivered, retryable, error) in results:
                mine = (Alert.id == delivery.alert_id, Alert.attempts == delivery.attempt)
                values: dict[str, Any]
                if delivered:
                    values = {"status": "delivered", "delivered_at": now, "last_error": None}
                elif not retryable or delivery.attempt >= delivery.config.max_attempts:
                    values = {"status": "failed", "last_error": error}
                    logger.error(
                        "alert delivery failed for good",
                        extra={"alert_id": delivery.alert_id, "error": error},
                    )
                else:
                    delay = min(self.backoff_s * 2 ** (delivery.attempt - 1), self.backoff_max_s)
                    delay *= random.uniform(0.8, 1.2)
                    values = {
                        "last_error": error,
                        "next_attempt_at": now + timedelta(seconds=delay),
                    }
                    logger.warning(
                        "alert delivery failed; retrying",
                        extra={"alert_id": delivery.alert_id, "error": error, "delay_s": delay},
                    )
                session.execute(update(Alert).where(*mine).values(**values))
