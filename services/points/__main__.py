"""Run the points service: `python -m services.points`."""

from __future__ import annotations

import uvicorn

from services.points.app import create_app
from services.points.settings import PointsSettings


def main() -> None:
    settings = PointsSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
