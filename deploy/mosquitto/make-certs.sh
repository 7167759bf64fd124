#!/usr/bin/env bash
# Makes a test PKI for an edgefl broker: a CA, the broker's server certificate
# and one client certificate per identity the ACL file knows (the edgefl
# server, numeric clients, aggregator workers, the gateway bridge). The
# broker takes each client certificate's CN as the MQTT username
# (use_identity_as_username), so the CN *is* the identity the ACLs check.
#
# usage: make-certs.sh [options] DIR [CLIENT_ID...]
#   DIR                 output directory (created, mode 0700)
#   CLIENT_ID...        numeric client ids (decimal u32), default: 1 2 3
#   --aggregator NAME   aggregator worker certificate (CN edgefl-aggregator-NAME);
#                       repeatable; default: a and b
#   --broker-name NAME  extra DNS name or IP address for the broker certificate
#                       (besides localhost and 127.0.0.1); repeatable
#   --days N            validity of new certificates (default 365)
#
# Files in DIR (keys mode 0600, certificates 0644):
#   ca.crt ca.key                         the test CA (keep ca.key off the broker)
#   broker.crt broker.key                 broker: CN edgefl-broker, SAN localhost, 127.0.0.1
#   server.crt server.key                 CN edgefl-server
#   client-<id>.crt client-<id>.key       CN <id>
#   aggregator-<name>.crt/.key            CN edgefl-aggregator-<name>
#   bridge.crt bridge.key                 CN edgefl-bridge
#
# Idempotent: an existing CA is reused and an existing certificate is kept if
# it is signed by that CA and matches its key, so running it again changes
# nothing and adding ids only adds files. A file that is there but not
# consistent (a key without its certificate, a certificate from another CA)
# stops the script with an error before anything is written.
#
# Keys are EC P-256. This is a *test* CA for development, CI and small
# deployments; a production fleet should issue device certificates from its
# own PKI (the broker only needs ca.crt, broker.crt and broker.key).
set -euo pipefail

prog=$(basename "$0")
die() { echo "$prog: $*" >&2; exit 2; }
# The usage text is the header comment from "usage:" to the first blank "#".
usage() { sed -n '/^# usage:/,/^#$/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^$/d' >&"$2"; exit "$1"; }

aggregators=()
broker_names=()
days=365
while [ $# -gt 0 ]; do
    case $1 in
        --aggregator) [ $# -ge 2 ] || die "--aggregator needs a NAME"; aggregators+=("$2"); shift 2 ;;
        --broker-name) [ $# -ge 2 ] || die "--broker-name needs a NAME"; broker_names+=("$2"); shift 2 ;;
        --days) [ $# -ge 2 ] || die "--days needs a number"; days=$2; shift 2 ;;
        -h|--help) usage 0 1 ;;
        --) shift; break ;;
        -*) die "unknown option '$1' (try --help)" ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || usage 2 2
