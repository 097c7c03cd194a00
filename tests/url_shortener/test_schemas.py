"""The schema's constraints and the service's validation agree: what the published pattern
allows is accepted, so a generated client is never refused for a reason it could not see."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from url_shortener.schemas import ALIAS_SCHEMA, URL_SCHEMA
from url_shortener.targets import check_alias, check_target


@settings(max_examples=400, deadline=None)
@given(st.from_regex(URL_SCHEMA["pattern"], fullmatch=True))
def test_every_url_the_schema_allows_is_accepted(url: str) -> None:
    if len(url) <= URL_SCHEMA["maxLength"]:
        # The pattern states the syntax; private addresses are refused by a deployment
        # setting (ALLOW_PRIVATE_TARGETS) a schema cannot state: the 422 says which.
        assert check_target(url, own_hosts=["sho.rt"], blocked=[], allow_private=True) == url


@settings(max_examples=400, deadline=None)
@given(st.from_regex(ALIAS_SCHEMA["pattern"], fullmatch=True))
def test_every_alias_the_schema_allows_is_accepted(alias: str) -> None:
    excluded = any(re.fullmatch(p["pattern"], alias) for p in ALIAS_SCHEMA["not"]["anyOf"])
    if excluded:
        return
    assert check_alias(alias) == alias


def test_the_patterns_refuse_what_the_service_refuses() -> None:
    url = re.compile(URL_SCHEMA["pattern"])
    for refused in ("ftp://a.b", "http://u:p@a.b", "http://a b", "http://a\\b", "http://a:0"):
        assert not url.fullmatch(refused), refused
    for excluded in ("api", "API", "abc1234", "Docs"):
        assert any(re.fullmatch(p["pattern"], excluded) for p in ALIAS_SCHEMA["not"]["anyOf"])
