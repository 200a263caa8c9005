"""Alembic environment of the vouchers service (its own database, its own history)."""

from services.vouchers.app import TABLES
from shared.migrations import run_env

run_env(TABLES)
