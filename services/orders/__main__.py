"""Run the orders service: `python -m services.orders`."""

from __future__ import annotations

import uvicorn

from services.orders.app import create_app
from services.orders.settings import OrdersSettings


def main() -> None:
    settings = OrdersSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
