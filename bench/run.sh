#!/bin/bash
# bench/run.sh PATH-TO-PORTCULLIS - throughput of portcullis against a direct
# baseline measured in the same run (make bench). See bench/README.md.
#
# smtp-source -> smtp-sink directly, and smtp-source -> portcullis -> smtp-sink,
# on four workloads. Each workload runs BENCH_REPEAT times, direct and proxied
# interleaved, and the median rate of each is reported. The sink's message count
# must grow by exactly the number sent on every run (else: exit 1, loudly). The
# proxy's peak RSS is VmHWM from /proc/PID/status, read before it is stopped.
#
# Environment: BENCH_REPEAT (default 3), BENCH_SCALE (multiplies every message
# count; default 1; e.g. 0.2 for a quick look), BENCH_KEEP=1 keeps the work dir,
# BENCH_PEERS=haraka also runs the four workloads through Haraka (installed
# from npm into a cache under the build directory) in the same run.
# Everything listens on 127.0.0.1 only; every process started here is stopped
# by its PID on exit.
set -euo pipefail

BIN=${1:?usage: bench/run.sh PATH-TO-PORTCULLIS}
[ -x "$BIN" ] || { echo "bench: $BIN is not an executable" >&2; exit 2; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
SOURCE=/usr/sbin/smtp-source
SINK=/usr/sbin/smtp-sink
for t in "$SOURCE" "$SINK" ss; do
	command -v "$t" >/dev/null || { echo "bench: $t not found (make deps installs it)" >&2; exit 2; }
done

# Peers run through the same workloads (BENCH_PEERS, a list: haraka).
HARAKA=""
PEERS=${BENCH_PEERS:-}
for peer in ${PEERS//,/ }; do
	case $peer in
	haraka) HARAKA=1 ;;
	*) echo "bench: BENCH_PEERS: no peer called '$peer' (known: haraka)" >&2; exit 2 ;;
	esac
done

REPEAT=${BENCH_REPEAT:-3}
SCALE=${BENCH_SCALE:-1}
RUN_BOUND=120 # seconds for one smtp-source run, then it is a failure

# name | smtp-source options (or pipe:SIZE: bench/smtp_pipe.py) | message count
# smtp-source never pipelines: it waits for the reply to every command. The
# last row's client (bench/smtp_pipe.py, one session) sends MAIL, RCPT and
# DATA in one write, as Postfix's own SMTP client does, so the proxy's
# pipelined relay to the backend shows; it is Python, which costs both legs
# alike.
WORKLOADS=(
	"1 KB x 1 session, one connection|-d -s 1 -l 1024|10000"
	"1 KB x 50 sessions, new conn per msg|-s 50 -l 1024|10000"
	"100 KB x 20 sessions, one conn each|-d -s 20 -l 102400|4000"
	"1 KB x 50 sessions, one conn each|-d -s 50 -l 1024|40000"
	"1 KB x 1 session, pipelining client|pipe:1024|5000"
)
# The goal of each row, proxy/direct (issue 19), for the summary at the end.
declare -A GOAL=(
	["1 KB x 1 session, one connection"]=0.75
	["1 KB x 50 sessions, new conn per msg"]=0.75
	["100 KB x 20 sessions, one conn each"]=0.9
	["1 KB x 50 sessions, one conn each"]=0.6
	["STARTTLS"]=0.5
)
SUMMARY_ROWS=()
# summary_row NAME RATIO GOAL [PROXY/HARAKA] - a row of the summary at the end
summary_row() {
	SUMMARY_ROWS+=("$(awk -v n="$1" -v r="$2" -v g="$3" -v h="${4:-}" 'BEGIN {
		m = (g == "" ? "" : r + 0 >= g + 0 ? "met" : "below");
		g = (g == "" ? "-" : ">= " g);
		if (h == "") printf "%-42s %7s %9s  %s", n, r, g, m;
		else printf "%-42s %7s %9s  %-5s %7s", n, r, g, m, h }')")
}

WORK=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
SINK_PID=""
PROXY_PID=""
REDIS_PID=""
FPROXY_PID=""
SPAMD_PID=""
DKIM_PID=""
CHECK_SINK_PID=""
HARAKA_PID=""
declare -A TLS_PID # the TLS proxies, by key type

cleanup() {
	local pid
	for pid in $FPROXY_PID $PROXY_PID $HARAKA_PID "${TLS_PID[@]}" $SINK_PID $REDIS_PID $SPAMD_PID $DKIM_PID $CHECK_SINK_PID; do
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null || true
			# libmilter daemons (opendkim) take ~5 s to exit on SIGTERM
			for _ in $(seq 70); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	wait 2>/dev/null || true
	if [ -n "${BENCH_KEEP:-}" ]; then echo "bench: work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
	echo >&2
	echo "bench: FAILED: $*" >&2
	if [ -s "$WORK/proxy.log" ]; then
		echo "--- last lines of the proxy's log ---" >&2
		tail -n 20 "$WORK/proxy.log" >&2
	fi
	if [ -s "$WORK/haraka.log" ]; then
		echo "--- last lines of Haraka's log ---" >&2
		tail -n 20 "$WORK/haraka.log" >&2
	fi
	exit 1
}

# proxy_start VAR CONF LOG PORT WHAT - check CONF (portcullis -t), start
# the proxy on it with its log in LOG and its pid in VAR (for cleanup), and
# wait until it listens on PORT.
proxy_start() {
	local pid
	"$BIN" -t -c "$2" >"$WORK/check.out" 2>&1 || { cat "$WORK/check.out" >&2; die "portcullis -t rejects the config of $5 ($2)"; }
	"$BIN" -c "$2" 2>"$3" >/dev/null </dev/null &
	pid=$!
	printf -v "$1" '%s' "$pid"
	wait_listen "$4" "$pid" "$5"
}

now_ns() { date +%s%N; }

free_port SINK_PORT
free_port PROXY_PORT
free_port FPROXY_PORT
PLUGIN_DIR=$(dirname "$BIN")/plugins

