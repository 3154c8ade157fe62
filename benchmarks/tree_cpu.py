"""CPU seconds of a command and every process it starts (Ray nodes, drivers, actors included).

    python benchmarks/tree_cpu.py -- python -m pytest tests/test_cluster_nodes.py -k spreads

Samples the command's process tree every 0.5 s with psutil and sums, over every process seen, the
last sampled ``cpu_times`` (user + system). ``resource.RUSAGE_CHILDREN`` alone undercounts here: Ray's
workers are reaped by raylets that may be killed first, so their CPU never reaches the command. The
sample misses at most the last 0.5 s of each process and processes that live less than 0.5 s.
Prints one line on stderr; exits with the command's exit status.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    proc = subprocess.Popen(argv)
    seen: dict[tuple[int, float], float] = {}  # (pid, create_time) -> last sampled CPU s
    t0 = time.monotonic()
    while proc.poll() is None:
        try:
            tree = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            break
        for p in tree:
            try:
                t = p.cpu_times()
                seen[(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:
                pass
        time.sleep(0.5)
    proc.wait()
    print(f"tree CPU {sum(seen.values()):.1f} s over {len(seen)} processes, wall {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
