"""ASGI entry point for uvicorn workers: `chat.asgi:create` (a factory)."""

from starlette.applications import Starlette

from chat.app import create_app
from chat.config import Settings


def create() -> Starlette:
    return create_app(Settings.from_env())
