"""`run --address` on a real multi-node Ray cluster on this machine (tests/loopback_cluster.py: a
head and two worker nodes of 1 CPU each, every socket on 127.0.0.1): the actors spread across the
nodes and the manifest's ``worker`` names each row's node; a worker node SIGKILLed mid-run (its
raylet, object store, agents and actor) loses nothing: its products are rendered on the surviving
nodes, each product once."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest

from catalog_render import imaging, manifest, storage

HERE = Path(__file__).resolve().parent
CR = str(Path(sys.executable).parent / "catalog-render")
JOB = """mode = "refresh"
[generation]
num_inference_steps = {steps}
seed = 11
[execution]
workers = 2
batch_size = 2
manifest_flush_rows = 1
"""


@pytest.fixture
def cluster(tmp_path):
    """tests/loopback_cluster.py --workers 2: yields its JSON (address, nodes with node_id and
    raylet_pid) and the launcher process; stops every node afterwards."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    err = tmp_path / "cluster.err"
    with open(err, "w") as sink:
        proc = subprocess.Popen([sys.executable, str(HERE / "loopback_cluster.py"), "--workers", "2", "--num-cpus", "1", "--head-cpus", "1"],
                                env=env, stdout=subprocess.PIPE, stderr=sink, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()  # blocks until the three nodes are up (or the launcher died)
        if not line:
            pytest.fail("loopback cluster did not start: " + err.read_text()[-3000:])
        info = json.loads(line)
        yield info, proc
    finally:
        tree = [psutil.Process(proc.pid)] + _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)  # Cluster.shutdown() stops every node
        _, alive = psutil.wait_procs(tree, timeout=30)
        for p in alive:
            p.kill()
        if "info" in locals():  # the nodes' temp dirs (sessions, logs, sockets) under one /tmp/rc* root
            shutil.rmtree(Path(info["nodes"][0]["temp_dir"]).parent, ignore_errors=True)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _listening(pids: set[int]) -> list[tuple[str, int, str]]:
    out = []
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            try:
                out.append((c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()))
            except psutil.NoSuchProcess:
                pass
    return out


def _node_of(worker: str) -> str:
    """The node id in the manifest's ``worker`` (``<hostname>:<node id>:<pid>``)."""
    host, node, pid = worker.rsplit(":", 2)
    assert host and len(node) == 56 and int(node, 16) >= 0 and int(pid) > 0, worker
    return node


def _start_run(tmp_path: Path, catalog: Path, model: Path, address: str, steps: int) -> tuple[subprocess.Popen, Path, Path]:
    """``catalog-render run --address`` in the background; its stdout and stderr go to a file (a
    pipe nobody reads while the test polls could fill and stall the driver)."""
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(steps=steps), encoding="utf-8")
    out, log = tmp_path / "out", tmp_path / "run.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    with open(log, "w") as sink:
        proc = subprocess.Popen([CR, "run", "--catalog", str(catalog), "--model", str(model), "--output", str(out), "--job", str(job),
                                 "--address", address, "--no-report"], env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
    return proc, out, log


def _check_every_product_once(out: Path, catalog: Path) -> list[dict]:
    """Every catalog product exactly once in the manifest, ok, its image a decodable file; the
    images folder holds exactly those images (nothing rendered twice under another key)."""
    from catalog_render import catalog as catalog_mod

    planned = catalog_mod.read_catalog(str(catalog)).column("product_id").to_pylist()
    rows = manifest.read_manifest(str(out)).to_pylist()
    assert collections.Counter(r["product_id"] for r in rows) == collections.Counter(planned)  # each once
    assert {r["status"] for r in rows} == {"ok"}, [r["error"] for r in rows if r["status"] != "ok"][:3]
    for r in rows:
        assert imaging.decode_rgb(storage.read_bytes(r["image_uri"])).size == (r["width"], r["height"])
    on_disk = {str(p) for p in (out / "images").rglob("*") if p.is_file()}
    assert on_disk == {r["image_uri"] for r in rows}
    record = manifest.read_run_records(str(out))[0]
    assert record["status"] == "finished" and record["counts"]["ok"] == len(planned) and record["planned"] == len(planned)
    return rows


def test_run_spreads_its_actors_over_the_nodes(cluster, small_catalog, tiny_sd, tmp_path):
    info, launcher = cluster
    ids = {n["node_id"] for n in info["nodes"]}
    catalog = tmp_path / "catalog.parquet"  # 16 products: enough for both actors, cheap to render
    storage.write_parquet(storage.read_parquet(str(small_catalog)).slice(0, 16), str(catalog))
    proc, out, log = _start_run(tmp_path, catalog, tiny_sd, info["address"], steps=2)
    sockets = []
    while proc.poll() is None:  # every socket of the three nodes and of the driver, sampled during the run
        sockets += _listening({launcher.pid, proc.pid} | {p.pid for p in _descendants(launcher.pid) + _descendants(proc.pid)})
        time.sleep(1)
    assert proc.returncode == 0, log.read_text()[-3000:]
    rows = _check_every_product_once(out, catalog)
    nodes = {_node_of(r["worker"]) for r in rows}
    assert len(nodes) == 2 and nodes <= ids, (nodes, ids)  # two actors of 1 CPU on nodes of 1 CPU: one per node
    assert {name for *_, name in sockets} >= {"gcs_server", "raylet"}, sockets
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip, _, _ in sockets), sorted(set(sockets))


@pytest.mark.slow
def test_a_worker_node_killed_mid_run_loses_nothing(cluster, small_catalog, tiny_sd, tmp_path):
    info, launcher = cluster
    workers = {n["node_id"]: n for n in info["nodes"][1:]}
    proc, out, log = _start_run(tmp_path, small_catalog, tiny_sd, info["address"], steps=8)
    victim = killed_at = None
    done_at_kill: set[str] = set()
    while proc.poll() is None:
        rows = manifest.read_manifest(str(out)).to_pylist()
        busy = collections.Counter(_node_of(r["worker"]) for r in rows if r["worker"])
        candidates = [n for n in busy if n in workers]
        if candidates:  # a worker node's actor has rendered (and its rows are flushed): take that node away
            victim = candidates[0]
            raylet = psutil.Process(workers[victim]["raylet_pid"])
            tree = [raylet] + raylet.children(recursive=True)
            for p in tree:
                p.kill()
            psutil.wait_procs(tree, timeout=30)
            killed_at = datetime.now(timezone.utc)  # every process of the node is gone by now
            done_at_kill = {r["product_id"] for r in rows}
            break
        time.sleep(0.3)
    assert victim, "the run finished before any worker node had rendered: " + log.read_text()[-2000:]
    try:
        proc.wait(timeout=480)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run did not finish after a worker node was killed: " + log.read_text()[-2000:])
    assert proc.returncode == 0, log.read_text()[-3000:]
    rows = _check_every_product_once(out, small_catalog)
    assert len(done_at_kill) < len(rows) // 2, "the node was killed too late to show anything"
    roles = {n["node_id"]: n["name"] for n in info["nodes"]}
    where = collections.Counter((roles.get(_node_of(r["worker"]), "?"), r["finished_at"] > killed_at) for r in rows)
    # the killed node rendered before the kill, never after; what was left ran on the surviving nodes
    assert any(_node_of(r["worker"]) == victim for r in rows), where
    after = [r for r in rows if r["finished_at"] > killed_at]
    assert after and {_node_of(r["worker"]) for r in after} <= set(roles) - {victim}, (roles[victim], where)
