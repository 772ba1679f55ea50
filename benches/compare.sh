#!/usr/bin/env bash
# pullsecret proxy against its peers, in one run on this machine, everything on 127.0.0.1:
#
#   upstream    CNCF distribution (docker-registry) with token auth; RS256 tokens from
#               benches/token_issuer.py; its access log counts what the proxies fetch
#   distribution the same docker-registry in proxy mode (proxy.remoteurl + username/password)
#   nginx       the blob and manifest files from disk with sendfile on (the ceiling)
#   pullsecret  `pullsecret proxy`, the upstream password held as a stored docker-registry secret
#
# and prints one Markdown table (medians over RUNS runs, ratios, targets met or missed):
#   - warm-cache GET of a BLOB_MIB blob (MiB/s, curl);
#   - cold first pull of a one-layer BLOB_MIB image with skopeo (each proxy restarted on an empty
#     cache before every run), and directly from the upstream;
#   - CLIENTS concurrent curls for the same uncached blob: wall time, upstream GETs and bytes
#     (upstream access log), then the same clients again on the warm cache;
#   - manifest-by-digest GETs, wrk -t2 -c64 --latency: requests/s and p99;
#   - peak RSS of each proxy (VmRSS sampled every 100 ms, and VmHWM) while RSS_CLIENTS clients
#     stream a HUGE_MIB blob, cold and then warm.
#
#   benches/compare.sh                       # full: 512 MiB / 2 GiB blobs, 5 runs (~20-30 min)
#   QUICK=1 benches/compare.sh               # small sizes, 3 runs, for trying the script out
#   WAIT_IDLE=1800 benches/compare.sh        # first wait (up to 30 min) for no cargo/rustc/fuzz
#                                            # processes and a 1-minute load below LOAD_MAX
# Knobs: RUNS, RSS_RUNS, BLOB_MIB, HUGE_MIB, CLIENTS, RSS_CLIENTS, WRK_SECS, WRK_CONNS,
#        SECTIONS (e.g. "2 3"), PERF_DIR (perf record -a -g of each first cold pull),
#        PS_LOG (RUST_LOG for pullsecret; KEEP=1 to read it), WAIT_IDLE, LOAD_MAX, PULLSECRET_BIN (skip the build), BENCH_TMPDIR, KEEP=1 (keep temp dir).
# Installs missing Debian packages with apt-get: docker-registry nginx skopeo wrk curl openssl python3.
# Progress goes to stderr; the table to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  BLOB_MIB=${BLOB_MIB:-32} HUGE_MIB=${HUGE_MIB:-128} RUNS=${RUNS:-3} WRK_SECS=${WRK_SECS:-3}
else
  BLOB_MIB=${BLOB_MIB:-512} HUGE_MIB=${HUGE_MIB:-2048} RUNS=${RUNS:-5} WRK_SECS=${WRK_SECS:-10}
fi
RSS_RUNS=${RSS_RUNS:-$RUNS}
SECTIONS=${SECTIONS:-1 2 3 4 5}
CLIENTS=${CLIENTS:-50}
RSS_CLIENTS=${RSS_CLIENTS:-10}
WRK_CONNS=${WRK_CONNS:-64}
WAIT_IDLE=${WAIT_IDLE:-0}
LOAD_MAX=${LOAD_MAX:-1.0}
CURL_MAX=${CURL_MAX:-900}          # seconds any one curl may take
SKOPEO_MAX=${SKOPEO_MAX:-900}      # seconds any one skopeo copy may take
REPO=bench/big
HUGE_REPO=bench/huge
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
USER_NAME=bench

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# ------------------------------------------------------------------------------------------
# Tools
# ------------------------------------------------------------------------------------------
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
need=()
have docker-registry || need+=(docker-registry)
[ -x "$NGINX" ] || need+=(nginx)
have skopeo || need+=(skopeo)
have wrk || need+=(wrk)
have curl || need+=(curl)
have openssl || need+=(openssl)
have python3 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi

