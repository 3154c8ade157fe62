#!/usr/bin/env bash
# docs/cluster.md's recipe by hand: a loopback cluster (head + 2 worker nodes of 1 CPU), one
# `catalog-render run --address` on it, `ss -tlnp` during the run, the first worker node whose actor
# has manifest rows SIGKILLed, then rows per (node, pid, before/after the kill).
#
#   bash benchmarks/cluster_kill.sh CATALOG MODEL JOB_TOML OUT_DIR
#
# JOB_TOML should set execution.manifest_flush_rows = 1 (rows visible as batches finish) and enough
# work that the run outlasts the kill (docs/cluster.md: 60 products, 8 steps, batch 2, 2 workers).
set -euo pipefail
CATALOG=$1 MODEL=$2 JOB=$3 OUT=$4
BIN=$(dirname "$(readlink -f "$0")")/../.venv/bin
HERE=$(dirname "$(readlink -f "$0")")
mkdir -p "$OUT"; INFO=$OUT/cluster.json; : > "$INFO"
"$BIN/python" "$HERE/../tests/loopback_cluster.py" --workers 2 --num-cpus 1 > "$INFO" &
LAUNCHER=$!
trap 'kill -TERM $LAUNCHER 2>/dev/null || true' EXIT
until [ -s "$INFO" ]; do sleep 1; done
field() { "$BIN/python" -c "import json,sys; d=json.load(open('$INFO')); print(eval(sys.argv[1]))" "$1"; }
ADDR=$(field "d['address']")
echo "cluster at $ADDR"
"$BIN/catalog-render" run --catalog "$CATALOG" --model "$MODEL" --output "$OUT/renders" --job "$JOB" --address "$ADDR" --no-report \
    > "$OUT/run.out" 2> "$OUT/run.err" &
RUN=$!
# the first worker node (not the head) whose actor has manifest rows
until VICTIM=$("$BIN/python" -c "
import json, sys; from catalog_render import manifest
nodes = json.load(open('$INFO'))['nodes'][1:]
busy = {w.split(':')[1] for w in manifest.read_manifest('$OUT/renders').column('worker').to_pylist() if w}
hit = [n for n in nodes if n['node_id'] in busy]
print(hit[0]['name'], hit[0]['raylet_pid']) if hit else sys.exit(1)" 2>/dev/null); do
    sleep 1
done
read -r NAME RAYLET <<< "$VICTIM"
tree() { echo "$1"; for c in $(pgrep -P "$1" || true); do tree "$c"; done; }
PIDS=$( (tree $LAUNCHER; tree $RUN) | paste -sd'|')
ss -tlnp | grep -E "pid=($PIDS)," > "$OUT/ss.txt" || true
echo "listening sockets of the cluster and the driver, by address:"; awk '{print $4}' "$OUT/ss.txt" | sed 's/:[0-9]*$//' | sort | uniq -c
date -u +%s.%N > "$OUT/killed_at"
pkill -KILL -P "$RAYLET" || true; kill -KILL "$RAYLET"
echo "$NAME (raylet pid $RAYLET and its children) killed at $(date -u +%T)"
set +e; wait $RUN; echo "run exit status $?"; set -e
grep -h "retrying them one by one\|rendered" "$OUT/run.err" || true
"$BIN/python" - "$OUT" <<'PY'
import collections, json, sys
from datetime import datetime, timezone
from catalog_render import manifest
out = sys.argv[1]
names = {n["node_id"]: n["name"] for n in json.load(open(f"{out}/cluster.json"))["nodes"]}
killed = datetime.fromtimestamp(float(open(f"{out}/killed_at").read()), timezone.utc)
rows = manifest.read_manifest(f"{out}/renders").to_pylist()
for key, n in sorted(collections.Counter((names[r["worker"].split(":")[1]], r["worker"].rsplit(":", 1)[1],
                                          "after" if r["finished_at"] > killed else "before", r["status"]) for r in rows).items()):
    print("node %-8s pid %-7s %-6s the kill  %-6s %d rows" % (*key, n))
print(f"{len(rows)} rows, {len({r['product_id'] for r in rows})} products")
PY
