"""What the Streamlit dashboard shows, one module per section; ``ops.dashboard_data`` re-exports them all.

``common`` (errors in plain words, Redis client, sizes), ``live`` (workers,
queues, snapshot, CPU, thresholds), ``history`` (task history, overview,
performance, health samples), ``documents`` (list, search, chunks),
``actions`` (upload, retry, health check, report) and ``logs``; ``common`` also holds the one
colour palette, ``charts`` the Altair charts. ``view``, ``health_view``, ``performance_view``,
``search_view``, ``sources_view`` and ``upload_view`` draw with Streamlit (the page imports them;
nothing else here does).
"""
