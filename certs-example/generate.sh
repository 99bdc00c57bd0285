#!/usr/bin/env bash
# Regenerates the sample material in this directory with the real binaries:
# a CA (root + intermediate, keys encrypted with the passphrase "example-passphrase"),
# a node certificate, an operator certificate and the admin bundle.
#
#   certs-example/generate.sh            # from the repository root
#
# It starts `ca-server serve` on a free loopback port for the enrollments and stops it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
cargo build -q --release --bins -p ca-server -p ca-client
server="$root/target/release/ca-server"
client="$root/target/release/ca-client"

rm -rf "$here/ca" "$here/node" "$here/operator"
work="$(mktemp -d)"
serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

printf 'example-passphrase\n' > "$work/passphrase"
chmod 600 "$work/passphrase"
"$server" init --state-dir "$here/ca" --cluster example --passphrase-file "$work/passphrase" >/dev/null
"$server" serve --state-dir "$here/ca" --passphrase-file "$work/passphrase" --listen 127.0.0.1:0 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 100); do
  grep -q "ca-server listening" "$work/serve.log" 2>/dev/null && break
  sleep 0.1
done
addr="$(cat "$here/ca/server.addr")"

node_token="$("$server" token create --quiet --state-dir "$here/ca" --role node --name node-1 2>/dev/null)"
"$client" enroll --server "$addr" --token "$node_token" --out "$here/node" \
  --no-default-sans --san node-1.example.com --san 192.0.2.10 >/dev/null
operator_token="$("$server" token create --quiet --state-dir "$here/ca" --role operator --name alice 2>/dev/null)"
"$client" enroll --server "$addr" --token "$operator_token" --out "$here/operator" --no-default-sans >/dev/null

kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; serve_pid=""
# Runtime files are not sample material.
rm -f "$here/ca/store.db" "$here/ca/store.db-wal" "$here/ca/store.db-shm" "$here/ca/server.addr" \
      "$here/node/client.toml" "$here/operator/client.toml"
echo "regenerated sample material in $here"
