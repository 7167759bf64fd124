#!/usr/bin/env bash
# Runs mosquitto with edgefl's broker configuration (deploy/mosquitto/
# mosquitto.conf and acl) on a loopback port, for tests, examples and local
# work. The shipped configuration is copied into STATE_DIR/mosquitto.conf with
# the port, bind address and file paths rewritten; everything else (TLS
# settings, ACLs, persistence, limits) is used as shipped.
#
# usage: run-broker.sh [options] STATE_DIR     start in the background, print the port
#        run-broker.sh --stop STATE_DIR        stop it (SIGTERM: the database is saved)
#   --port N         listen on 127.0.0.1:N (default: a free port, retried if taken)
#   --certs DIR      certificates from make-certs.sh (default STATE_DIR/certs,
#                    made with make-certs.sh if it does not exist)
#   --acl FILE       ACL file (default: the acl file beside this script)
#   --include FILE   append FILE to the generated configuration (e.g. a bridge)
#   --plain          NO TLS, NO AUTHENTICATION, NO ACLs: anonymous MQTT on
#                    127.0.0.1 for local demos only, never for production
#   --foreground     run mosquitto in the foreground (logs still go to the file)
#
# STATE_DIR holds mosquitto.conf (generated), mosquitto.db (persistence),
# mosquitto.log, mosquitto.pid. Starting again with the same STATE_DIR (and
# --port) restarts the broker with its retained messages and sessions.
# stdout: the port, one line. stderr: what was started and how to stop it.
# Exit status: 0 started/stopped, 1 failed (log tail on stderr), 2 bad usage.
set -euo pipefail

prog=$(basename "$0")
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "$prog: $*" >&2; exit 1; }
bad() { echo "$prog: $*" >&2; exit 2; }
usage() { sed -n '/^# usage:/,/^# Exit status/p' "$0" | sed -e 's/^# \{0,1\}//' >&"$2"; exit "$1"; }

port='' certs='' acl=$here/acl include='' plain=0 fg=0 stop=0
while [ $# -gt 0 ]; do
    case $1 in
        --port) [ $# -ge 2 ] || bad "--port needs a number"; port=$2; shift 2 ;;
        --certs) [ $# -ge 2 ] || bad "--certs needs a directory"; certs=$2; shift 2 ;;
        --acl) [ $# -ge 2 ] || bad "--acl needs a file"; acl=$2; shift 2 ;;
        --include) [ $# -ge 2 ] || bad "--include needs a file"; include=$2; shift 2 ;;
        --plain) plain=1; shift ;;
        --foreground) fg=1; shift ;;
        --stop) stop=1; shift ;;
        -h|--help) usage 0 1 ;;
        --) shift; break ;;
        -*) bad "unknown option '$1' (try --help)" ;;
        *) break ;;
    esac
