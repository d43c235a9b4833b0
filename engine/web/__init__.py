"""The HTTP side of perpwatch: /metrics, /healthz and the dashboard (extra ``http``)."""