# ---- Haraka (BENCH_PEERS=haraka): installed once from npm into a cache
# beside the binary (build/bench-peers), run from there with a config
# directory of its own in the work dir: a single process (nodes = 0, as
# portcullis runs with workers = 1) listening on 127.0.0.1, relaying to the
# same sink through queue/smtp_proxy (a backend connection at MAIL, each
# command passed on, as portcullis does), rcpt_to.in_host_list accepting
# sink.test, log level notice (its summary lines per transaction, not the
# per-command chatter of info). Tuned as issue 19 measured it: TCP_NODELAY
# on every socket (bench/haraka/nodelay.js, preloaded), and no reverse DNS
# lookup of the client (bench/haraka/bench_nordns.js; portcullis has
# client_rdns = no). No system service: node is started here and stopped
# by its PID.
HARAKA_VERSION=3.3.4
HARAKA_CACHE=$(dirname "$BIN")/bench-peers/haraka-$HARAKA_VERSION
HARAKA_PKG=$HARAKA_CACHE/node_modules/Haraka
HARAKA_SHARE=10 # Haraka runs 1/HARAKA_SHARE of each workload's messages (it is >10x slower)
HARAKA_PORT=""
haraka_version() { node -p 'require(process.argv[1]).version' "$HARAKA_PKG/package.json" 2>/dev/null || true; }
haraka_install() {
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		echo "bench: node and npm are needed for Haraka: installing Debian's (tools/deps.sh)"
		"$BENCH_DIR/../tools/deps.sh" nodejs npm || die "tools/deps.sh nodejs npm failed"
	fi
	local major
	major=$(node -p 'process.versions.node.split(".")[0]')
	[ "$major" -ge 20 ] || echo "bench: warning: Haraka $HARAKA_VERSION asks for Node.js >= 20, this is $(node --version)"
	[ "$(haraka_version)" = "$HARAKA_VERSION" ] && return 0
	echo "bench: installing Haraka $HARAKA_VERSION from npm into $HARAKA_CACHE (once; later runs reuse it)"
	rm -rf "$HARAKA_CACHE.new"
	mkdir -p "$HARAKA_CACHE.new"
	# a package.json of its own, so that npm installs here and nowhere above
	echo '{ "private": true }' >"$HARAKA_CACHE.new/package.json"
	(cd "$HARAKA_CACHE.new" && timeout 600 npm install --no-audit --no-fund --omit=dev --loglevel=error \
		"Haraka@$HARAKA_VERSION") >"$WORK/npm.log" 2>&1 || { tail -n 30 "$WORK/npm.log" >&2; die "npm install Haraka@$HARAKA_VERSION failed"; }
	rm -rf "$HARAKA_CACHE"
	mv "$HARAKA_CACHE.new" "$HARAKA_CACHE"
	[ "$(haraka_version)" = "$HARAKA_VERSION" ] || die "npm installed Haraka $(haraka_version), not $HARAKA_VERSION"
}
haraka_start() {
	local dir="$WORK/haraka"
	mkdir -p "$dir/plugins"
	# the package's own config directory as the base (what haraka -i lays out)
	cp -r "$HARAKA_PKG/config" "$dir/config"
	cp "$BENCH_DIR/haraka/bench_nordns.js" "$dir/plugins/"
	printf '%s\n' "listen=127.0.0.1:$HARAKA_PORT" "nodes=0" "inactivity_timeout=60" \
		"force_shutdown_timeout=2" >"$dir/config/smtp.ini"
	printf '%s\n' bench_nordns rcpt_to.in_host_list queue/smtp_proxy >"$dir/config/plugins"
	echo sink.test >"$dir/config/host_list"
	printf '%s\n' "host=127.0.0.1" "port=$SINK_PORT" "connect_timeout=10" "enable_tls=false" \
		"enable_outbound=false" >"$dir/config/smtp_proxy.ini"
	printf '%s\n' "[main]" "level=notice" >"$dir/config/log.ini"
	node -r "$BENCH_DIR/haraka/nodelay.js" "$HARAKA_PKG/bin/haraka" -c "$dir" >"$WORK/haraka.log" 2>&1 </dev/null &
	HARAKA_PID=$!
	wait_listen "$HARAKA_PORT" "$HARAKA_PID" "Haraka" 600
	# Warm-up, not measured: node compiles its hot paths in the first
	# messages (the sink counts them; run_one checks they all arrive).
	run_one "Haraka warm-up" "$HARAKA_PORT" "-s 10 -l 1024" 200 >/dev/null
}
if [ -n "$HARAKA" ]; then
	haraka_install
	free_port HARAKA_PORT
fi

# smtp-sink: as root it must drop privileges (-u). Backlog 1024, up to 1024
# sessions at once (-m), so neither limits 50 sessions through the proxy.
# With Haraka, -C: no XCLIENT offered, which Haraka's smtp_proxy would
# otherwise always send (a round trip more per message, that the bench's
# portcullis skips with backend_xclient = no); smtp-source never uses it.
SINK_OPTS=""
[ -z "$HARAKA" ] || SINK_OPTS="-C"
# shellcheck disable=SC2086 # SINK_OPTS is empty or one word
"$SINK" -c $SINK_OPTS -u nobody -m 1024 "127.0.0.1:$SINK_PORT" 1024 >"$WORK/sink.out" 2>&1 </dev/null &
SINK_PID=$!
wait_listen "$SINK_PORT" "$SINK_PID" "smtp-sink"

bench_conf "$PROXY_PORT" "$SINK_PORT" "$WORK" >"$WORK/bench.conf"
proxy_start PROXY_PID "$WORK/bench.conf" "$WORK/proxy.log" "$PROXY_PORT" "portcullis"

# One smtp-source run of COUNT messages against PORT; prints msgs/s.
run_one() { # label port opts count
	local label=$1 port=$2 opts=$3 count=$4 before after t0 t1 rc=0
	before=$(sink_count "$WORK/sink.out")
	t0=$(now_ns)
	# In a subshell of its own, whose times builtin (getrusage of its reaped
	# children) is then smtp-source's CPU alone: appended, in seconds, to
	# $WORK/source.cpu (the workers section sums it).
	(
		if [[ $opts == pipe:* ]]; then
			timeout "$RUN_BOUND" /usr/bin/python3 "$BENCH_DIR/smtp_pipe.py" "$port" "$count" \
				"${opts#pipe:}" >"$WORK/source.out" 2>&1 || exit $?
		else
			# shellcheck disable=SC2086 # opts is a word list on purpose
			timeout "$RUN_BOUND" "$SOURCE" -M bench.test -f bench@bench.test -t sink@sink.test \
				$opts -m "$count" "127.0.0.1:$port" >"$WORK/source.out" 2>&1 || exit $?
		fi
		times >"$WORK/source.times"
	) || rc=$?
	t1=$(now_ns)
	[ "$rc" -eq 0 ] || { cat "$WORK/source.out" >&2; die "$label: smtp-source exited $rc ($opts -m $count)"; }
	awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }; print t }' \
		"$WORK/source.times" >>"$WORK/source.cpu"
	# Every message got its 250 before smtp-source went on, and smtp-sink counts
	# before it replies: the count is final now. Wait a moment anyway.
	for _ in $(seq 50); do
		after=$(sink_count "$WORK/sink.out")
		[ $((after - before)) -ge "$count" ] && break
		sleep 0.1
	done
	after=$(sink_count "$WORK/sink.out")
	[ $((after - before)) -eq "$count" ] || die "$label: sent $count messages ($opts), the sink counted $((after - before))"
	if [ "$port" = "$PROXY_PORT" ]; then
		kill -0 "$PROXY_PID" 2>/dev/null || die "$label: portcullis is gone"
	fi
	if [ -n "$HARAKA_PORT" ] && [ "$port" = "$HARAKA_PORT" ]; then
		kill -0 "$HARAKA_PID" 2>/dev/null || die "$label: Haraka is gone"
	fi
	awk -v n="$count" -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f\n", n / (ns / 1e9) }'
}

# pair_rates NAME LABEL_A PORT_A LABEL_B PORT_B OPTS COUNT - run A and B in
# turn REPEAT times; sets d and p (median msgs/s of each) and ratio (p/d).
pair_rates() {
	local name=$1 la=$2 a=$3 lb=$4 b=$5 opts=$6 count=$7
	: >"$WORK/a.rates"
	: >"$WORK/b.rates"
	for _ in $(seq "$REPEAT"); do
		run_one "$name ($la)" "$a" "$opts" "$count" >>"$WORK/a.rates"
		run_one "$name ($lb)" "$b" "$opts" "$count" >>"$WORK/b.rates"
	done
	d=$(median <"$WORK/a.rates")
	p=$(median <"$WORK/b.rates")
	ratio=$(awk -v d="$d" -v p="$p" 'BEGIN { printf "%.2f", p / d }')
}

