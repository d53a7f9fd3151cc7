#!/usr/bin/env bash
# Throughput through ubroker-nats-bridge beside plain NATS, on one machine, in one run
# (docs/performance.md). Starts a cluster of three nats-server processes on loopback, two
# brokerd ("host A", "host B") and a bridge beside each (A exports bench.>, B imports it), then:
#   1. ubroker publisher on A -> bridge A -> NATS server 1 ... server 3 -> bridge B -> subscriber on B;
#   2. a NATS C client publisher on server 1 -> a NATS C client subscriber on server 3 (the floor).
# Usage: bash scripts/nats-bridge-bench.sh [COUNT] [SIZE] [REPEAT]   (default 200000 64 3)
# Needs a release build (build/release; `bash scripts/dev.sh run` makes one) and nats-server.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${UBROKER_BUILD:-$here/build/release}
count=${1:-200000}
size=${2:-64}
repeat=${3:-3}
for bin in "$build/broker/brokerd" "$build/tools/ubroker-nats-bridge" "$build/tools/ubroker-nats-bench"; do
  [[ -x $bin ]] || { echo "missing $bin: build first (cmake --build $build)" >&2; exit 1; }
done
command -v nats-server >/dev/null || { echo "nats-server is not installed (apt-get install nats-server)" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client_ports=() route_ports=()
for i in 0 1 2; do client_ports+=("$(free_port)"); route_ports+=("$(free_port)"); done
for i in 0 1 2; do
  routes=""
  for j in 0 1 2; do
    [[ $j == "$i" ]] && continue
    routes+="${routes:+,}nats://127.0.0.1:${route_ports[$j]}"
  done
  nats-server -a 127.0.0.1 -p "${client_ports[$i]}" --cluster_name bench \
    --cluster "nats://127.0.0.1:${route_ports[$i]}" --routes "$routes" 2>"$dir/nats$i.log" &
  pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 100); do
    [[ $(grep -c "Route connection created" "$dir/nats$i.log" || true) -ge 2 ]] && break
    sleep 0.1
  done
done

for host in a b; do
  "$build/broker/brokerd" --socket "$dir/$host.sock" --log-level warn 2>"$dir/brokerd-$host.log" &
  pids+=($!)
done
for host in a b; do
  for _ in $(seq 100); do [[ -S $dir/$host.sock ]] && break; sleep 0.05; done
done
url() { echo "nats://127.0.0.1:${client_ports[$1]}"; }
cat >"$dir/a.toml" <<TOML
[nats]
servers = ["$(url 0)"]
[bridge]
name = "host-a"
export = ["bench.>"]
TOML
cat >"$dir/b.toml" <<TOML
[nats]
servers = ["$(url 2)"]
[bridge]
name = "host-b"
import = ["bench.>"]
TOML
for host in a b; do
  "$build/tools/ubroker-nats-bridge" --socket "$dir/$host.sock" --config "$dir/$host.toml" --log-level warn \
    2>"$dir/bridge-$host.log" &
  pids+=($!)
done

echo "== $count messages of $size bytes, $repeat runs each; 3 nats-server in a cluster, loopback"
for r in $(seq "$repeat"); do
  "$build/tools/ubroker-nats-bench" bridge --pub-socket "$dir/a.sock" --sub-socket "$dir/b.sock" --count "$count" --size "$size"
  "$build/tools/ubroker-nats-bench" nats --pub-url "$(url 0)" --sub-url "$(url 2)" --count "$count" --size "$size"
done
echo "== bridge counters (host A, host B)"
"$build/tools/brokerctl" --socket "$dir/a.sock" req bridge.host-a.metrics "" | grep -E '^ubroker_bridge_(exported|export_dropped|export_failed)'
"$build/tools/brokerctl" --socket "$dir/b.sock" req bridge.host-b.metrics "" | grep -E '^ubroker_bridge_(imported|import_lost|import_dropped|import_failed)'
