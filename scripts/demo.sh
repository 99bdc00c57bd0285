#!/usr/bin/env bash
# The main job on one machine: a CA (embedded database, no other set-up) and this host
# enrolled with it. Run as root from the repository root:
#
#   scripts/demo.sh          # set up and run; prints what it did and what to try
#   scripts/demo.sh stop     # stop what it started
#
# Everything lives in ./demo/ (CA state, passphrase, logs, pids, credentials).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
demo="$repo/demo"
server="$repo/target/release/ca-server"
client="$repo/target/release/ca-client"

stop() {
  for name in ca-server; do
    if [ -f "$demo/$name.pid" ]; then
      pid="$(cat "$demo/$name.pid")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$demo/$name.pid"
      echo "stopped $name (pid $pid)"
    fi
  done
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

./scripts/install-deps.sh
cargo build -q --release --bins -p ca-server -p ca-client
stop >/dev/null 2>&1 || true
mkdir -p "$demo"
chmod 700 "$demo"

# 1. The CA: root + intermediate with keys encrypted by a random passphrase.
if [ ! -f "$demo/ca/cluster.toml" ]; then
  head -c 24 /dev/urandom | base64 > "$demo/passphrase"
  chmod 600 "$demo/passphrase"
  "$server" init --state-dir "$demo/ca" --cluster demo --passphrase-file "$demo/passphrase"
fi
"$server" serve --state-dir "$demo/ca" --passphrase-file "$demo/passphrase" \
  --listen 127.0.0.1:8443 --metrics-listen 127.0.0.1:9443 >"$demo/ca-server.log" 2>&1 &
echo $! > "$demo/ca-server.pid"
for _ in $(seq 100); do grep -q "ca-server listening" "$demo/ca-server.log" && break; sleep 0.1; done
grep -q "ca-server listening" "$demo/ca-server.log" || { cat "$demo/ca-server.log"; exit 1; }
echo "CA listening on 127.0.0.1:8443 (log: $demo/ca-server.log)"

# 2. This host enrolls with a one-use node token.
token="$("$server" token create --state-dir "$demo/ca" --role node --ttl 10m 2>/dev/null)"
"$client" enroll --server 127.0.0.1:8443 --token "$token" --san 127.0.0.1 --san localhost --out "$demo/node"
openssl verify -CAfile "$demo/node/ca.pem" -untrusted "$demo/node/cert.pem" "$demo/node/cert.pem"

cat <<MSG

Done. Try:
  $server cert list --state-dir $demo/ca
  $client renew --out $demo/node
  curl -s http://127.0.0.1:9443/metrics | grep dtca_
  scripts/demo.sh stop
MSG