# trio_rates NAME OPTS COUNT HCOUNT - direct, proxy and Haraka in turn,
# REPEAT times (Haraka with HCOUNT messages); sets d, p, ratio as pair_rates
# does, and h (Haraka's median msgs/s) and hratio (p/h).
trio_rates() {
	local name=$1 opts=$2 count=$3 hcount=$4
	: >"$WORK/a.rates"
	: >"$WORK/b.rates"
	: >"$WORK/h.rates"
	for _ in $(seq "$REPEAT"); do
		run_one "$name (direct)" "$SINK_PORT" "$opts" "$count" >>"$WORK/a.rates"
		run_one "$name (proxy)" "$PROXY_PORT" "$opts" "$count" >>"$WORK/b.rates"
		run_one "$name (Haraka)" "$HARAKA_PORT" "$opts" "$hcount" >>"$WORK/h.rates"
	done
	d=$(median <"$WORK/a.rates")
	p=$(median <"$WORK/b.rates")
	h=$(median <"$WORK/h.rates")
	ratio=$(awk -v d="$d" -v p="$p" 'BEGIN { printf "%.2f", p / d }')
	hratio=$(awk -v h="$h" -v p="$p" 'BEGIN { printf "%.1f", p / h }')
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

[ -z "$HARAKA" ] || haraka_start
T_BENCH=$(now_ns)
echo "portcullis bench: $("$BIN" -V 2>&1 | head -n 1); $(nproc) cores; median of $REPEAT runs each"
echo "smtp-source -> smtp-sink (direct)  vs  smtp-source -> portcullis -> smtp-sink (proxy)"
if [ -n "$HARAKA" ]; then
	echo "and smtp-source -> Haraka $HARAKA_VERSION -> smtp-sink (Haraka: 1/$HARAKA_SHARE of the messages; p/H = proxy/Haraka)"
	echo
	printf "%-38s %7s %11s %11s %7s %7s %9s %7s\n" "workload" "msgs" "direct/s" "proxy/s" "ratio" "H msgs" "Haraka/s" "p/H"
	printf "%-38s %7s %11s %11s %7s %7s %9s %7s\n" "--------" "----" "--------" "-------" "-----" "------" "--------" "---"
else
	echo
	printf "%-38s %7s %11s %11s %7s\n" "workload" "msgs" "direct/s" "proxy/s" "ratio"
	printf "%-38s %7s %11s %11s %7s\n" "--------" "----" "--------" "-------" "-----"
fi
T_START=$(now_ns)
WARN=0
for w in "${WORKLOADS[@]}"; do
	IFS='|' read -r name opts count <<<"$w"
	count=$(awk -v c="$count" -v s="$SCALE" 'BEGIN { n = int(c * s); print (n < 1 ? 1 : n) }')
	if [ -n "$HARAKA" ]; then
		hcount=$(awk -v c="$count" -v f="$HARAKA_SHARE" 'BEGIN { n = int(c / f); print (n < 1 ? 1 : n) }')
		trio_rates "$name" "$opts" "$count" "$hcount"
	else
		pair_rates "$name" direct "$SINK_PORT" proxy "$PROXY_PORT" "$opts" "$count"
	fi
	mark=""
	if awk -v r="$ratio" 'BEGIN { exit !(r < 0.6) }'; then mark="  (< 0.6 target)"; WARN=1; fi
	if [ -n "$HARAKA" ]; then
		printf "%-38s %7d %11.0f %11.0f %7s %7d %9.0f %7s%s\n" "$name" "$count" "$d" "$p" "$ratio" "$hcount" "$h" "$hratio" "$mark"
	else
		printf "%-38s %7d %11.0f %11.0f %7s%s\n" "$name" "$count" "$d" "$p" "$ratio" "$mark"
	fi
	summary_row "$name" "$ratio" "${GOAL[$name]:-}" "${hratio:-}"
done
T_END=$(now_ns)

HWM=$(awk '/^VmHWM:/ { print $2, $3 }' "/proc/$PROXY_PID/status")
RSS=$(awk '/^VmRSS:/ { print $2, $3 }' "/proc/$PROXY_PID/status")
echo
echo "proxy peak RSS (VmHWM): $HWM (now VmRSS: $RSS)"
if [ -n "$HARAKA" ]; then
	echo "Haraka peak RSS (VmHWM): $(awk '/^VmHWM:/ { print $2, $3 }' "/proc/$HARAKA_PID/status")"
	# Stopped now: the sections below do not use it.
	kill -TERM "$HARAKA_PID"
	for _ in $(seq 100); do kill -0 "$HARAKA_PID" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$HARAKA_PID" 2>/dev/null || true
	wait "$HARAKA_PID" 2>/dev/null || true
	HARAKA_PID=""
fi
echo "every run: the sink counted exactly the messages sent"
awk -v ns=$((T_END - T_START)) 'BEGIN { printf "bench time: %.0f s\n", ns / 1e9 }'
[ "$WARN" -eq 0 ] || echo "note: a ratio below the 0.6 target (issue 2) is marked above"

# ---- Workers: the 1 KB workloads above through a second proxy with
# workers = 2 (a master and two workers accepting on one shared listening
# socket; FPROXY_PORT, same config otherwise) against the plain proxy
# (workers = 1), measured in turn. CPU per message: utime + stime from
# /proc/PID/stat before and after all the runs of a workload, for each
# proxy's process tree (the master, its live workers and the ones it
# reaped), for smtp-sink (it serves both legs) and for smtp-source (the
# times builtin around each run: run_one's $WORK/source.cpu). The workers'
# shares are their pids in the status=sent lines of the log.
tree_cpu_ticks() { # PID: its utime + stime, its reaped children's, its live children's, in clock ticks
	# One read of every /proc/PID/stat (a process may end between the glob
	# and the read: cat skips it, and its status must not fail the pipeline
	# under pipefail); after the ")" of comm: field 2 is ppid, 12 and 13
	# utime and stime, 14 and 15 the reaped children's.
	{ cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '{
		pid = $1; line = $0; sub(/^.*\) /, "", line); split(line, a, " ");
		if (pid == root) t += a[12] + a[13] + a[14] + a[15];
		else if (a[2] == root) t += a[12] + a[13] }
		END { print t + 0 }'
}
proc_cpu_ticks() { # PID: its own utime + stime, in clock ticks
	awk '{ sub(/^.*\) /, ""); split($0, a, " "); print a[12] + a[13] }' "/proc/$1/stat"
}
child_count() { # PID: how many live processes have it as parent
	{ cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '{ line = $0; sub(/^.*\) /, "", line); split(line, a, " "); if (a[2] == root) n++ } END { print n + 0 }'
}
worker_deaths() { # the master's lines about workers that died unasked
	grep 'worker [0-9]* (pid [0-9]*) \(was killed\|exited\)' "$WORK/fproxy.log" | grep -v ', as asked' || true
}
{
	sed "s/^listen = .*/listen = 127.0.0.1:$FPROXY_PORT/" "$WORK/bench.conf"
	echo "workers = 2"
} >"$WORK/workers.conf"
proxy_start FPROXY_PID "$WORK/workers.conf" "$WORK/fproxy.log" "$FPROXY_PORT" "portcullis (workers = 2)"
# the master says started once every worker is ready
for _ in $(seq 200); do
	grep -q ' started, backend .*, 2 workers' "$WORK/fproxy.log" && break
	kill -0 "$FPROXY_PID" 2>/dev/null || die "portcullis (workers = 2) exited at start"
	sleep 0.05
done
grep -q ' started, backend .*, 2 workers' "$WORK/fproxy.log" || die "portcullis (workers = 2) never said it started 2 workers"
[ "$(child_count "$FPROXY_PID")" -eq 2 ] || die "portcullis (workers = 2) has $(child_count "$FPROXY_PID") children, not 2 workers"
HZ=$(getconf CLK_TCK)
echo
echo "workers: the same proxy with workers = 1 (w1, the proxy above) vs workers = 2 (w2: a master"
echo "and 2 workers accepting on one shared listening socket); shares = each worker's part of the w2"
echo "messages (status=sent lines by pid)"
echo
printf "%-38s %7s %9s %9s %6s %9s\n" "workload" "msgs" "w1/s" "w2/s" "w2/w1" "shares %"
printf "%-38s %7s %9s %9s %6s %9s\n" "--------" "----" "----" "----" "-----" "--------"
CPU_ROWS=()
MASTER_TICKS=0
W2_MSGS=0
T_START=$(now_ns)
for w in "${WORKLOADS[@]}"; do
	IFS='|' read -r name opts count <<<"$w"
	case $name in "1 KB "*) ;; *) continue ;; esac
	# half the count of the row above: both legs go through a proxy
	count=$(awk -v c="$count" -v s="$SCALE" 'BEGIN { n = int(c * s / 2); print (n < 1 ? 1 : n) }')
	n=$((count * REPEAT))
	log0=$(wc -l <"$WORK/fproxy.log")
	: >"$WORK/source.cpu"
	w1_0=$(tree_cpu_ticks "$PROXY_PID")
	w2_0=$(tree_cpu_ticks "$FPROXY_PID")
	m_0=$(proc_cpu_ticks "$FPROXY_PID")
	sk_0=$(tree_cpu_ticks "$SINK_PID")
	pair_rates "$name" "workers = 1" "$PROXY_PORT" "workers = 2" "$FPROXY_PORT" "$opts" "$count"
	w1_1=$(tree_cpu_ticks "$PROXY_PID")
	w2_1=$(tree_cpu_ticks "$FPROXY_PID")
	m_1=$(proc_cpu_ticks "$FPROXY_PID")
	MASTER_TICKS=$((MASTER_TICKS + m_1 - m_0))
	W2_MSGS=$((W2_MSGS + n))
	sk_1=$(tree_cpu_ticks "$SINK_PID")
	src=$(awk '{ t += $1 } END { print t + 0 }' "$WORK/source.cpu")
	tail -n +$((log0 + 1)) "$WORK/fproxy.log" | sed -n 's/.* portcullis\[\([0-9]*\)\]: .* status=sent .*/\1/p' |
		sort | uniq -c | sort -rn >"$WORK/shares"
	sent=$(awk '{ t += $1 } END { print t + 0 }' "$WORK/shares")
	[ "$sent" -eq "$n" ] || die "$name: the workers = 2 proxy logged $sent deliveries, expected $n"
	[ -z "$(worker_deaths)" ] || die "$name: a worker of the workers = 2 proxy died: $(worker_deaths)"
	shares=$(awk -v n="$n" '{ s = s (NR > 1 ? "/" : "") sprintf("%.0f", 100 * $1 / n) } END { print s }' "$WORK/shares")
	[ "$(wc -l <"$WORK/shares")" -ge 2 ] || shares="$shares/0"
	printf "%-38s %7d %9.0f %9.0f %6s %9s\n" "$name" "$count" "$d" "$p" "$ratio" "$shares"
	CPU_ROWS+=("$(awk -v name="$name" -v n="$n" -v hz="$HZ" -v w1=$((w1_1 - w1_0)) -v w2=$((w2_1 - w2_0)) \
		-v sk=$((sk_1 - sk_0)) -v src="$src" 'BEGIN {
		u1 = w1 / hz * 1e6 / n; u2 = w2 / hz * 1e6 / n;
		printf "%-38s %8.1f %8.1f %8.1f %8.1f %9.0f %9.0f", name, u1, u2,
			src * 1e6 / (2 * n), sk / hz * 1e6 / (2 * n),
			(u1 > 0 ? 1e6 / u1 : 0), (u2 > 0 ? 1e6 / u2 : 0) }')")
