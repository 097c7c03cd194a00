"""A real Redis Cluster on loopback, for tests and benchmarks.

`RedisClusterProcess(data_dir).start()`: `primaries` primaries with `replicas` replicas each,
every node a `redis-server --cluster-enabled yes` child process on a port the OS picked. The
cluster is made the way `redis-cli --cluster create` makes it (CLUSTER ADDSLOTS, MEET,
REPLICATE), through redis-py, so no `redis-cli` binary is needed. Its `url` is the
`redis+cluster://` form `common.redis.create_redis` takes.

A node can be killed (a crash) and started again: it rejoins from its `nodes.conf`, as a
replica of whoever took its slots over.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.redis_server import RedisLaunchError, RedisProcess, free_port, port_free

SLOTS = 16384
# Before Redis 7 a node's cluster bus is always on its port + 10000.
BUS_OFFSET = 10000


def cluster_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + BUS_OFFSET <= 65535 and port_free(port + BUS_OFFSET):
            return port
    raise RedisLaunchError("found no free port pair for a cluster node")


def _until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except redis.RedisError:
            pass  # a node still starting, or just killed: ask again
        time.sleep(0.05)
    raise RedisLaunchError(f"the cluster did not get there within {timeout}s: {what}")


class RedisClusterProcess:
    """A local Redis Cluster of child processes; `stop()` ends them all."""

    def __init__(
        self,
        data_dir: Path,
        *,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
    ) -> None:
        self.primaries, self.replicas = primaries, replicas
        options = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            # How long a silent primary has before its replica takes over (default 15 s).
            "--cluster-node-timeout", str(node_timeout_ms),
            # A replica's first sync starts at once (Redis 7 waits 5 s for others to join).
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        self.nodes = [
            RedisProcess(port=cluster_port(), data_dir=data_dir / f"node{i}", args=options)
            for i in range(primaries * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """Every node as a startup node: any one that answers gives the client the map."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def client(self, node: RedisProcess) -> redis.Redis:
        """A plain client on one node, that never sends a command twice (CLUSTER ADDSLOTS
        and SET-CONFIG-EPOCH fail when repeated), with room for a busy machine."""
        return redis.Redis(
            port=node.port, socket_timeout=10, decode_responses=True, retry=Retry(NoBackoff(), 0)
        )

    def start(self, timeout: float = 30.0) -> RedisClusterProcess:
        for node in self.nodes:
            node.start()
        clients = [self.client(n) for n in self.nodes]
        try:
            self._create(clients, timeout)
        except BaseException:
            self.stop()
            raise
        finally:
            for c in clients:
                c.close()
        return self

    def _create(self, clients: list[redis.Redis], timeout: float) -> None:
        for epoch, c in enumerate(clients, start=1):
            c.execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)  # distinct, as redis-cli does
        per = SLOTS // self.primaries
        for i, c in enumerate(clients[: self.primaries]):
            end = SLOTS if i == self.primaries - 1 else (i + 1) * per
            c.execute_command("CLUSTER ADDSLOTS", *range(i * per, end))
        for c in clients[1:]:
            c.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
        count = len(clients)

        def everyone_met() -> bool:
            for c in clients:
                known = c.execute_command("CLUSTER NODES").values()  # (parsed by redis-py)
                flags = [node["flags"] for node in known]
                if len(flags) != count or any("handshake" in f or "noaddr" in f for f in flags):
                    return False
            return True

        _until("every node knows every other", everyone_met, timeout)
        ids = [str(c.execute_command("CLUSTER MYID")) for c in clients[: self.primaries]]
        for j, c in enumerate(clients[self.primaries :]):
            c.execute_command("CLUSTER REPLICATE", ids[j % self.primaries])
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running node says the cluster is ok, with `primaries` primaries that
        each have their replicas in sync."""
        running = [n for n in self.nodes if n.proc is not None]

        def healthy() -> bool:
            masters = 0
            for node in running:
                with self.client(node) as c:
                    if c.execute_command("CLUSTER INFO")["cluster_state"] != "ok":
                        return False
                    info = c.info("replication")
                    if info["role"] == "master":
                        masters += 1
                        if info["connected_slaves"] < self.replicas:
                            return False
                    elif info.get("master_link_status") != "up":
                        return False
            return masters == self.primaries

        _until("cluster_state ok, every replica in sync", healthy, timeout)

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Until every replica has every write its primary had when this was called
        (replication is asynchronous: a primary killed before that loses the rest)."""
        targets: list[tuple[RedisProcess, int]] = []
        for node in self.nodes:
            if node.proc is not None:
                with self.client(node) as c:
                    info = c.info("replication")
                    if info["role"] == "master":
                        for i in range(int(info["connected_slaves"])):
                            port = int(info[f"slave{i}"]["port"])
                            replica = next(n for n in self.nodes if n.port == port)
                            targets.append((replica, int(info["master_repl_offset"])))

        def caught_up() -> bool:
            for replica, offset in targets:
                with self.client(replica) as c:
                    if int(c.info("replication")["slave_repl_offset"]) < offset:
                        return False
            return True

        _until("every replica caught up with its primary", caught_up, timeout)

    def primary_for(self, key: str) -> RedisProcess:
        """The node that serves `key`'s slot now."""
        for node in self.nodes:
            if node.proc is None:
                continue
            with self.client(node) as c:
                slot = int(c.execute_command("CLUSTER KEYSLOT", key))
                for start, end, primary, *_ in c.execute_command("CLUSTER SLOTS"):
                    if int(start) <= slot <= int(end):
                        port = int(primary[1])
                        return next(n for n in self.nodes if n.port == port)
        raise RedisLaunchError("no running node to ask")

    def fail_over(self, key: str, timeout: float = 30.0) -> RedisProcess:
        """Kill (SIGKILL) the primary serving `key` and wait until a replica has taken its
        slots over; the killed node, to `restart` later."""
        victim = self.primary_for(key)
        victim.kill()
        _until(
            "a replica took the dead primary's slots",
            lambda: self.primary_for(key) is not victim,
            timeout,
        )
        return victim

    def restart(self, node: RedisProcess, timeout: float = 30.0) -> None:
        """Start a killed node again: it rejoins as a replica of its slots' new primary."""
        node.start()
        self.wait_healthy(timeout)

    def flush(self) -> None:
        """Empty every primary."""
        for node in self.nodes:
            if node.proc is not None:
                with self.client(node) as c:
                    if c.info("replication")["role"] == "master":
                        c.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """`python -m common.redis_cluster_server`: a local cluster to try the services on, under
    `$DATA_DIR/redis-cluster` (made afresh each time), until Ctrl-C."""
    import contextlib
    import os
    import shutil
    import signal

    folder = Path(os.environ.get("DATA_DIR") or ".data") / "redis-cluster"
    shutil.rmtree(folder, ignore_errors=True)  # a node's nodes.conf names an old cluster
    with RedisClusterProcess(folder) as cluster:
        for node in cluster.nodes:
            with cluster.client(node) as c:
                role = c.info("replication")["role"]
            pid = node.proc.pid if node.proc else "-"
            print(f"  {role:7} 127.0.0.1:{node.port}  pid {pid}")
        print(f"\nREDIS_URL={cluster.url} make run-url_shortener")
        print("(kill a primary's pid to watch its replica take over; Ctrl-C stops them all)")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
