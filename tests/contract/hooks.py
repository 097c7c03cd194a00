"""Schemathesis hooks for the contract test (loaded by `st run` through `SCHEMATHESIS_HOOKS`).

`refused_only_for_stated_reasons` replaces schemathesis's `positive_data_acceptance`: input
the schema allows must not be refused (400, 415, 422), unless the refusal is one of
`CONTRACT_STATED_REFUSALS` (comma-separated; rules the schema states in words because JSON
Schema cannot say them): a problem type (`invalid-link`), or a problem type and the type of
one of its validation `errors` (`validation-failed:int_type`). Unlike the built-in check, a
410 (a link used up by an earlier case) counts as an answer, like a 404.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

STATED = frozenset(filter(None, os.environ.get("CONTRACT_STATED_REFUSALS", "").split(",")))


@schemathesis.check
def refused_only_for_stated_reasons(ctx: Any, response: Any, case: Any) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 415, 422):
        return None
    try:
        body = response.json()
        kind = str(body.get("type", "")).rpartition("#")[2]
        errors = {str(e.get("type")) for e in body.get("errors", ()) if isinstance(e, dict)}
    except (ValueError, AttributeError, TypeError):
        kind, errors = "", set()
    if kind in STATED or any(f"{kind}:{error}" in STATED for error in errors):
        return None
    raise AssertionError(
        f"Schema-valid input refused ({response.status_code}) for a reason the schema "
        f"does not state: {response.text[:300]}"
    )
