"""Create a service's next Alembic revision from its models.

    python -m scripts.migrations orders "add refunds"

It migrates a scratch SQLite database to the current head and lets Alembic compare it
with the service's tables; review the generated file before committing it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from shared.migrations import alembic_config, upgrade_to_head_sync

ROOT = Path(__file__).resolve().parent.parent


def main(service: str, message: str) -> None:
    migrations_dir = ROOT / "services" / service / "migrations"
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/scratch.db"
        upgrade_to_head_sync(migrations_dir, url)
        command.revision(alembic_config(migrations_dir, url), message=message, autogenerate=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
