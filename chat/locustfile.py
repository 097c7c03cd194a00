"""Load scenario: many WebSocket users in a few rooms (make load-chat).

Each simulated user makes an account, logs in, opens a WebSocket, joins one of
CHAT_LOAD_ROOMS rooms (default 5) and, now and then, says something. A greenlet per user
reads every frame: each `message` carries the time it was sent, so its fan-out latency
(send to delivery on another member's socket) is reported as the request "fanout"; the
sender's `ack` is reported as "send (ack)". Locust's stats then show the service's
end-to-end delivery percentiles at the number of users held.

    make run-chat     # in one terminal
    make load-chat    # in another (LOAD_USERS, LOAD_TIME; --host or LOCUST_HOST)
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from typing import Any

import gevent
import httpx
from locust import User, between, task
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

ROOMS = int(os.environ.get("CHAT_LOAD_ROOMS", "5"))
PASSWORD = "load-test-password"


class ChatUser(User):
    wait_time = between(1, 3)
    host = os.environ.get("CHAT_URL", "http://127.0.0.1:8003")

    def on_start(self) -> None:
        name = f"load{uuid.uuid4().hex[:12]}"
        with httpx.Client(base_url=self.host, timeout=30) as http:
            http.post("/api/users", json={"username": name, "password": PASSWORD})
            token = http.post("/api/token", json={"username": name, "password": PASSWORD}).json()[
                "access_token"
            ]
            room_name = f"load-{random.randrange(ROOMS)}"
            headers = {"authorization": f"Bearer {token}"}
            found = http.get("/api/rooms", params={"name": room_name}, headers=headers).json()
            if found["rooms"]:
                self.room = found["rooms"][0]["id"]
            else:
                made = http.post("/api/rooms", json={"name": room_name}, headers=headers)
                if made.status_code == 409:  # another user made it first
                    made = http.get("/api/rooms", params={"name": room_name}, headers=headers)
                    self.room = made.json()["rooms"][0]["id"]
                else:
                    self.room = made.json()["id"]
        url = self.host.replace("http", "ws", 1) + f"/ws?token={token}"
        self.ws: ClientConnection = connect(url, proxy=None)
        self.ws.send(json.dumps({"type": "join", "room": self.room}))
        self.sent: dict[str, float] = {}
        self.reader = gevent.spawn(self._read)

    def on_stop(self) -> None:
        self.ws.close()
        self.reader.kill()

    def _report(self, name: str, started: float, length: int, error: Any = None) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.time() - started) * 1000,
            response_length=length,
            exception=error,
            context={},
        )

    def _read(self) -> None:
        try:
            for raw in self.ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "message" and frame.get("client_id") not in self.sent:
                    try:
                        sent_at = float(json.loads(frame["text"])["t"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    self._report("fanout", sent_at, len(raw))
                elif kind == "ack":
                    started = self.sent.pop(frame["client_id"], None)
                    if started is not None:
                        self._report("send (ack)", started, len(raw))
                elif kind == "error":
                    self._report(f"error {frame.get('code')}", time.time(), 0, frame["detail"])
        except ConnectionClosed:
            pass

    @task
    def say(self) -> None:
        client_id = uuid.uuid4().hex
        self.sent[client_id] = time.time()
        text = json.dumps({"t": time.time(), "words": "hello " * random.randint(1, 20)})
        self.ws.send(json.dumps({"type": "send", "room": self.room, "text": text,
                                 "client_id": client_id}))  # fmt: skip

    @task(1)
    def typing(self) -> None:
        self.ws.send(json.dumps({"type": "typing", "room": self.room}))
