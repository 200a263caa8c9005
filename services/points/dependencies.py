"""Request dependencies shared by the points routers (api, settlement_api, audit_api)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from services.points.settings import PointsSettings


def _settings(request: Request) -> PointsSettings:
    return cast(PointsSettings, request.app.state.settings)


#: The app's own settings, typed as the points service's (program parameters included).
PointsSettingsDep = Annotated[PointsSettings, Depends(_settings)]