done
echo
echo "CPU per message in us (utime + stime, /proc/PID/stat before and after a workload's runs;"
echo "w2 = master + workers; source and sink over both legs) and the proxy's msgs/s per core"
echo "(1e6 / its us per message: the rate one core would carry with the proxy alone on it)"
echo
printf "%-38s %8s %8s %8s %8s %9s %9s\n" "workload" "w1 us" "w2 us" "source" "sink" "w1/core" "w2/core"
printf "%-38s %8s %8s %8s %8s %9s %9s\n" "--------" "-----" "-----" "------" "----" "-------" "-------"
printf "%s\n" "${CPU_ROWS[@]}"
awk -v t="$MASTER_TICKS" -v hz="$HZ" -v n="$W2_MSGS" 'BEGIN {
	printf "of w2, the master alone: %.2f s in all, %.1f us per message\n", t / hz, t / hz * 1e6 / n }'
[ "$(child_count "$FPROXY_PID")" -eq 2 ] || die "portcullis (workers = 2) has $(child_count "$FPROXY_PID") workers after the runs, not 2"
T_END=$(now_ns)
echo "workers: every message was delivered (one status=sent line each); no worker died"
awk -v ns=$((T_END - T_START)) 'BEGIN { printf "workers: %.0f s\n", ns / 1e9 }'
kill -TERM "$FPROXY_PID"
rc=0
wait "$FPROXY_PID" || rc=$?
FPROXY_PID=""
[ "$rc" -eq 0 ] || die "the workers = 2 portcullis exited with status $rc after SIGTERM"

# ---- Filters: the same proxy with a filter chain, against itself without.
# Each filter configuration runs in a proxy of its own (FPROXY_PORT) in
# front of the same sink, against the plain proxy measured in turn.
#   access+headers: access checks all four lists on every hook (none matches
#   the bench's addresses, so every stage asks every list), headers adds a
#   templated header and strips one at the end of DATA.
#   lua: policy.lua (sender domains, known recipients) and content.lua
#   (header rules, a score header) from lua/examples, as shipped.
printf '192.0.2.0/24 reject\n2001:db8::/32 reject\n10.9.9.9 tempfail\n' >"$WORK/clients"
printf 'spam.example reject\n.bad.example reject\n/^[0-9.]+$/ reject\n' >"$WORK/helos"
printf 'spammer@example.com reject\nbad.example reject\n/^promo-.*@/i drop\n' >"$WORK/senders"
printf 'nobody@sink.test reject\nold.example tempfail\n/^list-.*@/ accept\n' >"$WORK/rcpts"
printf 'spam.example\nbulk-mail.test\njunk.example\n' >"$WORK/bad-domains"
printf 'sink@sink.test\npostmaster@sink.test\n@lists.sink.test\n' >"$WORK/known-rcpts"
LUA_DIR=$(cd "$(dirname "$0")/../lua/examples" && pwd)
filter_conf() { # name: print the sections of that configuration
	case $1 in
	access+headers)
		cat <<EOF
