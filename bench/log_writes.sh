#!/bin/bash
# bench/log_writes.sh BIN [COUNT] [SESSIONS] [WORKERS] [new] - the proxy's system
# calls per message under strace, and how many of them write the log (fd 2).
#
# smtp-source -d -s SESSIONS -m COUNT -l 1024 -> BIN -> smtp-sink (with
# "new": no -d, a new connection per message), with the
# proxy (every process of it: -f) traced from before the first message to
# after the last. Prints the calls per message by name (what strace -c
# counts), the writes and writevs per message, and those on fd 2. Counts,
# not times: the tracing slows everything, the counts do not change.
# Issue 19, item 3 (log lines without a write each).
set -u

BIN=${1:?usage: $0 BIN [COUNT] [SESSIONS] [WORKERS] [new]}
COUNT=${2:-1000}
SESSIONS=${3:-1}
WORKERS=${4:-1}
REUSE=-d
[ "${5:-}" = new ] && REUSE=
SOURCE=/usr/sbin/smtp-source
SINK=/usr/sbin/smtp-sink
RUN_BOUND=300 # seconds for the traced run, then it is a failure

WORK=$(mktemp -d /tmp/logwrites.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "log_writes: FAILED: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

free_port SINK_PORT
free_port PROXY_PORT

"$SINK" -u nobody -m 1024 "127.0.0.1:$SINK_PORT" 1024 >"$WORK/sink.out" 2>&1 </dev/null &
SINK_PID=$!
PIDS+=("$SINK_PID")
wait_listen "$SINK_PORT" "$SINK_PID" smtp-sink

{
	bench_conf "$PROXY_PORT" "$SINK_PORT" "$WORK"
	echo "seccomp = no"
	echo "workers = $WORKERS"
} >"$WORK/p.conf"
"$BIN" -t -c "$WORK/p.conf" >"$WORK/check.out" 2>&1 || { cat "$WORK/check.out" >&2; die "portcullis -t"; }
# The log goes to a pipe, as under a service manager's journal or a test.
# Its reader is no child of the proxy's, so it is not traced.
mkfifo "$WORK/log.fifo"
cat <"$WORK/log.fifo" >"$WORK/proxy.log" &
CAT_PID=$!
PIDS+=("$CAT_PID")
"$BIN" -c "$WORK/p.conf" 2>"$WORK/log.fifo" >/dev/null </dev/null &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_listen "$PROXY_PORT" "$PROXY_PID" portcullis
sleep 0.5 # the workers, if any, say ready

# Every process of the proxy, each attached by its own -p.
attach=()
for p in $PROXY_PID $(cat /proc/"$PROXY_PID"/task/*/children 2>/dev/null); do attach+=(-p "$p"); done
strace -f -qq -o "$WORK/trace" "${attach[@]}" &
STRACE_PID=$!
PIDS+=("$STRACE_PID")
sleep 1 # attached

timeout "$RUN_BOUND" "$SOURCE" $REUSE -s "$SESSIONS" -m "$COUNT" -l 1024 \
	-f from@bench.test -t to@bench.test "127.0.0.1:$PROXY_PORT" >"$WORK/source.out" 2>&1 ||
	{ cat "$WORK/source.out" >&2; die "smtp-source"; }
sleep 0.5 # the last lines of the last session
kill -INT "$STRACE_PID"
wait "$STRACE_PID" 2>/dev/null
kill -TERM "$PROXY_PID"
wait "$PROXY_PID" || die "portcullis exited $? at SIGTERM"
wait "$CAT_PID" # the log's reader: every line is in proxy.log

[ -n "${KEEP_TRACE:-}" ] && cp "$WORK/trace" "$KEEP_TRACE"
sent=$(grep -c 'status=sent' "$WORK/proxy.log")
[ "$sent" -eq "$COUNT" ] || die "$sent of $COUNT messages logged as sent"
how="one connection each"
[ -z "$REUSE" ] && how="a new connection per message"
echo "$COUNT messages, $SESSIONS session(s), $how, workers = $WORKERS: system calls per message"
# "PID name(args) = ret" lines; an interrupted call is two lines ("<unfinished
# ...>" and "<... name resumed>"): counted once, at its start.
awk -v n="$COUNT" '
	{ sub(/^[0-9]+ +/, "") }
	/^<\.\.\. / { next }
	/^[a-z_0-9]+\(/ {
		name = substr($0, 1, index($0, "(") - 1)
		calls[name]++; total++
		if ((name == "write" || name == "writev") && $0 ~ /^[a-z]+\(2,/) lw++
	}
	END {
		for (c in calls) printf "  %-16s %8.2f\n", c, calls[c] / n | "sort -k2 -nr"
		close("sort -k2 -nr")
		printf "  %-16s %8.2f\n", "total", total / n
		printf "  %-16s %8.2f\n", "log writes (fd 2)", lw / n
	}' "$WORK/trace"
echo "log lines per message: $(awk -v n="$COUNT" 'END { printf "%.2f", NR / n }' "$WORK/proxy.log")"
