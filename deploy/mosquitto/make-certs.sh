#!/usr/bin/env bash
# Make the fleet's TLS material with openssl: a CA, a broker certificate and one client
# certificate per device (and for the operator). Existing files are kept, so running it again
# with a new id only adds that id's certificate.
#
#   make-certs.sh [--dir DIR] [--days N] [--broker-name NAME]... [ID ...]
#
#   DIR/ca.crt  ca.key            the fleet CA (keep ca.key offline once the fleet is made)
#   DIR/broker.crt  broker.key    server certificate, SAN: localhost, 127.0.0.1, ::1 and every
#                                 --broker-name (DNS name or IP address; default: this host's name)
#   DIR/clients/ID.crt  ID.key    client certificate, CN=ID (clientAuth)
#
# Keys are ECDSA P-256 (fast on small boards, supported by OpenSSL >= 1.1.1 and Python's ssl).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die_usage() {
    echo "make-certs.sh: $*" >&2
    exit 2
}

dir=certs
days=1825
names=()
ids=()
while [ $# -gt 0 ]; do
    case $1 in
    --dir) [ $# -ge 2 ] || die_usage "--dir needs a value"; dir=$2; shift 2 ;;
    --days) [ $# -ge 2 ] || die_usage "--days needs a value"; days=$2; shift 2 ;;
    --broker-name) [ $# -ge 2 ] || die_usage "--broker-name needs a value"; names+=("$2"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) die_usage "unknown option $1 (see --help)" ;;
    *) ids+=("$1"); shift ;;
    esac
done
case $days in '' | *[!0-9]*) die_usage "--days must be a positive whole number, got '$days'" ;; esac
# The CA lives twice as long; openssl cannot date a certificate beyond the year 9999.
if [ ${#days} -gt 5 ] || [ "$days" -lt 1 ] || [ "$days" -gt 18250 ]; then
    die_usage "--days must be in 1..18250 (50 years), got '$days'"
fi
for name in ${names[@]+"${names[@]}"}; do
    # It goes into subjectAltName (comma-separated) and the subject: nothing but a name or address.
    case $name in
    '' | *[!A-Za-z0-9.:*-]* | [.-]*) die_usage "--broker-name '$name': expected a DNS name or an IP address" ;;
    esac
done
for id in ${ids[@]+"${ids[@]}"}; do
    case $id in
    *[!A-Za-z0-9_-]* | '' | [_-]*) die_usage "bad id '$id': use letters, digits, '_', '-' (a letter or digit first; no '.')" ;;
    esac
    [ ${#id} -le 64 ] || die_usage "id '$id' is longer than 64 characters"
done
command -v openssl >/dev/null || { echo "make-certs.sh: openssl not found (apt-get install -y openssl)" >&2; exit 1; }

umask 077
mkdir -p "$dir/clients"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME CSR OUT EXTFILE: issue a certificate from the CA.
sign() {
    openssl x509 -req -in "$2" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days "$days" -sha256 -extfile "$4" -out "$3" 2>/dev/null
    echo "made $3 ($1)"
}

if [ ! -f "$dir/ca.crt" ]; then
    new_key "$dir/ca.key"
    openssl req -x509 -new -key "$dir/ca.key" -sha256 -days $((days * 2)) \
        -subj "/CN=reinforce-edge fleet CA" \
        -addext "basicConstraints=critical,CA:true,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.crt"
    echo "made $dir/ca.crt (fleet CA)"
else
    echo "kept $dir/ca.crt"
fi

if [ ! -f "$dir/broker.crt" ]; then
    san="DNS:localhost,IP:127.0.0.1,IP:::1"
    host=$(hostname 2>/dev/null || true)
    # Without --broker-name the broker is this host (make-certs.sh run on the broker itself).
    if [ ${#names[@]} -eq 0 ] && [ -n "$host" ] && [ "$host" != localhost ]; then
        san="$san,DNS:$host"
    fi
    for name in ${names[@]+"${names[@]}"}; do
        case $name in
        *[!0-9.]*) case $name in *:*) san="$san,IP:$name" ;; *) san="$san,DNS:$name" ;; esac ;;
        *) san="$san,IP:$name" ;;
        esac
    done
    new_key "$dir/broker.key"
    openssl req -new -key "$dir/broker.key" -subj "/CN=${names[0]:-${host:-localhost}}" \
        -out "$work/broker.csr"
    printf '%s\n' "basicConstraints=critical,CA:false" \
        "keyUsage=critical,digitalSignature,keyAgreement" \
        "extendedKeyUsage=serverAuth" "subjectAltName=$san" >"$work/broker.ext"
    sign "broker, $san" "$work/broker.csr" "$dir/broker.crt" "$work/broker.ext"
else
    echo "kept $dir/broker.crt"
fi

printf '%s\n' "basicConstraints=critical,CA:false" \
    "keyUsage=critical,digitalSignature,keyAgreement" \
    "extendedKeyUsage=clientAuth" >"$work/client.ext"
for id in ${ids[@]+"${ids[@]}"}; do
    if [ -f "$dir/clients/$id.crt" ]; then
        echo "kept $dir/clients/$id.crt"
        continue
    fi
    new_key "$dir/clients/$id.key"
    openssl req -new -key "$dir/clients/$id.key" -subj "/CN=$id" -out "$work/$id.csr"
    sign "client $id" "$work/$id.csr" "$dir/clients/$id.crt" "$work/client.ext"
done
# Certificates are public; keys stay private (umask 077).
chmod 644 "$dir/ca.crt" "$dir/broker.crt"
for id in ${ids[@]+"${ids[@]}"}; do chmod 644 "$dir/clients/$id.crt"; done
