"""Is moto's S3 server atomic for conditional writes? Why the lease's S3 race test goes through a proxy.

Each round writes one object, reads its ETag, then N threads (their own boto3 clients, released
together by a barrier) each PUT a different body with ``If-Match: <that ETag>``. On a store whose
conditional writes are atomic (AWS S3) exactly one PUT per round succeeds. The rounds run twice:
against moto's server directly, then through ``tests/faultproxy.py`` with ``serialize=True`` (one
request at a time). ``--switch-interval`` sets ``sys.setswitchinterval`` (the server runs in this
process): a small value interleaves threads the way a loaded machine does.

    python benchmarks/moto_race.py [--rounds 150] [--threads 6] [--switch-interval 1e-5]

Measured (2-core machine, moto 5.2.5, switch interval 1e-5): moto directly, 6 of 150 rounds had more
than one winner (and moto's own handler raised "I/O operation on closed file" on some concurrent
PUTs); through the one-at-a-time proxy, 0 of 150.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def race(endpoint: str, rounds: int, threads: int, create: bool) -> int:
    """Rounds (of ``rounds``) in which more than one conditional PUT on the same ETag succeeded."""
    import boto3
    from botocore.config import Config

    cfg = Config(retries={"max_attempts": 1})
    clients = [boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                            region_name="us-east-1", config=cfg) for _ in range(threads)]
    if create:
        clients[0].create_bucket(Bucket="race-bucket")
    doubles = 0
    for r in range(rounds):
        etag = clients[0].put_object(Bucket="race-bucket", Key="k", Body=f"base {r}".encode())["ETag"]
        barrier, wins = threading.Barrier(threads), []

        def put(i: int) -> None:
            barrier.wait()
            try:
                clients[i].put_object(Bucket="race-bucket", Key="k", Body=f"contender {i} round {r}".encode(), IfMatch=etag)
                wins.append(i)
            except Exception:  # noqa: BLE001 - 412 (or a moto internal error): not a winner
                pass

        ts = [threading.Thread(target=put, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        doubles += len(wins) > 1
    return doubles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--threads", type=int, default=6)
    ap.add_argument("--switch-interval", type=float, default=1e-5)
    args = ap.parse_args()
    sys.setswitchinterval(args.switch_interval)
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    from faultproxy import FaultProxy
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    upstream = f"http://127.0.0.1:{port}"
    try:
        direct = race(upstream, args.rounds, args.threads, create=True)
        with FaultProxy(upstream, serialize=True) as proxy:
            serial = race(proxy.endpoint, args.rounds, args.threads, create=False)
        print(f"moto directly: {direct} of {args.rounds} rounds had more than one winner")
        print(f"through a proxy serving one request at a time: {serial} of {args.rounds} "
              f"({proxy.counts['waited']} requests waited for another)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
