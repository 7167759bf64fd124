# Shared by the shell tests of tests/cli (sourced, not run): the binary
# under test in $EF, a scratch directory $tmp removed on exit, a failure
# counter, and checks that keep going after a failure.
#   expect CODE CMD...  runs CMD (stdout to $tmp/out, stderr to $tmp/err) and
#                       checks its exit code
#   err_has TEXT / out_has TEXT   the last command's stderr / stdout contains TEXT
#   field FILE KEY      prints a top-level field of a JSON file
#   finish NAME         prints the summary and exits 0 or 1
# usage (first lines of a test): source "$(dirname "$0")/common.sh" "$@"
set -u
EF=$1
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
expect() {
    local want=$1; shift
    "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    [ "$got" = "$want" ] || fail "exit $got (want $want): $*  stderr: $(tail -c 400 "$tmp/err")"
}
err_has() { grep -q -- "$1" "$tmp/err" || fail "stderr lacks '$1': $(tail -c 400 "$tmp/err")"; }
out_has() { grep -q -- "$1" "$tmp/out" || fail "stdout lacks '$1': $(head -c 400 "$tmp/out")"; }
field() { /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
finish() {
    if [ "$fails" = 0 ]; then echo "$1: all checks passed"; exit 0; fi
    echo "$1: $fails checks FAILED" >&2
    exit 1
}