# ------------------------------------------------------------------------------------------
# Work dir, processes, cleanup
# ------------------------------------------------------------------------------------------
WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/pullsecret-bench.XXXXXX")
declare -A PID=()
cleanup() {
  local name
  for name in "${!PID[@]}"; do stop_service "$name"; done
  if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops a service started by start_service: SIGTERM, up to 10 s, then SIGKILL.
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

# start_service NAME STDOUT STDERR CMD...: runs CMD in the background, remembered for cleanup.
start_service() {
  local name=$1 out=$2 err=$3
  shift 3
  "$@" >>"$out" 2>>"$err" </dev/null &
  PID[$name]=$!
}

# wait_http NAME URL: until URL answers at all (any status), up to 15 s.
wait_http() {
  local name=$1 url=$2 i code
  for ((i = 0; i < 150; i++)); do
    kill -0 "${PID[$name]}" 2>/dev/null || die "$name exited at start; see $WORK"
    code=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$url" || true)
    [ "$code" != 000 ] && [ -n "$code" ] && return 0
    sleep 0.1
  done
  die "$name did not answer $url within 15 s"
}

# wait_file PATH [SECONDS]: until PATH exists (a proxy's cache committing a blob).
wait_file() {
  local path=$1 limit=${2:-120} i
  for ((i = 0; i < limit * 10; i++)); do
    [ -e "$path" ] && return 0
    sleep 0.1
  done
  die "$path did not appear within $limit s"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

now() { date +%s.%N; }
# Every measurement goes to $WORK/res/KEY, one value per line.
mkdir -p "$WORK/res"
rec() { echo "$2" >>"$WORK/res/$1"; }
vals() { tr '\n' ' ' <"$WORK/res/$1" 2>/dev/null; }
# Median of a result file (mean of the middle two for an even count).
med() {
  { sort -g "$WORK/res/$1" 2>/dev/null || true; } |
    awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}
maxof() { { sort -g "$WORK/res/$1" 2>/dev/null || echo nan; } | tail -1; }
# on N: whether section N is in SECTIONS.
on() { [[ " $SECTIONS " == *" $1 "* ]]; }
calc() { awk "BEGIN {printf \"$1\", $2}"; }

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# cargo/rustc processes and fuzzers (cargo-fuzz, binaries under fuzz/target, libFuzzer runs).
busy_procs() {
  ps -eo comm=,args= | awk '$1 == "cargo" || $1 == "rustc" || $1 == "cargo-fuzz" || /\/fuzz\/target\// || / -max_total_tim[e]=/ {n++} END {print n+0}'
}

# CPU seconds (user, nice, system, irq, softirq) the whole machine has spent, from /proc/stat.
HZ=$(getconf CLK_TCK)
machine_cpu() { awk -v hz="$HZ" '$1 == "cpu" {printf "%.2f", ($2 + $3 + $4 + $7 + $8) / hz}' /proc/stat; }
# Sets OUR_CPU: CPU seconds of this shell, its finished children (which include everything they
# waited for), and the services still running. Not in a subshell: `times` must be this shell's.
our_cpu() {
  local pid s
  times >"$WORK/times"
  s=$(awk '{for (i = 1; i <= NF; i++) {split($i, a, "m"); s += a[1] * 60 + a[2]}} END {printf "%.2f", s}' "$WORK/times")
  for pid in "${PID[@]}"; do
    # Fields after "pid (comm) ": utime stime cutime cstime are the 12th to 15th.
    s=$(awk -v s="$s" -v hz="$HZ" '{sub(/^.*\) /, ""); printf "%.2f", s + ($12 + $13 + $14 + $15) / hz}' "/proc/$pid/stat" 2>/dev/null || echo "$s")
  done
  OUR_CPU=$s
}

# ------------------------------------------------------------------------------------------
# Build
# ------------------------------------------------------------------------------------------
PS_BIN=${PULLSECRET_BIN:-}
if [ -z "$PS_BIN" ]; then
  log "cargo build --release"
  cargo build --release --quiet
  PS_BIN=$ROOT/target/release/pullsecret
fi
# A private copy: builds running alongside cannot swap the binary under the benchmark.
cp "$PS_BIN" "$WORK/pullsecret"
PS_BIN=$WORK/pullsecret
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l)

# Disk: the upstream holds both images; each proxy caches them; skopeo writes one copy.
need_mib=$((BLOB_MIB * 6 + HUGE_MIB * 4 + 1024))
avail_mib=$(df -Pm "$WORK" | awk 'NR == 2 {print $4}')
[ "$avail_mib" -ge "$need_mib" ] || die "need ~${need_mib} MiB free under $WORK, have ${avail_mib} MiB"
log "work dir $WORK (${avail_mib} MiB free, ~${need_mib} MiB needed)"

# A private environment for every tool: nobody reads the user's credentials or config.
mkdir -p "$WORK/home" "$WORK/tmp" "$WORK/run"
chmod 700 "$WORK/run"
echo '{"auths":{}}' >"$WORK/auth.json"
CLEAN_ENV=(env -i "PATH=$PATH" "HOME=$WORK/home" "TMPDIR=$WORK/tmp" "XDG_RUNTIME_DIR=$WORK/run" "LANG=C.UTF-8")
# pyenv's python3 shim needs its root; the system python3 needs nothing.
PYTHON=python3
if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; elif [ -n "${PYENV_ROOT:-}" ]; then CLEAN_ENV+=("PYENV_ROOT=$PYENV_ROOT"); fi
PASSWORD=$(openssl rand -hex 16)

# ------------------------------------------------------------------------------------------
# Upstream: token issuer + token-auth registry
# ------------------------------------------------------------------------------------------
mkdir -p "$WORK/issuer" "$WORK/upstream"
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=bench-token-issuer -days 2 \
  -keyout "$WORK/issuer/key.pem" -out "$WORK/issuer/cert.pem" 2>/dev/null
start_service issuer "$WORK/issuer/stdout.log" "$WORK/issuer/stderr.log" \
  "${CLEAN_ENV[@]}" "$PYTHON" "$ROOT/benches/token_issuer.py" --port-file "$WORK/issuer/port" \
  --key "$WORK/issuer/key.pem" --cert "$WORK/issuer/cert.pem" --service bench-registry \
  --issuer bench-issuer --user "$USER_NAME:$PASSWORD" --log "$WORK/issuer/requests.log"
wait_file "$WORK/issuer/port" 15
ISSUER_PORT=$(cat "$WORK/issuer/port")
wait_http issuer "http://127.0.0.1:$ISSUER_PORT/token"

UP_PORT=$(free_port)
UP=127.0.0.1:$UP_PORT
cat >"$WORK/upstream/config.yml" <<YAML
version: 0.1
log: {level: warn, formatter: text, accesslog: {disabled: false}}
storage:
  filesystem: {rootdirectory: "$WORK/upstream/storage"}
  cache: {blobdescriptor: inmemory}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http: {addr: "$UP", secret: bench-upstream-secret}
health: {storagedriver: {enabled: false}}
auth:
  token:
    realm: "http://127.0.0.1:$ISSUER_PORT/token"
    service: bench-registry
    issuer: bench-issuer
    rootcertbundle: "$WORK/issuer/cert.pem"
YAML
# distribution writes its access log (Apache combined format) to stdout.
UP_ACCESS=$WORK/upstream/access.log
start_service upstream "$UP_ACCESS" "$WORK/upstream/registry.log" \
  "${CLEAN_ENV[@]}" docker-registry serve "$WORK/upstream/config.yml"
wait_http upstream "http://$UP/v2/"
log "upstream registry on $UP (token auth, issuer on :$ISSUER_PORT)"

# ------------------------------------------------------------------------------------------
# Images: one layer of random bytes each, pushed with digests preserved
# ------------------------------------------------------------------------------------------
skopeo_() { "${CLEAN_ENV[@]}" "REGISTRY_AUTH_FILE=$WORK/auth.json" timeout "$SKOPEO_MAX" skopeo --insecure-policy "$@"; }

# push_image REPO MIB PREFIX: sets ${PREFIX}_LAYER, ${PREFIX}_SIZE, ${PREFIX}_MANIFEST; leaves
# the layer at $WORK/$PREFIX.layer and the manifest at $WORK/$PREFIX.manifest.
push_image() {
  local repo=$1 mib=$2 prefix=$3 layout=$WORK/layout-$3 layer_hex config_hex manifest_hex size cfg_size man_size
  mkdir -p "$layout/blobs/sha256"
  head -c "$((mib * 1024 * 1024))" /dev/urandom >"$WORK/$prefix.layer"
  layer_hex=$(sha256sum "$WORK/$prefix.layer" | cut -d' ' -f1)
  size=$(stat -c %s "$WORK/$prefix.layer")
  ln "$WORK/$prefix.layer" "$layout/blobs/sha256/$layer_hex"
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$layer_hex" >"$WORK/$prefix.config"
  config_hex=$(sha256sum "$WORK/$prefix.config" | cut -d' ' -f1)
  cfg_size=$(stat -c %s "$WORK/$prefix.config")
  cp "$WORK/$prefix.config" "$layout/blobs/sha256/$config_hex"
  printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$OCI_MANIFEST" "$config_hex" "$cfg_size" "$layer_hex" "$size" >"$WORK/$prefix.manifest"
  manifest_hex=$(sha256sum "$WORK/$prefix.manifest" | cut -d' ' -f1)
  man_size=$(stat -c %s "$WORK/$prefix.manifest")
  cp "$WORK/$prefix.manifest" "$layout/blobs/sha256/$manifest_hex"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"%s","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
    "$OCI_MANIFEST" "$manifest_hex" "$man_size" >"$layout/index.json"
  skopeo_ copy -q --preserve-digests --dest-tls-verify=false --dest-creds "$USER_NAME:$PASSWORD" \
    "oci:$layout:v1" "docker://$UP/$repo:v1"
  rm -rf "$layout"
  printf -v "${prefix}_LAYER" '%s' "$layer_hex"
  printf -v "${prefix}_SIZE" '%s' "$size"
  printf -v "${prefix}_MANIFEST" '%s' "$manifest_hex"
}
log "pushing $REPO:v1 (one ${BLOB_MIB} MiB layer) and $HUGE_REPO:v1 (one ${HUGE_MIB} MiB layer)"
push_image "$REPO" "$BLOB_MIB" BIG
push_image "$HUGE_REPO" "$HUGE_MIB" HUGE
rm -f "$WORK/HUGE.layer" # only the upstream needs it
BLOB_PATH=/v2/$REPO/blobs/sha256:$BIG_LAYER
HUGE_PATH=/v2/$HUGE_REPO/blobs/sha256:$HUGE_LAYER
MANIFEST_PATH=/v2/$REPO/manifests/sha256:$BIG_MANIFEST

# ------------------------------------------------------------------------------------------
# nginx: the same files from disk, sendfile on
# ------------------------------------------------------------------------------------------
NG=$WORK/nginx
mkdir -p "$NG/www/v2/$REPO/blobs" "$NG/www/v2/$REPO/manifests" "$NG/tmp" "$NG/logs"
mv "$WORK/BIG.layer" "$NG/www$BLOB_PATH"
cp "$WORK/BIG.manifest" "$NG/www$MANIFEST_PATH"
NG_PORT=$(free_port)
user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user root;"
cat >"$NG/nginx.conf" <<CONF
$user_line
worker_processes $(nproc);
pid $NG/nginx.pid;
error_log $NG/logs/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  client_body_temp_path $NG/tmp/body;
  proxy_temp_path $NG/tmp/proxy;
  fastcgi_temp_path $NG/tmp/fastcgi;
  uwsgi_temp_path $NG/tmp/uwsgi;
  scgi_temp_path $NG/tmp/scgi;
  types { }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NG_PORT;
    root $NG/www;
    location /v2/$REPO/manifests/ {
      default_type $OCI_MANIFEST;
      add_header Docker-Content-Digest sha256:$BIG_MANIFEST;
    }
  }
}
CONF
start_service nginx "$NG/logs/stdout.log" "$NG/logs/stderr.log" "$NGINX" -p "$NG" -e "$NG/logs/error.log" -c "$NG/nginx.conf"
wait_http nginx "http://127.0.0.1:$NG_PORT/"

