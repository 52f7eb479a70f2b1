#!/usr/bin/env bash
# Starts a local three-node unibus cluster on loopback for trying it out:
#   n1: HTTP 127.0.0.1:8471, routes 127.0.0.1:6251   (n2: 8472/6252, n3: 8473/6253)
# State, certificates and logs live under local_files/cluster/.
# Stop it with scripts/cluster-down.sh (state is kept; --wipe there removes it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=local_files/cluster
bin=build/src/membershipd

if [ ! -x "$bin" ] || [ ! -x build/src/cli/unibusctl ]; then
    echo "==> building membershipd and unibusctl"
    bash scripts/setup.sh
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build -j "$(nproc 2>/dev/null || echo 2)" --target membershipd unibusctl
fi
mkdir -p "$root"
if [ ! -f "$root/certs/cluster-ca.crt" ]; then
    echo "==> generating certificates in $root/certs"
fi
deploy/cluster/generate-cluster-certs.sh --out "$root/certs" n1 n2 n3 >/dev/null
# The cluster's first admin: a key made here, given to every node with
# --bootstrap-admin (a public key, so argv is fine).
if [ ! -f "$root/admin.nk" ]; then
    build/src/cli/unibusctl keygen --out "$root/admin" --json \
        | sed -n 's/.*"sign_pub": "\([^"]*\)".*/\1/p' >"$root/admin.pub"
fi
admin_pub=$(cat "$root/admin.pub")
ctl() {
    build/src/cli/unibusctl --url http://127.0.0.1:8471 --handle admin \
        --seed-file "$root/admin.nk" "$@"
}

routes="nats://127.0.0.1:6251,nats://127.0.0.1:6252,nats://127.0.0.1:6253"
for i in 1 2 3; do
    pidf="$root/n$i.pid"
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
        echo "==> n$i already running (pid $(cat "$pidf"))"
        continue
    fi
    "$bin" --name "n$i" --data-dir "$root/n$i" \
        --http-listen "127.0.0.1:847$i" \
        --bus-listen "127.0.0.1:425$i" \
        --route-listen "127.0.0.1:625$i" --routes "$routes" \
        --route-tls-cert "$root/certs/n$i/route.crt" \
        --route-tls-key "$root/certs/n$i/route.key" \
        --route-tls-ca "$root/certs/cluster-ca.crt" \
        --cluster-pass-file "$root/certs/cluster.pass" \
        --bootstrap-admin "admin=$admin_pub" \
        >>"$root/n$i.log" 2>&1 &
    echo $! >"$pidf"
    echo "==> started n$i (pid $!, log $root/n$i.log)"
done

printf "==> waiting for a leader and the first admin"
for _ in $(seq 1 150); do
    if curl -fsS http://127.0.0.1:8471/healthz 2>/dev/null | grep -q '"leader":"n' &&
        ctl me >/dev/null 2>&1; then
        echo
        ctl cluster status
        echo
        echo "Try: build/src/cli/unibusctl --url http://127.0.0.1:8472 --handle admin \\"
        echo "         --seed-file $root/admin.nk kv put demo k v"
        exit 0
    fi
    printf "."
    sleep 0.2
done
echo
echo "cluster-up: no leader or admin after 30 s; see $root/n*.log" >&2
exit 1
