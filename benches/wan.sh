#!/usr/bin/env bash
# pullsecret over an emulated WAN link, in one run on this machine (issue 17, deliverable 1).
#
#   upstream   CNCF distribution (docker-registry) with token auth (benches/token_issuer.py),
#              reached only through benches/wan_relay.py, the WAN emulator: a TCP relay that
#              delays connection set-up by one RTT, each direction by RTT/2 as a delay line, and
#              caps each connection's throughput with a token bucket. The token issuer sits
#              behind its own relay with the same link (a remote auth server, as auth.docker.io).
#   images     "five": one BIG_MIB layer and SMALL_MIBS layers; "blob": one BLOB_MIB layer.
#   clients    skopeo copy docker://… oci:DIR, and containerd's fetcher (`ctr content fetch
#              --plain-http`, the fetch half of `ctr images pull` without unpacking the random
#              layers) against a private containerd the script starts (CTR=0 leaves ctr out).
#
# For each image and client, RUNS times: the direct pull over the link, the pull through
# `pullsecret proxy` (upstream = the relay) on an empty cache, and again on the warm cache.
# Prints one Markdown table (medians, ratios against the same client's direct pull), the
# emulator's own overhead (a direct pull through a relay with 0 ms and no cap against one
# straight to the registry) and the emulator's self-test.
#
#   QUICK=1 benches/wan.sh                  # 64 MiB + 4 x 4 MiB and 128 MiB, 3 runs (~3 min)
#   benches/wan.sh                          # 256 MiB + 20/10/5/1 MiB and 512 MiB, 5 runs
#   LOSSY=1 benches/wan.sh                  # cap at the Mathis bound for 0.1% loss (~1.1 MiB/s
#                                           # at 50 ms: slow, use with QUICK=1 or small sizes)
#   AGG_MIBPS=40 benches/wan.sh             # plus an aggregate cap: the registry in a network
#                                           # namespace behind a veth pair with tc tbf (root)
# Knobs: RTT_MS (50), CAP_MIBPS (25 per connection; 0 = none), LOSSY, AGG_MIBPS, BIG_MIB,
#        SMALL_MIBS ("20 10 5 1"), BLOB_MIB, RUNS, OVERHEAD_RUNS, CTR (auto), PULLSECRET_BIN
#        (skip the build), BENCH_TMPDIR, KEEP=1 (keep the temp dir), PS_LOG (RUST_LOG).
# Installs missing Debian packages with apt-get: docker-registry skopeo containerd curl openssl
# python3 iproute2. Progress goes to stderr; the table to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  BIG_MIB=${BIG_MIB:-64} SMALL_MIBS=${SMALL_MIBS:-4 4 4 4} BLOB_MIB=${BLOB_MIB:-128} RUNS=${RUNS:-3}
else
  BIG_MIB=${BIG_MIB:-256} SMALL_MIBS=${SMALL_MIBS:-20 10 5 1} BLOB_MIB=${BLOB_MIB:-512} RUNS=${RUNS:-5}
fi
OVERHEAD_RUNS=${OVERHEAD_RUNS:-3}
RTT_MS=${RTT_MS:-50}
CAP_MIBPS=${CAP_MIBPS:-25}
LOSSY=${LOSSY:-0}
AGG_MIBPS=${AGG_MIBPS:-}
CTR=${CTR:-auto}
TOOL_MAX=${TOOL_MAX:-1800} # seconds any one pull may take
USER_NAME=bench
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# ------------------------------------------------------------------------------------------
# Tools
# ------------------------------------------------------------------------------------------
need=()
have docker-registry || need+=(docker-registry)
have skopeo || need+=(skopeo)
have curl || need+=(curl)
have openssl || need+=(openssl)
have python3 || need+=(python3)
have ip || need+=(iproute2)
if [ "$CTR" != 0 ]; then have ctr && have containerd || need+=(containerd); fi
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
PYTHON=python3
[ -x /usr/bin/python3 ] && PYTHON=/usr/bin/python3

