"""The output lease on local disk and on a real S3 server (moto over HTTP on 127.0.0.1): refusal
naming the holder, waiting, takeover of expired leases (also of a SIGKILLed holder), races between
real processes, renewal, loss after a takeover, and conditional writes through a faulty network."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from faultproxy import FaultProxy

from catalog_render import lease, storage
from catalog_render.errors import LeaseHeld, LeaseLost, RunError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path):
    """An output root: a local folder or an S3 prefix in a fresh bucket."""
    if request.param == "local":
        return str(tmp_path / "out")
    import boto3

    name = "l-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:55].strip("-")
    boto3.client("s3", endpoint_url=request.getfixturevalue("s3_server")).create_bucket(Bucket=name)
    return f"s3://{name}/out"


def owner(run_id: str) -> dict:
    return {"run_id": run_id, "host": "host-" + run_id, "pid": 4242, "command": f"catalog-render run --output X ({run_id})"}


def stored(output_uri: str) -> dict:
    return json.loads(storage.read_bytes(lease.lease_uri(output_uri)))


def write_expired(output_uri: str, run_id: str = "dead", seconds_ago: float = 5.0) -> dict:
    t = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    record = {"version": 1, "owner": owner(run_id), "nonce": "0" * 32, "ttl_s": 1.0, "acquired_at": t.isoformat(),
              "renewed_at": t.isoformat(), "expires_at": t.isoformat()}
    storage.write_bytes(lease.lease_uri(output_uri), json.dumps(record).encode())
    return record


def test_second_acquire_is_refused_naming_the_holder(out):
    a = lease.acquire(out, owner("run-a"), ttl_s=30)
    rec = stored(out)
    assert rec["owner"] == owner("run-a") and rec["nonce"] == a.record["nonce"]
    expires = datetime.fromisoformat(rec["expires_at"])
    assert timedelta(seconds=29) < expires - datetime.fromisoformat(rec["acquired_at"]) <= timedelta(seconds=30)
    with pytest.raises(LeaseHeld) as info:
        lease.acquire(out, owner("run-b"), ttl_s=30)
    msg = str(info.value)
    assert isinstance(info.value, RunError) and info.value.exit_code == 8  # "output busy"
    for needle in ("in use by run run-a", "host host-run-a", "pid 4242", "catalog-render run --output X (run-a)",
                   f"expires at {rec['expires_at']}", lease.lease_uri(out)):
        assert needle in msg, msg
    assert "\n" not in msg
    assert info.value.holder == owner("run-a") and info.value.expires_at == rec["expires_at"]
    assert stored(out) == rec  # the refused contender changed nothing
    assert a.release() is True
    assert not storage.exists(lease.lease_uri(out))
    assert lease.read_lease(out) is None


def test_wait_gets_the_lease_once_released(out):
    a = lease.acquire(out, owner("run-a"), ttl_s=30)
    with pytest.raises(LeaseHeld, match="waited"):
        lease.acquire(out, owner("run-b"), ttl_s=30, wait_s=0.3, poll_s=0.1)
    timer = threading.Timer(1.0, a.release)
    t0 = time.monotonic()
    timer.start()
    b = lease.acquire(out, owner("run-b"), ttl_s=30, wait_s=20, poll_s=0.1)
    waited = time.monotonic() - t0
    timer.join()
    assert 0.9 <= waited < 5, waited
    assert b.took_over is None  # released, not taken over
    assert stored(out)["owner"]["run_id"] == "run-b"
    b.release()


def test_expired_lease_is_taken_over(out):
    dead = write_expired(out)
    b = lease.acquire(out, owner("run-b"), ttl_s=30)
    assert b.took_over == dead
    assert stored(out)["owner"]["run_id"] == "run-b"
    # an unreadable lease (not JSON) can be held by nobody: taken over as well
    b.release()
    storage.write_bytes(lease.lease_uri(out), b"\x00garbage")
    c = lease.acquire(out, owner("run-c"), ttl_s=30)
    assert c.took_over == {} and stored(out)["owner"]["run_id"] == "run-c"
    c.release()


_HOLDER = """
import sys, time
from catalog_render import lease
l = lease.acquire(sys.argv[1], {"run_id": "victim", "host": "h", "pid": __import__("os").getpid(), "command": "holder"}, ttl_s=2.0)
l.start_heartbeat()
print("held", l.record["expires_at"], flush=True)
time.sleep(600)
"""


def test_killed_holder_is_taken_over_after_expiry(out):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, out], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = proc.stdout.readline()
        assert line.startswith("held"), line
        time.sleep(1.0)  # let the heartbeat (every 2/3 s) renew at least once
        with pytest.raises(LeaseHeld, match=f"pid {proc.pid}"):
            lease.acquire(out, owner("run-b"), ttl_s=30)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    last = stored(out)
    assert last["owner"]["pid"] == proc.pid and last["renewed_at"] > last["acquired_at"]  # it was renewed
    left = (datetime.fromisoformat(last["expires_at"]) - datetime.now(UTC)).total_seconds()
    t0 = time.monotonic()
    b = lease.acquire(out, owner("run-b"), ttl_s=30, wait_s=10, poll_s=0.05)
    waited = time.monotonic() - t0
    assert b.took_over == last
    assert left - 0.1 <= waited <= left + 1.5, (left, waited)
    b.release()


def _contender(output_uri: str, idx: int, rounds: int, barrier, results) -> None:
    """A racing process: each round, after the barrier, try once to take the lease."""
    storage.exists(lease.lease_uri(output_uri))  # client made before the race starts
    for r in range(rounds):
        barrier.wait()
        try:
            won = lease.acquire(output_uri, owner(f"c{idx}-r{r}"), ttl_s=60)
            results.put((r, idx, "won", won.record["nonce"]))
        except LeaseHeld as exc:
            results.put((r, idx, "held", exc.holder["run_id"]))
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results.put((r, idx, "error", repr(exc)))
        barrier.wait()


def test_racing_processes_exactly_one_wins(out, request, monkeypatch):
    """4 real processes race 20 times: 10 times for a missing lease, 10 for an expired one.

    On S3 the contenders reach moto through a proxy that serves one request at a time. moto's
    server checks ``If-Match`` and then writes with no lock between, on several threads, so two
    conditional writes against the same ETag can both succeed there (under load: two winners of a
    takeover round); real S3 executes each conditional write atomically, which one request at a
    time models. The local race (fcntl.flock) runs unchanged."""
    if out.startswith("s3://"):
        proxy = FaultProxy(request.getfixturevalue("s3_server"), serialize=True).start()
        request.addfinalizer(proxy.stop)
        request.addfinalizer(storage._clients.clear)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)  # inherited by the spawned contenders
        storage._clients.clear()
    contenders, rounds = 4, 20
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(contenders + 1), ctx.Queue()
    procs = [ctx.Process(target=_contender, args=(out, i, rounds, barrier, results), daemon=True) for i in range(contenders)]
    for p in procs:
        p.start()
    try:
        for r in range(rounds):
            if r % 2:
                write_expired(out, run_id=f"dead-{r}")
            else:
                storage.delete(lease.lease_uri(out))
            barrier.wait(timeout=120)  # go
            barrier.wait(timeout=120)  # all tried
            got = sorted((results.get(timeout=30) for _ in range(contenders)), key=lambda x: x[1])
            winners = [g for g in got if g[2] == "won"]
            assert len(winners) == 1, (r, got)
            winner_id = f"c{winners[0][1]}-r{r}"
            assert all(g[2] == "held" and g[3] == winner_id for g in got if g is not winners[0]), (r, got)
            now = stored(out)
            assert now["owner"]["run_id"] == winner_id and now["nonce"] == winners[0][3]
        if out.startswith("s3://"):  # the contenders' requests did go through the proxy, and did overlap
            assert proxy.counts["forwarded"] >= rounds * contenders and proxy.counts["waited"] > 0, proxy.counts
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


def test_renew_extends_expiry_and_the_heartbeat_keeps_it(out):
    a = lease.acquire(out, owner("run-a"), ttl_s=2)
    first_expiry, first_token = a.expires_at, a.token
    time.sleep(0.3)
    a.renew()
    rec = stored(out)
    assert a.token != first_token and rec["expires_at"] == a.record["expires_at"]
    assert rec["acquired_at"] == a.record["acquired_at"] and rec["renewed_at"] > rec["acquired_at"]
    gained = (a.expires_at - first_expiry).total_seconds()
    assert 0.3 <= gained < 1.5, gained
    # with the heartbeat (every 2/3 s) the lease outlives its ttl several times over
    with a:
        time.sleep(4.5)
        with pytest.raises(LeaseHeld):
            lease.acquire(out, owner("run-b"), ttl_s=2)
        assert not a.lost.is_set() and a.expires_at > datetime.now(UTC)
    assert not storage.exists(lease.lease_uri(out))  # released on exit
    with pytest.raises(LeaseLost, match="released"):
        a.renew()


def test_taken_over_lease_is_lost_in_the_old_holder(out):
    a = lease.acquire(out, owner("run-a"), ttl_s=0.5)
    time.sleep(0.6)  # a stalled: no renewal, the lease expires
    b = lease.acquire(out, owner("run-b"), ttl_s=30)
    assert b.took_over["nonce"] == a.record["nonce"]
    with pytest.raises(LeaseLost, match="is now held by run run-b") as info:
        a.renew()
    assert a.lost.is_set() and "run-b" in a.lost_reason and info.value.exit_code == 7
    with pytest.raises(LeaseLost):
        a.check()
    assert a.release() is False  # does not delete b's lease
    assert stored(out)["owner"]["run_id"] == "run-b"
    b.check()
    assert b.release() is True


def test_heartbeat_notices_a_takeover(out):
    a = lease.acquire(out, owner("run-a"), ttl_s=1.5)
    reasons: list[str] = []
    a.start_heartbeat(on_lost=reasons.append)
    # another process replaces it (as a run with a skewed clock would): a compare-and-swap on a's version
    data, token = storage.read_versioned(lease.lease_uri(out))
    intruder = {**json.loads(data), "owner": owner("intruder"), "nonce": "1" * 32}
    storage.replace_if_match(lease.lease_uri(out), json.dumps(intruder).encode(), token)
    assert a.lost.wait(timeout=3), "heartbeat did not notice"
    a.stop_heartbeat()
    assert reasons and "run intruder" in reasons[0] and "run-a" in reasons[0]
    assert stored(out)["owner"]["run_id"] == "intruder"


def test_conditional_primitives(out):
    uri = storage.join(out, "obj.json")
    t1 = storage.create_exclusive(uri, b"one")
    with pytest.raises(storage.PreconditionFailed):
        storage.create_exclusive(uri, b"two")
    assert storage.read_versioned(uri) == (b"one", t1)
    t2 = storage.replace_if_match(uri, b"three", t1)
    assert t2 != t1 and storage.read_bytes(uri) == b"three"
    with pytest.raises(storage.PreconditionFailed):
        storage.replace_if_match(uri, b"four", t1)  # stale version
    assert storage.delete_if_match(uri, t1) is False and storage.read_bytes(uri) == b"three"
    assert storage.delete_if_match(uri, t2) is True and not storage.exists(uri)
    with pytest.raises(storage.PreconditionFailed):
        storage.replace_if_match(uri, b"five", t2)  # gone
    assert storage.delete_if_match(uri, t2) is False


def test_lease_over_a_faulty_network(s3_server, bucket, monkeypatch):
    """30 % faults, including resets after S3 executed the write (lost answers): acquire, 20 renewals
    and release stay correct; nothing is ever reported lost."""
    with FaultProxy(s3_server, fault_rate=0.3, kinds=("reset_after", "reset", "internal"), seed=7) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        storage._clients.clear()
        try:
            out = f"s3://{bucket}/out"
            a = lease.acquire(out, owner("run-a"), ttl_s=60)
            for _ in range(20):
                a.renew()
                with pytest.raises(LeaseHeld, match="run-a"):
                    lease.acquire(out, owner("run-b"), ttl_s=60)
            assert not a.lost.is_set() and stored(out)["renewed_at"] == a.record["renewed_at"]
            a.release()
            assert not storage.exists(lease.lease_uri(out))
        finally:
            storage._clients.clear()
    assert min(proxy.counts[k] for k in ("reset_after", "reset", "internal")) >= 1, proxy.counts
    # conditional writes that S3 executed but whose answer was lost: acquire and renew recognised their own
    lost = [m for m, path, k, st in proxy.log if k == "reset_after" and m == "PUT" and path.endswith("/_lease.json") and st == 200]
    assert len(lost) >= 2, proxy.log


def test_a_dead_holder_on_this_host_is_taken_over_before_expiry(out):
    """Same host name, pid gone (a SIGKILLed run): no need to wait for the ttl."""
    import socket

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = {"run_id": "run-dead", "host": socket.gethostname(), "pid": gone.pid, "command": "x"}
    lease.acquire(out, dead, ttl_s=3600)
    alive = {"run_id": "run-alive", "host": socket.gethostname(), "pid": os.getpid(), "command": "y"}
    new = lease.acquire(out, alive, ttl_s=30)
    assert new.took_over["owner"]["run_id"] == "run-dead"
    with pytest.raises(LeaseHeld):  # a live holder on this host is respected
        lease.acquire(out, dead, ttl_s=30)
    assert new.release() is True


def test_a_store_that_ignores_conditional_writes_is_refused(s3_server, bucket, monkeypatch):
    """A real server in front of moto that drops If-None-Match and If-Match (as some S3-compatible
    stores ignore them): acquire refuses to take a lease there, naming the problem and --no-lease;
    the same store through a plain proxy passes the check (and it is made once per output)."""
    out = f"s3://{bucket}/out"
    with FaultProxy(s3_server, strip_headers=("If-None-Match", "If-Match")) as ignoring:
        monkeypatch.setenv("AWS_ENDPOINT_URL", ignoring.endpoint)
        storage._clients.clear()
        try:
            with pytest.raises(lease.ConditionalWritesIgnored) as info:
                lease.acquire(out, owner("run-a"), ttl_s=30)
        finally:
            monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
            storage._clients.clear()
    msg = str(info.value)
    assert info.value.exit_code == 5 and "\n" not in msg
    for needle in (f"the S3 store at {ignoring.endpoint} (output {out}) does not honour conditional writes", "a PutObject with If-None-Match: * on an existing object was accepted",
                   "a PutObject with If-Match and a wrong ETag was accepted", f"{out}/_lease_probe.json", "--no-lease"):
        assert needle in msg, msg
    assert not storage.exists(lease.lease_uri(out)) and not storage.exists(f"{out}/{lease.PROBE_NAME}")  # nothing left behind
    assert out not in lease._checked
    # moto itself refuses both writes: the check passes, once per output
    with FaultProxy(s3_server) as plain:
        monkeypatch.setenv("AWS_ENDPOINT_URL", plain.endpoint)
        storage._clients.clear()
        try:
            a = lease.acquire(out, owner("run-a"), ttl_s=30)
            a.release()
            probes = [m for m, path, _, _ in plain.log if path.split("?")[0].endswith(lease.PROBE_NAME)]
            assert probes.count("PUT") == 3 and out in lease._checked  # written, then the two refused conditional PUTs
            lease.acquire(out, owner("run-b"), ttl_s=30).release()
            assert [m for m, path, _, _ in plain.log if path.split("?")[0].endswith(lease.PROBE_NAME)] == probes  # not again
        finally:
            monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
            storage._clients.clear()
