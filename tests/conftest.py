"""Real parts for every test: a private redis-server per session, SQL on SQLite and (when
`TEST_DATABASE_URL` is set) PostgreSQL, and real service processes on free ports.

`make test` runs the tests on several pytest-xdist workers (`--dist loadgroup`); each worker
is a session of its own, so each has its own redis-server, Redis Cluster and temporary
folders, and every SQL database is a file or schema of its own. What the workers do share is
placed by `pytest_collection_modifyitems` below: a module's tests stay on one worker, and
every module that runs on RabbitMQ (one vhost for all) on the same one."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis

from common.celery_workers import CeleryWorker
from common.redis_cluster_server import RedisClusterProcess
from common.redis_server import RedisProcess
from tests.browser import browsers
from tests.support import Databases, RabbitVhost, ServiceProcess

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")

# The xdist group of every module with a test on RabbitMQ: its queues (the task queue's
# "default", "cpu", "io") and Celery's broadcast exchanges are shared by all on one vhost,
# so two such modules must never run at once. (With `rabbitmqctl` each session has a vhost
# of its own, `amqp_url`; the group is what keeps them apart where it cannot be made.)
RABBITMQ_GROUP = "rabbitmq"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Place the tests for `--dist loadgroup` (make test; a serial run ignores the marks).
    A test that takes a module-scoped fixture (a module's stack, its databases) is grouped
    with its module, so that fixture starts once, on one worker; every module that runs a
    test on RabbitMQ (a parameter "amqp": `broker_url`, the task queue's broker stacks) is
    one group, run on one worker module after module; any other test goes to whichever
    worker is free. A test's own `xdist_group` mark wins."""
    on_rabbitmq = {item.path for item in items if _runs_on_rabbitmq(item)}
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        if item.path in on_rabbitmq:
            item.add_marker(pytest.mark.xdist_group(RABBITMQ_GROUP))
        elif _shares_module_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def _runs_on_rabbitmq(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "amqp" in callspec.params.values()


def _shares_module_fixtures(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        definition.scope in ("class", "module", "package")
        for definitions in info.name2fixturedefs.values()
        for definition in definitions
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One private redis-server for the session, on a port the OS picked."""
    server = RedisProcess(data_dir=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """The session's Redis, emptied before the test."""
    with sync_redis.Redis.from_url(redis_server.url) as r:
        r.flushall()
    return redis_server.url


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisProcess]]:
    """Private servers a test may stop and start again (failure tests); all stopped after."""
    started: list[RedisProcess] = []

    def make(**kwargs: object) -> RedisProcess:
        server = RedisProcess(data_dir=tmp_path / f"redis{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


def _database_params() -> list[str]:
    return ["sqlite", "postgresql"] if TEST_DATABASE_URL else ["sqlite"]


@pytest.fixture(params=_database_params())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh schema in the PostgreSQL under test."""
    databases = Databases(request.param, tmp_path)
    yield databases.new()
    databases.drop_all()


@pytest.fixture(scope="module", params=_database_params())
def module_databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Databases]:
    """A module's source of fresh databases (SQLite, then PostgreSQL when it is configured):
    one per stack, since a stack's scheduler must never see another stack's rows (it would
    send them to its own broker, where that stack's Redis and limits do not apply)."""
    databases = Databases(request.param, tmp_path_factory.mktemp("db"))
    yield databases
    databases.drop_all()


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start `python -m <module>` processes with the given env; all stopped after the test."""
    procs: list[ServiceProcess] = []

    def start(module: str, env: dict[str, str], env_prefix: str | None = None) -> ServiceProcess:
        log_path = tmp_path / f"{module}-{len(procs)}.log"
        proc = ServiceProcess(module, env, log_path=log_path, env_prefix=env_prefix)
        procs.append(proc)
        return proc.start()

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def browser_factory() -> Iterator[Callable[[], Any]]:
    """Independent headless Chromium sessions (tests/browser.py); all closed after the test."""
    with browsers() as make:
        yield make


@pytest.fixture
def browser(browser_factory: Callable[[], Any]) -> Any:
    """One headless Chromium session (a Selenium WebDriver)."""
    return browser_factory()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    """One real Redis Cluster for the session: three primaries, one replica each, on ports
    the OS picked (~2 s to make). Tests that kill nodes make their own (`RedisClusterProcess`)."""
    # Nothing is killed here: a long node timeout, so a starved node is never failed over.
    folder = tmp_path_factory.mktemp("redis-cluster")
    cluster = RedisClusterProcess(folder, node_timeout_ms=15_000).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterProcess) -> str:
    """The session's cluster (a `redis+cluster://` URL naming every node), emptied first."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(params=["standalone", "cluster"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """The session's Redis, then the session's Redis Cluster: for the end-to-end tests that
    must hold on both (each service's multi-instance and exactness tests)."""
    name = "redis_url" if request.param == "standalone" else "redis_cluster_url"
    return str(request.getfixturevalue(name))


TEST_AMQP_URL = os.environ.get("TEST_AMQP_URL")


def _broker_params() -> list[str]:
    return ["redis", "amqp"] if TEST_AMQP_URL else ["redis"]


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """`TEST_AMQP_URL` on a vhost of this session's own (each xdist worker is a session),
    deleted at the end, when `rabbitmqctl` can make one (a RabbitMQ on this machine, as on
    CI); else `TEST_AMQP_URL` as it is, where the `rabbitmq` group keeps this run's modules
    apart (but not another run's on the same server)."""
    assert TEST_AMQP_URL
    vhost = RabbitVhost(TEST_AMQP_URL)
    yield vhost.create() or TEST_AMQP_URL
    vhost.delete()


@pytest.fixture(params=_broker_params())
def broker_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    """The Celery broker under test: the test Redis, and RabbitMQ too when `TEST_AMQP_URL`
    is set (`amqp_url`: the session's own vhost; each test's queue names are its own)."""
    if request.param == "redis":
        return redis_url
    return str(request.getfixturevalue("amqp_url"))


@pytest.fixture
def celery_worker_factory(tmp_path: Path) -> Iterator[Callable[..., CeleryWorker]]:
    """Start real `celery worker` processes (prefork); each returns once it consumes; all
    stopped after the test. `make(argv, env, broker_url=..., concurrency=2, queues=None,
    module=None)`: see common/celery_workers.py."""
    started: list[CeleryWorker] = []

    def make(argv: list[str], env: dict[str, str], **kwargs: object) -> CeleryWorker:
        worker = CeleryWorker(
            argv,
            env,
            log_path=tmp_path / f"worker{len(started)}.log",
            **kwargs,  # type: ignore[arg-type]
        )
        started.append(worker)
        return worker.start()

    yield make
    for worker in started:
        worker.stop()