# ------------------------------------------------------------------------------------------
# Work dir, processes, namespaces, cleanup
# ------------------------------------------------------------------------------------------
WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/pullsecret-wan.XXXXXX")
declare -A PID=()
NS_UP="" NS_CL="" VETH=""
cleanup() {
  local name
  for name in "${!PID[@]}"; do stop_service "$name"; done
  if [ -n "$VETH" ]; then ip link del "$VETH" 2>/dev/null || true; fi
  for name in $NS_UP $NS_CL; do ip netns del "$name" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_service() {
  local name=$1 pid=${PID[$1]:-} i
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PID[$name]"
}
start_service() {
  local name=$1 out=$2 err=$3
  shift 3
  "$@" >>"$out" 2>>"$err" </dev/null &
  PID[$name]=$!
}
# wait_http NAME URL [CMD-PREFIX...]: until URL answers at all, up to 20 s.
wait_http() {
  local name=$1 url=$2 i code
  shift 2
  for ((i = 0; i < 200; i++)); do
    kill -0 "${PID[$name]}" 2>/dev/null || die "$name exited at start; see $WORK"
    code=$("$@" curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$url" || true)
    [ "$code" != 000 ] && [ -n "$code" ] && return 0
    sleep 0.1
  done
  die "$name did not answer $url within 20 s"
}
wait_file() {
  local path=$1 limit=${2:-300} i
  for ((i = 0; i < limit * 10; i++)); do
    [ -e "$path" ] && return 0
    sleep 0.1
  done
  die "$path did not appear within $limit s"
}
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
calc() { awk "BEGIN {printf \"$1\", $2}"; }
mkdir -p "$WORK/res"
rec() { echo "$2" >>"$WORK/res/$1"; }
vals() { tr '\n' ' ' <"$WORK/res/$1" 2>/dev/null; }
med() {
  { sort -g "$WORK/res/$1" 2>/dev/null || true; } |
    awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0 || a == "nan" || b == "nan") print "–"; else printf "%.2f×", a / b}'; }

# ------------------------------------------------------------------------------------------
# The emulator's own check, then the binary
# ------------------------------------------------------------------------------------------
log "WAN emulator self-test"
SELFTEST=$("$PYTHON" "$ROOT/benches/wan_relay.py" --self-test) || die "emulator self-test failed: $SELFTEST"
printf '%s\n' "$SELFTEST" >&2

PS_BIN=${PULLSECRET_BIN:-}
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
PS_DESC="pullsecret built from $COMMIT"
[ -n "$PS_BIN" ] && PS_DESC="pullsecret from PULLSECRET_BIN=$PS_BIN (bench scripts at $COMMIT)"
if [ -z "$PS_BIN" ]; then
  log "cargo build --release"
  cargo build --release --quiet
  PS_BIN=$ROOT/target/release/pullsecret
fi
cp "$PS_BIN" "$WORK/pullsecret"
PS_BIN=$WORK/pullsecret

small_total=0
for m in $SMALL_MIBS; do small_total=$((small_total + m)); done
need_mib=$(((BIG_MIB + small_total + BLOB_MIB) * 5 + 512))
avail_mib=$(df -Pm "$WORK" | awk 'NR == 2 {print $4}')
[ "$avail_mib" -ge "$need_mib" ] || die "need ~${need_mib} MiB free under $WORK, have ${avail_mib} MiB"

mkdir -p "$WORK/home" "$WORK/tmp" "$WORK/run"
chmod 700 "$WORK/run"
echo '{"auths":{}}' >"$WORK/auth.json"
CLEAN_ENV=(env -i "PATH=$PATH" "HOME=$WORK/home" "TMPDIR=$WORK/tmp" "XDG_RUNTIME_DIR=$WORK/run" "LANG=C.UTF-8")
PASSWORD=$(openssl rand -hex 16)

if [ "$LOSSY" = 1 ]; then
  CAP_MIBPS=$("$PYTHON" "$ROOT/benches/wan_relay.py" --print-mathis --rtt-ms "$RTT_MS")
  CAP_DESC="cap ${CAP_MIBPS} MiB/s per connection (Mathis bound, 0.1% loss)"
elif [ "$CAP_MIBPS" = 0 ]; then
  CAP_DESC="no per-connection cap"
else
  CAP_DESC="cap ${CAP_MIBPS} MiB/s per connection"
fi

# ------------------------------------------------------------------------------------------
# Optional aggregate cap: registry in namespace UP, relays connect from namespace CL, a veth
# pair between them with tc tbf on both ends. Clients stay on this namespace's loopback.
# ------------------------------------------------------------------------------------------
IN_UP=()
UP_HOST=127.0.0.1
RELAY_NETNS=()
if [ -n "$AGG_MIBPS" ]; then
  [ "$(id -u)" -eq 0 ] || die "AGG_MIBPS needs root (ip netns, tc)"
  NS_UP=pswan-up-$$ NS_CL=pswan-cl-$$ VETH=pswc$$
  ip netns add "$NS_UP"
  ip netns add "$NS_CL"
  ip link add "$VETH" type veth peer name pswu$$
  ip link set "$VETH" netns "$NS_CL"
  ip link set pswu$$ netns "$NS_UP"
  VETH="" # it lives in NS_CL now; deleting the namespaces removes the pair
  ip -n "$NS_CL" addr add 10.231.0.1/30 dev pswc$$
  ip -n "$NS_UP" addr add 10.231.0.2/30 dev pswu$$
  for ns in "$NS_CL" "$NS_UP"; do ip -n "$ns" link set lo up; done
  ip -n "$NS_CL" link set pswc$$ up
  ip -n "$NS_UP" link set pswu$$ up
  burst=$(((AGG_MIBPS * 1048576 / 100) > 65536 ? AGG_MIBPS * 1048576 / 100 : 65536))
  tc -n "$NS_CL" qdisc add dev pswc$$ root tbf rate "${AGG_MIBPS}mibps" burst "$burst" latency 100ms
  tc -n "$NS_UP" qdisc add dev pswu$$ root tbf rate "${AGG_MIBPS}mibps" burst "$burst" latency 100ms
  IN_UP=(ip netns exec "$NS_UP")
  UP_HOST=10.231.0.2
  RELAY_NETNS=(--netns "/run/netns/$NS_CL")
  AGG_DESC="aggregate cap ${AGG_MIBPS} MiB/s (tc tbf on a veth pair between two namespaces)"
  log "namespaces $NS_UP / $NS_CL, $AGG_DESC"
else
  AGG_DESC="no aggregate cap"
fi

# relay NAME TARGET RTT CAP: starts a WAN relay on 127.0.0.1; sets ${NAME}_PORT.
relay() {
  local name=$1 target=$2 rtt=$3 cap=$4 port
  rm -f "$WORK/$name.port"
  start_service "$name" "$WORK/$name.out" "$WORK/$name.log" \
    "${CLEAN_ENV[@]}" "$PYTHON" "$ROOT/benches/wan_relay.py" --listen 127.0.0.1:0 --target "$target" \
    --port-file "$WORK/$name.port" --rtt-ms "$rtt" --rate-mibps "$cap" "${RELAY_NETNS[@]}"
  wait_file "$WORK/$name.port" 15
  port=$(cat "$WORK/$name.port")
  printf -v "${name}_PORT" '%s' "$port"
}

# ------------------------------------------------------------------------------------------
# Upstream: token issuer (behind its own WAN relay) + token-auth registry
# ------------------------------------------------------------------------------------------
mkdir -p "$WORK/issuer" "$WORK/upstream"
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=bench-token-issuer -days 2 \
  -keyout "$WORK/issuer/key.pem" -out "$WORK/issuer/cert.pem" 2>/dev/null
start_service issuer "$WORK/issuer/stdout.log" "$WORK/issuer/stderr.log" \
  "${IN_UP[@]}" "${CLEAN_ENV[@]}" "$PYTHON" "$ROOT/benches/token_issuer.py" --listen "$UP_HOST:0" --port-file "$WORK/issuer/port" \
  --key "$WORK/issuer/key.pem" --cert "$WORK/issuer/cert.pem" --service bench-registry \
  --issuer bench-issuer --user "$USER_NAME:$PASSWORD" --log "$WORK/issuer/requests.log"
wait_file "$WORK/issuer/port" 15
ISSUER=$UP_HOST:$(cat "$WORK/issuer/port")
wait_http issuer "http://$ISSUER/token" "${IN_UP[@]}"
relay wanauth "$ISSUER" "$RTT_MS" "$CAP_MIBPS"
REALM=http://127.0.0.1:$wanauth_PORT/token

if [ -n "$AGG_MIBPS" ]; then UP=$UP_HOST:5000; else UP=127.0.0.1:$(free_port); fi
cat >"$WORK/upstream/config.yml" <<YAML
version: 0.1
log: {level: warn, formatter: text, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: "$WORK/upstream/storage"}
  cache: {blobdescriptor: inmemory}
  maintenance: {uploadpurging: {enabled: false}}
http: {addr: "$UP", secret: bench-upstream-secret}
health: {storagedriver: {enabled: false}}
auth:
  token:
    realm: "$REALM"
    service: bench-registry
    issuer: bench-issuer
    rootcertbundle: "$WORK/issuer/cert.pem"
YAML
start_service upstream "$WORK/upstream/stdout.log" "$WORK/upstream/registry.log" \
  "${IN_UP[@]}" "${CLEAN_ENV[@]}" docker-registry serve "$WORK/upstream/config.yml"
wait_http upstream "http://$UP/v2/" "${IN_UP[@]}"
relay wan "$UP" "$RTT_MS" "$CAP_MIBPS"
relay zero "$UP" 0 0 # the same relay with no delay and no cap: the emulator's own cost
WAN=127.0.0.1:$wan_PORT
ZERO=127.0.0.1:$zero_PORT
log "registry $UP (token auth, realm $REALM); WAN link $WAN: RTT $RTT_MS ms, $CAP_DESC, $AGG_DESC"

# ------------------------------------------------------------------------------------------
# Images, pushed through the zero relay with digests preserved
# ------------------------------------------------------------------------------------------
skopeo_() { "${CLEAN_ENV[@]}" "REGISTRY_AUTH_FILE=$WORK/auth.json" timeout "$TOOL_MAX" skopeo --insecure-policy "$@"; }

# push_image REPO PREFIX MIB...: random layers of MIB MiB each; sets ${PREFIX}_LAYERS (hex
# digests, space-separated) and ${PREFIX}_DESC.
push_image() {
  local repo=$1 prefix=$2 layout=$WORK/layout-$2 hex size layers=() diff_ids=() descs=() \
    config_hex cfg_size manifest_hex man_size m
  shift 2
  mkdir -p "$layout/blobs/sha256"
  for m in "$@"; do
    head -c "$((m * 1048576))" /dev/urandom >"$WORK/layer"
    hex=$(sha256sum "$WORK/layer" | cut -d' ' -f1)
    size=$(stat -c %s "$WORK/layer")
    mv "$WORK/layer" "$layout/blobs/sha256/$hex"
    layers+=("$hex")
    diff_ids+=("\"sha256:$hex\"")
    descs+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$hex\",\"size\":$size}")
  done
  diff_ids=$(IFS=,; echo "${diff_ids[*]}")
  descs=$(IFS=,; echo "${descs[*]}")
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[%s]}}' "$diff_ids" >"$WORK/config"
  config_hex=$(sha256sum "$WORK/config" | cut -d' ' -f1)
  cfg_size=$(stat -c %s "$WORK/config")
  mv "$WORK/config" "$layout/blobs/sha256/$config_hex"
  printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$OCI_MANIFEST" "$config_hex" "$cfg_size" "$descs" >"$WORK/manifest"
  manifest_hex=$(sha256sum "$WORK/manifest" | cut -d' ' -f1)
  man_size=$(stat -c %s "$WORK/manifest")
  mv "$WORK/manifest" "$layout/blobs/sha256/$manifest_hex"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"%s","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
    "$OCI_MANIFEST" "$manifest_hex" "$man_size" >"$layout/index.json"
  skopeo_ copy -q --preserve-digests --dest-tls-verify=false --dest-creds "$USER_NAME:$PASSWORD" \
    "oci:$layout:v1" "docker://$ZERO/$repo:v1"
  rm -rf "$layout"
  printf -v "${prefix}_LAYERS" '%s' "${layers[*]}"
}
# shellcheck disable=SC2086
FIVE_DESC="$BIG_MIB+${SMALL_MIBS// /+} MiB, $((1 + $(wc -w <<<"$SMALL_MIBS"))) layers"
BLOB_DESC="one $BLOB_MIB MiB layer"
log "pushing bench/five:v1 ($FIVE_DESC) and bench/blob:v1 ($BLOB_DESC)"
# shellcheck disable=SC2086
push_image bench/five FIVE "$BIG_MIB" $SMALL_MIBS
push_image bench/blob BLOB "$BLOB_MIB"

