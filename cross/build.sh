#!/usr/bin/env bash
# Builds the gateway binary (no simulator) for one target on this x86_64 machine, without docker.
#
#   cross/build.sh aarch64-musl            # static aarch64 binary (primary)
#   cross/build.sh aarch64-gnu             # aarch64, dynamically linked, glibc >= 2.34
#   cross/build.sh armv7-gnueabihf         # armv7 hard-float, glibc >= 2.17 (via cargo-zigbuild)
#   cross/build.sh x86_64-musl             # static x86_64 binary: what the footprint figures measure
#   cross/build.sh x86_64-gnu              # x86_64 glibc: the glibc side of the footprint figures
#   cross/build.sh --setup <target>...     # install what those targets need (apt, rustup, pip, cargo)
#   cross/build.sh --bloat <target>        # which crates take the space (cargo-bloat)
#
# Prints the binary's path on the last line of stdout. Linker settings live in .cargo/config.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# target name -> rust triple, the triple cargo builds for, tools it needs
triple_of() {
  case "$1" in
    aarch64-musl) echo aarch64-unknown-linux-musl ;;
    aarch64-gnu) echo aarch64-unknown-linux-gnu ;;
    armv7-gnueabihf) echo armv7-unknown-linux-gnueabihf ;;
    x86_64-musl) echo x86_64-unknown-linux-musl ;;
    x86_64-gnu) echo x86_64-unknown-linux-gnu ;;
    *) echo "unknown target '$1' (aarch64-musl, aarch64-gnu, armv7-gnueabihf, x86_64-musl, x86_64-gnu)" >&2; exit 2 ;;
  esac
}

# armv7: Debian's cross gcc links against bookworm's glibc (2.34+ symbols), too new for many
# gateways, and there is no armv7 musl std to install; zig links against glibc 2.17 stubs instead.
uses_zig() { [ "$1" = armv7-gnueabihf ]; }
ZIG_GLIBC=2.17

run_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root for: $*" >&2; exit 1
  fi
}

setup() {
  local packages=() triples=() zig=0
  for name in "$@"; do
    case "$name" in
      # ring's C code needs the target's libc headers (stdint.h), which the compiler package only recommends.
      aarch64-*) [ -e /usr/aarch64-linux-gnu/include/stdint.h ] || packages+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
      armv7-*) command -v arm-linux-gnueabihf-gcc >/dev/null || packages+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
    esac
    triples+=("$(triple_of "$name")")
    if uses_zig "$name"; then zig=1; fi
  done
  if [ "${#packages[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    run_as_root apt-get update -qq
    run_as_root apt-get install -y -qq --no-install-recommends "${packages[@]}"
  fi
  rustup target add "${triples[@]}"
  if [ "$zig" -eq 1 ]; then
    python3 -m ziglang version >/dev/null 2>&1 || python3 -m pip install --quiet ziglang
    command -v cargo-zigbuild >/dev/null || cargo install --locked cargo-zigbuild
  fi
}

build() {
  local name="$1"; shift
  local triple build_triple
  triple="$(triple_of "$name")"
  build_triple="$triple"
  local cargo_build=(cargo build)
  if uses_zig "$name"; then
    cargo_build=(cargo zigbuild)
    build_triple="$triple.$ZIG_GLIBC"
  fi
  "${cargo_build[@]}" --release --locked -p millwright --no-default-features \
    --target "$build_triple" "$@" >&2
  local binary="${CARGO_TARGET_DIR:-target}/$triple/release/millwright"
  echo "$name: $(stat -c %s "$binary") bytes" >&2
  echo "$binary"
}

bloat() {
  local name="$1" triple
  triple="$(triple_of "$name")"
  command -v cargo-bloat >/dev/null || cargo install --locked cargo-bloat
  if uses_zig "$name"; then
    echo "cargo-bloat cannot drive zig; showing aarch64-musl instead" >&2
    triple=aarch64-unknown-linux-musl
  fi
  # Symbols are needed to attribute sizes; the shipped binary is stripped.
  CARGO_PROFILE_RELEASE_STRIP=false cargo bloat --release --locked -p millwright \
    --no-default-features --target "$triple" --crates -n 25
}

[ "$#" -ge 1 ] || usage
case "$1" in
  --setup) shift; [ "$#" -ge 1 ] || usage; setup "$@" ;;
  --bloat) shift; [ "$#" -eq 1 ] || usage; bloat "$1" ;;
  -h|--help) usage ;;
  *) build "$@" ;;
esac