# ------------------------------------------------------------------------------------------
# The proxies: restartable on a fresh cache
# ------------------------------------------------------------------------------------------
PS_PORT=$(free_port)
DP_PORT=$(free_port)
PS_ENV=("${CLEAN_ENV[@]}" "RUST_LOG=${PS_LOG:-warn}" "XDG_DATA_HOME=$WORK/ps/data" "XDG_CONFIG_HOME=$WORK/ps/config" "XDG_CACHE_HOME=$WORK/ps/xdgcache")
mkdir -p "$WORK/ps/data" "$WORK/ps/config" "$WORK/dp"
printf '%s' "$PASSWORD" | "${PS_ENV[@]}" "$PS_BIN" secret create docker-registry upstream \
  --docker-server="$UP" --docker-username="$USER_NAME" --docker-password-stdin >/dev/null
GEN=0
PS_CACHE="" DP_STORE=""

start_ps() {
  GEN=$((GEN + 1))
  PS_CACHE=$WORK/ps/cache-$GEN
  cat >"$WORK/ps/proxy.toml" <<TOML
listen = "127.0.0.1:$PS_PORT"
cache_dir = "$PS_CACHE"
default_upstream = "upstream"

[[upstream]]
name = "upstream"
url = "http://$UP"
insecure = true
secret = "upstream"
TOML
  start_service ps "$WORK/ps/stdout.log" "$WORK/ps/proxy.log" \
    "${PS_ENV[@]}" "$PS_BIN" proxy --config "$WORK/ps/proxy.toml"
  wait_http ps "http://127.0.0.1:$PS_PORT/healthz"
}

