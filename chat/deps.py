"""Dependency aliases, so routes read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chat.service import AccountService, Caller, ChatService
from common.deps import from_state

AccountsDep = Annotated[AccountService, Depends(from_state("accounts"))]
ChatDep = Annotated[ChatService, Depends(from_state("chat"))]

_bearer = HTTPBearer(auto_error=False, description="A token from POST /api/token.")


async def _caller(
    accounts: AccountsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    return accounts.authenticate(credentials.credentials if credentials else None)


# The user a request acts for (a verified bearer token); 401 problem+json otherwise.
CallerDep = Annotated[Caller, Depends(_caller)]
