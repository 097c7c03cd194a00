"""Dependency aliases, so routes read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from url_shortener.service import KeyService, LinkService
from url_shortener.settings import UrlShortenerSettings


async def _links(request: Request) -> LinkService:
    service: LinkService = request.app.state.links
    return service


async def _keys(request: Request) -> KeyService:
    service: KeyService = request.app.state.keys
    return service


async def _settings(request: Request) -> UrlShortenerSettings:
    settings: UrlShortenerSettings = request.app.state.settings
    return settings


LinksDep = Annotated[LinkService, Depends(_links)]
KeysDep = Annotated[KeyService, Depends(_keys)]
SettingsDep = Annotated[UrlShortenerSettings, Depends(_settings)]


async def _owner(keys: KeysDep, x_api_key: Annotated[str | None, Header()] = None) -> str:
    return await keys.authenticate(x_api_key)


# The caller of a management endpoint (checked X-API-Key): "admin" or "key:<id>".
OwnerDep = Annotated[str, Depends(_owner)]
