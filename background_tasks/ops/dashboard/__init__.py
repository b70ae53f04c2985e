"""What the Streamlit dashboard shows, one module per section; ``ops.dashboard_data`` re-exports them all.

``common`` (errors in plain words, Redis client, sizes), ``live`` (workers,
queues, snapshot, CPU, thresholds), ``history`` (task history, overview,
performance, health samples), ``documents`` (list, search, chunks),
``actions`` (upload, retry, health check, report) and ``logs``.
"""
