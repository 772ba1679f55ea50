#!/usr/bin/env bash
# pullsecret as a fleet, in one run on this machine (issue 16, deliverable 7).
#
#   engines    PostgreSQL (Debian's, a throwaway cluster under initdb) for shared state and
#              Garage (cargo install garage --locked) as the S3-compatible bucket.
#   upstream   CNCF distribution (docker-registry), anonymous, holding one BLOB_MIB layer.
#   replicas   three `pullsecret proxy` processes on one database and one bucket, each with its
#              own local read-through cache; parallel ranged fetch off, so "upstream GETs"
#              counts whole fetches of the blob.
#
# Rows (medians of RUNS where repeated):
#   1. CLIENTS clients spread over the three replicas ask for the same uncached blob at once:
#      upstream GETs of the blob (target exactly 1) and wall time; then the same clients warm.
#   2. One warm GET of the blob: from a fourth S3-backed replica whose local copy is absent
#      (bytes from the bucket), from the same replica again (its local copy), from a proxy on
#      the local backend, and from nginx serving the file (sendfile).
#   3. Manifest-by-digest requests/s (wrk -t2 -cWRK_CONNS): a replica with PostgreSQL state
#      against a proxy with local state (target: within 10%).
#
#   QUICK=1 benches/fleet.sh          # 128 MiB, 30 clients, 3 runs (~2 min)
#   benches/fleet.sh                  # 512 MiB, 60 clients, 3 runs
# Knobs: BLOB_MIB, CLIENTS, RUNS, WRK_SECS (5), WRK_CONNS (32), PULLSECRET_BIN (skip the build),
#        BENCH_TMPDIR, KEEP=1, PS_LOG (RUST_LOG for the replicas).
# Installs missing Debian packages with apt-get (docker-registry nginx wrk curl postgresql) and
# Garage with cargo. Progress goes to stderr; the table to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  BLOB_MIB=${BLOB_MIB:-128} CLIENTS=${CLIENTS:-30} RUNS=${RUNS:-3}
else
  BLOB_MIB=${BLOB_MIB:-512} CLIENTS=${CLIENTS:-60} RUNS=${RUNS:-3}
