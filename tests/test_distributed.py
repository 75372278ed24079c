"""socmap map against a real Dask cluster: `dask scheduler` + two `dask worker` processes on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from socmap import store as S

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    dask = shutil.which("dask", path=str(BIN)) or "dask"
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = []
    logs = tmp_path / "dask-logs"
    logs.mkdir()

    def start(args, name):
        fh = open(logs / f"{name}.log", "w")
        procs.append((subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path), fh))

    try:
        start([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], "scheduler")
        for i in range(2):
            start([dask, "worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
                   "--no-dashboard", "--name", f"w{i}", "--local-directory", str(tmp_path / f"w{i}")], f"worker{i}")
        from distributed import Client

        deadline = time.time() + 60
        client = None
        while client is None:
            try:
                client = Client(address, timeout="2s", set_as_default=False)
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        client.wait_for_workers(2, timeout=60)
        client.close()
        yield address
    finally:
        for p, fh in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p, fh in reversed(procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
            fh.close()


def test_map_on_dask_cluster_equals_local_run(dask_cluster, run_copy, main_store, map_chunks):
    run = run_copy("distributed")
    cmd = [str(BIN / "socmap"), "map", "--run", str(run), "--chunks", str(map_chunks), "--scheduler", dask_cluster]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "cells/s" in res.stdout
    ds = S.open_store(run).load()
    assert set(ds.data_vars) == set(main_store.data_vars)
    for k in ds.data_vars:
        a, b = ds[k].values, main_store[k].values
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-6, equal_nan=True, err_msg=k)
        else:
            np.testing.assert_array_equal(a, b, err_msg=k)
    import json

    rec = json.loads((run / "map.json").read_text())
    assert rec["arguments"]["scheduler"] == dask_cluster and rec["complete"]


def test_unreachable_scheduler_is_a_clear_error(run_copy):
    run = run_copy("unreachable")
    port = _free_port()  # nothing listens there
    t0 = time.time()
    res = subprocess.run([str(BIN / "socmap"), "map", "--run", str(run), "--scheduler", f"tcp://127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=120)
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2, out
    assert "cannot reach the Dask scheduler" in out
    assert time.time() - t0 < 60
    assert not (run / "maps.zarr").exists() and not (run / "maps.zarr.partial").exists()
    from socmap.mapping import MappingError, map_run

    with pytest.raises(MappingError, match="not a Dask scheduler address"):
        map_run(run, scheduler="localhost:1", progress=False)


def test_local_cluster_workers_run_on_one_malloc_arena(monkeypatch):
    """connect() spawns its local workers with MALLOC_ARENA_MAX=1 (socmap.allocator.worker_environ)."""
    import os

    from socmap.cluster import connect

    monkeypatch.delenv("SOCMAP_MALLOC", raising=False)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    client, cluster = connect(None, 1, 1)
    try:
        assert client.run(lambda: os.environ.get("MALLOC_ARENA_MAX")) == {w: "1" for w in client.scheduler_info()["workers"]}
    finally:
        client.close()
        cluster.close()


def test_local_cluster_workers_fork_from_a_server_that_imported_torch():
    """Local workers start from the fork server with torch and the solver already imported
    (socmap.cluster.WORKER_PRELOAD), not each importing them after a spawn."""
    import sys

    from socmap.cluster import WORKER_PRELOAD, connect

    client, cluster = connect(None, 1, 1)
    try:
        # a spawned worker has not imported the solver before its first task
        missing = client.run(lambda: [m for m in WORKER_PRELOAD if m not in sys.modules])
        assert list(missing.values()) == [[]], f"not preloaded in the worker: {missing}"
    finally:
        client.close()
        cluster.close()


def test_worker_server_started_early_forks_the_workers_with_their_environment(monkeypatch):
    """start_worker_server() (called at the start of a map) starts the fork server the local
    cluster then forks its workers from: same server, allocator setting and preloaded modules."""
    import multiprocessing.forkserver
    import os
    import sys

    from socmap.cluster import WORKER_PRELOAD, connect, start_worker_server

    monkeypatch.delenv("SOCMAP_MALLOC", raising=False)
    assert start_worker_server("synchronous") is False
    assert start_worker_server("tcp://127.0.0.1:8786") is False
    assert start_worker_server(None) is True
    server_pid = multiprocessing.forkserver._forkserver._forkserver_pid
    assert server_pid is not None
    client, cluster = connect(None, 1, 1)
    try:
        seen = client.run(lambda: (os.getppid(), os.environ.get("MALLOC_ARENA_MAX"),
                                   [m for m in WORKER_PRELOAD if m not in sys.modules]))
        assert list(seen.values()) == [(server_pid, "1", [])], seen
    finally:
        client.close()
        cluster.close()


def test_local_cluster_started_in_the_background_is_closed_when_the_map_fails(run_copy, monkeypatch):
    """map_run starts its local cluster in a thread while the driver builds the template; a
    failure there still closes that cluster, and nothing that looks complete is left."""
    import socmap.mapping as M

    started = []

    def connect(*args, **kwargs):
        client, cluster = real_connect(*args, **kwargs)
        started.append(cluster)
        return client, cluster

    def failing_template(*args, **kwargs):
        raise M.MappingError("disk full (test)")

    real_connect = M.connect
    monkeypatch.setattr(M, "connect", connect)
    monkeypatch.setattr(M, "_start_or_resume", failing_template)
    run = run_copy("background-cluster")
    with pytest.raises(M.MappingError, match="disk full"):
        M.map_run(run, workers=1, progress=False)
    assert len(started) == 1 and started[0].status.name == "closed"
    assert not (run / "maps.zarr").exists() and not (run / "map.json").exists()


def test_starting_the_worker_server_keeps_distributeds_config():
    """In a process that has not imported distributed yet (a fresh `socmap map`), starting the
    fork server must leave Dask's "distributed" config section in place: it was removed by the
    `dask.config.set` around the first import of distributed, and the map's first dask
    computation then failed with KeyError: 'distributed'."""
    script = (
        "import sys, dask\n"
        "from socmap.cluster import start_worker_server\n"
        "assert 'distributed' not in sys.modules\n"
        "start_worker_server(None)\n"
        "print(dask.config.get('distributed.worker.multiprocessing-method'), dask.config.get('distributed.comm.timeouts.connect'))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    method, timeout = out.stdout.split()
    assert method == "spawn" and timeout  # distributed's own defaults, back after the set's exit
