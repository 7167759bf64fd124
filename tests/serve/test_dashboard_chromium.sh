#!/usr/bin/env bash
# The dashboard page in a real browser (headless Debian Chromium):
#   1. --dump-dom of the page served by tests/serve/dashboard_demo (rounds 1..3
#      finished) shows "Round 3 / 10" in #round: the inline script ran and
#      fetched api/state;
#   2. after the demo finishes round 4, a second load shows round 4;
#   3. live, without reloading: dashboard_live.js drives one page through the
#      DevTools protocol while the server moves on to round 5, changes phase
#      and stops (see that file for its checks).
# Skips (77) without chromium or without a node with WebSocket. Every wait
# has a timeout; the demo and Chromium are killed on exit.
# usage: test_dashboard_chromium.sh EDGEFL_BINARY SOURCE_DIR
#   EF_DASHBOARD_DEMO: the dashboard_demo program (set by tests/CMakeLists.txt)
set -u
EF=$1 SRC=$2
DEMO=${EF_DASHBOARD_DEMO:-$(dirname "$EF")/tests/dashboard_demo}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ]; then
    echo "SKIP: chromium is not installed (apt-get install chromium)"
    exit 77
fi
[ -x "$DEMO" ] || { echo "FAIL: $DEMO not built" >&2; exit 1; }

tmp=$(mktemp -d)
demo_pid='' chrome_pid=''
cleanup() {
    exec 3>&- 2>/dev/null
    # Chromium was started as the leader of its own process group: end the
    # group (browser, zygote, renderers), politely first
    if [ -n "$chrome_pid" ]; then
        kill -TERM -- "-$chrome_pid" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$chrome_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$chrome_pid" 2>/dev/null
    fi
    if [ -n "$demo_pid" ]; then kill "$demo_pid" 2>/dev/null; wait "$demo_pid" 2>/dev/null; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

CHROME_FLAGS=(--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run
              --no-default-browser-check --disable-extensions --disable-background-networking
              --disable-component-update --disable-sync --disable-background-timer-throttling
              --disable-renderer-backgrounding --mute-audio)

# the demo server, its commands through a FIFO kept open on fd 3
mkfifo "$tmp/ctl"
"$DEMO" --rounds 10 --initial 3 <"$tmp/ctl" >"$tmp/demo.out" 2>"$tmp/demo.err" &
demo_pid=$!
exec 3>"$tmp/ctl"
for _ in $(seq 100); do grep -q '^port ' "$tmp/demo.out" && break; sleep 0.1; done
port=$(awk '/^port /{print $2; exit}' "$tmp/demo.out")
[ -n "$port" ] || { echo "FAIL: the demo did not start: $(cat "$tmp/demo.err")" >&2; exit 1; }
url="http://127.0.0.1:$port/"

# waits until the demo has answered N commands ("ok ..." lines)
await_ok() {
    for _ in $(seq 100); do [ "$(grep -c '^ok' "$tmp/demo.out")" -ge "$1" ] && return 0; sleep 0.1; done
    fail "the demo did not answer command $1: $(tail -2 "$tmp/demo.out")"
}

# the text of #round in a DOM dump: "<data-round>|<text>"
round_of() { grep -o '<div id="round" data-round="[0-9]*">[^<]*' "$1" | sed 's/.*data-round="\([0-9]*\)">/\1|/'; }

dump_dom() { # OUT PROFILE
    timeout -k 5 60 "$CHROMIUM" "${CHROME_FLAGS[@]}" --user-data-dir="$tmp/$2" \
        --virtual-time-budget=5000 --dump-dom "$url" >"$1" 2>"$tmp/$2.err"
}

# 1. a first load
dump_dom "$tmp/dom3.html" p1 || fail "chromium --dump-dom failed: $(tail -3 "$tmp/p1.err")"
got=$(round_of "$tmp/dom3.html")
[ "$got" = "3|Round 3 / 10" ] || fail "first load: #round is '$got', want '3|Round 3 / 10'"
grep -q 'id="conn" class="badge live"' "$tmp/dom3.html" || fail "first load: the badge is not 'live'"
grep -q '<span id="conn-text">live</span>' "$tmp/dom3.html" || fail "first load: badge text"
echo "dump-dom: #round shows '${got#*|}'"

# 2. the server moves to round 4; a second load shows it
echo next >&3
await_ok 1
dump_dom "$tmp/dom4.html" p2 || fail "chromium --dump-dom failed: $(tail -3 "$tmp/p2.err")"
got=$(round_of "$tmp/dom4.html")
[ "$got" = "4|Round 4 / 10" ] || fail "second load: #round is '$got', want '4|Round 4 / 10'"
echo "dump-dom after advancing: #round shows '${got#*|}'"

# 3. live updates of one page, through the DevTools protocol
NODE=$(command -v node || true)
NODE_FLAGS=()
if [ -z "$NODE" ]; then
    echo "SKIP: no node for the live check (the load checks above ran: $fails failures)"
    [ "$fails" = 0 ] && exit 77 || exit 1
fi
if ! "$NODE" -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' 2>/dev/null; then
    NODE_FLAGS=(--experimental-websocket)
    if ! "$NODE" "${NODE_FLAGS[@]}" -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' 2>/dev/null; then
        echo "SKIP: this node ($("$NODE" --version)) has no WebSocket for the live check ($fails failures above)"
        [ "$fails" = 0 ] && exit 77 || exit 1
    fi
fi
# a new process group (setsid does not fork here: a background job of a
# non-interactive shell is not a group leader), so cleanup can end all of it
setsid "$CHROMIUM" "${CHROME_FLAGS[@]}" --user-data-dir="$tmp/p3" --remote-debugging-port=0 \
    --remote-debugging-address=127.0.0.1 about:blank >"$tmp/p3.out" 2>"$tmp/p3.err" &
chrome_pid=$!
devport=''
for _ in $(seq 150); do
    [ -s "$tmp/p3/DevToolsActivePort" ] && devport=$(head -1 "$tmp/p3/DevToolsActivePort") && [ -n "$devport" ] && break
    kill -0 "$chrome_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$devport" ]; then
    fail "chromium did not open its DevTools port: $(tail -3 "$tmp/p3.err")"
else
    timeout -k 5 90 "$NODE" "${NODE_FLAGS[@]}" "$SRC/tests/serve/dashboard_live.js" "$devport" "$url" "$tmp/ctl" 4 \
        2> >(grep -v 'ExperimentalWarning\|node --trace-warnings' >&2)
    rc=$?
    [ "$rc" = 0 ] || fail "live check (exit $rc)"
fi

# the demo must shut down cleanly (under AddressSanitizer this also checks
# for leaks and errors in the dashboard)
echo quit >&3
exec 3>&-
for _ in $(seq 100); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$demo_pid" 2>/dev/null; then
    fail "the demo did not exit after quit"
else
    wait "$demo_pid"
    rc=$?
    demo_pid=''
    [ "$rc" = 0 ] || fail "the demo exited with $rc: $(tail -20 "$tmp/demo.err")"
fi

if [ "$fails" = 0 ]; then echo "serve/test_dashboard_chromium: all checks passed"; exit 0; fi
echo "serve/test_dashboard_chromium: $fails checks FAILED" >&2
exit 1