done
[ $# -eq 1 ] || usage 2 2
state=$1
[ -n "$state" ] || bad "STATE_DIR is empty"

pidfile=$state/mosquitto.pid
# The pid in STATE_DIR/mosquitto.pid if that process is still a mosquitto.
running_pid() {
    local pid
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q mosquitto || return 1
    echo "$pid"
}

if [ $stop = 1 ]; then
    pid=$(running_pid) || { echo "$prog: no broker running for $state" >&2; exit 1; }
    kill -TERM "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "$prog: stopped $pid" >&2; exit 0; }
        sleep 0.1
    done
    die "broker $pid did not stop within 10 s"
fi

# --- check the inputs before changing anything ---------------------------------
mosq=$(command -v mosquitto 2>/dev/null || true)
[ -n "$mosq" ] || { [ -x /usr/sbin/mosquitto ] && mosq=/usr/sbin/mosquitto; } ||
    die "mosquitto not found (apt-get install mosquitto)"
conf_in=$here/mosquitto.conf
[ -r "$conf_in" ] || die "cannot read $conf_in"
if [ -n "$port" ]; then
    [[ $port =~ ^[1-9][0-9]{0,4}$ ]] && [ "$port" -le 65535 ] || bad "--port must be 1..65535, got '$port'"
fi
[ -z "$include" ] || [ -r "$include" ] || bad "cannot read --include file '$include'"
if [ $plain = 0 ]; then
    [ -r "$acl" ] || bad "cannot read ACL file '$acl'"
    [ -n "$certs" ] || certs=$state/certs
fi
if pid=$(running_pid); then die "a broker ($pid) is already running for $state; --stop it first"; fi

mkdir -p "$state"
state=$(cd "$state" && pwd)
pidfile=$state/mosquitto.pid
if [ $plain = 0 ]; then
    if [ ! -d "$certs" ]; then
        echo "$prog: no certificates in $certs, making a test set" >&2
        "$here/make-certs.sh" "$certs" >&2
    fi
    certs=$(cd "$certs" && pwd)
    for f in ca.crt broker.crt broker.key; do
        [ -r "$certs/$f" ] || die "missing $certs/$f (make it with $here/make-certs.sh $certs)"
    done
    acl=$(cd "$(dirname "$acl")" && pwd)/$(basename "$acl")
fi
[ -z "$include" ] || include=$(cd "$(dirname "$include")" && pwd)/$(basename "$include")

# --- generate STATE_DIR/mosquitto.conf ------------------------------------------
# Every directive that names a path or the listener is rewritten; if the
# shipped file loses one of them, refuse rather than run with a path outside
# STATE_DIR (or a listener on all interfaces).
gen() {
    local p=$1
    awk -v port="$p" -v state="$state" -v certs="$certs" -v acl="$acl" \
        -v plain="$plain" -v root="$([ "$(id -u)" = 0 ] && echo 1 || echo 0)" '
    function need(k) { seen[k] = 1 }
    BEGIN {
        if (plain == 1) {
            print "# GENERATED by run-broker.sh --plain from deploy/mosquitto/mosquitto.conf."
            print "# NO TLS, NO AUTHENTICATION, NO ACLs: anonymous clients on 127.0.0.1 may"
            print "# read and write every topic. For local demos only, never for production."
        } else {
            print "# GENERATED by run-broker.sh from deploy/mosquitto/mosquitto.conf:"
            print "# listener, paths and user rewritten; everything else as shipped."
        }
    }
    /^[ \t]*#/ || /^[ \t]*$/ { print; next }
    {
        k = $1
        if (k == "listener") {
            if ($2 == "0") { print "# (unix socket listener dropped by run-broker.sh) " $0; next }
            need("listener"); print "listener " port " 127.0.0.1"; next
        }
        if (k == "persistence_location") { need(k); print k " " state "/"; next }
        if (k == "pid_file") { need(k); print k " " state "/mosquitto.pid"; next }
        if (k == "log_dest") { need(k); print "log_dest file " state "/mosquitto.log"; next }
        if (k == "user") { need(k); print (root == 1 ? "user root" : $0); next }
        if (k == "password_file") { print "# (dropped by run-broker.sh) " $0; next }
        if (plain == 1) {
            if (k == "allow_anonymous") { need(k); print "allow_anonymous true"; next }
            if (k ~ /^(acl_file|cafile|capath|certfile|keyfile|tls_version|require_certificate|use_identity_as_username|use_subject_as_username|use_username_as_clientid|crlfile|ciphers)$/) {
                print "# (plain mode) " $0; next
            }
        } else {
            if (k == "acl_file") { need(k); print k " " acl; next }
            if (k == "cafile" || k == "certfile" || k == "keyfile") {
                need(k); n = split($2, parts, "/"); print k " " certs "/" parts[n]; next
            }
            if (k == "allow_anonymous") need(k)
        }
        print
    }
    END {
        split("listener persistence_location pid_file log_dest user allow_anonymous", req, " ")
        if (plain != 1) { req[7] = "acl_file"; req[8] = "cafile"; req[9] = "certfile"; req[10] = "keyfile" }
        for (i in req) if (!(req[i] in seen)) { print "run-broker.sh: mosquitto.conf has no " req[i] > "/dev/stderr"; bad = 1 }
        if (bad) exit 3
    }' "$conf_in" || return 1
    if [ -n "$include" ]; then
        echo
        echo "# --- included by run-broker.sh --include $include"
        cat "$include"
    fi
}

free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 40000))
        # Connection refused means nobody listens there (now).
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

log=$state/mosquitto.log
for _ in 1 2 3 4 5; do
    p=$port
    [ -n "$p" ] || p=$(free_port) || die "no free port found"
    gen "$p" >"$state/mosquitto.conf.tmp" || die "cannot generate the configuration"
    mv "$state/mosquitto.conf.tmp" "$state/mosquitto.conf"
    touch "$log" "$state/mosquitto.stderr"
    offset=$(wc -c <"$log") eoffset=$(wc -c <"$state/mosquitto.stderr")

    if [ $fg = 1 ]; then
        echo "$p"
        echo "$prog: mosquitto $([ $plain = 1 ] && echo 'PLAIN (no TLS, anonymous)' || echo TLS) on 127.0.0.1:$p in the foreground, log $log" >&2
        exec "$mosq" -c "$state/mosquitto.conf"
    fi

    # stdout/stderr to a file: a caller reading our stdout through a pipe
    # ($(run-broker.sh ...)) must not wait for the broker to close it.
    "$mosq" -c "$state/mosquitto.conf" </dev/null >>"$state/mosquitto.stderr" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"
    # Ready when the broker logs that it runs (after opening its listener).
    for _ in $(seq 150); do
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        if tail -c +"$((offset + 1))" "$log" | grep -q "mosquitto version .* running"; then
            echo "$p"
            echo "$prog: mosquitto $pid $([ $plain = 1 ] && echo 'PLAIN (no TLS, anonymous; demos only)' || echo TLS) on 127.0.0.1:$p, state $state; stop: $0 --stop $state" >&2
            exit 0
        fi
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        die "mosquitto did not report running within 15 s; see $log"
    fi
    wait "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    news=$(tail -c +"$((offset + 1))" "$log"; tail -c +"$((eoffset + 1))" "$state/mosquitto.stderr")
    if [ -z "$port" ] && grep -q "Address already in use" <<<"$news"; then
        continue
    fi
    echo "$prog: mosquitto failed to start ($state/mosquitto.conf):" >&2
    tail -n 20 <<<"$news" >&2
    exit 1
done
die "no free port after 5 attempts"
