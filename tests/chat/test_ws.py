"""The WebSocket protocol over real processes and real sockets: two instances on one Redis."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest

from tests.chat.conftest import SECRET, unique
from tests.chat.factories import Client, auth, http_get, room, user
from tests.support import ServiceProcess

pytestmark = pytest.mark.slow
Pair = tuple[ServiceProcess, ServiceProcess]


async def test_order_dedup_and_multi_device(pair: Pair) -> None:
    a, b = pair[0].url, pair[1].url
    alice, ta = user(a)
    bob, tb = user(a)
    r = room(a, ta, members=[bob])["id"]
    phone, laptop, bobs = (
        await Client.open(a, ta),
        await Client.open(b, ta, via="subprotocol"),
        await Client.open(b, tb),
    )
    for c in (phone, laptop, bobs):
        assert (await c.join(r))["seq"] == 0
    acks = [await phone.say(r, f"hello {i}", client_id=f"c{i}") for i in range(20)]
    assert [x["seq"] for x in acks] == list(range(1, 21))
    # The same client_id again: stored once, acked with the same id and seq.
    again = await phone.say(r, "hello 3 (retry)", client_id="c3")
    assert (again["id"], again["seq"], again["duplicate"]) == (acks[3]["id"], 4, True)
    for c in (phone, laptop, bobs):
        await c.wait_seq(r, 20)
    await bobs.say(r, "after")
    for c in (phone, laptop, bobs):
        await c.wait_seq(r, 21)
        assert c.seqs(r) == list(range(1, 22)), c.seqs(r)
        assert [m["text"] for m in c.messages(r)][:2] == ["hello 0", "hello 1"]
    msg = laptop.messages(r)[0]
    assert {"id", "seq", "user", "text", "ts", "client_id", "room"} <= set(msg)
    assert msg["user"] == alice and msg["client_id"] == "c0"
    for c in (phone, laptop, bobs):
        await c.close()


async def test_concurrent_senders_on_both_instances_stay_gap_free(pair: Pair) -> None:
    a, b = pair[0].url, pair[1].url
    _alice, ta = user(a)
    bob, tb = user(b)
    r = room(a, ta, members=[bob])["id"]
    ca, cb = await Client.open(a, ta), await Client.open(b, tb)
    watcher = await Client.open(b, ta)
    for c in (ca, cb, watcher):
        await c.join(r)

    async def burst(c: Client, who: str) -> list[dict]:
        out = []
        for i in range(15):
            out.append(await c.say(r, f"{who}{i}"))
        return out

    acks = [*await burst(ca, "a"), *[]]
    results = await asyncio.gather(burst(ca, "x"), burst(cb, "y"))
    acks += results[0] + results[1]
    seqs = sorted(x["seq"] for x in acks)
    assert seqs == list(range(1, 46))
    for c in (ca, cb, watcher):
        await c.wait_seq(r, 45)
        assert c.seqs(r) == list(range(1, 46))
    # SQL history is exactly what was acknowledged.
    hist = http_get(
        f"{a}/api/rooms/{r}/messages", params={"after_seq": 0, "limit": 500}, headers=auth(ta)
    ).json()["messages"]
    assert {(m["id"], m["seq"]) for m in hist} == {(x["id"], x["seq"]) for x in acks}
    for c in (ca, cb, watcher):
        await c.close()


async def test_join_after_seq_and_sync_return_exactly_what_was_missed(pair: Pair) -> None:
    a, b = pair[0].url, pair[1].url
    _alice, ta = user(a)
    r = room(a, ta)["id"]
    sender = await Client.open(a, ta)
    await sender.join(r)
    for i in range(5):
        await sender.say(r, f"m{i}")
    late = await Client.open(b, ta)
    joined = await late.join(r, after_seq=2)
    assert joined["seq"] == 5
    await late.wait_type("synced", room=r)
    assert late.seqs(r) == [3, 4, 5]
    await sender.say(r, "live")
    await late.wait_seq(r, 6)
    await late.send(type="sync", room=r, after_seq=4)
    synced = await late.wait(lambda f: f["type"] == "synced" and f["room"] == r and f["seq"] == 6)
    assert synced
    assert late.seqs(r) == [3, 4, 5, 6, 5, 6]  # the replay asked for, in order
    await sender.say(r, "after sync")
    await late.wait_seq(r, 7)
    assert late.seqs(r)[-1] == 7 and late.seqs(r).count(7) == 1
    # A sync of a room not joined is a history read (public room: allowed).
    _bob, tb = user(a)
    reader = await Client.open(a, tb)
    await reader.send(type="sync", room=r, after_seq=5)
    await reader.wait_type("synced", room=r, seq=7)
    assert reader.seqs(r) == [6, 7]
    for c in (sender, late, reader):
        await c.close()


async def test_typing_receipts_edits_and_deletes(pair: Pair) -> None:
    a, b = pair[0].url, pair[1].url
    _alice, ta = user(a)
    bob, tb = user(a)
    r = room(a, ta, members=[bob])["id"]
    ca, cb = await Client.open(a, ta), await Client.open(b, tb)
    await ca.join(r)
    await cb.join(r)
    await cb.send(type="typing", room=r)
    assert (await ca.wait_type("typing", room=r))["user"] == bob
    ack = await ca.say(r, "hi bob")
    # Bob's device received it: a delivered receipt reaches Alice; then his read one.
    await ca.wait_type("receipt", room=r, user=bob, delivered=ack["seq"])
    await cb.send(type="read", room=r, seq=ack["seq"])
    await ca.wait_type("receipt", room=r, user=bob, read=ack["seq"])
    await ca.send(type="edit", room=r, id=ack["id"], text="hi Bob!")
    edited = await cb.wait_type("edited", room=r, id=ack["id"])
    assert edited["text"] == "hi Bob!" and edited["seq"] == ack["seq"]
    # Only the author edits or deletes: Bob gets an error, and the connection stays up.
    await cb.send(type="delete", room=r, id=ack["id"])
    assert (await cb.wait_type("error"))["code"] == "not_found"
    await ca.send(type="delete", room=r, id=ack["id"])
    await cb.wait_type("deleted", room=r, id=ack["id"])
    hist = http_get(f"{a}/api/rooms/{r}/messages", headers=auth(tb)).json()["messages"]
    assert hist[0]["deleted"] and hist[0]["text"] == "" and hist[0]["edited_ts"]
    await ca.send(type="edit", room=r, id=ack["id"], text="too late")
    assert (await ca.wait_type("error"))["code"] == "not_found"
    for c in (ca, cb):
        await c.close()


async def test_presence_across_instances(pair: Pair) -> None:
    a, b = pair[0].url, pair[1].url
    alice, ta = user(a)
    bob, tb = user(a)
    r = room(a, ta)["id"]
    ca = await Client.open(a, ta)
    await ca.join(r)
    await ca.wait(lambda f: f["type"] == "presence" and f["users"] == [alice])
    cb = await Client.open(b, tb)
    await cb.join(r)
    await ca.wait(lambda f: f["type"] == "presence" and f["users"] == sorted([alice, bob]))
    await cb.send(type="leave", room=r)
    await cb.wait_type("left", room=r)
    await ca.wait(lambda f: f["type"] == "presence" and f["users"] == [alice], timeout=5)
    await cb.join(r)
    await ca.wait(lambda f: f["type"] == "presence" and f["users"] == sorted([alice, bob]))
    await cb.close()  # a disconnect counts as leaving
    n = len(ca.frames)
    await ca.wait(lambda f: f["type"] == "presence" and f["users"] == [alice], 5, start=n)
    await ca.close()


async def test_bad_input_gets_error_frames_and_the_connection_stays_up(pair: Pair) -> None:
    a = pair[0].url
    _alice, ta = user(a)
    _bob, tb = user(a)
    secret_room = room(a, tb, private=True)["id"]
    r = room(a, ta)["id"]
    c = await Client.open(a, ta)

    async def expect(raw: str, code: str) -> None:
        n = len(c.frames)
        await c.ws.send(raw)
        err = await c.wait(lambda f: f["type"] == "error", start=n)
        assert err["code"] == code, err

    await expect("{not json", "bad_json")
    await expect("[1, 2]", "invalid")
    await expect(json.dumps({"type": "shout", "room": r}), "unknown_type")
    await expect(json.dumps({"type": "join"}), "invalid")
    await expect(json.dumps({"type": "join", "room": "abc"}), "invalid")
    await expect(
        json.dumps({"type": "send", "room": r, "text": "x", "client_id": "1"}), "not_joined"
    )
    await expect(json.dumps({"type": "join", "room": secret_room}), "not_found")
    await expect(json.dumps({"type": "join", "room": 987654321}), "not_found")
    await expect(json.dumps({"type": "sync", "room": secret_room, "after_seq": 0}), "not_found")
    await expect("x" * 20_000, "too_large")
    await c.join(r)
    await expect(
        json.dumps({"type": "send", "room": r, "text": "y" * 5000, "client_id": "2"}), "invalid"
    )
    await expect(
        json.dumps({"type": "send", "room": r, "text": "   ", "client_id": "3"}), "invalid"
    )
    await c.ws.send(b"binary")
    assert await c.wait(lambda f: f["type"] == "error" and "text" in f["detail"])
    await c.send(type="ping")
    await c.wait_type("pong")
    assert c.closed is None
    await c.close()


def _token(sub: int, name: str, exp: float, secret: str = SECRET) -> str:
    now = int(time.time())
    return jwt.encode({"sub": str(sub), "name": name, "iat": now, "exp": int(exp)}, secret)


async def test_bad_or_expired_tokens_close_with_1008(pair: Pair) -> None:
    a = pair[0].url
    name, token = user(a)
    sub = jwt.decode(token, options={"verify_signature": False})["sub"]
    for bad in (
        "",
        "garbage",
        _token(sub, name, time.time() - 5),
        _token(sub, name, time.time() + 60, secret="another-secret-0123456789-abcdefghij"),
    ):
        c = await Client.open(a, bad) if bad else await Client.open(a, "")
        await asyncio.wait_for(c.ws.wait_closed(), 5)
        await asyncio.sleep(0.05)
        assert c.closed is not None and c.closed[0] == 1008, (bad, c.closed)
    # A token that runs out while connected: closed with 1008 then.
    c = await Client.open(a, _token(sub, name, time.time() + 1.5))
    await c.send(type="ping")
    await c.wait_type("pong")
    await asyncio.wait_for(c.ws.wait_closed(), 5)
    await asyncio.sleep(0.05)
    assert c.closed is not None and c.closed[0] == 1008


async def test_private_rooms_admit_members_only(pair: Pair) -> None:
    a, b = pair[0].url, pair[1].url
    _alice, ta = user(a)
    bob, tb = user(a)
    _eve, te = user(a)
    r = room(a, ta, private=True, members=[bob])["id"]
    cb, ce = await Client.open(b, tb), await Client.open(b, te)
    await cb.join(r)
    await ce.send(type="join", room=r)
    assert (await ce.wait_type("error"))["code"] == "not_found"
    ca = await Client.open(a, ta)
    await ca.join(r)
    await ca.say(r, "members only")
    await cb.wait_seq(r, 1)
    await asyncio.sleep(0.2)
    assert ce.messages(r) == []
    unique("x")
    for c in (ca, cb, ce):
        await c.close()
