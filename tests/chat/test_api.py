"""The HTTP API over a real server: accounts, tokens, rooms, DMs, history, presence, and
every documented error as problem+json."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.chat.conftest import unique
from tests.chat.factories import PASSWORD, Client, auth, http_get, room, user
from tests.support import ServiceProcess

pytestmark = pytest.mark.slow
Pair = tuple[ServiceProcess, ServiceProcess]


def problem(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    return resp.json()


def test_accounts_and_tokens(pair: Pair) -> None:
    base = pair[0].url
    name, token = user(base)
    # The same username again: 409.
    problem(httpx.post(f"{base}/api/users", json={"username": name, "password": PASSWORD}), 409)
    # Bad usernames and short passwords: 422.
    problem(httpx.post(f"{base}/api/users", json={"username": "a b", "password": PASSWORD}), 422)
    problem(httpx.post(f"{base}/api/users", json={"username": unique(), "password": "short"}), 422)
    # A wrong password and an unknown user look the same: 401.
    wrong = httpx.post(f"{base}/api/token", json={"username": name, "password": "nope-nope"})
    nobody = httpx.post(f"{base}/api/token", json={"username": unique(), "password": PASSWORD})
    assert problem(wrong, 401)["detail"] == problem(nobody, 401)["detail"]
    # The token works on the other instance (same secret), a tampered one does not.
    other = pair[1].url
    assert httpx.get(f"{other}/api/rooms", headers=auth(token)).status_code == 200
    problem(httpx.get(f"{other}/api/rooms", headers=auth(token[:-2] + "xx")), 401)
    problem(httpx.get(f"{other}/api/rooms"), 401)
    problem(
        httpx.post(
            f"{base}/api/token", content=b"{nope", headers={"content-type": "application/json"}
        ),
        400,
    )


def test_rooms_members_and_privacy(pair: Pair) -> None:
    base = pair[0].url
    alice, ta = user(base)
    bob, tb = user(base)
    carol, tc = user(base)
    public = room(base, ta)
    private = room(base, ta, private=True, members=[bob])
    assert private["members"] == sorted([alice, bob])
    problem(httpx.post(f"{base}/api/rooms", json={"name": public["name"]}, headers=auth(tb)), 409)
    problem(
        httpx.post(
            f"{base}/api/rooms", json={"name": "x", "members": [unique()]}, headers=auth(ta)
        ),
        404,
    )
    # Carol sees neither room among hers, and cannot read the private one (404: no leak).
    mine = httpx.get(f"{base}/api/rooms", headers=auth(tc)).json()["rooms"]
    assert mine == []
    problem(httpx.get(f"{base}/api/rooms/{private['id']}/messages", headers=auth(tc)), 404)
    problem(
        httpx.post(
            f"{base}/api/rooms/{private['id']}/members", json={"users": [carol]}, headers=auth(tc)
        ),
        404,
    )
    # The public room is readable, and listed by name and among public rooms.
    assert (
        httpx.get(f"{base}/api/rooms/{public['id']}/messages", headers=auth(tc)).status_code == 200
    )
    by_name = httpx.get(f"{base}/api/rooms", params={"name": public["name"]}, headers=auth(tc))
    assert by_name.json()["rooms"][0]["id"] == public["id"]
    listed = httpx.get(f"{base}/api/rooms", params={"public": True}, headers=auth(tc)).json()
    assert public["id"] in [r["id"] for r in listed["rooms"]]
    assert private["id"] not in [r["id"] for r in listed["rooms"]]
    # A member adds Carol; now she reads it.
    added = httpx.post(
        f"{base}/api/rooms/{private['id']}/members", json={"users": [carol]}, headers=auth(tb)
    )
    assert added.status_code == 200 and added.json()["members"] == sorted([alice, bob, carol])
    assert (
        httpx.get(f"{base}/api/rooms/{private['id']}/messages", headers=auth(tc)).status_code == 200
    )
    problem(httpx.get(f"{base}/api/rooms/999999/messages", headers=auth(tc)), 404)
    problem(
        httpx.get(
            f"{base}/api/rooms/{public['id']}/messages", params={"limit": 0}, headers=auth(tc)
        ),
        422,
    )


def test_direct_room_is_the_same_every_time(pair: Pair) -> None:
    a, b = pair[0].url, pair[1].url
    alice, ta = user(a)
    bob, tb = user(a)
    first = httpx.post(f"{a}/api/dms", json={"user": bob}, headers=auth(ta))
    again = httpx.post(f"{b}/api/dms", json={"user": alice}, headers=auth(tb))
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"] and first.json()["private"]
    assert first.json()["direct"]
    problem(httpx.post(f"{a}/api/dms", json={"user": alice}, headers=auth(ta)), 422)
    problem(httpx.post(f"{a}/api/dms", json={"user": unique()}, headers=auth(ta)), 404)
    problem(
        httpx.post(
            f"{a}/api/rooms/{first.json()['id']}/members", json={"users": [alice]}, headers=auth(ta)
        ),
        403,
    )


async def test_history_pages_and_unread_counts(pair: Pair) -> None:
    base = pair[0].url
    alice, ta = user(base)
    bob, tb = user(base)
    r = room(base, ta, members=[bob])
    c = await Client.open(base, ta)
    await c.join(r["id"])
    acked = [await c.say(r["id"], f"m{i}") for i in range(12)]
    assert [a["seq"] for a in acked] == list(range(1, 13))
    h = auth(tb)
    page = http_get(f"{base}/api/rooms/{r['id']}/messages", params={"limit": 5}, headers=h).json()
    assert [m["seq"] for m in page["messages"]] == [8, 9, 10, 11, 12]
    assert page["before_seq"] == 8 and page["last_seq"] == 12
    older = http_get(
        f"{base}/api/rooms/{r['id']}/messages", params={"limit": 5, "before_seq": 8}, headers=h
    ).json()
    assert [m["seq"] for m in older["messages"]] == [3, 4, 5, 6, 7]
    after = http_get(
        f"{base}/api/rooms/{r['id']}/messages", params={"after_seq": 10}, headers=h
    ).json()
    assert [(m["seq"], m["text"], m["user"]) for m in after["messages"]] == [
        (11, "m10", alice),
        (12, "m11", alice),
    ]
    # Bob has 12 unread; Alice (the sender) none.
    bobs = http_get(f"{base}/api/rooms", headers=h).json()["rooms"]
    assert [(x["id"], x["unread"]) for x in bobs] == [(r["id"], 12)]
    alices = http_get(f"{base}/api/rooms", headers=auth(ta)).json()["rooms"]
    assert alices[0]["unread"] == 0
    b = await Client.open(base, tb)
    await b.join(r["id"])
    await b.send(type="read", room=r["id"], seq=9)
    await b.wait_type("receipt", user=bob, read=9)
    bobs = http_get(f"{base}/api/rooms", headers=h).json()["rooms"]
    assert bobs[0]["unread"] == 3 and bobs[0]["read_seq"] == 9
    await c.close()
    await b.close()


async def test_presence_endpoint(pair: Pair) -> None:
    base = pair[0].url
    alice, ta = user(base)
    r = room(base, ta)
    url = f"{base}/api/rooms/{r['id']}/presence"
    assert http_get(url, headers=auth(ta)).json()["users"] == []
    c = await Client.open(pair[1].url, ta)
    await c.join(r["id"])
    assert http_get(url, headers=auth(ta)).json() == {"room": r["id"], "users": [alice]}
    await c.close()
    await c.ws.wait_closed()
    for _ in range(50):
        if http_get(url, headers=auth(ta)).json()["users"] == []:
            break
        await asyncio.sleep(0.1)
    assert http_get(url, headers=auth(ta)).json()["users"] == []
