from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.referrals.support import Service, running_service


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[Service]:
    """The referrals service with the RULES defaults, on SQLite and on PostgreSQL."""
    async with running_service(database_url) as running:
        yield running
