#!/usr/bin/env bash
# Installs the system packages the test suite needs, idempotently (nothing when present).
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/sbin/bearerbox ] || need+=(kannel)
[ -x /usr/lib/kannel/test/fakesmsc ] || need+=(kannel-extras)
# A small CJK font (1.6 MB download, 5 MB installed; fonts-noto-cjk would be 56/91 MB) so
# that Chinese messages render in the browser tests' screenshots instead of boxes.
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "system-deps: need root to install: ${need[*]}" >&2; exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
