"""A real multi-node Ray cluster on this one machine, every socket on 127.0.0.1.

Run as a script, it starts a head and ``--workers`` worker nodes (each its own raylet, object
store, agents and temp dir), prints one JSON line, then blocks until SIGTERM/SIGINT and stops them::

    python tests/loopback_cluster.py --workers 2 --num-cpus 1
    {"address": "127.0.0.1:41235", "nodes": [{"name": "head", "node_id": "…", "raylet_pid": 123, "temp_dir": "…"}, …]}

``catalog-render run --address 127.0.0.1:41235`` then joins it. Killing a node's raylet process
tree (``raylet_pid`` and its descendants: workers, agents) takes that node away as a dead machine
would.

Why not ``ray start --head`` plus ``ray start --address`` (measured with Ray 2.60 on this machine):
Ray binds to 127.0.0.1 only when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and with that variable
``ray start --address`` refuses to add a node ("Multi-node Ray clusters are not supported on Windows
and OSX"); without it, Ray rewrites ``--node-ip-address=127.0.0.1`` to the interface address and
the GCS and raylets listen on ``::`` (every interface). ``ray.cluster_utils.Cluster`` (Ray's own
multi-node test harness) starts the same processes as ``ray start`` without that refusal, so under
the variable every node binds 127.0.0.1.

Token authentication (``RAY_AUTH_MODE=token``) is on when a token is available (``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``; ``ray get-auth-token --generate`` makes one), the
same rule catalog-render's driver follows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile

import psutil


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker nodes beside the head (default 2)")
    parser.add_argument("--num-cpus", type=float, default=1, help="CPUs each worker node offers (default 1)")
    parser.add_argument("--head-cpus", type=float, default=1, help="CPUs the head offers (default 1; 0: the head only coordinates)")
    parser.add_argument("--temp-dir", default=None, help="root of the nodes' temp dirs (default: a new /tmp/rc* folder; keep it short, "
                                                         "Ray's socket paths must stay under 108 characters)")
    args = parser.parse_args(argv)
    # Before Ray is imported: every node's GCS, raylet, object manager, agents and workers bind 127.0.0.1.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.pop("RAY_ADDRESS", None)
    root = args.temp_dir or tempfile.mkdtemp(prefix="/tmp/rc")
    # Ray's harness writes the cluster's address to <RAY_TMPDIR>/ray/ray_current_cluster (for
    # ray.init(address="auto")); keep it in our own folder, not in the /tmp/ray other Rays share.
    os.environ["RAY_TMPDIR"] = root
    os.makedirs(os.path.join(root, "ray"), exist_ok=True)
    from catalog_render.execution import _auth_token_available

    if "RAY_AUTH_MODE" not in os.environ and _auth_token_available():
        # Token authentication when a token exists, as catalog-render's driver then presents one: a
        # driver in token mode refuses the cluster's unauthenticated calls back to it (measured: the
        # run failed with OwnerDiedError on its first block).
        os.environ["RAY_AUTH_MODE"] = "token"
    from ray.cluster_utils import Cluster

    def node_args(name: str, cpus: float) -> dict:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        return {"num_cpus": cpus, "temp_dir": os.path.join(root, name), "include_dashboard": False}

    # shutdown_at_exit: Ray's reaper stops the nodes if this process dies without cleaning up.
    cluster = Cluster(initialize_head=True, head_node_args=node_args("head", args.head_cpus), shutdown_at_exit=True)
    nodes = [("head", cluster.head_node)]
    for i in range(1, args.workers + 1):
        nodes.append((f"worker{i}", cluster.add_node(**node_args(f"worker{i}", args.num_cpus))))
    cluster.wait_for_nodes()

    def stop(signum, frame):
        # Every process of every node is a descendant of this one. Cluster.shutdown() hung here
        # (over 3 minutes, waiting on a lock) when stopped while a driver was still connected.
        procs = psutil.Process().children(recursive=True)
        for p in procs:
            p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            p.kill()
        os._exit(0)  # not sys.exit: Ray's exit hooks would try to stop the nodes again

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(json.dumps({"address": cluster.address, "nodes": [
        {"name": name, "node_id": node.node_id, "raylet_pid": node.all_processes["raylet"][0].process.pid,
         "temp_dir": os.path.join(root, name)} for name, node in nodes]}), flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
