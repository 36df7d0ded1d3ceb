#!/usr/bin/env bash
# Builds the image `kelvin:latest` from this checkout: kelvin-server and kelvin-cli as
# static binaries (glibc, `+crt-static`) in an image FROM scratch.
#
#   docker/build.sh            # then: docker-compose -f docker/compose-3.yml up
#
# The static build goes to target/x86_64-unknown-linux-gnu/release, next to (not over)
# the normal build. Environment: KELVIN_IMAGE (default kelvin:latest), KELVIN_FEATURES.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
IMAGE="${KELVIN_IMAGE:-kelvin:latest}"
TARGET=x86_64-unknown-linux-gnu

# KELVIN_FEATURES: kelvin-server features, e.g. `failpoints` for the fault tests'
# image (kelvin-jepsen builds kelvin:jepsen so); none by default.
features=()
if [[ -n "${KELVIN_FEATURES:-}" ]]; then
    features=(--features "kelvin-server/${KELVIN_FEATURES}")
fi
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target "$TARGET" -p kelvin-server -p kelvin-client "${features[@]}"

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
for bin in kelvin-server kelvin-cli; do
    cp "${CARGO_TARGET_DIR:-target}/$TARGET/release/$bin" "$context/"
    # FROM scratch has no loader and no libc: the binary must need neither.
    if ldd "$context/$bin" 2>&1 | grep -q "=>"; then
        echo "error: $bin is dynamically linked" >&2
        exit 1
    fi
done
cp docker/Dockerfile "$context/"
docker build --quiet -t "$IMAGE" "$context"
echo "built $IMAGE"