start_dp() {
  GEN=$((GEN + 1))
  DP_STORE=$WORK/dp/storage-$GEN
  cat >"$WORK/dp/config.yml" <<YAML
version: 0.1
log: {level: warn, formatter: text, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: "$DP_STORE"}
  cache: {blobdescriptor: inmemory}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http: {addr: "127.0.0.1:$DP_PORT", secret: bench-peer-secret}
health: {storagedriver: {enabled: false}}
proxy:
  remoteurl: "http://$UP"
  username: "$USER_NAME"
  password: "$PASSWORD"
YAML
  start_service dp "$WORK/dp/stdout.log" "$WORK/dp/registry.log" \
    "${CLEAN_ENV[@]}" docker-registry serve "$WORK/dp/config.yml"
  wait_http dp "http://127.0.0.1:$DP_PORT/v2/"
}

# fresh NAME: restart a proxy on an empty cache (the previous one deleted).
fresh() {
  stop_service "$1"
  if [ "$1" = ps ]; then
    [ -n "$PS_CACHE" ] && rm -rf "$PS_CACHE"
    start_ps
  else
    [ -n "$DP_STORE" ] && rm -rf "$DP_STORE"
    start_dp
  fi
}

port_of() { case $1 in ps) echo "$PS_PORT" ;; dp) echo "$DP_PORT" ;; nginx) echo "$NG_PORT" ;; direct) echo "$UP_PORT" ;; esac; }

# cached_path NAME HEX: where a proxy keeps a blob once it is committed.
cached_path() {
  case $1 in
    ps) echo "$PS_CACHE/v1/blobs/sha256/$2" ;;
    dp) echo "$DP_STORE/docker/registry/v2/blobs/sha256/${2:0:2}/$2/data" ;;
  esac
}

# get URL: one GET to /dev/null; prints "HTTP_CODE SIZE BYTES_PER_SECOND".
get() { curl -sS --max-time "$CURL_MAX" -o /dev/null -w '%{http_code} %{size_download} %{speed_download}\n' "$1"; }

