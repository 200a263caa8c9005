"""Run the vouchers service: `python -m services.vouchers`."""

from __future__ import annotations

import uvicorn

from services.vouchers.app import create_app
from services.vouchers.settings import VouchersSettings


def main() -> None:
    settings = VouchersSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
