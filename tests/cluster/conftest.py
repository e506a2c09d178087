"""A real Ray cluster on this machine for tests/cluster: a head and a second node, each a
`ray start --block` in its own process group, with token auth, free ports and a private
temp dir. Teardown stops only these processes: never `ray stop`, which would kill every
Ray runtime on the machine (other people's included)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import pytest

PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
              "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port")
HEAD_PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port")
OBJECT_STORE_BYTES = 200 * 1024 * 1024   # tiny jobs; leave the machine's memory to others


def free_ports(n: int) -> List[int]:
    with ExitStack() as stack:  # hold all sockets open so the n ports differ
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


@dataclass
class Node:
    proc: subprocess.Popen
    ports: Dict[str, int]
    log: Path

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['--metrics-export-port']}/metrics"


@dataclass
class LocalCluster:
    """Start with .start_head() / .add_node(); always .stop() (the fixture does)."""

    token: str = field(default_factory=lambda: secrets.token_hex(24))
    # Short: Ray's unix socket paths under the temp dir must stay under 108 characters.
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="prc", dir="/tmp"))
    nodes: List[Node] = field(default_factory=list)

    @property
    def env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
        return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_metrics_report_interval_ms": "1000",   # export every second: tiny jobs are short
                "RAY_raylet_start_wait_time_s": "180"}      # a busy shared machine is slow to register nodes

    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.head.ports['--dashboard-port']}"

    def start_head(self, num_cpus: int) -> None:
        ports = dict(zip(HEAD_PORT_FLAGS + PORT_FLAGS, free_ports(len(HEAD_PORT_FLAGS + PORT_FLAGS))))
        self._start(["--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
                     f"--temp-dir={self.temp_dir}"], ports, num_cpus)
        self._wait(lambda: self._get("/api/version").status_code == 200, "the head's dashboard")

    def add_node(self, num_cpus: int) -> None:
        ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
        self._start([f"--address=127.0.0.1:{self.head.ports['--port']}", "--node-ip-address=127.0.0.1"],
                    ports, num_cpus)
        want = len(self.nodes)
        self._wait(lambda: len(self.alive_node_ids()) >= want, f"{want} alive nodes")

    def alive_node_ids(self) -> List[str]:
        r = self._get("/api/v0/nodes?filter_keys=state&filter_predicates=%3D&filter_values=ALIVE")
        return [n["node_id"] for n in r.json()["data"]["result"]["result"]] if r.status_code == 200 else []

    def _start(self, args: List[str], ports: Dict[str, int], num_cpus: int) -> None:
        log = Path(self.temp_dir) / f"ray-start-{len(self.nodes)}.log"
        cmd = ["ray", "start", "--block", *args, f"--num-cpus={num_cpus}", "--disable-usage-stats",
               f"--object-store-memory={OBJECT_STORE_BYTES}", *(f"{k}={v}" for k, v in ports.items())]
        with open(log, "w") as out:  # own session: its whole process group can be stopped at once
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.nodes.append(Node(proc, ports, log))

    def _get(self, path: str):
        import requests

        return requests.get(self.address + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=5)

    def _wait(self, ready, what: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(n.proc.poll() is not None for n in self.nodes):
                break
            try:
                if ready():
                    return
            except Exception:  # not up yet
                pass
            time.sleep(1)
        logs = "\n".join(n.log.read_text()[-2000:] for n in self.nodes)
        raise RuntimeError(f"Ray did not get ready ({what}) within {timeout_s}s:\n{logs}")

    def stop(self) -> None:
        """SIGTERM each `ray start --block` (it shuts its node down), then kill what is left of
        exactly these nodes: their process groups, descendants, and anything using our temp dir."""
        for node in reversed(self.nodes):
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        _kill(self._leftovers())
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _leftovers(self):
        import psutil

        groups = {n.proc.pid for n in self.nodes}   # start_new_session: pgid == the ray start pid
        found = set()
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                mine = os.getpgid(p.pid) in groups or self.temp_dir in " ".join(p.info["cmdline"] or [])
            except (ProcessLookupError, psutil.Error):
                continue
            if mine:
                found.add(p)
                found.update(_children(p))
        return found


def _children(p):
    import psutil

    try:
        return p.children(recursive=True)
    except psutil.Error:
        return []


def _kill(procs) -> None:
    import psutil

    procs = [p for p in procs if p.pid != os.getpid()]
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


@pytest.fixture(scope="module")
def cluster():
    """Head and a second node, token auth on. Logical CPUs (4 + 3 on 2 real cores) leave Ray Data
    room next to 2 one-CPU workers on either node: with 3 + 2, STRICT_SPREAD runs starved Ray Data's
    read tasks and a 2-step job took minutes."""
    c = LocalCluster()
    try:
        c.start_head(num_cpus=4)
        c.add_node(num_cpus=3)
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster_env(cluster, monkeypatch):
    """This process talks to the cluster like a user would: address + token in the environment."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", cluster.address)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return cluster