[plugin access]
client_list = $WORK/clients
helo_list = $WORK/helos
sender_list = $WORK/senders
recipient_list = $WORK/rcpts

[plugin headers]
add = X-Portcullis: %{tx_id} from %{client_ip} (%{trail})
remove = X-Spam-Status
EOF
		;;
	greylist-lmdb | greylist-redis)
		local store="lmdb:$WORK/greylist"
		[ "$1" = greylist-redis ] && store="redis://127.0.0.1:$REDIS_PORT/0"
		# auto_whitelist = 0: every message takes the triplet's path (a
		# read and a refresh), not the network shortcut.
		cat <<EOF
[plugin greylist]
store = $store
delay = 1s
auto_whitelist = 0
EOF
		;;
	json+metrics)
		# No filter: the cost of JSON lines and of the endpoint, scraped
		# ten times a second while the load runs (scrape_loop).
		echo "log_format = json"
		echo "metrics_listen = 127.0.0.1:$METRICS_PORT"
		;;
	lua)
		cat <<EOF
[lua policy]
script = $LUA_DIR/policy.lua
sender_domains = $WORK/bad-domains
recipients = $WORK/known-rcpts

[lua content]
script = $LUA_DIR/content.lua
EOF
		;;
	esac
}

# scrape_loop - GET /metrics ten times a second (bounded: 6000 at most),
# counting the answers that were 200 in $WORK/scrapes.
scrape_loop() {
	local n=0 i
	for i in $(seq 1 6000); do
		if curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics"; then
			n=$((n + 1))
			echo "$n" >"$WORK/scrapes"
		fi
		sleep 0.1
	done
}
free_port METRICS_PORT

# name | filter configuration | smtp-source options | message count | target ratio
FILTER_WORKLOADS=(
	"1 KB x 50 sessions, access + headers|access+headers|-s 50 -l 1024|10000|0.9"
	"1 KB x 50 sessions, JSON logs, /metrics 10/s|json+metrics|-s 50 -l 1024|10000|0.9"
	"1 KB x 50 sessions, policy + content.lua|lua|-s 50 -l 1024|10000|0.85"
	"1 KB x 50 sessions, greylist passing, LMDB|greylist-lmdb|-s 50 -l 1024|10000|0.85"
	"1 KB x 50 sessions, greylist passing, Redis|greylist-redis|-s 50 -l 1024|10000|0.85"
)

# greylist_pass PORT - make the bench's one triplet (127.0.0.0/24,
# bench@bench.test, sink@sink.test) pass: a first RCPT is deferred, a retry
# after the 1 s delay passes, so every bench message then finds it passing.
greylist_pass() {
	timeout 30 /usr/bin/python3 - "$1" <<'PY' || die "greylist: the bench triplet did not pass"
import smtplib, sys, time
def rcpt():
    s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), "bench.test", timeout=10)
    s.ehlo()
    s.mail("bench@bench.test")
    code = s.rcpt("sink@sink.test")[0]
    s.quit()
    return code
first = rcpt()
if first != 451:
    sys.exit("greylist: first RCPT got %d, want 451" % first)
for _ in range(20):
    time.sleep(0.6)
    if rcpt() == 250:
        sys.exit(0)
sys.exit("greylist: the retry never passed")
PY
}

# Redis for the greylist workload: private, loopback, no persistence.
free_port REDIS_PORT
/usr/bin/redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
	--dir "$WORK" --daemonize no --logfile "$WORK/redis.log" >/dev/null 2>&1 </dev/null &
REDIS_PID=$!
for _ in $(seq 100); do
	[ -n "$(ss -Hltn "sport = :$REDIS_PORT" 2>/dev/null)" ] && break
	kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited at start"
	sleep 0.05
done
echo
echo "filters: the same proxy without filters (plain) vs with them; a new connection per"
echo "message, so every hook runs for every message"
echo
printf "%-42s %7s %9s %11s %7s\n" "workload" "msgs" "plain/s" "filters/s" "ratio"
printf "%-42s %7s %9s %11s %7s\n" "--------" "----" "-------" "---------" "-----"
for w in "${FILTER_WORKLOADS[@]}"; do
	IFS='|' read -r name conf opts count target <<<"$w"
	count=$(awk -v c="$count" -v s="$SCALE" 'BEGIN { n = int(c * s); print (n < 1 ? 1 : n) }')
	{
		sed "s/^listen = .*/listen = 127.0.0.1:$FPROXY_PORT/" "$WORK/bench.conf"
		echo "plugin_dir = $PLUGIN_DIR"
		echo
		filter_conf "$conf"
	} >"$WORK/filters.conf"
	proxy_start FPROXY_PID "$WORK/filters.conf" "$WORK/fproxy.log" "$FPROXY_PORT" "portcullis ($conf)"
	case $conf in greylist-*) greylist_pass "$FPROXY_PORT" ;; esac
	SCRAPE_PID=""
	if [ "$conf" = json+metrics ]; then
		scrape_loop &
		SCRAPE_PID=$!
	fi
	pair_rates "$name" plain "$PROXY_PORT" filters "$FPROXY_PORT" "$opts" "$count"
	if [ -n "$SCRAPE_PID" ]; then
		kill "$SCRAPE_PID" 2>/dev/null || true
		wait "$SCRAPE_PID" 2>/dev/null || true
		scrapes=$(cat "$WORK/scrapes" 2>/dev/null || echo 0)
		[ "$scrapes" -gt 0 ] || die "$name: no scrape of /metrics succeeded"
	fi
	mark=""
	if awk -v r="$ratio" -v t="$target" 'BEGIN { exit !(r < t) }'; then mark="  (< $target target)"; fi
	printf "%-42s %7d %9.0f %11.0f %7s%s\n" "$name" "$count" "$d" "$p" "$ratio" "$mark"
	[ -z "$SCRAPE_PID" ] || echo "  ($scrapes scrapes of /metrics answered 200 during the runs)"
	# Every message went through the filters and was delivered.
	sent=$(grep -c ' status=sent ' "$WORK/fproxy.log" || true)
	[ "$sent" -eq $((count * REPEAT)) ] || die "$name: the filtering proxy logged $sent deliveries, expected $((count * REPEAT))"
	kill -TERM "$FPROXY_PID"
	rc=0
	wait "$FPROXY_PID" || rc=$?
	FPROXY_PID=""
	[ "$rc" -eq 0 ] || die "the filtering portcullis ($conf) exited with status $rc after SIGTERM"
done
echo "filters: every message was delivered through the filters (one status=sent line each)"

