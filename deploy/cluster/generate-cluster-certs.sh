#!/usr/bin/env bash
# generate-cluster-certs.sh: builds the two certificate authorities of a
# unibus cluster and the certificates signed by them.
#
#   cluster CA  -> one route certificate per node (mutual TLS on the route
#                  port, --route-tls-ca/--route-tls-cert/--route-tls-key)
#   client CA   -> the data-plane server certificate (--tls-ca/--tls-cert/
#                  --tls-key) and, later, client certificates
#
# The two CAs are separate on purpose (docs/operations.md): a certificate
# from the client CA must never be accepted on the route port.
#
# Re-running is safe: existing keys are always reused, never overwritten, and
# an existing certificate is kept as long as it matches its key and its CA.
# A certificate is (re)issued only when it is missing.

set -euo pipefail
umask 077

prog=${0##*/}
ca_days=3650
cert_days=825

usage() {
    cat <<EOF
Usage: $prog --out DIR NODE [NODE...]

Creates in DIR (mode 0700):
  cluster-ca.crt, cluster-ca.key   dedicated cluster CA for the route port
  NODE/route.crt, NODE/route.key   per-node route certificate: CN=NODE,
                                   SAN DNS:NODE, DNS:localhost, IP:127.0.0.1,
                                   extended key usage serverAuth+clientAuth
  client-ca.crt, client-ca.key     separate CA for the data plane (NATS, HTTP)
  server.crt, server.key           data-plane server certificate signed by the
                                   client CA (SAN localhost, 127.0.0.1, NODEs)
  cluster.pass                     cluster secret, 32 random bytes in hex

Keys are EC P-256, certificates valid $cert_days days, CAs $ca_days days.
Keys and cluster.pass are mode 0600. Existing keys and the secret are never
overwritten; delete a certificate to have it re-issued for its existing key.

Node names: 1 to 63 characters of [A-Za-z0-9.-], starting and ending with a
letter or digit (they become DNS names and the node's --name).

Options:
  --out DIR   output directory (created if missing)
  -h, --help  show this help
EOF
}

die() {
    echo "$prog: error: $*" >&2
    exit 1
}

note() {
    echo "$prog: $*"
}

out=""
nodes=()
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    --out)
        [ $# -ge 2 ] || die "--out needs a directory argument"
        out=$2
        shift 2
        ;;
    --out=*)
        out=${1#--out=}
        shift
        ;;
    --)
        shift
        nodes+=("$@")
        break
        ;;
    -*)
        die "unknown option '$1' (see --help)"
        ;;
    *)
        nodes+=("$1")
        shift
        ;;
    esac
done

