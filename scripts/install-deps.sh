#!/usr/bin/env bash
# Installs, when missing, what the demo and the tests use from Debian's packages:
# dockerd (docker.io), busybox-static (a tiny image for containers), openssl, iproute2,
# PostgreSQL, faketime (a client whose clock is wrong), chromium (the fleet page's test,
# headless). The docker CLI already on the
# machine is used when present.
# Run as root. Idempotent; prints only what it installs.
set -euo pipefail

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker >/dev/null 2>&1 || need+=(docker.io)
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v faketime >/dev/null 2>&1 || need+=(faketime)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ "${DTCA_WITH_CFSSL:-0}" = 1 ]; then
  command -v cfssl >/dev/null 2>&1 || need+=(golang-cfssl)
fi

if [ ${#need[@]} -gt 0 ]; then
  # De-duplicate.
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
