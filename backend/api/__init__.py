"""The HTTP API (FastAPI): authentication with roles, read-only views and the kill switch.

``create_app(settings)`` builds the application; ``python -m backend.api`` serves it with
uvicorn. See docs/api.md.
"""

from backend.api.app import create_app

__all__ = ["create_app"]