# warm NAME PATH HEX: fetch through a proxy and wait until its cache holds the blob.
warm() {
  local r
  r=$(get "http://127.0.0.1:$(port_of "$1")$2")
  [ "${r%% *}" = 200 ] || die "$1 GET $2 answered: $r"
  wait_file "$(cached_path "$1" "$3")"
}

# clients N URL SIZE: N concurrent GETs; prints the wall time in seconds; dies unless every
# client got 200 and SIZE bytes.
clients() {
  local n=$1 url=$2 size=$3 dir i t0 t1 bad
  dir=$(mktemp -d "$WORK/tmp/clients.XXXX")
  local pids=()
  t0=$(now)
  for ((i = 0; i < n; i++)); do
    curl -sS --max-time "$CURL_MAX" -o /dev/null -w '%{http_code} %{size_download}\n' "$url" >"$dir/$i" 2>&1 &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || true; done
  t1=$(now)
  bad=$(cat "$dir"/* | grep -cvx "200 $size" || true)
  [ "$bad" -eq 0 ] || die "$bad of $n clients of $url failed: $(sort "$dir"/* | uniq -c | head -3 | tr '\n' ';')"
  rm -rf "$dir"
  calc %.3f "$t1 - $t0"
}

# Waits until the upstream access log stops growing (distribution logs after responding).
settle_log() {
  local last=-1 cur i
  for ((i = 0; i < 50; i++)); do
    cur=$(stat -c %s "$UP_ACCESS")
    [ "$cur" = "$last" ] && return 0
    last=$cur
    sleep 0.2
  done
}
up_lines() { settle_log; wc -l <"$UP_ACCESS"; }
# upstream_fetches FROM_LINE PATH: "GETs-with-2xx BYTES HEADs other-GETs" after line FROM_LINE.
upstream_fetches() {
  settle_log
  tail -n "+$(($1 + 1))" "$UP_ACCESS" | awk -F'"' -v p="$2" '
    { split($2, r, " "); split($3, s, " ") }
    r[2] == p && r[1] == "GET" && s[1] ~ /^2/ { g++; b += s[2]; next }
    r[2] == p && r[1] == "GET" { o++; next }
    r[2] == p && r[1] == "HEAD" { h++ }
    END { printf "%d %.0f %d %d\n", g, b, h, o }'
}

# ------------------------------------------------------------------------------------------
# Quiet machine
# ------------------------------------------------------------------------------------------
if [ "$WAIT_IDLE" -gt 0 ]; then
  log "waiting up to ${WAIT_IDLE}s for no cargo/rustc/fuzz processes and load < $LOAD_MAX"
  deadline=$((SECONDS + WAIT_IDLE))
  while [ "$SECONDS" -lt "$deadline" ]; do
    l1=$(cut -d' ' -f1 /proc/loadavg)
    if [ "$(busy_procs)" -eq 0 ] && awk -v l="$l1" -v m="$LOAD_MAX" 'BEGIN {exit !(l < m)}'; then
      break
    fi
    log "  load $(loadavg), $(busy_procs) cargo/rustc/fuzz processes; waiting"
    sleep 20
  done
fi
LOAD_START=$(loadavg)
BUSY_START=$(busy_procs)
log "measuring: load $LOAD_START, $BUSY_START cargo/rustc/fuzz processes"
# What everything else on the machine uses while we measure: all CPU time minus ours.
T_START=$(now)
CPU_START=$(machine_cpu)
our_cpu
OURS_START=$OUR_CPU
BUSY_MAX=$BUSY_START
note_busy() {
  local b
  b=$(busy_procs)
  if [ "$b" -gt "$BUSY_MAX" ]; then BUSY_MAX=$b; fi
  log "  (load $(loadavg), $b cargo/rustc/fuzz processes)"
}

# proc_cpu NAME: CPU seconds (user + system) the running service has used.
proc_cpu() { awk -v hz="$HZ" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz}' "/proc/${PID[$1]}/stat"; }

start_ps
start_dp

# ------------------------------------------------------------------------------------------
# 1. Warm-cache blob GET
# ------------------------------------------------------------------------------------------
if on 1; then
log "1/5 warm blob GET, ${BLOB_MIB} MiB, $RUNS runs"
warm ps "$BLOB_PATH" "$BIG_LAYER"
warm dp "$BLOB_PATH" "$BIG_LAYER"
get "http://127.0.0.1:$NG_PORT$BLOB_PATH" >/dev/null # nginx's first read comes from disk
for ((r = 1; r <= RUNS; r++)); do
  for s in nginx ps dp; do
    out=$(get "http://127.0.0.1:$(port_of $s)$BLOB_PATH")
    read -r code size speed <<<"$out"
    [ "$code" = 200 ] && [ "$size" = "$BIG_SIZE" ] || die "$s warm GET: $out"
    v=$(calc %.1f "$speed / 1048576")
    rec "warm_$s" "$v"
  done
done
log "  MiB/s nginx: $(vals warm_nginx)| pullsecret: $(vals warm_ps)| distribution: $(vals warm_dp)"

fi
# ------------------------------------------------------------------------------------------
# 2. Cold first pull with skopeo
# ------------------------------------------------------------------------------------------
if on 2; then
note_busy
log "2/5 cold skopeo pull of $REPO:v1, $RUNS runs"
pull() { # NAME: prints seconds
  local name=$1 dest=$WORK/pulled t0 t1 creds=()
  rm -rf "$dest"
  [ "$name" = direct ] && creds=(--src-creds "$USER_NAME:$PASSWORD")
  local perf=""
  if [ -n "${PERF_DIR:-}" ] && [ ! -e "$PERF_DIR/pull-$name.data" ]; then
    mkdir -p "$PERF_DIR"
    perf record -q -a -g -o "$PERF_DIR/pull-$name.data" >/dev/null 2>&1 &
    perf=$!
    sleep 1
  fi
  t0=$(now)
  skopeo_ copy -q --preserve-digests --src-tls-verify=false "${creds[@]}" \
    "docker://127.0.0.1:$(port_of "$name")/$REPO:v1" "oci:$dest:v1" >/dev/null ||
    die "skopeo pull through $name failed"
  t1=$(now)
  if [ -n "$perf" ]; then kill -INT "$perf"; wait "$perf" || true; fi
  [ -s "$dest/blobs/sha256/$BIG_LAYER" ] || die "pull through $name: no layer"
  rm -rf "$dest"
  calc %.3f "$t1 - $t0"
}
for ((r = 1; r <= RUNS; r++)); do
  # Assignments, so a failure inside $(…) stops the script (set -e).
  v=$(pull direct)
  rec pull_direct "$v"
  for s in ps dp; do
    fresh "$s"
    c0=$(proc_cpu "$s")
    v=$(pull "$s")
    rec "pull_$s" "$v"
    wait_file "$(cached_path "$s" "$BIG_LAYER")"
    rec "pullcpu_$s" "$(calc %.2f "$(proc_cpu "$s") - $c0")"
  done
done
log "  s direct: $(vals pull_direct)| pullsecret: $(vals pull_ps)| distribution: $(vals pull_dp)"
log "  proxy CPU-s per cold pull, pullsecret: $(vals pullcpu_ps)| distribution: $(vals pullcpu_dp)"

fi
# ------------------------------------------------------------------------------------------
# 3. CLIENTS concurrent clients, one uncached blob; then the same on the warm cache
# ------------------------------------------------------------------------------------------
if on 3; then
note_busy
log "3/5 $CLIENTS concurrent clients, cold then warm, $RUNS runs"
for ((r = 1; r <= RUNS; r++)); do
  for s in ps dp; do
    fresh "$s"
    from=$(up_lines)
    c0=$(proc_cpu "$s")
    v=$(clients "$CLIENTS" "http://127.0.0.1:$(port_of $s)$BLOB_PATH" "$BIG_SIZE")
    rec "c50cold_$s" "$v"
    wait_file "$(cached_path "$s" "$BIG_LAYER")"
    c1=$(proc_cpu "$s")
    rec "c50coldcpu_$s" "$(calc %.2f "$c1 - $c0")"
    v=$(upstream_fetches "$from" "$BLOB_PATH")
    read -r gets bytes heads other <<<"$v"
    rec "c50gets_$s" "$gets"
    rec "c50bytes_$s" "$bytes"
    rec "c50heads_$s" "$heads"
    rec "c50other_$s" "$other"
    v=$(clients "$CLIENTS" "http://127.0.0.1:$(port_of $s)$BLOB_PATH" "$BIG_SIZE")
    rec "c50warm_$s" "$v"
    rec "c50warmcpu_$s" "$(calc %.2f "$(proc_cpu "$s") - $c1")"
  done
done
log "  cold s pullsecret: $(vals c50cold_ps)| distribution: $(vals c50cold_dp)"
log "  warm s pullsecret: $(vals c50warm_ps)| distribution: $(vals c50warm_dp)"
log "  proxy CPU-s cold/warm, pullsecret: $(vals c50coldcpu_ps)/ $(vals c50warmcpu_ps)| distribution: $(vals c50coldcpu_dp)/ $(vals c50warmcpu_dp)"
log "  upstream GETs pullsecret: $(vals c50gets_ps)(HEADs $(vals c50heads_ps)) | distribution: $(vals c50gets_dp)(HEADs $(vals c50heads_dp))"

fi
# ------------------------------------------------------------------------------------------
# 4. Manifest by digest, wrk
# ------------------------------------------------------------------------------------------
if on 4; then
note_busy
log "4/5 manifest by digest, wrk -t2 -c$WRK_CONNS -d${WRK_SECS}s, $RUNS runs"
for s in ps dp; do
  for ((i = 0; i < 2; i++)); do # the second answer comes from the cache
    out=$(curl -sS --max-time 30 -o /dev/null -w '%{http_code}' -H "Accept: $OCI_MANIFEST" "http://127.0.0.1:$(port_of $s)$MANIFEST_PATH")
    [ "$out" = 200 ] || die "$s manifest GET: $out"
  done
done
wrk_run() { # NAME: records req/s and p99 (ms)
  local s=$1 out rps p99 errs
  out=$(timeout $((WRK_SECS + 60)) wrk -t2 -c"$WRK_CONNS" -d"${WRK_SECS}s" --latency \
    -H "Accept: $OCI_MANIFEST" "http://127.0.0.1:$(port_of "$s")$MANIFEST_PATH")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        m = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : (u == "m") ? v * 60000 : v; printf "%.3f", m}' <<<"$out")
  errs=$(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")
  [ -n "$rps" ] && [ -n "$p99" ] || die "wrk against $s: $out"
  rec "man_rps_$s" "$rps"
  rec "man_p99_$s" "$p99"
  rec "man_err_$s" "$errs"
}
for ((r = 1; r <= RUNS; r++)); do
  for s in nginx ps dp; do wrk_run "$s"; done
done
log "  req/s nginx: $(vals man_rps_nginx)| pullsecret: $(vals man_rps_ps)| distribution: $(vals man_rps_dp)"
log "  p99 ms nginx: $(vals man_p99_nginx)| pullsecret: $(vals man_p99_ps)| distribution: $(vals man_p99_dp)"
log "  errors nginx: $(vals man_err_nginx)| pullsecret: $(vals man_err_ps)| distribution: $(vals man_err_dp)"

fi
# ------------------------------------------------------------------------------------------
# 5. Peak RSS while RSS_CLIENTS clients stream the HUGE blob (cold, then warm)
# ------------------------------------------------------------------------------------------
if on 5; then
note_busy
log "5/5 peak RSS, $RSS_CLIENTS clients x ${HUGE_MIB} MiB cold then warm, $RSS_RUNS runs"
# rss_sampler PID OUT STOPFILE: max of VmRSS every 100 ms (at most 2 h) and the final VmHWM, KiB.
rss_sampler() {
  local pid=$1 out=$2 stop=$3 max=0 i k v _
  for ((i = 0; i < 72000; i++)); do
    [ -e "$stop" ] && break
    while read -r k v _; do
      if [ "$k" = VmRSS: ] || [ "$k" = VmHWM: ]; then
        if [ "$v" -gt "$max" ]; then max=$v; fi
      fi
    done <"/proc/$pid/status" || break
    sleep 0.1
  done
  echo "$max" >"$out"
}
for ((r = 1; r <= RSS_RUNS; r++)); do
  for s in ps dp; do
    fresh "$s"
    rm -f "$WORK/rss.stop" "$WORK/rss.out"
    rss_sampler "${PID[$s]}" "$WORK/rss.out" "$WORK/rss.stop" &
    sampler=$!
    clients "$RSS_CLIENTS" "http://127.0.0.1:$(port_of $s)$HUGE_PATH" "$HUGE_SIZE" >/dev/null
    wait_file "$(cached_path "$s" "$HUGE_LAYER")" 600
    clients "$RSS_CLIENTS" "http://127.0.0.1:$(port_of $s)$HUGE_PATH" "$HUGE_SIZE" >/dev/null
    touch "$WORK/rss.stop"
    wait "$sampler" || true
    rec "rss_$s" "$(calc %.1f "$(cat "$WORK/rss.out") / 1024")"
  done
done
log "  MiB pullsecret: $(vals rss_ps)| distribution: $(vals rss_dp)"
fi
note_busy
LOAD_END=$(loadavg)
# Stop every service (waiting for each) so their CPU time is in `times`.
for name in "${!PID[@]}"; do stop_service "$name"; done
our_cpu
OTHER_CPU=$(calc %.1f "$(machine_cpu) - $CPU_START - ($OUR_CPU - $OURS_START)")
T_MEASURED=$(calc %.0f "$(now) - $T_START")
OTHER_CORES=$(calc %.2f "$OTHER_CPU / $T_MEASURED")

# ------------------------------------------------------------------------------------------
# Table
# ------------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "nan"; else printf "%.2f", a / b}'; }
verdict() { # a section left out (SECTIONS) leaves nan in its figures
  if [[ "$1" == *nan* ]]; then echo "–"; return; fi
  awk "BEGIN {exit !($1)}" && echo met || echo "**missed**"
}
human() { awk -v b="$1" 'BEGIN {if (b >= 1073741824) printf "%.1f GiB", b / 1073741824; else printf "%.0f MiB", b / 1048576}'; }

w_ps=$(med warm_ps) w_dp=$(med warm_dp) w_ng=$(med warm_nginx)
p_ps=$(med pull_ps) p_dp=$(med pull_dp) p_di=$(med pull_direct)
cc_ps=$(med c50cold_ps) cc_dp=$(med c50cold_dp) cw_ps=$(med c50warm_ps) cw_dp=$(med c50warm_dp)
g_ps_max=$(maxof c50gets_ps) g_ps_min=$({ sort -g "$WORK/res/c50gets_ps" 2>/dev/null || echo nan; } | head -1)
g_ps=$(med c50gets_ps) g_dp=$(med c50gets_dp) b_ps=$(med c50bytes_ps) b_dp=$(med c50bytes_dp)
b_ps_max=$(maxof c50bytes_ps)
h_ps=$(med c50heads_ps) h_dp=$(med c50heads_dp)
m_ps=$(med man_rps_ps) m_dp=$(med man_rps_dp) m_ng=$(med man_rps_nginx)
l_ps=$(med man_p99_ps) l_dp=$(med man_p99_dp) l_ng=$(med man_p99_nginx)
e_ps=$(maxof man_err_ps) e_dp=$(maxof man_err_dp) e_ng=$(maxof man_err_nginx)
r_ps=$(med rss_ps) r_dp=$(med rss_dp) r_ps_max=$(maxof rss_ps) r_dp_max=$(maxof rss_dp)

r_warm=$(ratio "$w_ps" "$w_ng")
r_pull=$(ratio "$p_ps" "$p_di")
r_c50=$(ratio "$cc_ps" "$cw_ps")
r_rps=$(ratio "$m_ps" "$m_ng")
r_p99=$(ratio "$l_ps" "$l_ng")
BLOB_H=$(human $((BLOB_MIB * 1048576)))
HUGE_H=$(human $((HUGE_MIB * 1048576)))

cat <<TABLE

| measurement (median of $RUNS) | pullsecret | distribution proxy | nginx / direct | pullsecret ratio | distribution ratio | target (pullsecret) | met |
|---|---:|---:|---:|---:|---:|---|---|
| warm blob GET, $BLOB_H, MiB/s | $w_ps | $w_dp | $w_ng (nginx) | $r_warm× nginx | $(ratio "$w_dp" "$w_ng")× nginx | ≥ 0.90× nginx | $(verdict "$r_warm >= 0.9") |
| cold skopeo pull, $BLOB_H image, s | $p_ps | $p_dp | $p_di (direct) | $r_pull× direct | $(ratio "$p_dp" "$p_di")× direct | ≤ 1.10× direct | $(verdict "$r_pull <= 1.1") |
| $CLIENTS clients, cold $BLOB_H blob, wall s | $cc_ps | $cc_dp | – | $r_c50× warm | $(ratio "$cc_dp" "$cw_dp")× warm | ≤ 1.10× warm | $(verdict "$r_c50 <= 1.1") |
| $CLIENTS clients, warm $BLOB_H blob, wall s | $cw_ps | $cw_dp | – | | | | |
| $CLIENTS cold clients: upstream blob GETs (bytes) [HEADs] | $g_ps ($(human "$b_ps")) [$h_ps] | $g_dp ($(human "$b_dp")) [$h_dp] | – | | | one fill, each byte once, in every run (a blob ≥ 64 MiB comes as up to 4 parts) | $(verdict "$g_ps_min >= 1 && $g_ps_max <= 4 && $b_ps_max <= $BLOB_MIB * 1048576 + 4194304") |
| manifest by digest, wrk -c$WRK_CONNS, req/s | $m_ps | $m_dp | $m_ng (nginx) | $r_rps× nginx | $(ratio "$m_dp" "$m_ng")× nginx | ≥ 0.50× nginx | $(verdict "$r_rps >= 0.5") |
| manifest by digest, wrk -c$WRK_CONNS, p99 ms | $l_ps | $l_dp | $l_ng (nginx) | $r_p99× nginx | $(ratio "$l_dp" "$l_ng")× nginx | ≤ 2× nginx | $(verdict "$r_p99 <= 2") |
| peak RSS, $RSS_CLIENTS clients × $HUGE_H blob, MiB (max of $RSS_RUNS) | $r_ps ($r_ps_max) | $r_dp ($r_dp_max) | – | | | < 64 MiB | $(verdict "$r_ps_max < 64") |

$(nproc) CPUs, loopback; pullsecret $COMMIT ($DIRTY files changed in the work tree), $(docker-registry --version 2>/dev/null | awk '{print $NF}') distribution, nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), skopeo $(skopeo --version | awk '{print $NF}'), $(wrk --version 2>&1 | head -1 | awk '{print $1, $2}').
Load average (1/5/15 min) before measuring $LOAD_START with $BUSY_START cargo/rustc/fuzz processes (at most $BUSY_MAX at section starts); after $LOAD_END (this includes the benchmark's own clients). Other processes and kernel threads used ${OTHER_CPU} CPU-seconds during the ${T_MEASURED} s of measurement, ${OTHER_CORES} of $(nproc) cores on average.
wrk errors (non-2xx + socket, worst run): pullsecret $e_ps, distribution $e_dp, nginx $e_ng.
CPU seconds each proxy used (median): one cold pull, pullsecret $(med pullcpu_ps), distribution $(med pullcpu_dp); $CLIENTS clients cold / warm, pullsecret $(med c50coldcpu_ps) / $(med c50warmcpu_ps), distribution $(med c50coldcpu_dp) / $(med c50warmcpu_dp).
TABLE
