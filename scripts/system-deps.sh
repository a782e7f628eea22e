#!/usr/bin/env bash
# Installs the system packages the test suite needs, idempotently (nothing when present).
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/sbin/bearerbox ] || need+=(kannel)
[ -x /usr/lib/kannel/test/fakesmsc ] || need+=(kannel-extras)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "system-deps: need root to install: ${need[*]}" >&2; exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
