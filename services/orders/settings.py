"""Settings of the orders service (environment prefix `ORDERS_`)."""

from __future__ import annotations

from decimal import Decimal

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class OrdersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore")

    port: int = 8001
    database_url: str = "sqlite+aiosqlite:///var/orders.db"

    #: Where the referrals service answers "is this a member?" (`ORDERS_REFERRALS_URL`).
    referrals_url: str = "http://127.0.0.1:8004"
    #: Where the vouchers service holds vouchers at checkout (`ORDERS_VOUCHERS_URL`).
    vouchers_url: str = "http://127.0.0.1:8003"
    #: RULES 1.1: a merchant's give-back rate r_M lies in [min, max] (2 decimals).
    giveback_rate_min: Decimal = Decimal("0.10")
    giveback_rate_max: Decimal = Decimal("0.20")
