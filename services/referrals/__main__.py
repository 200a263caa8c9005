"""Run the referrals service: `python -m services.referrals`."""

from __future__ import annotations

import uvicorn

from services.referrals.app import create_app
from services.referrals.settings import ReferralsSettings


def main() -> None:
    settings = ReferralsSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
