#!/usr/bin/env bash
# Benchmarks the credential helper's `get` (the call on the path of every pull and build):
# ours on the encrypted file store and on the Secret Service, against docker's
# docker-credential-secretservice and docker-credential-pass, in one run on one machine.
# Starts its own dbus-run-session + gnome-keyring and a throwaway GnuPG/pass store; prints
# medians and ratios (ours / docker's helper on the same kind of backend).
#
#   benches/helper_get.sh            # RUNS=200 WARMUP=20 by default
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-200}
WARMUP=${WARMUP:-20}

if [ -z "${HELPER_GET_INNER:-}" ]; then
  need=()
  have() { command -v "$1" >/dev/null 2>&1; }
  have hyperfine || need+=(hyperfine)
  have pass || need+=(pass)
  have gpg || need+=(gnupg)
  have docker-credential-secretservice || need+=(golang-docker-credential-helpers)
  have gnome-keyring-daemon || need+=(gnome-keyring)
  have dbus-run-session || need+=(dbus)
  if [ ${#need[@]} -gt 0 ]; then
    echo "helper_get.sh: installing ${need[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  cargo build --release --bins >&2
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  # Everything below runs on a private session bus that ends with the run.
  HELPER_GET_INNER=1 WORK="$WORK" RUNS="$RUNS" WARMUP="$WARMUP" \
    dbus-run-session -- bash "$0" 2> >(grep -v 'Failed to set fd limit' >&2)
  exit
fi

# --- inside dbus-run-session ---
OURS="$PWD/target/release/docker-credential-pullsecret"
SERVER="bench.example:5000"
export HOME="$WORK/home" XDG_DATA_HOME="$WORK/data" XDG_CONFIG_HOME="$WORK/config" \
  XDG_RUNTIME_DIR="$WORK/run" DOCKER_CONFIG="$WORK/docker" GNUPGHOME="$WORK/gnupg" \
  PASSWORD_STORE_DIR="$WORK/pass"
mkdir -p "$HOME" "$XDG_DATA_HOME" "$XDG_CONFIG_HOME" "$DOCKER_CONFIG"
mkdir -p -m 700 "$XDG_RUNTIME_DIR" "$GNUPGHOME"
unset PULLSECRET_STORE PULLSECRET_NAMESPACE PULLSECRET_CONFIG PULLSECRET_STORE_DIR

echo -n bench-keyring-password | gnome-keyring-daemon --unlock --components=secrets >/dev/null
for _ in $(seq 100); do
  dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q 'boolean true' && break
  sleep 0.05
done

gpg --batch --quiet --passphrase '' --quick-gen-key 'pullsecret bench <bench@example.invalid>' default default never 2>/dev/null
KEYID=$(gpg --batch --list-keys --with-colons bench@example.invalid | awk -F: '/^fpr/ {print $10; exit}')
pass init "$KEYID" >/dev/null

CREDS="{\"ServerURL\":\"$SERVER\",\"Username\":\"bench\",\"Secret\":\"bench-secret-value\"}"
echo "$CREDS" | PULLSECRET_STORE=file "$OURS" store
echo "$CREDS" | PULLSECRET_STORE=secret-service "$OURS" store
echo "$CREDS" | docker-credential-secretservice store
echo "$CREDS" | docker-credential-pass store
printf %s "$SERVER" >"$WORK/server.txt"

# Every helper must answer the same before it is timed.
for cmd in "env PULLSECRET_STORE=file $OURS" "env PULLSECRET_STORE=secret-service $OURS" "$OURS" \
  docker-credential-secretservice docker-credential-pass; do
  out=$($cmd get <"$WORK/server.txt")
  case "$out" in *bench-secret-value*) ;; *) echo "helper_get.sh: $cmd get answered: $out" >&2; exit 1 ;; esac
done

# Shell mode (hyperfine subtracts the shell's own start-up) so stdin can be redirected alike for all.
hyperfine --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/get.json" \
  -n "ours, file store" "PULLSECRET_STORE=file $OURS get < $WORK/server.txt" \
  -n "ours, secret-service" "PULLSECRET_STORE=secret-service $OURS get < $WORK/server.txt" \
  -n "ours, auto (-> secret-service)" "$OURS get < $WORK/server.txt" \
  -n "docker-credential-secretservice" "docker-credential-secretservice get < $WORK/server.txt" \
  -n "docker-credential-pass" "docker-credential-pass get < $WORK/server.txt" >&2

gpgconf --kill gpg-agent 2>/dev/null || true

python3 - "$WORK/get.json" <<'EOF'
import json, sys
rows = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
ms = lambda name: rows[name]["median"] * 1000
print()
print("| helper `get` | backend | median (ms) | mean ± σ (ms) | ours / docker's on the same backend |")
print("|---|---|---:|---:|---:|")
table = [
    ("ours, file store", "encrypted file", "docker-credential-pass"),
    ("docker-credential-pass", "pass (GnuPG files)", None),
    ("ours, secret-service", "Secret Service", "docker-credential-secretservice"),
    ("ours, auto (-> secret-service)", "Secret Service", "docker-credential-secretservice"),
    ("docker-credential-secretservice", "Secret Service", None),
]
for name, backend, peer in table:
    r = rows[name]
    ratio = f"{ms(name) / ms(peer):.2f}× ({peer})" if peer else "1 (baseline)"
    print(f"| {name} | {backend} | {ms(name):.2f} | {r['mean']*1000:.2f} ± {r['stddev']*1000:.2f} | {ratio} |")
ok_ss = ms("ours, secret-service") <= 0.5 * ms("docker-credential-secretservice")
ok_file = ms("ours, file store") < 3.0
ok_pass = ms("ours, file store") <= 0.5 * ms("docker-credential-pass")
print()
print(f"target ours ≤ 0.5× docker's on the Secret Service: {'met' if ok_ss else 'MISSED'}")
print(f"target ours ≤ 0.5× docker-credential-pass (file-based peers): {'met' if ok_pass else 'MISSED'}")
print(f"target ours < 3 ms on the file store: {'met' if ok_file else 'MISSED'}")
EOF
