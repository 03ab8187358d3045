#!/usr/bin/env bash
# Peak memory of loading a large configuration: `check` and the first seconds of `run` with 10,000
# OPC UA tags (one endpoint) and with 10,000 Modbus tags (ten devices of 1,000 holding registers).
# Nothing needs to answer: the peak is the loading, before the first connection.
#
#   cross/load-peak.sh [AGENT_BINARY ...]
#
# AGENT_BINARY defaults to the static musl build the gateways run:
#   cross/build.sh x86_64-musl   (once: cross/build.sh --setup x86_64-musl)
# Give two binaries (say, the previous release's and this one) to compare them in one run. Prints
# the peak RSS of each (the child's maxrss); the median of three runs.
set -euo pipefail
cd "$(dirname "$0")/.."

agents=("$@")
[ ${#agents[@]} -gt 0 ] || agents=(target/x86_64-unknown-linux-musl/release/millwright)
for agent in "${agents[@]}"; do
  [ -x "$agent" ] || { echo "no agent binary at $agent (see the comment at the top)" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

{
  printf '[agent]\ndata_dir = "%s/opcua-data"\n\n' "$work"
  printf '[[opcua]]\nname = "bench"\nurl = "opc.tcp://127.0.0.1:9"\npublishing_interval = "1s"\n'
  printf 'sampling_interval = "1s"\nmax_items_per_request = 1000\n'
  for i in $(seq 0 9999); do
    printf '\n[[opcua.tags]]\nname = "v%d"\nnode = "ns=2;s=v%d"\n' "$i" "$i"
  done
} >"$work/opcua.toml"
{
  printf '[agent]\ndata_dir = "%s/modbus-data"\n\n' "$work"
  for d in $(seq 0 9); do
    printf '[[devices]]\nname = "plc%d"\nhost = "127.0.0.1"\nport = 9\nunit_id = %d\n' "$d" "$((d + 1))"
    printf 'addressing = "zero_based"\npoll_interval = "1s"\n\n'
    for t in $(seq 0 999); do
      printf '[[devices.tags]]\nname = "plc%d.t%d"\ntable = "holding_register"\naddress = %d\n\n' "$d" "$t" "$t"
    done
  done
} >"$work/modbus.toml"

# The peak RSS in KiB of `$@` (a child of its own, stopped after 8 s if it still runs: `run`).
peak() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys
try:
    subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=8)
except subprocess.TimeoutExpired:
    pass
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
}

median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

for agent in "${agents[@]}"; do
  for config in opcua modbus; do
    for command in check run; do
      runs=()
      for _ in 1 2 3; do
        runs+=("$(peak "$agent" "$command" -q -c "$work/$config.toml")")
      done
      kib=$(median "${runs[@]}")
      printf '%s: %s, 10,000 %s tags: peak %s MiB (runs: %s KiB)\n' \
        "$agent" "$command" "$config" "$(python3 -c "print(f'{$kib/1024:.1f}')")" "${runs[*]}"
    done
  done
done
