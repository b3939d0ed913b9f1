#!/bin/sh
# run.sh - "make run": the proxy in the foreground on 127.0.0.1:2525.
# With BACKEND=host:port it fronts that server; without, it starts a demo
# backend (Debian's python3-aiosmtpd, which prints every message it receives)
# on 127.0.0.1:2526 so you can watch mail pass through at once.
set -eu
bin=${1:-build/portcullis}
listen=${LISTEN:-127.0.0.1:2525}
conf=$(dirname "$bin")/run.conf
demo_pid=""

cleanup() {
	[ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

if [ -z "${BACKEND:-}" ]; then
	BACKEND=127.0.0.1:2526
	echo "run: no BACKEND given: starting the demo backend on $BACKEND (messages print below)"
	/usr/bin/python3 -m aiosmtpd -n -c aiosmtpd.handlers.Debugging -l "$BACKEND" &
	demo_pid=$!
	# Wait until it accepts connections (bounded).
	i=0
	until /usr/bin/python3 -c "import socket,sys; socket.create_connection(('${BACKEND%:*}', ${BACKEND##*:}), 1)" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 50 ] && { echo "run: demo backend did not start" >&2; exit 1; }
		sleep 0.1
	done
fi

sed -e "s|^listen .*|listen = $listen|" -e "s|^backend .*|backend = $BACKEND|" \
	-e "s|^hostname .*|hostname = localhost|" etc/portcullis.conf >"$conf"
echo "run: portcullis on $listen -> $BACKEND (config $conf; Ctrl-C stops)"
echo "run: try: swaks --server $listen --from you@example.org --to someone@example.net"
if [ -t 0 ]; then
	# On a terminal the proxy is a job of its own in the foreground (set -m):
	# Ctrl-C reaches it alone, it drains and exits 0, and so do this script
	# and make (make dies of a SIGINT that reaches it, whatever its child
	# did, so it must not see one).
	set -m
	"$bin" -c "$conf"
else
	"$bin" -c "$conf" &
	pid=$!
	trap 'kill -TERM $pid 2>/dev/null; rc=0; wait $pid || rc=$?; cleanup; exit $rc' INT TERM
	wait $pid
fi
