"""Alembic environment of the referrals service (its own database, its own history)."""

from services.referrals.app import TABLES
from shared.migrations import run_env

run_env(TABLES)
