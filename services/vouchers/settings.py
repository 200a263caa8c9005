"""Settings of the vouchers service (environment prefix `VOUCHERS_`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class VouchersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VOUCHERS_", extra="ignore")

    port: int = 8003
    database_url: str = "sqlite+aiosqlite:///var/vouchers.db"
    #: RULES 1.6: a checkout hold nobody captures or releases is released after this long.
    hold_ttl_seconds: int = Field(default=900, gt=0)
    #: How often the background job looks for expired holds.
    hold_sweep_seconds: float = Field(default=5.0, gt=0)
    #: At most this many expired holds are released per sweep transaction.
    hold_sweep_batch: int = Field(default=500, gt=0)
