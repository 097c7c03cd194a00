"""The shortener's domain logic: plain Python over SQL (store), Redis (cache) and the visit
recorder. No FastAPI or HTTP in here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from common.db import transaction
from common.errors import DomainError
from url_shortener import store
from url_shortener.cache import CachedLink, CacheUnavailable, LinkCache, Mode, Outcome
from url_shortener.codes import CodeGenerator
from url_shortener.errors import (
    AliasTaken,
    BadCursor,
    InvalidLink,
    LinkGone,
    LinkNotFound,
    NotProtected,
)
from url_shortener.keys import ADMIN
from url_shortener.passwords import hash_password_async, verify_password_async
from url_shortener.schemas import LinkCreate, LinkUpdate
from url_shortener.settings import UrlShortenerSettings
from url_shortener.store import Link, LinkTag
from url_shortener.targets import check_alias, check_target
from url_shortener.visits import Visitor, VisitRecorder

COUNTER = "links"


def _may_see(owner: str, link: Link) -> bool:
    return owner == ADMIN or link.owner == owner


class Redirect(NamedTuple):
    """What the redirect endpoint needs to answer (one per redirect: a cheap named tuple)."""

    url: str
    status: int
    needs_password: bool = False


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _cached(link: Link) -> CachedLink:
    return CachedLink(
        id=link.id,
        url=link.url,
        status=link.redirect_status,
        max_visits=link.max_visits,
        has_password=link.password_hash is not None,
        expires_at=link.expires_at,
    )


class LinkService:
    def __init__(
        self,
        *,
        settings: UrlShortenerSettings,
        sessions: store.Sessions,
        cache: LinkCache,
        recorder: VisitRecorder,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.cache = cache
        self.recorder = recorder
        self.codes = CodeGenerator(settings.code_secret)
        self._block: range = range(0)
        self._block_pos = 0
        self._block_lock = asyncio.Lock()

    async def start(self) -> None:
        """Create the counter row (idempotent)."""
        async with transaction(self.sessions) as session:
            await store.ensure_counter(session, COUNTER)

    # -- creating -------------------------------------------------------------------------

    async def _next_codes(self, n: int) -> list[str]:
        """Codes for n new links from this instance's block of the counter."""
        out: list[str] = []
        async with self._block_lock:
            while len(out) < n:
                if self._block_pos >= len(self._block):
                    size = max(self.settings.id_block_size, n - len(out))
                    async with transaction(self.sessions) as session:
                        self._block = await store.reserve_block(session, COUNTER, size)
                    self._block_pos = 0
                take = min(n - len(out), len(self._block) - self._block_pos)
                start = self._block_pos
                out.extend(self.codes.code_for(v) for v in self._block[start : start + take])
                self._block_pos += take
        return out

    def _validate(self, data: LinkCreate) -> None:
        check_target(
            data.url,
            own_hosts=self.settings.self_hosts,
            blocked=self.settings.blocked_domains,
            allow_private=self.settings.allow_private_targets,
        )
        if data.alias is not None:
            check_alias(data.alias)
        expires = _aware(data.expires_at)
        if expires is not None and expires <= _now():
            raise InvalidLink("expires_at must be in the future.")

    async def _new_link(self, data: LinkCreate, code: str, owner: str | None) -> Link:
        return Link(
            code=code,
            url=data.url,
            expires_at=_aware(data.expires_at),
            max_visits=data.max_visits,
            redirect_status=data.redirect_status,
            password_hash=await hash_password_async(data.password) if data.password else None,
            owner=owner,
            visits=0,
            tag_rows=[LinkTag(tag=t) for t in sorted(set(data.tags))],
            created_at=_now(),
            updated_at=_now(),
        )

    async def create(self, data: LinkCreate, *, owner: str | None = None) -> Link:
        """Create one link with its alias or a fresh generated code."""
        self._validate(data)
        code = data.alias or (await self._next_codes(1))[0]
        link = await self._new_link(data, code, owner)
        await store.add_links(self.sessions, [link])
        await self.cache.invalidate(code)  # a negative-cache entry for this alias, if any
        return link

    async def create_many(
        self, items: Sequence[tuple[int, LinkCreate]], *, owner: str | None = None
    ) -> list[tuple[int, Link | DomainError]]:
        """Check each (index, parsed item) alone, then insert every valid one in one
        transaction; the outcome of each, by index."""
        outcomes: dict[int, Link | DomainError] = {}
        valid: list[tuple[int, LinkCreate]] = []
        for i, data in items:
            try:
                self._validate(data)
                valid.append((i, data))
            except DomainError as exc:
                outcomes[i] = exc
        aliases = [d.alias for _, d in valid if d.alias]
        async with self.sessions() as session:
            taken = await store.existing_codes(session, aliases)
        seen: set[str] = set()
        to_insert: list[tuple[int, LinkCreate]] = []
        for i, data in valid:
            if data.alias and (data.alias in taken or data.alias in seen):
                outcomes[i] = AliasTaken(f"The alias '{data.alias}' is already taken.")
                continue
            if data.alias:
                seen.add(data.alias)
            to_insert.append((i, data))
        generated = iter(await self._next_codes(sum(1 for _, d in to_insert if not d.alias)))
        links = [
            (i, await self._new_link(d, d.alias or next(generated), owner)) for i, d in to_insert
        ]
        try:
            await store.add_links(self.sessions, [link for _, link in links])
        except AliasTaken:
            # An alias was claimed between our check and the insert: fall back to one by one.
            for i, link in links:
                try:
                    await store.add_links(self.sessions, [link])
                except AliasTaken as exc:
                    outcomes[i] = exc
                    continue
                outcomes[i] = link
        else:
            outcomes.update(dict(links))
        for i, link in links:
            if link.code in seen and outcomes.get(i) is link:
                await self.cache.invalidate(link.code)  # drop negative-cache entries
        return sorted(outcomes.items(), key=lambda item: item[0])

    # -- reading and changing -------------------------------------------------------------

    async def get(self, code: str, *, owner: str = ADMIN) -> Link:
        """A link the caller may see: keys see their own links, the admin key every link.
        Someone else's link is 'not found', so codes cannot be probed through the API."""
        async with self.sessions() as session:
            link = await store.link_by_code(session, code)
        if link is None or not _may_see(owner, link):
            raise LinkNotFound(f"No link has the code '{code}'.")
        return link

    async def page(
        self, *, tag: str | None, cursor: str | None, limit: int, owner: str = ADMIN
    ) -> tuple[list[Link], str | None]:
        try:
            before = store.decode_cursor(cursor) if cursor else None
        except ValueError as exc:
            raise BadCursor("The cursor is not one this API returned.") from exc
        async with self.sessions() as session:
            links = await store.list_links(
                session,
                owner=None if owner == ADMIN else owner,
                tag=tag,
                before_id=before,
                limit=limit + 1,
            )
        more = len(links) > limit
        links = links[:limit]
        return links, (store.encode_cursor(links[-1].id) if more and links else None)

    async def update(self, code: str, data: LinkUpdate, *, owner: str = ADMIN) -> Link:
        fields = data.model_fields_set
        async with transaction(self.sessions) as session:
            link = await store.link_by_code(session, code)
            if link is None or not _may_see(owner, link):
                raise LinkNotFound(f"No link has the code '{code}'.")
            if "url" in fields:
                if data.url is None:
                    raise InvalidLink("url cannot be null.")
                link.url = check_target(
                    data.url,
                    own_hosts=self.settings.self_hosts,
                    blocked=self.settings.blocked_domains,
                    allow_private=self.settings.allow_private_targets,
                )
            if "expires_at" in fields:
                expires = _aware(data.expires_at)
                if expires is not None and expires <= _now():
                    raise InvalidLink("expires_at must be in the future.")
                link.expires_at = expires
            if "max_visits" in fields:
                link.max_visits = data.max_visits
            if "redirect_status" in fields:
                if data.redirect_status is None:
                    raise InvalidLink("redirect_status cannot be null.")
                link.redirect_status = data.redirect_status
            if "password" in fields:
                link.password_hash = (
                    await hash_password_async(data.password) if data.password else None
                )
            if "tags" in fields:
                link.tag_rows = [LinkTag(tag=t) for t in sorted(set(data.tags or []))]
            link.updated_at = _now()
        # Every instance reads the same Redis, so one DEL is seen by all of them at once.
        await self.cache.invalidate(code)
        return link

    async def delete(self, code: str, *, owner: str = ADMIN) -> None:
        async with transaction(self.sessions) as session:
            link = await store.link_by_code(session, code)
            if link is None or not _may_see(owner, link):
                raise LinkNotFound(f"No link has the code '{code}'.")
            await store.delete_link(session, link)
        await self.cache.invalidate(code)

    # -- the redirect path ----------------------------------------------------------------

    async def resolve(self, code: str, *, mode: Mode, visitor: Visitor | None) -> Redirect:
        """Where `code` points; records the visit (and claims it, for max_visits links)
        unless `mode` is LOOK."""
        local = self.cache.local.get(code)
        if local is not None:
            return self._answer_local(code, local, mode, visitor)
        try:
            found = await self.cache.lookup(code, mode, self._load)
        except CacheUnavailable:
            return await self._resolve_sql(code, mode, visitor)
        if found.outcome is Outcome.UNKNOWN:
            raise LinkNotFound(f"No link has the code '{code}'.")
        if found.outcome is Outcome.GONE:
            raise LinkGone(f"The link '{code}' has expired.")
        if found.outcome is Outcome.PASSWORD:
            return Redirect(found.url, found.status, needs_password=True)
        counted = found.limited and await self._claim(code, found.link_id, mode)
        if mode is not Mode.LOOK and visitor is not None:
            self.recorder.record(found.link_id, visitor, counted=counted)
        return Redirect(found.url, found.status)

    async def keep_local_cache_fresh(self) -> None:
        """Background task: hot links are read again before their in-process entry expires
        (`LinkCache.refresh_ahead`), so their redirects never wait for Redis."""
        await self.cache.refresh_ahead(self._load)

    async def _load(self, code: str) -> CachedLink | None:
        """The cache's loader: the link as the redirect needs it, from SQL."""
        async with self.sessions() as session:
            link = await store.link_for_redirect(session, code)
        return None if link is None else _cached(link)

    async def _claim(self, code: str, link_id: int, mode: Mode) -> bool:
        """A max_visits link: take one visit in SQL (or, for LOOK, check one is left).

        The claim is SQL's, never Redis's: a committed UPDATE survives a Redis restart that
        lost its last second of writes, and an instance crash loses no claim it answered
        (README, "Exact visit limits"). True when a visit was taken."""
        async with transaction(self.sessions) as session:
            if mode is Mode.LOOK:
                left = await store.visits_left(session, link_id)
                taken = False
            else:
                taken = await store.claim_visit(session, link_id)
                left = 1 if taken else 0
        if not left:
            raise LinkGone(f"The link '{code}' has no visits left.")
        return taken

    def _answer_local(
        self, code: str, link: CachedLink, mode: Mode, visitor: Visitor | None
    ) -> Redirect:
        """A hit in the in-process cache (links without max_visits only): no I/O at all."""
        if link.expires_at is not None and link.expires_at <= _now():
            raise LinkGone(f"The link '{code}' has expired.")
        if link.has_password and mode is not Mode.UNLOCKED:
            return Redirect(link.url, link.status, needs_password=True)
        if mode is not Mode.LOOK and visitor is not None:
            self.recorder.record(link.id, visitor, counted=False)
        return Redirect(link.url, link.status)

    async def _resolve_sql(self, code: str, mode: Mode, visitor: Visitor | None) -> Redirect:
        """Redis is down: the same answers, straight from SQL (slower, just as exact)."""
        link = await self._load(code)
        if link is None:
            raise LinkNotFound(f"No link has the code '{code}'.")
        if link.expires_at is not None and link.expires_at <= _now():
            raise LinkGone(f"The link '{code}' has expired.")
        if link.has_password and mode is not Mode.UNLOCKED:
            return Redirect(link.url, link.status, needs_password=True)
        counted = link.max_visits is not None and await self._claim(code, link.id, mode)
        if mode is not Mode.LOOK and visitor is not None:
            self.recorder.record(link.id, visitor, counted=counted)
        return Redirect(link.url, link.status)

    async def check_password(self, code: str, password: str) -> bool:
        """True for the right password. An unknown code is LinkNotFound (404), a link with
        no password NotProtected (405): neither is a wrong password."""
        link = await self.get(code)
        if link.password_hash is None:
            raise NotProtected(f"The link '{code}' has no password: follow it with GET.")
        return bool(password) and await verify_password_async(password, link.password_hash)

    # -- analytics ------------------------------------------------------------------------

    async def stats(self, code: str, *, owner: str = ADMIN) -> dict[str, Any]:
        link = await self.get(code, owner=owner)
        async with self.sessions() as session:
            return {"code": code, **await store.visit_stats(session, link.id)}

    async def visits_csv(self, code: str, *, owner: str = ADMIN) -> AsyncIterator[str]:
        link = await self.get(code, owner=owner)

        async def rows() -> AsyncIterator[str]:
            yield "timestamp,referrer_host,browser,is_bot,visitor,user_agent\r\n"
            async with self.sessions() as session:
                async for v in store.iter_visits(session, link.id):
                    yield _csv_row(
                        [
                            v.ts.isoformat(),
                            v.referrer_host or "",
                            v.browser,
                            "true" if v.is_bot else "false",
                            v.visitor,
                            v.user_agent or "",
                        ]
                    )

        return rows()


def _csv_row(values: list[str]) -> str:
    out = []
    for v in values:
        if v[:1] in ("=", "+", "-", "@"):  # no formula injection when opened in a spreadsheet
            v = "'" + v
        if any(c in v for c in ',"\r\n'):
            v = '"' + v.replace('"', '""') + '"'
        out.append(v)
    return ",".join(out) + "\r\n"
