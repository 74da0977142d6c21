"""A real Redis Cluster for the tests: six redis-server processes on free ports (3 primaries,
3 replicas), joined by `redis-cli --cluster create`, that the tests may SIGKILL a primary of."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis
from redis.crc import key_slot

from .redis_server import RedisServer
from .servers import free_port

# A failover takes cluster-node-timeout plus an election: 3-5 s here (../shared/FACTS.md).
NODE_TIMEOUT_MS = 2000


class RedisClusterServers:
    def __init__(self, data_dir: Path, primaries: int = 3, replicas_each: int = 1) -> None:
        self.data_dir = data_dir
        self.replicas_each = replicas_each
        self.nodes = [
            RedisServer(
                data_dir / f"node{n}",
                appendfsync=None,
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(data_dir / f"node{n}" / "nodes.conf"),
                    "--cluster-port",  # port + 10000 by default: past 65535 for a high free port
                    str(free_port()),
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    # Healthy shards keep serving while one fails over (../shared/FACTS.md).
                    "--cluster-require-full-coverage",
                    "no",
                    # A replica may take over however long ago it last heard its primary (a
                    # loaded machine delays that); the tests measure failover, not data age.
                    "--cluster-replica-validity-factor",
                    "0",
                ],
            )
            for n in range(primaries * (1 + replicas_each))
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 30.0) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("the Redis Cluster tests need redis-cli (apt-get install redis-tools)")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas_each), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self.wait_until_ok(timeout)
        return self

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok and sees every slot served (the gossip
        that spreads the configuration has no event to wait on: this polls)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(self._node_is_ok(node) for node in self.live_nodes()):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become ok")
            time.sleep(0.1)

    def wait_for_failover(self, dead: RedisServer, timeout: float = 60.0) -> None:
        """Until a replica serves every slot the dead primary served, as every live node sees it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                owners = set()
                for node in self.live_nodes():
                    with node.client() as client:
                        owners |= {int(owner[1]) for _s, _e, owner, *_r in client.execute_command("CLUSTER", "SLOTS")}
                if dead.port not in owners and all(self._node_is_ok(node) for node in self.live_nodes()):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                with self.live_nodes()[0].client() as client:
                    view = client.execute_command("CLUSTER", "NODES").decode()
                raise RuntimeError(f"no replica took over from {dead.port}:\n{view}")
            time.sleep(0.1)

    def _node_is_ok(self, node: RedisServer) -> bool:
        """The cluster is ok as this node sees it, and as a replica it has synced with its
        primary (a replica that never did cannot take over)."""
        with node.client() as client:
            info = client.execute_command("CLUSTER", "INFO").decode()
            slots = client.execute_command("CLUSTER", "SLOTS")
            replication = client.info("replication")
        served = sum(int(end) - int(start) + 1 for start, end, *_ in slots)
        synced = replication["role"] == "master" or replication.get("master_link_status") == "up"
        return "cluster_state:ok" in info and served == 16384 and synced

    def live_nodes(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None and node.process.poll() is None]

    def primaries(self) -> list[RedisServer]:
        primaries = []
        for node in self.live_nodes():
            with node.client() as client:
                if client.info("replication")["role"] == "master":
                    primaries.append(node)
        return primaries

    def primary_for(self, key: str) -> RedisServer:
        """The primary that serves key's slot now, as a live node sees it."""
        slot = key_slot(key.encode())
        with self.live_nodes()[0].client() as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        for start, end, (_host, port, *_id), *_replicas in ranges:
            if int(start) <= slot <= int(end):
                return next(node for node in self.nodes if node.port == int(port))
        raise LookupError(f"no primary serves slot {slot}")

    def move_slot(self, key: str, to: RedisServer) -> None:
        """Move key's slot, keys and all, to another primary, as `redis-cli --cluster reshard`
        does for each slot it moves."""
        slot = key_slot(key.encode())
        source = self.primary_for(key)
        with source.client() as src, to.client() as dst:
            source_id = src.execute_command("CLUSTER", "MYID").decode()
            target_id = dst.execute_command("CLUSTER", "MYID").decode()
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
            dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for node in self.primaries():
            if node not in (source, to):
                with node.client() as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def flushall(self) -> None:
        for node in self.primaries():
            with node.client() as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
