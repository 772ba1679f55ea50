#!/usr/bin/env bash
# Time and peak memory of `pullsecret pull` versus `skopeo copy docker://… oci:…` for one
# single-layer image (512 MiB by default) from a local CNCF distribution registry.
# Needs docker-registry, skopeo, /usr/bin/time; builds pullsecret with --release.
# Usage: [PULLSECRET_BIN=path] benches/pull_vs_skopeo.sh [SIZE_MIB] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-512}
rounds=${2:-1}

work=$(mktemp -d)
registry_pid=""
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# PULLSECRET_BIN skips the build (e.g. a debug binary to try the script out).
bin=${PULLSECRET_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet --bin pullsecret
  bin=$PWD/target/release/pullsecret
fi

# A registry on a free loopback port, storage in $work.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
cat >"$work/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/storage}}
http: {addr: $addr, secret: bench}
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -fs "http://$addr/v2/" >/dev/null && break; sleep 0.1; done

# A one-layer OCI image with incompressible content, pushed with digests preserved.
src=$work/src
mkdir -p "$src/blobs/sha256"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$work/layer"
layer_hex=$(sha256sum "$work/layer" | cut -d' ' -f1)
layer_size=$(stat -c %s "$work/layer")
mv "$work/layer" "$src/blobs/sha256/$layer_hex"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$layer_hex" >"$work/config"
config_hex=$(sha256sum "$work/config" | cut -d' ' -f1)
config_size=$(stat -c %s "$work/config")
mv "$work/config" "$src/blobs/sha256/$config_hex"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
  "$config_hex" "$config_size" "$layer_hex" "$layer_size" >"$work/manifest"
manifest_hex=$(sha256sum "$work/manifest" | cut -d' ' -f1)
manifest_size=$(stat -c %s "$work/manifest")
mv "$work/manifest" "$src/blobs/sha256/$manifest_hex"
printf '{"imageLayoutVersion":"1.0.0"}' >"$src/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
  "$manifest_hex" "$manifest_size" >"$src/index.json"
skopeo --insecure-policy copy -q --preserve-digests --dest-tls-verify=false "oci:$src:v1" "docker://$addr/bench/big:v1"
rm -rf "$src"

# Private HOME/XDG so neither tool reads the user's credentials or store.
export HOME=$work/home XDG_DATA_HOME=$work/home/data XDG_CONFIG_HOME=$work/home/config
export XDG_RUNTIME_DIR=$work/home/run DOCKER_CONFIG=$work/home/docker TMPDIR=$work/tmp
mkdir -p "$HOME" "$XDG_RUNTIME_DIR" "$TMPDIR"

measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -v "$@" >/dev/null 2>"$work/time.txt"
  local wall rss
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time.txt")
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.txt")
  printf '%-10s wall %-8s peak RSS %6d MiB\n' "$label" "$wall" "$((rss / 1024))"
}

echo "image: $addr/bench/big:v1, one ${size_mib} MiB layer; $(nproc) CPUs"
for r in $(seq "$rounds"); do
  rm -rf "$work/out-ps" "$work/out-sk"
  measure pullsecret "$bin" pull "$addr/bench/big:v1" --insecure --quiet --output "$work/out-ps"
  test "$(sha256sum "$work/out-ps/blobs/sha256/$layer_hex" | cut -d' ' -f1)" = "$layer_hex"
  measure skopeo skopeo --insecure-policy copy -q --preserve-digests --src-tls-verify=false \
    "docker://$addr/bench/big:v1" "oci:$work/out-sk:v1"
  test "$(sha256sum "$work/out-sk/blobs/sha256/$layer_hex" | cut -d' ' -f1)" = "$layer_hex"
done
