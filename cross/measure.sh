#!/usr/bin/env bash
# Memory and CPU of the agent under the reference load: 1,000 u16 registers (10 simulated units of 100)
# polled every 100 ms, the demo plant's assets scored with the shipped model, summaries every 1 s, and
# [mqtt] to a local mosquitto; optionally with 100 tag limits (`--limits`), or the lighter load of the
# first wave (`--light`: the assets judged by rules alone, summaries every minute).
#
#   cross/measure.sh [--seconds 60] [--limits] [--light] [AGENT_BINARY]
#
# AGENT_BINARY defaults to the static musl build the gateways run:
#   cross/build.sh x86_64-musl   (once: cross/build.sh --setup x86_64-musl)
# The simulator is the workspace's debug build (`cargo build -p millwright`). Needs mosquitto.
# Prints VmHWM (peak RSS), VmRSS at the end, and CPU as a percentage of one core over the run after
# a 10 s warm-up, read from /proc.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
limits=0
light=0
agent=target/x86_64-unknown-linux-musl/release/millwright
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --limits) limits=1; shift ;;
    --light) light=1; shift ;;
    *) agent="$1"; shift ;;
  esac
done
[ -x "$agent" ] || { echo "no agent binary at $agent (see the comment at the top)" >&2; exit 2; }
sim_bin=target/debug/millwright
[ -x "$sim_bin" ] || cargo build -q -p millwright
command -v mosquitto >/dev/null || { echo "mosquitto is needed (apt-get install mosquitto)" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sim_port=$(free_port)
mqtt_port=$(free_port)

# The simulator: the demo plant's machines plus ten units of 100 holding registers.
{
  sed "s/^listen = .*/listen = \"127.0.0.1:$sim_port\"/" firmware-config/examples/sim/demo.toml
  for unit in $(seq 101 110); do
    printf '\n[[machines]]\nname = "bulk-%s"\nkind = "fan"\nunit_id = %s\n' "$unit" "$unit"
    for r in $(seq 0 99); do
      printf '[[machines.points]]\nname = "r%s"\ntable = "holding"\naddress = %s\nsignal = { base = %s, noise = 3 }\n' "$r" "$r" "$((r * 10))"
    done
  done
} > "$work/sim.toml"
grep -q '^listen' "$work/sim.toml" || sed -i "1i listen = \"127.0.0.1:$sim_port\"" "$work/sim.toml"

# The agent: the demo plant (its assets and the shipped model) plus the ten bulk devices.
model="/^\\[scoring\\]/a models = { default = \"$PWD/models/default.onnx\" }"
summaries=1s
if [ "$light" -eq 1 ]; then model=""; summaries=1m; fi
{
  sed -e "s#127.0.0.1:5020#127.0.0.1:$sim_port#; s#port = 5020#port = $sim_port#" \
      -e "s#^data_dir = .*#data_dir = \"$work/data\"#" \
      -e "$model" \
      firmware-config/examples/demo-plant.toml
  printf '\n[outbox]\nsummary_interval = "%s"\n[mqtt]\nurl = "mqtt://127.0.0.1:%s"\n' "$summaries" "$mqtt_port"
  for unit in $(seq 101 110); do
    printf '\n[[devices]]\nname = "bulk-%s"\nhost = "127.0.0.1"\nport = %s\nunit_id = %s\naddressing = "zero_based"\npoll_interval = "100ms"\n' "$unit" "$sim_port" "$unit"
    for r in $(seq 0 99); do
      printf '[[devices.tags]]\nname = "b%s.r%s"\ntable = "holding"\naddress = %s\n' "$unit" "$r" "$r"
    done
  done
  if [ "$limits" -eq 1 ]; then
    for r in $(seq 0 99); do
      printf '\n[[limits]]\ntag = "b101.r%s"\nhi = %s\n' "$r" "$((r * 10 + 1000))"
    done
  fi
} > "$work/agent.toml"

printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mqtt_port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 & pids+=($!)
"$sim_bin" simulate -c "$work/sim.toml" >/dev/null 2>&1 & pids+=($!)
sleep 2
"$agent" check -c "$work/agent.toml" >/dev/null
"$agent" run -c "$work/agent.toml" -q >/dev/null 2>&1 & agent_pid=$!; pids+=("$agent_pid")

ticks() { awk '{print $14 + $15}' "/proc/$agent_pid/stat"; }
hz=$(getconf CLK_TCK)
sleep 10
start_ticks=$(ticks); start=$(date +%s.%N)
sleep "$((seconds > 10 ? seconds - 10 : 1))"
end_ticks=$(ticks); end=$(date +%s.%N)
status=/proc/$agent_pid/status
hwm=$(awk '/VmHWM/ {print $2}' "$status")
rss=$(awk '/VmRSS/ {print $2}' "$status")
cpu=$(python3 -c "print(f'{100 * ($end_ticks - $start_ticks) / $hz / ($end - $start):.2f}')")
echo "agent $agent, $seconds s, limits=$limits, light=$light"
echo "VmHWM ${hwm} kB ($(python3 -c "print(f'{$hwm/1024:.1f}')") MiB), VmRSS ${rss} kB, CPU ${cpu} % of a core"
