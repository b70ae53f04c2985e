"""The HTTP API (FastAPI): submit documents, follow their tasks, read and search the store, health and metrics.

``app.create_app`` builds it; ``background_tasks.api_app`` serves it (the launcher's ``api`` service).
"""