[ -n "$out" ] || die "--out DIR is required (see --help)"
[ ${#nodes[@]} -gt 0 ] || die "give at least one node name (see --help)"
command -v openssl >/dev/null 2>&1 || die "the openssl command is not installed"

declare -A seen=()
for n in "${nodes[@]}"; do
    if ! [[ $n =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$ ]]; then
        die "invalid node name '$n' (1-63 chars of [A-Za-z0-9.-], starting and ending with a letter or digit)"
    fi
    lower=${n,,}
    [ -z "${seen[$lower]:-}" ] || die "node name '$n' given twice"
    seen[$lower]=1
done

if [ -e "$out" ] && [ ! -d "$out" ]; then
    die "'$out' exists and is not a directory"
fi
mkdir -p "$out" || die "cannot create '$out'"
chmod 0700 "$out" || die "cannot chmod '$out'"

tmp=$(mktemp -d) || die "cannot create a temporary directory"
trap 'rm -rf "$tmp"' EXIT

# make_key FILE: creates an EC P-256 key unless FILE already holds a key.
make_key() {
    local f=$1
    if [ -e "$f" ]; then
        openssl pkey -in "$f" -noout 2>/dev/null ||
            die "'$f' exists but is not a readable private key (fix or remove it)"
        chmod 0600 "$f"
        note "key $f exists, reused"
        return
    fi
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out "$f.tmp" 2>"$tmp/err" || die "cannot create key $f: $(cat "$tmp/err")"
    chmod 0600 "$f.tmp"
    mv "$f.tmp" "$f"
    note "key $f created"
}

# pubkey_of_cert / pubkey_of_key print the public key, to compare the two.
pubkey_of_cert() {
    openssl x509 -in "$1" -noout -pubkey 2>/dev/null
}
pubkey_of_key() {
    openssl pkey -in "$1" -pubout 2>/dev/null
}

# check_pair CERT KEY: the certificate must be readable and carry the key.
check_pair() {
    local crt=$1 key=$2 a b
    a=$(pubkey_of_cert "$crt") || die "'$crt' is not a readable certificate"
    b=$(pubkey_of_key "$key") || die "'$key' is not a readable private key"
    [ "$a" = "$b" ] ||
        die "'$crt' does not belong to the key '$key' (remove the certificate to re-issue it)"
}

# make_ca NAME CN: self-signed CA DIR/NAME.crt for the key DIR/NAME.key.
make_ca() {
    local name=$1 cn=$2
    local key="$out/$name.key" crt="$out/$name.crt"
    if [ -e "$crt" ] && [ ! -e "$key" ]; then
        die "'$crt' exists without its key '$key': restore the key, or remove the CA certificate (every certificate it signed must then be re-issued)"
    fi
    make_key "$key"
    if [ -e "$crt" ]; then
        check_pair "$crt" "$key"
        note "CA $crt exists, kept"
        return
    fi
    cat >"$tmp/ca.cnf" <<EOF
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
[ v3_ca ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    openssl req -new -x509 -sha256 -days "$ca_days" -key "$key" \
        -subj "/O=unibus/CN=$cn" -config "$tmp/ca.cnf" -extensions v3_ca \
        -set_serial "0x$(openssl rand -hex 16)" \
        -out "$crt.tmp" 2>"$tmp/err" || die "cannot create CA $crt: $(cat "$tmp/err")"
    chmod 0644 "$crt.tmp"
    mv "$crt.tmp" "$crt"
    note "CA $crt created"
}

# issue CRT KEY CA_NAME CN SAN EKU: leaf certificate for KEY signed by the CA.
issue() {
    local crt=$1 key=$2 ca=$3 cn=$4 san=$5 eku=$6
    local cacrt="$out/$ca.crt" cakey="$out/$ca.key"
    make_key "$key"
    if [ -e "$crt" ]; then
        check_pair "$crt" "$key"
        openssl verify -CAfile "$cacrt" "$crt" >"$tmp/err" 2>&1 ||
            die "'$crt' exists but does not verify against '$cacrt' (expired, or signed by another CA; remove it to have it re-issued): $(tr '\n' ' ' <"$tmp/err")"
        note "certificate $crt exists, kept"
        return
    fi
    cat >"$tmp/leaf.ext" <<EOF
[ leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = $eku
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    printf '[ req ]\ndistinguished_name = dn\nprompt = no\n[ dn ]\n' >"$tmp/req.cnf"
    openssl req -new -key "$key" -subj "/O=unibus/CN=$cn" -config "$tmp/req.cnf" \
        -out "$tmp/leaf.csr" 2>"$tmp/err" ||
        die "cannot create a request for $crt: $(cat "$tmp/err")"
    openssl x509 -req -sha256 -days "$cert_days" -in "$tmp/leaf.csr" \
        -CA "$cacrt" -CAkey "$cakey" -set_serial "0x$(openssl rand -hex 16)" \
        -extfile "$tmp/leaf.ext" -extensions leaf \
        -out "$crt.tmp" 2>"$tmp/err" || die "cannot sign $crt: $(cat "$tmp/err")"
    chmod 0644 "$crt.tmp"
    mv "$crt.tmp" "$crt"
    note "certificate $crt created (CN=$cn, $san)"
}

# --- cluster CA and route certificates ---------------------------------------
make_ca cluster-ca "unibus cluster CA"
for n in "${nodes[@]}"; do
    if [ -e "$out/$n" ] && [ ! -d "$out/$n" ]; then
        die "'$out/$n' exists and is not a directory"
    fi
    mkdir -p "$out/$n"
    chmod 0700 "$out/$n"
    san="DNS:$n"
    [ "${n,,}" = localhost ] || san="$san, DNS:localhost"
    san="$san, IP:127.0.0.1"
    issue "$out/$n/route.crt" "$out/$n/route.key" cluster-ca "$n" "$san" \
        "serverAuth, clientAuth"
done

# --- client CA and data-plane server certificate -----------------------------
make_ca client-ca "unibus client CA"
san="DNS:localhost, IP:127.0.0.1"
for n in "${nodes[@]}"; do
    [ "${n,,}" = localhost ] || san="$san, DNS:$n"
done
issue "$out/server.crt" "$out/server.key" client-ca "${nodes[0]}" "$san" \
    "serverAuth"
# An existing server certificate keeps the names it was issued with.
names=$(openssl x509 -in "$out/server.crt" -noout -ext subjectAltName 2>/dev/null || true)
for n in "${nodes[@]}"; do
    case "$names" in
    *"DNS:$n"*) ;;
    *) note "warning: $out/server.crt does not name '$n'; remove it to re-issue it with every node name" ;;
    esac
done

# --- cluster secret -----------------------------------------------------------
pass="$out/cluster.pass"
if [ -e "$pass" ]; then
    [ -s "$pass" ] || die "'$pass' exists but is empty (remove it to generate a new secret)"
    chmod 0600 "$pass"
    note "secret $pass exists, kept"
else
    openssl rand -hex 32 >"$pass.tmp" || die "cannot generate the cluster secret"
    chmod 0600 "$pass.tmp"
    mv "$pass.tmp" "$pass"
    note "secret $pass created"
fi

note "done: give each node --route-tls-ca $out/cluster-ca.crt" \
    "--route-tls-cert $out/NODE/route.crt --route-tls-key $out/NODE/route.key" \
    "--cluster-pass-file $out/cluster.pass"
