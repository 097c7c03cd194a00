"""Dependency aliases, so routes read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security

from common.deps import from_state
from common.openapi import API_KEY
from url_shortener.keys import KeyService
from url_shortener.service import LinkService
from url_shortener.settings import UrlShortenerSettings

LinksDep = Annotated[LinkService, Depends(from_state("links"))]
KeysDep = Annotated[KeyService, Depends(from_state("keys"))]
SettingsDep = Annotated[UrlShortenerSettings, Depends(from_state("settings"))]


async def _owner(keys: KeysDep, api_key: Annotated[str | None, Security(API_KEY)]) -> str:
    return await keys.authenticate(api_key)


# The caller of a management endpoint (checked X-API-Key, the schema's `ApiKey` security
# scheme): "admin" or "key:<id>".
OwnerDep = Annotated[str, Depends(_owner)]
