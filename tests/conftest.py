"""Fixtures shared by every tier, and the tiers themselves: the markers pyproject.toml registers,
put on each test here so that a new test file lands in the right tier without a line of its own.

    e2e      tests/e2e: real Chromium against real servers
    faults   tests/faults: clusters of instances, Redis killed, links blackholed
    slow     a test that starts real server processes (the start_server fixture), or is marked so

`make test` runs everything; `make test-fast` only what none of these mark (in-process, seconds).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from server.app import create_app
from server.settings import Settings

from .postgres_server import PostgresServer
from .redis_cluster import RedisClusterServers
from .redis_server import RedisServer
from .servers import LOCAL_STORY, ROOT, ServerProcess
from .visitors import PASSWORD, Visitor, login

TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = {"e2e": pytest.mark.e2e, "faults": pytest.mark.faults}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0]
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])
        # A uvicorn process costs about a second to start on this kind of machine, more when busy.
        if "start_server" in item.fixturenames:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """One redis-server for the tests that only need a Redis; fault tests start their own."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> Iterator[RedisClusterServers]:
    """One 6-node Redis Cluster (3 primaries, 3 replicas) for the tests that only need one; the
    fault tests that kill a node start their own."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the tests that only need a database; each takes a fresh one."""
    server = PostgresServer().init()
    yield server
    server.remove()


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database on the shared cluster, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        content_dir=ROOT / "content",
        secret_key="test-secret-key",
        password_hash_profile="CHEAPEST",
    )


@pytest.fixture
def local_story(tmp_path: Path) -> Path:
    """A content folder with one short French story and no seed comments (servers.LOCAL_STORY)."""
    content = tmp_path / "local-story"
    content.mkdir()
    (content / "budget.txt").write_text(LOCAL_STORY)
    return content


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app in-process (Starlette's TestClient), on the embedded backend."""
    with TestClient(create_app(settings), base_url="http://testserver") as test_client:
        yield test_client


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """Factory: start_server(**env) -> a running ServerProcess; all are stopped at the end."""
    started: list[ServerProcess] = []

    def start(
        data_dir: Path | None = None, content_dir: Path | None = None, workers: int = 1, **env: str
    ) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / f"server{len(started)}", content_dir, workers, **env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server) -> ServerProcess:
    return start_server()


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    """The app in-process with a moderator, alice, for visitors to share."""
    app = create_app(settings)
    with TestClient(app, base_url="http://testserver") as test_client:
        test_client.portal.call(app.state.moderation.create_moderator, "alice", PASSWORD)
        yield test_client


@pytest.fixture
def new_visitor(app_client: TestClient):
    """new_visitor() -> a new visitor, with no cookies yet."""
    return lambda: Visitor(app_client)


@pytest.fixture
def moderator(new_visitor) -> Visitor:
    alice = new_visitor()
    assert login(alice).status_code == 303
    return alice


@pytest.fixture
def reader(new_visitor) -> Visitor:
    return new_visitor()