# ------------------------------------------------------------------------------------------
# containerd (private: own root, state and socket under the work dir)
# ------------------------------------------------------------------------------------------
CTR_NOTE=""
if [ "$CTR" != 0 ]; then
  CD=$WORK/containerd
  mkdir -p "$CD"
  cat >"$CD/config.toml" <<TOML
version = 2
root = "$CD/root"
state = "$CD/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CD/c.sock"
[ttrpc]
  address = "$CD/t.sock"
[debug]
  address = ""
[metrics]
  address = ""
TOML
  if [ "$(id -u)" -eq 0 ]; then
    start_service containerd "$CD/stdout.log" "$CD/containerd.log" containerd --config "$CD/config.toml"
    for ((i = 0; i < 100; i++)); do
      ctr -a "$CD/c.sock" version >/dev/null 2>&1 && break
      kill -0 "${PID[containerd]}" 2>/dev/null || break
      sleep 0.1
    done
    if ctr -a "$CD/c.sock" version >/dev/null 2>&1; then CTR=1; else CTR_NOTE="containerd did not start (see its log)"; fi
  else
    CTR_NOTE="containerd needs root here"
  fi
  if [ "$CTR" != 1 ]; then
    [ "$CTR" = auto ] || die "ctr: $CTR_NOTE"
    CTR=0
    stop_service containerd
    log "leaving ctr out: $CTR_NOTE"
  fi