fi
WRK_SECS=${WRK_SECS:-5}
WRK_CONNS=${WRK_CONNS:-32}
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
REPO=bench/fleet

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# ------------------------------------------------------------------------------------------
# Tools
# ------------------------------------------------------------------------------------------
pg_bin() {
  local d
  if have initdb; then dirname "$(command -v initdb)"; return; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
}
need=()
have docker-registry || need+=(docker-registry)
have nginx || [ -x /usr/sbin/nginx ] || need+=(nginx)
have wrk || need+=(wrk)
have curl || need+=(curl)
[ -n "$(pg_bin)" ] || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
PG_BIN=$(pg_bin)
PG_ISREADY=$(command -v pg_isready || echo "$PG_BIN/pg_isready")
PSQL=$(command -v psql || echo "$PG_BIN/psql")
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
GARAGE=$(command -v garage || echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage")
if [ ! -x "$GARAGE" ]; then
  log "installing Garage (cargo install garage --locked; the first build takes ~10 min)"
  cargo install garage --locked --quiet
fi

WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/pullsecret-fleet.XXXXXX")
chmod 755 "$WORK"
declare -A PID=()
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
cleanup() {
  local name
  for name in "${!PID[@]}"; do stop_service "$name"; done
  if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start_service() {
  local name=$1 out=$2
  shift 2
  "$@" >>"$out" 2>&1 </dev/null &
  PID[$name]=$!
}
# wait_until DESCRIPTION SECONDS CMD...: polls CMD every 0.1 s.
wait_until() {
  local what=$1 limit=$2 i
  shift 2
  for ((i = 0; i < limit * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$what did not happen within $limit s; see $WORK"
}
answers() { local c; c=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$1" || true); [ -n "$c" ] && [ "$c" != 000 ]; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
mkdir -p "$WORK/res"
rec() { echo "$2" >>"$WORK/res/$1"; }
med() {
  { sort -g "$WORK/res/$1" 2>/dev/null || true; } |
    awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}
calc() { awk "BEGIN {printf \"$1\", $2}"; }

if [ -n "${PULLSECRET_BIN:-}" ]; then
  PS_BIN=$PULLSECRET_BIN
else
  log "cargo build --release"
  cargo build --release --quiet
  PS_BIN=$ROOT/target/release/pullsecret
fi
cp "$PS_BIN" "$WORK/pullsecret"
PS_BIN=$WORK/pullsecret
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)

# ------------------------------------------------------------------------------------------
# PostgreSQL: a throwaway cluster (as nobody when run as root: postgres refuses root)
# ------------------------------------------------------------------------------------------
PG=$WORK/pg
mkdir -p "$PG"
AS=()
if [ "$(id -u)" -eq 0 ]; then
  chown nobody "$PG"
  AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
fi
PG_PORT=$(free_port)
"${AS[@]}" "$PG_BIN/initdb" -A trust -U postgres --no-sync -D "$PG/data" >"$PG/initdb.log" 2>&1
start_service pg "$PG/server.log" "${AS[@]}" "$PG_BIN/postgres" -D "$PG/data" -p "$PG_PORT" \
  -k "$PG" -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200
wait_until "PostgreSQL" 30 "$PG_ISREADY" -h 127.0.0.1 -p "$PG_PORT" -q
DB_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
log "PostgreSQL on 127.0.0.1:$PG_PORT"

# ------------------------------------------------------------------------------------------
# Garage: one node, one key, one bucket
# ------------------------------------------------------------------------------------------
GA=$WORK/garage
mkdir -p "$GA"
S3_PORT=$(free_port) RPC_PORT=$(free_port) ADMIN_PORT=$(free_port)
cat >"$GA/garage.toml" <<TOML
metadata_dir = "$GA/meta"
data_dir = "$GA/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(openssl rand -hex 32)"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
admin_token = "$(openssl rand -hex 16)"
TOML
garage_() { NO_COLOR=1 "$GARAGE" -c "$GA/garage.toml" "$@"; }
start_service garage "$GA/server.log" env NO_COLOR=1 "$GARAGE" -c "$GA/garage.toml" server
wait_until "Garage" 60 garage_ status
NODE=$(garage_ node id -q | cut -d@ -f1)
garage_ layout assign -z dc1 -c 10G "$NODE" >/dev/null
garage_ layout apply --version 1 >/dev/null
KEY_OUT=$(garage_ key create bench)
S3_KEY=$(awk -F': *' '/^Key ID:/ {print $2}' <<<"$KEY_OUT" | tr -d ' ')
S3_SECRET=$(awk -F': *' '/^Secret key:/ {print $2}' <<<"$KEY_OUT" | tr -d ' ')
[ -n "$S3_KEY" ] && [ -n "$S3_SECRET" ] || die "no key in: $KEY_OUT"
wait_until "bucket creation" 30 garage_ bucket create fleet
garage_ bucket allow --read --write --owner fleet --key bench >/dev/null
log "Garage S3 on 127.0.0.1:$S3_PORT (bucket fleet)"

# ------------------------------------------------------------------------------------------
# Upstream: anonymous distribution with one image (one BLOB_MIB layer)
# ------------------------------------------------------------------------------------------
UP_PORT=$(free_port)
UP=127.0.0.1:$UP_PORT
mkdir -p "$WORK/upstream"
cat >"$WORK/upstream/config.yml" <<YAML
version: 0.1
log: {level: warn, formatter: text, accesslog: {disabled: false}}
storage:
  filesystem: {rootdirectory: "$WORK/upstream/storage"}
  delete: {enabled: true}
http: {addr: "$UP", secret: bench-fleet-secret}
YAML
start_service upstream "$WORK/upstream/access.log" docker-registry serve "$WORK/upstream/config.yml"
wait_until "the upstream registry" 15 answers "http://$UP/v2/"
# push_blob FILE: a monolithic upload; prints the digest.
push_blob() {
  local file=$1 hex loc
  hex=$(sha256sum "$file" | cut -d' ' -f1)
  loc=$(curl -sS -D - -o /dev/null -X POST "http://$UP/v2/$REPO/blobs/uploads/" | awk -F': ' 'tolower($1) == "location" {print $2}' | tr -d '\r')
  case $loc in http*) ;; *) loc="http://$UP$loc" ;; esac
  case $loc in *\?*) loc="$loc&digest=sha256:$hex" ;; *) loc="$loc?digest=sha256:$hex" ;; esac
  curl -sS -f -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$file" "$loc" >/dev/null
  echo "$hex"
}
log "pushing $REPO:v1 (one ${BLOB_MIB} MiB layer)"
head -c "$((BLOB_MIB << 20))" /dev/urandom >"$WORK/layer"
LAYER=$(push_blob "$WORK/layer")
SIZE=$(stat -c %s "$WORK/layer")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$LAYER" >"$WORK/config"
CONFIG=$(push_blob "$WORK/config")
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
  "$OCI_MANIFEST" "$CONFIG" "$(stat -c %s "$WORK/config")" "$LAYER" "$SIZE" >"$WORK/manifest"