# ---- TLS: 1 KB x 20 sessions, a new connection per message, with STARTTLS
# against the same without, through two proxies that differ only in their
# certificate: RSA 2048 and ECDSA P-256 (each proxy has one pair, tls_cert
# and tls_key). Per repeat: plain (through the RSA one; no TLS, so the
# certificate plays no part), STARTTLS through the RSA one, STARTTLS
# through the ECDSA one. Then the handshake rate of each one's implicit-TLS
# listener, full and resumed (bench/tls_load.py --handshakes: what the
# client saw, session_reused, is what is reported), with the proxy's CPU
# per handshake, and openssl s_time -new as a cross-check. The driver is
# bench/tls_load.py (smtp-source has no STARTTLS).
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/rsa.key" -out "$WORK/rsa.pem" \
	-days 2 -subj "/CN=bench.test" >/dev/null 2>&1 || die "openssl cannot make an RSA certificate"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/ecdsa.key" \
	-out "$WORK/ecdsa.pem" -days 2 -subj "/CN=bench.test" >/dev/null 2>&1 || die "openssl cannot make an ECDSA certificate"
TLS_KINDS=(rsa ecdsa)
declare -A TLS_NAME=([rsa]="RSA 2048" [ecdsa]="ECDSA P-256")
declare -A TLS_PLAIN_PORT TLS_PORT
plain_port=""
implicit_port=""
for kind in "${TLS_KINDS[@]}"; do
	free_port plain_port
	free_port implicit_port
	TLS_PLAIN_PORT[$kind]=$plain_port
	TLS_PORT[$kind]=$implicit_port
	{
		sed "s/^listen = .*/listen = 127.0.0.1:$plain_port/" "$WORK/bench.conf"
		echo "listen = 127.0.0.1:$implicit_port tls"
		echo "tls_cert = $WORK/$kind.pem"
		echo "tls_key = $WORK/$kind.key"
	} >"$WORK/tls-$kind.conf"
	proxy_start "TLS_PID[$kind]" "$WORK/tls-$kind.conf" "$WORK/tls-$kind.log" "$implicit_port" "portcullis (tls, $kind)"
	wait_listen "$plain_port" "${TLS_PID[$kind]}" "portcullis (tls, $kind)"
done
count=$(awk -v s="$SCALE" 'BEGIN { n = int(2000 * s); print (n < 20 ? 20 : n) }')
tls_run() { # port starttls|plain: prints msgs/s
	local mode=$2
	[ "$mode" = starttls ] || mode=""
	# shellcheck disable=SC2086 # mode is empty or one word
	timeout "$RUN_BOUND" /usr/bin/python3 "$BENCH_DIR/tls_load.py" 127.0.0.1 "$1" "$count" 20 1024 $mode ||
		die "tls_load (${2}, port $1) failed"
}
: >"$WORK/plain.rates"
: >"$WORK/starttls-rsa.rates"
: >"$WORK/starttls-ecdsa.rates"
for _ in $(seq "$REPEAT"); do
	before=$(sink_count "$WORK/sink.out")
	tls_run "${TLS_PLAIN_PORT[rsa]}" plain >>"$WORK/plain.rates"
	for kind in "${TLS_KINDS[@]}"; do
		tls_run "${TLS_PLAIN_PORT[$kind]}" starttls >>"$WORK/starttls-$kind.rates"
	done
	sleep 0.2
	after=$(sink_count "$WORK/sink.out")
	[ $((after - before)) -eq $((count * 3)) ] || die "TLS workload: sent $((count * 3)), the sink counted $((after - before))"
done
d=$(median <"$WORK/plain.rates")
echo
echo "TLS: two proxies, one with an RSA 2048 certificate, one with an ECDSA P-256 one; a new"
echo "connection per message (bench/tls_load.py, 20 processes); plain goes through the RSA one"
echo
printf "%-42s %7s %9s %11s %7s\n" "workload" "msgs" "plain/s" "starttls/s" "ratio"
printf "%-42s %7s %9s %11s %7s\n" "--------" "----" "-------" "----------" "-----"
for kind in "${TLS_KINDS[@]}"; do
	p=$(median <"$WORK/starttls-$kind.rates")
	ratio=$(awk -v d="$d" -v p="$p" 'BEGIN { printf "%.2f", p / d }')
	name="1 KB x 20 sessions, STARTTLS, ${TLS_NAME[$kind]}"
	printf "%-42s %7d %9.0f %11.0f %7s\n" "$name" "$count" "$d" "$p" "$ratio"
	summary_row "$name" "$ratio" "${GOAL[STARTTLS]}"
done
# Handshakes: HS_SECONDS of each (1 to 3 s, with BENCH_SCALE), bounded.
HS_SECONDS=$(awk -v s="$SCALE" 'BEGIN { t = 3 * s; print (t < 1 ? 1 : (t > 3 ? 3 : t)) }')
HS_PROCS=4
HZ=$(getconf CLK_TCK)
echo
echo "TLS handshakes on each proxy's implicit-TLS listener: bench/tls_load.py --handshakes,"
echo "$HS_PROCS processes, $HS_SECONDS s each; a session is handshake, 220, QUIT, 221, close_notify; full:"
echo "no session offered; resumed: each process offers the last session (ticket) it got; the"
echo "resumed column counts what the client saw; proxy us: its utime + stime per handshake"
echo
printf "%-14s %-9s %10s %10s  %s\n" "certificate" "handshake" "per s" "proxy us" "resumed"
printf "%-14s %-9s %10s %10s  %s\n" "-----------" "---------" "-----" "--------" "-------"
HS_SUMMARY=""
for kind in "${TLS_KINDS[@]}"; do
	hs_line="${TLS_NAME[$kind]}:"
	for mode in new reuse; do
		c0=$(proc_cpu_ticks "${TLS_PID[$kind]}")
		out=$(timeout $((${HS_SECONDS%.*} + 60)) /usr/bin/python3 "$BENCH_DIR/tls_load.py" --handshakes \
			127.0.0.1 "${TLS_PORT[$kind]}" "$HS_SECONDS" "$HS_PROCS" "$mode") ||
			die "tls_load --handshakes ($kind, $mode) failed"
		c1=$(proc_cpu_ticks "${TLS_PID[$kind]}")
		read -r rate reused total <<<"$out"
		us=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$total" 'BEGIN { printf "%.0f", t / hz * 1e6 / n }')
		label=full
		[ "$mode" = new ] || label=resumed
		printf "%-14s %-9s %10.0f %10s  resumed: %d/%d reused\n" "${TLS_NAME[$kind]}" "$label" "$rate" "$us" "$reused" "$total"
		hs_line="$hs_line $label $(printf '%.0f' "$rate")/s"
		[ "$mode" = new ] || hs_line="$hs_line (resumed: $reused/$total reused)"
	done
	HS_SUMMARY="$HS_SUMMARY${HS_SUMMARY:+; }$hs_line"
	kill -0 "${TLS_PID[$kind]}" 2>/dev/null || die "the TLS portcullis ($kind) is gone"
done
st=""
for kind in "${TLS_KINDS[@]}"; do
	hs=$(timeout 30 openssl s_time -connect "127.0.0.1:${TLS_PORT[$kind]}" -new -time 2 2>/dev/null |
		sed -n 's/^\([0-9]*\) connections in \([0-9.]*\) real.*/\1 \2/p' | head -n 1 |
		awk '{ if ($2 > 0) printf "%.0f", $1 / $2; else print "?" }')
	st="$st${st:+, }${TLS_NAME[$kind]} ${hs:-?}/s"