else
  CTR_NOTE="CTR=0"
fi
ctr_() { timeout "$TOOL_MAX" ctr -a "$CD/c.sock" -n bench "$@"; }

# ------------------------------------------------------------------------------------------
# pullsecret, restartable on an empty cache; upstream = the WAN relay
# ------------------------------------------------------------------------------------------
PS_PORT=$(free_port)
PS=127.0.0.1:$PS_PORT
PS_ENV=("${CLEAN_ENV[@]}" "RUST_LOG=${PS_LOG:-warn}" "XDG_DATA_HOME=$WORK/ps/data" "XDG_CONFIG_HOME=$WORK/ps/config" "XDG_CACHE_HOME=$WORK/ps/xdgcache")
mkdir -p "$WORK/ps/data" "$WORK/ps/config"
printf '%s' "$PASSWORD" | "${PS_ENV[@]}" "$PS_BIN" secret create docker-registry upstream \
  --docker-server="$WAN" --docker-username="$USER_NAME" --docker-password-stdin >/dev/null
GEN=0 PS_CACHE=""
fresh_ps() {
  stop_service ps
  [ -n "$PS_CACHE" ] && rm -rf "$PS_CACHE"
  GEN=$((GEN + 1))
  PS_CACHE=$WORK/ps/cache-$GEN
  cat >"$WORK/ps/proxy.toml" <<TOML
listen = "$PS"
cache_dir = "$PS_CACHE"
default_upstream = "upstream"

[[upstream]]
name = "upstream"
url = "http://$WAN"
insecure = true
secret = "upstream"
TOML
  start_service ps "$WORK/ps/stdout.log" "$WORK/ps/proxy.log" \
    "${PS_ENV[@]}" "$PS_BIN" proxy --config "$WORK/ps/proxy.toml"
  wait_http ps "http://$PS/healthz"
}
# cached PREFIX: waits until pullsecret's cache holds every layer of the image.
cached() {
  local var=${1}_LAYERS hex
  for hex in ${!var}; do wait_file "$PS_CACHE/v1/blobs/sha256/$hex" 600; done
}

