"""Alembic environment of the orders service (its own database, its own history)."""

from services.orders.app import TABLES
from shared.migrations import run_env

run_env(TABLES)
