#!/usr/bin/env bash
# The main job on one machine: a CA (embedded database, no other set-up) and a Docker
# engine on this host moved from plain TCP on 127.0.0.1:2375 to mutually-authenticated
# TLS on 127.0.0.1:2376, then kept fresh by the agent. Run as root from the repo root:
#
#   scripts/demo.sh          # set up and run; prints what it did and what to try
#   scripts/demo.sh stop     # stop what it started
#
# Everything lives in ./demo/ (CA state, passphrase, the engine's data, logs, pids,
# credentials). The engine here is a private dockerd (own data-root and socket, no
# systemd in the way), started plain the way exposed fleets run it; on a real node the
# switch edits /etc/docker/daemon.json and restarts docker.service instead.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
demo="$repo/demo"
server="${CARGO_TARGET_DIR:-$repo/target}/release/ca-server"
client="${CARGO_TARGET_DIR:-$repo/target}/release/ca-client"

stop() {
  if [ -f "$demo/engine/docker.pid" ]; then
    pid="$(cat "$demo/engine/docker.pid")"
    DOCKER_HOST="unix://$demo/engine/docker.sock" docker rm -f demo-web >/dev/null 2>&1 || true
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$demo/engine/docker.pid"
    echo "stopped dockerd (pid $pid)"
  fi
  for name in dtca-agent ca-server; do
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
./scripts/install.sh   # /usr/local/bin, completions, man pages
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

# 2. A Docker engine as exposed fleets run it: plain TCP on 2375, no authentication.
mkdir -p "$demo/engine"
engine="$demo/engine"
if [ ! -f "$demo/node/client.toml" ]; then
  cat > "$engine/daemon.json" <<JSON
{
  "data-root": "$engine/data",
  "exec-root": "$engine/exec",
  "pidfile": "$engine/docker.pid",
  "hosts": ["unix://$engine/docker.sock", "tcp://127.0.0.1:2375"],
  "tls": false,
  "iptables": false,
  "bridge": "none"
}
JSON
fi
cat > "$engine/restart.sh" <<SH
#!/bin/sh
# Stands in for "systemctl restart docker" on this machine.
if [ -f "$engine/docker.pid" ]; then
  pid=\$(cat "$engine/docker.pid"); kill "\$pid" 2>/dev/null
  i=0; while kill -0 "\$pid" 2>/dev/null && [ \$i -lt 300 ]; do sleep 0.1; i=\$((i+1)); done
fi
nohup dockerd --config-file "$engine/daemon.json" >>"$engine/dockerd.log" 2>&1 </dev/null &
SH
chmod +x "$engine/restart.sh"
"$engine/restart.sh"
for _ in $(seq 150); do DOCKER_HOST="unix://$engine/docker.sock" docker version >/dev/null 2>&1 && break; sleep 0.2; done
if grep -q '"tlsverify": true' "$engine/daemon.json"; then
  echo "engine already switched: tcp://127.0.0.1:2376 (mutual TLS)"
else
  echo "engine up, unauthenticated: $(curl -s http://127.0.0.1:2375/_ping) from http://127.0.0.1:2375/_ping"
  # 3. Enroll this node and switch the engine to mutual TLS on 2376, verified.
  token="$("$server" token create --quiet --state-dir "$demo/ca" --role node --ttl 10m 2>/dev/null)"
  "$client" enroll --docker --server 127.0.0.1:8443 --token "$token" --san 127.0.0.1 \
    --state-dir "$demo/node" --daemon-json "$engine/daemon.json" --docker-tls-dir "$engine/tls" \
    --docker-listen tcp://127.0.0.1:2376 --docker-restart "$engine/restart.sh" --systemd-dir "$engine/no-systemd"
fi

# 4. The agent keeps it fresh.
"$client" agent --state-dir "$demo/node" >"$demo/dtca-agent.log" 2>&1 &
echo $! > "$demo/dtca-agent.pid"

# 5. An operator certificate, and the engine used over mutual TLS.
op_token="$("$server" token create --quiet --state-dir "$demo/ca" --role operator --name demo-operator 2>/dev/null)"
"$client" enroll --server 127.0.0.1:8443 --token "$op_token" --state-dir "$demo/operator" >/dev/null
tls="--tlsverify -H tcp://127.0.0.1:2376 --tlscacert $demo/operator/ca.pem --tlscert $demo/operator/cert.pem --tlskey $demo/operator/key.pem"
echo "docker $tls version:"
docker $tls version --format '  server {{.Server.Version}} over mutual TLS'
curl -s --max-time 2 http://127.0.0.1:2375/_ping >/dev/null && { echo "2375 still open!"; exit 1; } || echo "  127.0.0.1:2375 refuses connections"
"$client" status --state-dir "$demo/node"

cat <<MSG

Done. Try:
  docker $tls ps
  $server cert list --state-dir $demo/ca
  $client check --state-dir $demo/node; echo \$?
  curl -s http://127.0.0.1:9443/metrics | grep dtca_
  scripts/demo.sh stop
MSG