# ------------------------------------------------------------------------------------------
# Pulls; each prints seconds and checks that every layer arrived
# ------------------------------------------------------------------------------------------
# pull_skopeo REGISTRY REPO PREFIX [creds]
pull_skopeo() {
  local reg=$1 repo=$2 prefix=$3 dest=$WORK/pulled t0 t1 creds=() var=${3}_LAYERS hex
  [ "${4:-}" = creds ] && creds=(--src-creds "$USER_NAME:$PASSWORD")
  rm -rf "$dest"
  t0=$(now)
  skopeo_ copy -q --preserve-digests --src-tls-verify=false "${creds[@]}" \
    "docker://$reg/$repo:v1" "oci:$dest:v1" >/dev/null || die "skopeo pull of $repo from $reg failed"
  t1=$(now)
  for hex in ${!var}; do [ -s "$dest/blobs/sha256/$hex" ] || die "skopeo from $reg: layer $hex missing"; done
  rm -rf "$dest"
  calc %.3f "$t1 - $t0"
}
# pull_ctr REGISTRY REPO PREFIX [creds]: containerd's resolver and fetcher (ctr content fetch).
pull_ctr() {
  local reg=$1 repo=$2 prefix=$3 t0 t1 creds=() var=${3}_LAYERS hex
  [ "${4:-}" = creds ] && creds=(--user "$USER_NAME:$PASSWORD")
  ctr_content_clear
  t0=$(now)
  ctr_ content fetch --plain-http "${creds[@]}" "$reg/$repo:v1" >"$WORK/ctr.out" 2>"$WORK/ctr.err" ||
    die "ctr fetch of $repo from $reg failed: $(tail -3 "$WORK/ctr.err")"
  t1=$(now)
  ctr_ content ls -q >"$WORK/ctr.ls"
  for hex in ${!var}; do grep -qx "sha256:$hex" "$WORK/ctr.ls" || die "ctr from $reg: layer $hex missing"; done
  ctr_content_clear
  calc %.3f "$t1 - $t0"
}
ctr_content_clear() {
  ctr_ images ls -q | xargs -r ctr -a "$CD/c.sock" -n bench images rm --sync >/dev/null 2>&1 || true
  ctr_ content ls -q | xargs -r ctr -a "$CD/c.sock" -n bench content rm >/dev/null 2>&1 || true
  [ -z "$(ctr_ content ls -q)" ] || die "containerd still holds content"
}

