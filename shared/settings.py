"""Service settings (pydantic-settings), one environment prefix per service.

The development defaults let `make run` work on a fresh machine; with `ENV=production`
(e.g. `ORDERS_ENV=production`) the development admin credential and signing secret are
refused, so a production deployment cannot start with a secret that is printed in the
README.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_ADMIN_TOKEN = "dev-admin-token"
DEV_JWT_SECRET = "dev-jwt-secret-change-me-in-production-0123456789"


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses set `env_prefix` (e.g. ``ORDERS_``)."""

    model_config = SettingsConfigDict(extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    #: SQLite under var/ by default; PostgreSQL with postgresql+asyncpg://...
    database_url: str = "sqlite+aiosqlite:///var/service.db"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    #: Turn off to run the HTTP API alone (tests that drive handlers directly).
    kafka_enabled: bool = True
    admin_token: str = DEV_ADMIN_TOKEN
    jwt_secret: str = DEV_JWT_SECRET
    member_token_ttl_days: int = 30
    #: A failing event is retried this many times before it goes to the dead-letter topic.
    consumer_max_attempts: int = 5
    kafka_session_timeout_ms: int = 10_000
    outbox_batch_size: int = 500
    outbox_poll_seconds: float = 0.2

    @model_validator(mode="after")
    def _refuse_development_secrets_in_production(self) -> Self:
        if self.env == "production":
            if self.admin_token == DEV_ADMIN_TOKEN:
                raise ValueError("the development admin token must not be used in production")
            if self.jwt_secret == DEV_JWT_SECRET or len(self.jwt_secret) < 32:
                raise ValueError("set a jwt_secret of at least 32 characters for production")
        return self
