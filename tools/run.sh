#!/bin/sh
# run.sh - "make run": the proxy in the foreground on 127.0.0.1:2525.
# With BACKEND=host:port it fronts that server; without, it starts a demo
# backend (Debian's python3-aiosmtpd, which prints every message it receives)
# on 127.0.0.1:2526 so you can watch mail pass through at once. STARTTLS is
# on, with self-signed RSA and ECDSA certificates made once into build/.
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

# STARTTLS out of the box: a self-signed RSA and an ECDSA P-256 certificate
# for localhost, made once; the proxy serves both (each client gets the one
# it can verify).
dir=$(dirname "$bin")
for type in rsa ecdsa; do
	[ -s "$dir/run-$type.pem" ] && [ -s "$dir/run-$type.key" ] && continue
	case $type in
	rsa) newkey="-newkey rsa:2048" ;;
	ecdsa) newkey="-newkey ec -pkeyopt ec_paramgen_curve:P-256" ;;
	esac
	# shellcheck disable=SC2086  # newkey is words on purpose
	openssl req -x509 $newkey -nodes -days 3650 -subj /CN=localhost \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
		-keyout "$dir/run-$type.key" -out "$dir/run-$type.pem" 2>/dev/null ||
		{ echo "run: openssl could not make $dir/run-$type.pem" >&2; exit 1; }
	chmod 600 "$dir/run-$type.key"
	echo "run: made a self-signed $type certificate: $dir/run-$type.pem"
done

sed -e "s|^listen .*|listen = $listen|" -e "s|^backend .*|backend = $BACKEND|" \
	-e "s|^hostname .*|hostname = localhost|" \
	-e "s|^#tls_cert .*|tls_cert = $dir/run-rsa.pem $dir/run-ecdsa.pem|" \
	-e "s|^#tls_key .*|tls_key = $dir/run-rsa.key $dir/run-ecdsa.key|" \
	etc/portcullis.conf >"$conf"
echo "run: portcullis on $listen -> $BACKEND (config $conf; Ctrl-C stops)"
echo "run: try: swaks --server $listen --from you@example.org --to someone@example.net"
echo "run: STARTTLS: add --tls (self-signed: swaks does not check it)"
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