CLIENTS=(skopeo)
[ "$CTR" = 1 ] && CLIENTS+=(ctr)

# ------------------------------------------------------------------------------------------
# Emulator overhead: relay with 0 ms and no cap vs straight to the registry (blob image)
# ------------------------------------------------------------------------------------------
log "emulator overhead: GET of the ${BLOB_MIB} MiB blob straight vs through the relay at 0 ms and no cap, $OVERHEAD_RUNS runs"
BLOB_PATH=/v2/bench/blob/blobs/sha256:$BLOB_LAYERS
TOKEN=$(curl -sS --max-time 30 -u "$USER_NAME:$PASSWORD" "$REALM?service=bench-registry&scope=repository:bench/blob:pull" |
  "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["token"])')
# get_blob HOSTPORT: seconds for one GET of the blob (bearer token, to /dev/null).
get_blob() {
  local out code size t
  out=$(curl -sS --max-time "$TOOL_MAX" -o /dev/null -H "Authorization: Bearer $TOKEN" \
    -w '%{http_code} %{size_download} %{time_total}' "http://$1$BLOB_PATH")
  read -r code size t <<<"$out"
  [ "$code" = 200 ] && [ "$size" = $((BLOB_MIB * 1048576)) ] || die "GET of the blob from $1: $out"
  calc %.3f "$t"
}
if [ -z "$AGG_MIBPS" ]; then
  get_blob "$UP" >/dev/null # page cache
  for ((r = 1; r <= OVERHEAD_RUNS; r++)); do
    v=$(get_blob "$UP"); rec ovh_straight "$v"
    v=$(get_blob "$ZERO"); rec ovh_zero "$v"
  done
  log "  s straight: $(vals ovh_straight)| zero relay: $(vals ovh_zero)"
else
  log "  (AGG_MIBPS: the registry is inside a namespace, so there is no straight path; left out)"
fi
# One GET over the link: what a single connection carries (deliverable 3's baseline).
for ((r = 1; r <= OVERHEAD_RUNS; r++)); do v=$(get_blob "$WAN"); rec get_wan "$v"; done
log "  s one GET over the link: $(vals get_wan)"

# ------------------------------------------------------------------------------------------
# The comparison
# ------------------------------------------------------------------------------------------
log "measuring: load $(cut -d' ' -f1-3 /proc/loadavg), $RUNS runs"
T0=$(now)
for ((r = 1; r <= RUNS; r++)); do
  for img in five blob; do
    P=${img^^}
    for c in "${CLIENTS[@]}"; do
      v=$(pull_$c "$WAN" "bench/$img" "$P" creds); rec "${img}_${c}_direct" "$v"
      fresh_ps
      v=$(pull_$c "$PS" "bench/$img" "$P"); rec "${img}_${c}_cold" "$v"
      cached "$P"
      v=$(pull_$c "$PS" "bench/$img" "$P"); rec "${img}_${c}_warm" "$v"
      log "  run $r $img $c: direct $(tail -1 "$WORK/res/${img}_${c}_direct") s, cold $(tail -1 "$WORK/res/${img}_${c}_cold") s, warm $v s"
    done
  done
done
T_MEASURED=$(calc %.0f "$(now) - $T0")
stop_service ps

# ------------------------------------------------------------------------------------------
# Table
# ------------------------------------------------------------------------------------------
row() { # CLIENT LABEL KIND
  local c=$1 label=$2 k=$3 f b
  f=$(med "five_${c}_$k") b=$(med "blob_${c}_$k")
  printf '| %s | %s | %s | %s | %s |\n' "$label" "$f" "$(ratio "$f" "$(med "five_${c}_direct")")" \
    "$b" "$(ratio "$b" "$(med "blob_${c}_direct")")"
}
mibps() { awk -v m="$1" -v s="$2" 'BEGIN {if (s == "nan" || s == 0) print "–"; else printf "%.0f", m / s}'; }
o_s=$(med ovh_straight) o_z=$(med ovh_zero)
{
  echo
  echo "**WAN link: RTT $RTT_MS ms, $CAP_DESC, $AGG_DESC; seconds, median of $RUNS; ratio = time / the same client's direct pull over the link (below 1 is faster)**"
  echo
  echo "| pull | 5-layer image ($FIVE_DESC), s | ratio | blob image ($BLOB_DESC), s | ratio |"
  echo "|---|---:|---:|---:|---:|"
  for c in "${CLIENTS[@]}"; do
    name=$c
    [ "$c" = ctr ] && name="ctr (content fetch)"
    row "$c" "$name direct over the link" direct
    row "$c" "$name through pullsecret, cold" cold
    row "$c" "$name through pullsecret, warm" warm
  done
  echo
  if [ -z "$AGG_MIBPS" ]; then
    echo "Emulator overhead (curl GET of the $BLOB_MIB MiB blob with a bearer token, median of $OVERHEAD_RUNS): straight to the registry $o_s s ($(mibps "$BLOB_MIB" "$o_s") MiB/s), through the relay at 0 ms and no cap $o_z s ($(mibps "$BLOB_MIB" "$o_z") MiB/s), $(ratio "$o_z" "$o_s")."
  fi
  g=$(med get_wan)
  echo "One GET of the blob over the link (a single connection, median of $OVERHEAD_RUNS): $g s ($(mibps "$BLOB_MIB" "$g") MiB/s)."
  echo "Emulator self-test: $(tr '\n' ';' <<<"$SELFTEST" | sed 's/self-test //g; s/;$//; s/;/; /g')."
  [ "$CTR" = 1 ] || echo "ctr left out: $CTR_NOTE."
  echo "$PS_DESC, $(nproc) CPUs, ${T_MEASURED} s of measurement, load after $(cut -d' ' -f1-3 /proc/loadavg); skopeo $(skopeo --version | awk '{print $NF}')$([ "$CTR" = 1 ] && echo ", containerd $(ctr --version | awk '{print $NF}')")."
}