MANIFEST=$(sha256sum "$WORK/manifest" | cut -d' ' -f1)
curl -sS -f -X PUT -H "Content-Type: $OCI_MANIFEST" --data-binary "@$WORK/manifest" "http://$UP/v2/$REPO/manifests/v1" >/dev/null
BLOB_PATH=/v2/$REPO/blobs/sha256:$LAYER
MANIFEST_PATH=/v2/$REPO/manifests/sha256:$MANIFEST
upstream_gets() { grep -c "\"GET $BLOB_PATH " "$WORK/upstream/access.log" || true; }

# ------------------------------------------------------------------------------------------
# Replicas (fleet) and a proxy on local state and the local backend
# ------------------------------------------------------------------------------------------
openssl rand -base64 32 >"$WORK/master.key"
chmod 600 "$WORK/master.key"
declare -A PORT=()
start_proxy() { # NAME fleet|local
  local name=$1 mode=$2 dir=$WORK/$1 port
  port=$(free_port)
  PORT[$name]=$port
  mkdir -p "$dir/data" "$dir/config"
  {
    echo "listen = \"127.0.0.1:$port\""
    echo "cache_dir = \"$dir/cache\""
    echo 'default_upstream = "up"'
    printf '[prefetch]\nenabled = false\n[limits]\nparallel_fetch_connections = 1\n'
    if [ "$mode" = fleet ]; then
      printf '[state]\npostgres = "%s"\n' "$DB_URL"
      printf '[cache]\nbackend = "s3"\nbucket = "fleet"\nendpoint = "http://127.0.0.1:%s"\nregion = "garage"\npath_style = true\n' "$S3_PORT"
      printf 'access_key_id = "env://FLEET_S3_KEY"\nsecret_access_key = "env://FLEET_S3_SECRET"\n'
    fi
    printf '[[upstream]]\nname = "up"\nurl = "http://%s"\ninsecure = true\n' "$UP"
  } >"$dir/proxy.toml"
  start_service "$name" "$dir/proxy.log" env -i "PATH=$PATH" "HOME=$dir" "XDG_DATA_HOME=$dir/data" \
    "XDG_CONFIG_HOME=$dir/config" "RUST_LOG=${PS_LOG:-warn}" "PULLSECRET_MASTER_KEY_STORE=file" \
    "PULLSECRET_MASTER_KEY_FILE=$WORK/master.key" "FLEET_S3_KEY=$S3_KEY" "FLEET_S3_SECRET=$S3_SECRET" \
    "$PS_BIN" proxy --config "$dir/proxy.toml"
  wait_until "$name" 30 answers "http://127.0.0.1:$port/healthz"
}
for r in r1 r2 r3; do start_proxy "$r" fleet; done
log "replicas on :${PORT[r1]} :${PORT[r2]} :${PORT[r3]} (one database, one bucket)"