done
echo "cross-check, openssl s_time -new (one process, 2 s, no SMTP): $st"
for kind in "${TLS_KINDS[@]}"; do
	kill -TERM "${TLS_PID[$kind]}"
	rc=0
	wait "${TLS_PID[$kind]}" || rc=$?
	[ "$rc" -eq 0 ] || die "the TLS portcullis ($kind) exited with status $rc after SIGTERM"
done
TLS_PID=()

# ---- spamd: 1 KB x 20 sessions, a new connection per message, through a
# proxy with a [plugin spamd] section in front of a private SpamAssassin
# spamd, against the plain proxy. spamd is started as tests/kit/spamd.py
# does (its own site config: no Bayes, no DNS, no network rules), with 4
# children. Every message must be scanned: a failed scan is a 451
# (on_failure = on_error, on_error = tempfail), which stops smtp-source,
# and the scan lines in the log must number the messages sent. The CPU
# each side used in the spamd legs is utime + stime from /proc/PID/stat,
# before and after: the filtering proxy's own, and spamd's (the parent, its
# children, and children it reaped meanwhile).
spamd_cpu_ticks() { tree_cpu_ticks "$SPAMD_PID"; } # the spamd parent's and its children's CPU
# peer_report - after pair_rates ($d, $p, $ratio): the table, the latency a
# filter in front of a peer adds, and how the CPU of the filtered legs
# splits between the proxy and the peer
peer_report() { # label name count proxy-ticks peer-ticks latency-note
	echo
	printf "%-42s %7s %9s %11s %7s\n" "workload" "msgs" "plain/s" "$1/s" "ratio"
	printf "%-42s %7s %9s %11s %7s\n" "--------" "----" "-------" "-------" "-----"
	printf "%-42s %7d %9.0f %11.1f %7s\n" "$2" "$3" "$d" "$p" "$ratio"
	awk -v d="$d" -v p="$p" -v l="$1" -v note="$6" 'BEGIN {
		printf "added latency per message: %.1f ms (20 sessions / rate, %s minus plain)%s\n",
			20000 / p - 20000 / d, l, note }'
	awk -v px="$4" -v pt="$5" -v l="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN {
		t = px + pt; if (t == 0) t = 1;
		printf "CPU in the %s legs: proxy %.2f s (%.1f%%), %s %.2f s (%.1f%%)\n",
			l, px / hz, 100 * px / t, l, pt / hz, 100 * pt / t }'
}

# stop_filtered - SIGTERM the filtering proxy, which must exit 0, then its peer
stop_filtered() { # label peer-pid
	kill -TERM "$FPROXY_PID"
	rc=0
	wait "$FPROXY_PID" || rc=$?
	FPROXY_PID=""
	[ "$rc" -eq 0 ] || die "the $1 portcullis exited with status $rc after SIGTERM"
	kill -TERM "$2"
	wait "$2" 2>/dev/null || true
}

if [ -x /usr/sbin/spamd ]; then
	free_port SPAMD_PORT
	SPAMD_DIR="$WORK/spamd"
	mkdir -p "$SPAMD_DIR/etc" "$SPAMD_DIR/home"
	cp /etc/spamassassin/*.pre "$SPAMD_DIR/etc/"
	printf 'use_bayes 0\nbayes_auto_learn 0\ndns_available no\nskip_rbl_checks 1\nuse_razor2 0\nuse_pyzor 0\nuse_auto_whitelist 0\n' >"$SPAMD_DIR/etc/local.cf"
	# its children run as nobody and read the site config
	chmod 711 "$WORK"
	chmod 755 "$SPAMD_DIR" "$SPAMD_DIR/etc"
	chmod 777 "$SPAMD_DIR/home"
	/usr/sbin/spamd -L -x -i 127.0.0.1 -p "$SPAMD_PORT" -A 127.0.0.1 -u nobody -H "$SPAMD_DIR/home" \
		--siteconfigpath="$SPAMD_DIR/etc" -r "$SPAMD_DIR/spamd.pid" -s stderr \
		-m 4 --min-children=4 --min-spare=4 --max-conn-per-child=1000000 \
		>"$WORK/spamd.log" 2>&1 </dev/null &
	SPAMD_PID=$!
	for _ in $(seq 300); do
		/usr/bin/spamc -K -d 127.0.0.1 -p "$SPAMD_PORT" >/dev/null 2>&1 && break
		kill -0 "$SPAMD_PID" 2>/dev/null || { tail -n 20 "$WORK/spamd.log" >&2; die "spamd exited at start"; }
		sleep 0.1
	done
	/usr/bin/spamc -K -d 127.0.0.1 -p "$SPAMD_PORT" >/dev/null 2>&1 || die "spamd does not answer PING"
	{
		sed "s/^listen = .*/listen = 127.0.0.1:$FPROXY_PORT/" "$WORK/bench.conf"
		echo "plugin_dir = $PLUGIN_DIR"
		echo
		echo "[plugin spamd]"
		echo "socket = 127.0.0.1:$SPAMD_PORT"
		echo "timeout = 50s"
		echo "filter_timeout = 60s"
		echo "on_failure = on_error"
		echo "on_error = tempfail"
	} >"$WORK/spamd.conf"
	proxy_start FPROXY_PID "$WORK/spamd.conf" "$WORK/fproxy.log" "$FPROXY_PORT" "portcullis (spamd)"
	name="1 KB x 20 sessions with spamd"
	opts="-s 20 -l 1024"
	count=$(awk -v s="$SCALE" 'BEGIN { n = int(200 * s); print (n < 20 ? 20 : n) }')
	px0=$(proc_cpu_ticks "$FPROXY_PID")
	sp0=$(spamd_cpu_ticks)
	pair_rates "$name" plain "$PROXY_PORT" spamd "$FPROXY_PORT" "$opts" "$count"
	px1=$(proc_cpu_ticks "$FPROXY_PID")
	sp1=$(spamd_cpu_ticks)
	scans=$(grep -c '\[spamd\] spamd: \(Yes\|No\) score=' "$WORK/fproxy.log" || true)
	[ "$scans" -eq $((count * REPEAT)) ] || die "$name: the proxy logged $scans scans, expected $((count * REPEAT))"
	scan_ms=$(sed -n 's/.*\[spamd\] spamd: .* octets in \([0-9]*\) ms).*/\1/p' "$WORK/fproxy.log" |
		awk '{ t += $1; n++ } END { if (n) printf "%.0f", t / n; else print "?" }')
	echo
	echo "spamd: the same proxy without filters (plain) vs with [plugin spamd] in front of a"
	echo "private spamd (4 children); a new connection per message"
	peer_report spamd "$name" "$count" $((px1 - px0)) $((sp1 - sp0)) "; mean scan $scan_ms ms (the plugin log)"
	echo "spamd: every message was scanned (one scan line each) and delivered"
	stop_filtered spamd "$SPAMD_PID"
	SPAMD_PID=""
else
	echo
	echo "spamd: /usr/sbin/spamd is not installed (make deps): the spamd workload is skipped"
fi

