#!/usr/bin/env bash
# Installs what peerd needs on a fresh Debian/Ubuntu machine: the etcd server (Debian's
# etcd-server package) when `etcd` is missing, Chromium for the dashboard's browser test when
# missing (not for the demo), and a virtualenv in .venv with peerd and its development tools.
# Safe to run again. Sourced by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
command -v etcd >/dev/null 2>&1 || apt_packages+=(etcd-server)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_packages+=(python3-venv)
if [ "${PEERD_DEMO:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1; then
  apt_packages+=(chromium)   # tests/integration/test_dashboard.py drives it with Playwright
fi
if [ "${PEERD_DEMO:-0}" = 1 ] && [ ! -f /etc/crontab ]; then
  apt_packages+=(cron-daemon-common)   # Debian's /etc/crontab, imported by the demo
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "setup: installing ${apt_packages[*]} with apt-get"
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi
command -v etcd >/dev/null 2>&1 || { echo "setup: etcd is still missing" >&2; exit 1; }
if ! command -v docker-compose >/dev/null 2>&1; then
  # Only to validate docker-compose.yml (`docker-compose config`); without recommends it brings
  # no Docker engine.
  echo "setup: installing docker-compose (no engine) with apt-get"
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq --no-install-recommends docker-compose >/dev/null \
    || echo "setup: docker-compose not installed; the compose file gets the YAML checks only"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv   # Python 3.11+ bundles pip 22.3+: it builds the editable install as is
fi
# pip runs only when pyproject.toml or the checkout's path changed since the last install: a
# second run of test.sh skips its resolve and editable build.
stamp=.venv/.peerd-installed
want="$(pwd) $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
  echo "$want" > "$stamp"
fi
echo "setup: $(etcd --version | head -1), $(.venv/bin/python --version), peerd installed in .venv"