# ------------------------------------------------------------------------------------------
# 1. CLIENTS clients over three replicas, the same uncached blob; then warm
# ------------------------------------------------------------------------------------------
# many PHASE: CLIENTS concurrent GETs spread round-robin; records wall seconds, checks each.
many() {
  local phase=$1 i port t0 t1 bad pids=()
  rm -f "$WORK"/c-*.out
  t0=$(now)
  for ((i = 0; i < CLIENTS; i++)); do
    case $((i % 3)) in 0) port=${PORT[r1]} ;; 1) port=${PORT[r2]} ;; 2) port=${PORT[r3]} ;; esac
    curl -s -o /dev/null --max-time 1800 -w '%{http_code} %{size_download}\n' "http://127.0.0.1:$port$BLOB_PATH" >"$WORK/c-$i.out" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || true; done
  t1=$(now)
  bad=$(cat "$WORK"/c-*.out | awk -v s="$SIZE" '$1 != 200 || $2 != s' | wc -l)
  [ "$bad" = 0 ] || die "$phase: $bad of $CLIENTS clients did not get the whole blob"
  rec "wall_$phase" "$(calc %.3f "$t1 - $t0")"
}

log "1/3 $CLIENTS clients on three replicas, one uncached ${BLOB_MIB} MiB blob"
before=$(upstream_gets)
many cold
COLD_GETS=$(($(upstream_gets) - before))
for ((r = 1; r <= RUNS; r++)); do many warm; done
log "  cold ${BLOB_MIB} MiB: $(med wall_cold) s, upstream GETs $COLD_GETS; warm: $(cat "$WORK/res/wall_warm" | tr '\n' ' ')s"

# ------------------------------------------------------------------------------------------
# 2. One warm GET: bucket, replica's own copy, local backend, nginx
# ------------------------------------------------------------------------------------------
log "2/3 one warm ${BLOB_MIB} MiB GET, $RUNS runs each"
start_proxy r4 fleet
start_proxy solo local
curl -s -o /dev/null "http://127.0.0.1:${PORT[solo]}$BLOB_PATH"
wait_until "the local-backend copy" 120 test -e "$WORK/solo/cache/v1/blobs/sha256/$LAYER"
NG=$WORK/nginx
mkdir -p "$NG/www/v2/$REPO/blobs" "$NG/tmp" "$NG/logs"
ln "$WORK/layer" "$NG/www$BLOB_PATH"
NG_PORT=$(free_port)
user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user root;"
cat >"$NG/nginx.conf" <<CONF
$user_line
worker_processes $(nproc);
pid $NG/nginx.pid;
error_log $NG/logs/error.log warn;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $NG/tmp/body;
  proxy_temp_path $NG/tmp/proxy;
  fastcgi_temp_path $NG/tmp/fastcgi;
  uwsgi_temp_path $NG/tmp/uwsgi;
  scgi_temp_path $NG/tmp/scgi;
  types { }
  default_type application/octet-stream;
  server { listen 127.0.0.1:$NG_PORT; root $NG/www; }
}
CONF
start_service nginx "$NG/logs/stdout.log" "$NGINX" -p "$NG" -e "$NG/logs/error.log" -c "$NG/nginx.conf"
wait_until nginx 15 answers "http://127.0.0.1:$NG_PORT/"
one_get() { # KEY URL
  local t
  t=$(curl -s -o /dev/null --max-time 1800 -w '%{http_code} %{size_download} %{time_total}' "$2")
  read -r code size secs <<<"$t"
  [ "$code" = 200 ] && [ "$size" = "$SIZE" ] || die "$1: $t"
  rec "$1" "$secs"
}
R4_COPY=$WORK/r4/cache/v1/blobs/sha256/$LAYER
for ((r = 1; r <= RUNS; r++)); do
  rm -f "$R4_COPY"
  one_get bucket "http://127.0.0.1:${PORT[r4]}$BLOB_PATH"
  wait_until "r4's own copy" 120 test -e "$R4_COPY"
  one_get own "http://127.0.0.1:${PORT[r4]}$BLOB_PATH"
  one_get solo "http://127.0.0.1:${PORT[solo]}$BLOB_PATH"
  one_get nginx "http://127.0.0.1:$NG_PORT$BLOB_PATH"
