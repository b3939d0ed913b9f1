# shellcheck shell=bash
# bench/lib.sh - what the bench scripts share (run.sh, cost.sh,
# log_writes.sh): free ports, waiting for a listener, smtp-sink's message
# counter and the proxy's base configuration. Sourced; the script defines die.

BENCH_PORTS=" " # every port free_port handed out in this run

# free_port VAR - a free TCP port on 127.0.0.1, into VAR. Never one handed
# out before in this run: a port handed out may not be bound yet, and the
# kernel would give it again.
free_port() {
	local p
	while :; do
		p=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
		[[ $BENCH_PORTS == *" $p "* ]] || break
	done
	BENCH_PORTS="$BENCH_PORTS$p "
	printf -v "$1" '%s' "$p"
}

# wait_listen PORT PID WHAT [TRIES] - until PORT listens (TRIES of 0.05 s,
# default 200; valgrind or Node take longer to start a program); dies if
# PID exits first.
wait_listen() {
	for _ in $(seq "${4:-200}"); do
		[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ] && return 0
		kill -0 "$2" 2>/dev/null || die "$3 exited at start"
		sleep 0.05
	done
	die "$3 does not listen on 127.0.0.1:$1"
}

# sink_count FILE - smtp-sink -c's message counter: it rewrites
# "sess=N quit=N mesg=N" (ended by CR, flushed) into FILE on every event.
sink_count() {
	local n
	n=$(tr '\r' '\n' <"$1" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -n 1)
	echo "${n:-0}"
}

# bench_conf PROXY_PORT SINK_PORT SPOOL_DIR - the configuration every bench
# proxy starts from: generous limits, so only speed is measured. A script
# adds its own keys after it.
bench_conf() {
	cat <<CONF
listen = 127.0.0.1:$1
backend = 127.0.0.1:$2
hostname = bench.test
max_message_size = 50M
max_connections = 4000
max_connections_per_ip = 2000
timeout = 60s
backend_timeout = 60s
shutdown_timeout = 2s
spool_dir = $3
# smtp-sink offers XCLIENT; a Postfix behind the proxy would want it, but
# the baseline (smtp-source straight to the sink) does no such exchange.
backend_xclient = no
# No DNS: the proxy's speed, not the resolver's, is measured (with filters,
# client_rdns would look every client up before the connect stage).
client_rdns = no
CONF
}
