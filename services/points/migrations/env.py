"""Alembic environment of the points service (its own database, its own history)."""

from services.points.app import TABLES
from shared.migrations import run_env

run_env(TABLES)
