"""The REST API (aiohttp.web) under /api/v1; see ``app.create_app`` and ``app.running_api``."""

from service.api.app import create_app, running_api, serve_api

__all__ = ["create_app", "running_api", "serve_api"]