done
log "  s: bucket $(med bucket), own copy $(med own), local backend $(med solo), nginx $(med nginx)"

# ------------------------------------------------------------------------------------------
# 3. Manifest by digest: PostgreSQL state vs local state
# ------------------------------------------------------------------------------------------
log "3/3 manifest by digest, wrk -t2 -c$WRK_CONNS -d${WRK_SECS}s, $RUNS runs"
for p in "${PORT[r1]}" "${PORT[solo]}"; do
  for i in 1 2; do
    c=$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $OCI_MANIFEST" "http://127.0.0.1:$p$MANIFEST_PATH")
    [ "$c" = 200 ] || die "manifest GET on :$p: $c"
  done
done
wrk_rps() { # KEY PORT
  local out rps
  out=$(timeout $((WRK_SECS + 60)) wrk -t2 -c"$WRK_CONNS" -d"${WRK_SECS}s" -H "Accept: $OCI_MANIFEST" "http://127.0.0.1:$2$MANIFEST_PATH")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  [ -n "$rps" ] || die "wrk: $out"
  grep -q "Non-2xx" <<<"$out" && die "wrk saw errors: $out"
  rec "$1" "$rps"
}
xacts() { "$PSQL" -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc "select sum(xact_commit + xact_rollback) from pg_stat_database"; }
for ((r = 1; r <= RUNS; r++)); do
  x0=$(xacts)
  wrk_rps rps_pg "${PORT[r1]}"
  x1=$(xacts)
  # Transactions the whole fleet ran during the run (heartbeats and bookkeeping included) per
  # manifest request answered: a warm hit itself runs none.
  rec db_per_req "$(calc %.6f "($x1 - $x0 - 1) / ($(tail -1 "$WORK/res/rps_pg") * $WRK_SECS)")"
  wrk_rps rps_local "${PORT[solo]}"
done

# ------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------
cat <<TABLE

### Fleet: three replicas, PostgreSQL state, Garage bucket (commit $COMMIT, ${BLOB_MIB} MiB blob, $CLIENTS clients, medians of $RUNS)

| Row | pullsecret | peer | ratio |
|---|---|---|---|
| $CLIENTS clients, uncached blob, upstream GETs | $COLD_GETS | target 1 | |
| $CLIENTS clients cold vs warm, wall s | $(med wall_cold) | $(med wall_warm) (warm) | $(calc %.2f "$(med wall_cold) / $(med wall_warm)")x |
| warm GET, S3-backed replica from the bucket, s | $(med bucket) | $(med nginx) (nginx) | $(calc %.2f "$(med bucket) / $(med nginx)")x |
| warm GET, S3-backed replica's own copy, s | $(med own) | $(med nginx) (nginx) | $(calc %.2f "$(med own) / $(med nginx)")x |
| warm GET, local backend, s | $(med solo) | $(med nginx) (nginx) | $(calc %.2f "$(med solo) / $(med nginx)")x |
| manifest req/s, PostgreSQL state vs local state | $(med rps_pg) | $(med rps_local) | $(calc %.3f "$(med rps_pg) / $(med rps_local)") |
| database transactions per warm manifest request (whole fleet) | $(med db_per_req) | | |

Ratios of times: lower is faster for pullsecret; the req/s ratio: 1.000 is equal (target >= 0.90).
TABLE
