#!/usr/bin/env bash
# The compose cluster end to end: builds the image, brings docker/compose-3.yml up on a
# clean state, checks that it formed itself (init exited 0, every group led, all slots
# covered), writes through one node and reads through the others (plain and cluster
# clients), restarts the nodes and reads again, then tears everything down (`down -v`).
# Run by scripts/test; needs a running Docker engine and docker-compose.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PROJECT=kelvin-smoke
COMPOSE=(docker-compose -p "$PROJECT" -f docker/compose-3.yml)
CLI="${CARGO_TARGET_DIR:-target}/release/kelvin-cli"
NODES=(172.30.0.11 172.30.0.12 172.30.0.13)

docker/build.sh
cleanup() { "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
"${COMPOSE[@]}" up -d

# init runs once the nodes are healthy; wait (bounded) for it to finish.
init_done() {
    local id
    id=$("${COMPOSE[@]}" ps -q init)
    [ -n "$id" ] && [ "$(docker inspect -f '{{.State.Status}}' "$id")" = exited ]
}
for _ in $(seq 1 120); do init_done && break; sleep 0.5; done
init=$("${COMPOSE[@]}" ps -q init)
code=$(docker inspect -f '{{.State.ExitCode}}' "$init")
"${COMPOSE[@]}" logs --no-color init | tail -5
[ "$code" = 0 ] || { echo "error: init exited with $code" >&2; exit 1; }

"$CLI" cluster status "${NODES[0]}:6379"
for i in $(seq 1 50); do
    "$CLI" -h "${NODES[$((i % 3))]}" -p 6379 SET "smoke:$i" "v$i" >/dev/null
done
check_reads() {
    for n in "${NODES[@]}"; do
        for i in 1 17 50; do
            got=$(redis-cli -h "$n" -p 6379 GET "smoke:$i")
            [ "$got" = "v$i" ] || { echo "error: $n GET smoke:$i = '$got'" >&2; exit 1; }
            got=$(redis-cli -c -h "$n" -p 26379 GET "smoke:$i")
            [ "$got" = "v$i" ] || { echo "error: $n (cluster) GET smoke:$i = '$got'" >&2; exit 1; }
        done
    done
}
check_reads
# A restart of every node keeps the data and the cluster (init finds it formed).
"${COMPOSE[@]}" restart n1 n2 n3
for _ in $(seq 1 60); do "$CLI" cluster status "${NODES[1]}:6379" >/dev/null 2>&1 && break; sleep 0.5; done
"$CLI" cluster status "${NODES[1]}:6379" >/dev/null
check_reads
echo "docker smoke: ok"
