"""Live detection in the service: stream states, anomaly events, notification channels and the
alert outbox with its dispatcher.

- :mod:`service.live.monitoring`: the one place that calls the detector library's monitor.
- :mod:`service.live.streams`: the stream endpoint's service (state per model and series).
- :mod:`service.live.events`: listing, showing and acknowledging events; event counts.
- :mod:`service.live.channels`: notification channels and the alert payloads they send.
- :mod:`service.live.dispatcher`: the outbox dispatcher that delivers alerts.
"""