# ---- OpenDKIM: 1 KB x 20 sessions, a new connection per message, through a
# proxy with a [milter dkim] section in front of a private opendkim signing
# every message (a key made here by opendkim-genkey for bench.test, the
# domain of smtp-source's From:; relaxed/relaxed; loopback is an internal
# host), against the plain proxy. Every message must be signed: the section
# has on_error = tempfail, so a milter failure is a 451 that stops
# smtp-source; and before the measured runs one message goes through the
# same configuration to a second smtp-sink that dumps it (-D), which must
# hold a DKIM-Signature by d=bench.test. CPU as for spamd: the filtering
# proxy's utime + stime against opendkim's (one process, all its threads).
if [ -x /usr/sbin/opendkim ] && [ -x /usr/sbin/opendkim-genkey ]; then
	DKIM_DIR="$WORK/opendkim"
	mkdir -p "$DKIM_DIR"
	/usr/sbin/opendkim-genkey -D "$DKIM_DIR" -d bench.test -s bench || die "opendkim-genkey failed"
	free_port DKIM_PORT
	# RequireSafeKeys no: the key lives under /tmp, which others can write.
	printf '%s\n' "Mode s" "Socket inet:$DKIM_PORT@127.0.0.1" "Domain bench.test" "Selector bench" \
		"KeyFile $DKIM_DIR/bench.private" "InternalHosts 127.0.0.1" \
		"Canonicalization relaxed/relaxed" "PidFile $DKIM_DIR/opendkim.pid" \
		"RequireSafeKeys no" "Syslog no" >"$DKIM_DIR/opendkim.conf"
	/usr/sbin/opendkim -f -x "$DKIM_DIR/opendkim.conf" >"$WORK/opendkim.log" 2>&1 </dev/null &
	DKIM_PID=$!
	wait_listen "$DKIM_PORT" "$DKIM_PID" "opendkim"
	dkim_conf() { # listen-port backend-port
		sed -e "s/^listen = .*/listen = 127.0.0.1:$1/" -e "s/^backend = .*/backend = 127.0.0.1:$2/" "$WORK/bench.conf"
		echo "plugin_dir = $PLUGIN_DIR"
		echo
		echo "[milter dkim]"
		echo "socket = inet:$DKIM_PORT@127.0.0.1"
		echo "timeout_connect = 10s"
		echo "timeout_command = 30s"
		echo "timeout_eom = 30s"
		echo "on_error = tempfail"
	}
	# The check: one message through [milter dkim] into a dumping sink.
	free_port CHECK_SINK_PORT
	free_port CHECK_PORT
	mkdir -m 777 "$WORK/dump"
	"$SINK" -u nobody -D "$WORK/dump/msgs" "127.0.0.1:$CHECK_SINK_PORT" 16 >"$WORK/check-sink.out" 2>&1 </dev/null &
	CHECK_SINK_PID=$!
	wait_listen "$CHECK_SINK_PORT" "$CHECK_SINK_PID" "smtp-sink (dump)"
	dkim_conf "$CHECK_PORT" "$CHECK_SINK_PORT" >"$WORK/dkim-check.conf"
	proxy_start FPROXY_PID "$WORK/dkim-check.conf" "$WORK/dkim-check.log" "$CHECK_PORT" "portcullis (opendkim check)"
	timeout "$RUN_BOUND" "$SOURCE" -M bench.test -f bench@bench.test -t sink@sink.test -l 1024 -m 1 \
		"127.0.0.1:$CHECK_PORT" >"$WORK/source.out" 2>&1 || { cat "$WORK/source.out" "$WORK/dkim-check.log" >&2; die "opendkim check: smtp-source failed"; }
	for _ in $(seq 50); do grep -q '^DKIM-Signature:' "$WORK/dump/msgs" 2>/dev/null && break; sleep 0.1; done
	grep -A1 '^DKIM-Signature:' "$WORK/dump/msgs" 2>/dev/null | grep -q 'd=bench.test; s=bench' ||
		{ cat "$WORK/dump/msgs" "$WORK/dkim-check.log" >&2 2>/dev/null; die "opendkim check: the message reached the sink unsigned"; }
	kill -TERM "$FPROXY_PID" "$CHECK_SINK_PID"
	rc=0
	wait "$FPROXY_PID" || rc=$?
	wait "$CHECK_SINK_PID" 2>/dev/null || true
	FPROXY_PID=""
	CHECK_SINK_PID=""
	[ "$rc" -eq 0 ] || die "the opendkim check portcullis exited with status $rc after SIGTERM"
	# The measured proxy, in front of the counting sink.
	dkim_conf "$FPROXY_PORT" "$SINK_PORT" >"$WORK/dkim.conf"
	proxy_start FPROXY_PID "$WORK/dkim.conf" "$WORK/fproxy.log" "$FPROXY_PORT" "portcullis (opendkim)"
	name="1 KB x 20 sessions through OpenDKIM"
	opts="-s 20 -l 1024"
	count=$(awk -v s="$SCALE" 'BEGIN { n = int(1000 * s); print (n < 20 ? 20 : n) }')
	px0=$(proc_cpu_ticks "$FPROXY_PID")
	dk0=$(proc_cpu_ticks "$DKIM_PID")
	pair_rates "$name" plain "$PROXY_PORT" opendkim "$FPROXY_PORT" "$opts" "$count"
	px1=$(proc_cpu_ticks "$FPROXY_PID")
	dk1=$(proc_cpu_ticks "$DKIM_PID")
	echo
	echo "opendkim: the same proxy without filters (plain) vs with [milter dkim] in front of a"
	echo "private opendkim signing every message (RSA 2048, relaxed/relaxed); a new connection per message"
	peer_report opendkim "$name" "$count" $((px1 - px0)) $((dk1 - dk0)) ""
	echo "opendkim: the checked message arrived signed; every message was delivered (on_error = tempfail)"
	stop_filtered opendkim "$DKIM_PID"
	DKIM_PID=""
else
	echo
	echo "opendkim: /usr/sbin/opendkim is not installed (tools/deps.sh): the opendkim workload is skipped"
fi

# Stop the proxy now (SIGTERM) and check it exits cleanly.
kill -TERM "$PROXY_PID"
for _ in $(seq 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PROXY_PID" 2>/dev/null; then die "portcullis did not exit within 10 s of SIGTERM"; fi
rc=0
wait "$PROXY_PID" || rc=$?
PROXY_PID=""
[ "$rc" -eq 0 ] || die "portcullis exited with status $rc after SIGTERM"

# ---- Summary: each row's ratio, proxy/direct, next to its goal (issue 19).
echo
echo "summary: proxy/direct against the goals of issue 19 (median of $REPEAT runs each)"
[ -z "$HARAKA" ] || echo "p/H: portcullis/Haraka $HARAKA_VERSION on the same workload (the rows above)"
echo
if [ -n "$HARAKA" ]; then
	printf "%-42s %7s %9s  %-5s %7s\n" "workload" "ratio" "goal" "" "p/H"
	printf "%-42s %7s %9s  %-5s %7s\n" "--------" "-----" "----" "" "---"
else
	printf "%-42s %7s %9s\n" "workload" "ratio" "goal"
	printf "%-42s %7s %9s\n" "--------" "-----" "----"
fi
printf "%s\n" "${SUMMARY_ROWS[@]}"
echo "TLS handshakes/s: $HS_SUMMARY"
awk -v ns=$(($(now_ns) - T_BENCH)) 'BEGIN { printf "bench: %.0f s in all\n", ns / 1e9 }'