dir=$1; shift
ids=("$@")
[ ${#ids[@]} -gt 0 ] || ids=(1 2 3)
[ ${#aggregators[@]} -gt 0 ] || aggregators=(a b)

# --- validate everything before touching the disk ---------------------------
command -v openssl >/dev/null 2>&1 || die "openssl not found (apt-get install openssl)"
[ -n "$dir" ] || die "DIR is empty"
[[ $days =~ ^[1-9][0-9]{0,4}$ ]] || die "--days must be a positive integer, got '$days'"
for id in "${ids[@]}"; do
    # Client ids are the protocol's u32 ids written in decimal without leading
    # zeros, so the CN, the MQTT username and the inbox topic all agree.
    [[ $id =~ ^(0|[1-9][0-9]{0,9})$ ]] && [ "$id" -le 4294967295 ] ||
        die "client id must be a decimal u32 without leading zeros, got '$id'"
done
for a in "${aggregators[@]}"; do
    # No '+', '#', '/' or spaces: the name ends up in a CN that mosquitto uses
    # as a username, and ACL pattern substitution refuses such usernames.
    [[ $a =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] ||
        die "aggregator name must match [A-Za-z0-9][A-Za-z0-9._-]*, got '$a'"
done
san="DNS:localhost,IP:127.0.0.1"
for n in "${broker_names[@]}"; do
    if [[ $n =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ || $n =~ ^[0-9A-Fa-f:]+:[0-9A-Fa-f:]*$ ]]; then
        san+=",IP:$n"
    elif [[ $n =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]{0,252})$ ]]; then
        san+=",DNS:$n"
    else
        die "--broker-name must be a host name or IP address, got '$n'"
    fi
done

# Every certificate to have: file stem, subject CN, extension profile.
stems=(broker server bridge)
cns=(edgefl-broker edgefl-server edgefl-bridge)
profiles=(server client client)
for id in "${ids[@]}"; do stems+=("client-$id"); cns+=("$id"); profiles+=(client); done
for a in "${aggregators[@]}"; do
    stems+=("aggregator-$a"); cns+=("edgefl-aggregator-$a"); profiles+=(client)
done

if [ -e "$dir" ] && [ ! -d "$dir" ]; then die "'$dir' exists and is not a directory"; fi

# Public key of a certificate / of a private key, for "does this pair match".
cert_pub() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
key_pub() { openssl pkey -in "$1" -pubout 2>/dev/null; }

# Check what is already there; decide what to make. Nothing is written yet.
make_ca=1
if [ -e "$dir/ca.crt" ] || [ -e "$dir/ca.key" ]; then
    [ -f "$dir/ca.crt" ] && [ -f "$dir/ca.key" ] ||
        die "$dir has only one of ca.crt and ca.key; remove it or restore the other"
    [ "$(cert_pub "$dir/ca.crt")" = "$(key_pub "$dir/ca.key")" ] && [ -n "$(key_pub "$dir/ca.key")" ] ||
        die "$dir/ca.key does not match $dir/ca.crt"
    make_ca=0
fi
todo=()
for i in "${!stems[@]}"; do
    s=${stems[$i]}
    crt=$dir/$s.crt key=$dir/$s.key
    if [ ! -e "$crt" ] && [ ! -e "$key" ]; then todo+=("$i"); continue; fi
    [ -f "$crt" ] && [ -f "$key" ] || die "$dir has only one of $s.crt and $s.key; remove it"
    [ $make_ca = 0 ] || die "$crt exists but there is no CA in $dir"
    openssl verify -CAfile "$dir/ca.crt" "$crt" >/dev/null 2>&1 ||
        die "$crt is not signed by $dir/ca.crt (or expired); remove it to reissue"
    [ "$(cert_pub "$crt")" = "$(key_pub "$key")" ] || die "$key does not match $crt"
    want="CN = ${cns[$i]}"
    got=$(openssl x509 -in "$crt" -noout -subject -nameopt oneline,-esc_msb 2>/dev/null)
    [ "$got" = "subject=$want" ] || die "$crt has '$got', expected '$want'; remove it to reissue"
done

if [ $make_ca = 0 ] && [ ${#todo[@]} -eq 0 ]; then
    echo "$prog: $dir: all ${#stems[@]} certificates present, nothing to do"
    exit 0
fi

# --- generate ----------------------------------------------------------------
umask 077
mkdir -p "$dir"
work=$(mktemp -d "$dir/.make-certs.XXXXXX")
trap 'rm -rf "$work"' EXIT

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>"$work/err" ||
    { cat "$work/err" >&2; die "openssl genpkey failed"; }; }

if [ $make_ca = 1 ]; then
    newkey "$work/ca.key"
    openssl req -new -x509 -key "$work/ca.key" -sha256 -days $((days * 10)) \
        -subj "/CN=edgefl test CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$work/ca.crt" 2>"$work/err" || { cat "$work/err" >&2; die "making the CA failed"; }
    chmod 0644 "$work/ca.crt"
    mv "$work/ca.key" "$dir/ca.key"
    mv "$work/ca.crt" "$dir/ca.crt"
    echo "$prog: made CA $dir/ca.crt"
fi

serial() { echo "0x$(openssl rand -hex 16)"; }
for i in "${todo[@]}"; do
    s=${stems[$i]} cn=${cns[$i]}
    newkey "$work/$s.key"
    if [ "${profiles[$i]}" = server ]; then
        ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san
authorityKeyIdentifier=keyid"
    else
        ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
authorityKeyIdentifier=keyid"
    fi
    printf '%s\n' "$ext" >"$work/$s.ext"
    openssl req -new -key "$work/$s.key" -subj "/CN=$cn" -out "$work/$s.csr" 2>"$work/err" &&
    openssl x509 -req -in "$work/$s.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -set_serial "$(serial)" -sha256 -days "$days" -extfile "$work/$s.ext" \
        -out "$work/$s.crt" 2>"$work/err" || { cat "$work/err" >&2; die "signing $s failed"; }
    chmod 0644 "$work/$s.crt"
    # Key first: a crash between the two moves leaves a key without a
    # certificate, which the next run reports instead of silently reusing.
    mv "$work/$s.key" "$dir/$s.key"
    mv "$work/$s.crt" "$dir/$s.crt"
    echo "$prog: made $dir/$s.crt (CN $cn)"
done
chmod 0600 "$dir"/*.key
