"""Settings of the referrals service (environment prefix `REFERRALS_`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.referrals.domain import (
    DEFAULT_BINDING_RATE,
    DEFAULT_INVITE_RATE,
    ReferralProgram,
)
from shared.settings import ServiceSettings

#: A reward rate: a fraction between 0 and 1 with at most 2 decimals (it travels as Amount).
Rate = Annotated[Decimal, Field(ge=0, le=1, decimal_places=2, allow_inf_nan=False)]


class ReferralsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REFERRALS_", extra="ignore")

    port: int = 8004
    database_url: str = "sqlite+aiosqlite:///var/referrals.db"

    # --- the referral program (RULES 1.4, 1.5) ---
    #: RULES 1.4: the bound merchant receives binding_rate x the order's consumer points.
    binding_rate: Rate = DEFAULT_BINDING_RATE
    #: RULES 1.5: the inviter receives invite_rate x the order's cash amount.
    invite_rate: Rate = DEFAULT_INVITE_RATE
    #: RULES 1.5: invite rewards only for orders within this many days of the invitee's
    #: registration; None (the default) means for ever.
    invite_reward_days: int | None = Field(default=None, ge=1)
    #: RULES 1.4: an unbound consumer is bound to the merchant of their first order.
    bind_on_first_order: bool = True

    def program(self) -> ReferralProgram:
        return ReferralProgram(
            binding_rate=self.binding_rate,
            invite_rate=self.invite_rate,
            invite_reward_days=self.invite_reward_days,
            bind_on_first_order=self.bind_on_first_order,
        )
