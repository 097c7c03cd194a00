"""Dependency aliases, so routes read like prose."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Security

from common.deps import from_state
from common.openapi import API_KEY
from notifications.directory import Directory
from notifications.errors import Unauthorized
from notifications.inbox import Inbox
from notifications.providers_view import ProvidersView
from notifications.service import NotificationService
from notifications.settings import NotificationsSettings

NotificationsDep = Annotated[NotificationService, Depends(from_state("notifications"))]
DirectoryDep = Annotated[Directory, Depends(from_state("directory"))]
InboxDep = Annotated[Inbox, Depends(from_state("inbox"))]
ProvidersDep = Annotated[ProvidersView, Depends(from_state("providers"))]
SettingsDep = Annotated[NotificationsSettings, Depends(from_state("settings"))]


async def _admin(settings: SettingsDep, api_key: Annotated[str | None, Security(API_KEY)]) -> str:
    if not api_key or not hmac.compare_digest(api_key.encode(), settings.admin_key.encode()):
        raise Unauthorized("send the admin key in X-API-Key")
    return "admin"


# Every write: a checked X-API-Key (the schema's `ApiKey` security scheme).
AdminDep = Annotated[str, Depends(_admin)]
