#!/usr/bin/env bash
# Builds the Debian package for a gateway architecture:
#
#   cross/package.sh arm64     # static aarch64 binary (cross/build.sh aarch64-musl)
#   cross/package.sh armhf     # armv7 hard-float, glibc >= 2.17 (cross/build.sh armv7-gnueabihf)
#
# Needs cargo-deb (`cargo install --locked cargo-deb`). Prints the .deb's path on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  arm64) target=aarch64-musl; triple=aarch64-unknown-linux-musl; variant=() ;;
  armhf) target=armv7-gnueabihf; triple=armv7-unknown-linux-gnueabihf; variant=(--variant glibc) ;;
  *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb

cross/build.sh "$target" >/dev/null
out="${CARGO_TARGET_DIR:-target}/debian"
mkdir -p "$out"
# --no-build: cargo-deb would rebuild without cross/build.sh's choices (no simulator, zig for armv7).
deb="$(cargo deb -p millwright --target "$triple" --no-build --no-strip \
  "${variant[@]}" --output "$out" --quiet)"
echo "$deb"
