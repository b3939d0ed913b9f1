#!/bin/sh
# deps.sh [PACKAGE...] - install the Debian packages portcullis builds and
# tests with (and any named), only those missing. Idempotent; needs root (or
# sudo) only when something is missing.
# deps.sh --run: only what building and running take (make run): the
# compiler, the libraries, the demo backend and swaks, no test peers.
set -eu

RUN_PKGS="gcc make pkg-config libevent-dev libssl-dev liblua5.4-dev liblmdb-dev
libhiredis-dev libsystemd-dev libseccomp-dev python3-aiosmtpd swaks openssl"
if [ "${1:-}" = "--run" ]; then
	shift
	PKGS="$RUN_PKGS $*"
else
PKGS="gcc make pkg-config clang-format libevent-dev libssl-dev liblua5.4-dev
libcmocka-dev postfix swaks python3-aiosmtpd python3-pytest procps iproute2
openssl haproxy dovecot-core libio-socket-ssl-perl libnet-ssleay-perl
liblmdb-dev libhiredis-dev redis-server spamassassin spamd spamc rspamd
clamav-daemon clamdscan clamav-milter opendkim opendkim-tools python3-dkim
spamass-milter mandoc libsystemd-dev libseccomp-dev python3-prometheus-client curl
debhelper dpkg-dev fakeroot lintian $*"
fi
# DEPS_LIST=1: print the packages this mode wants, install nothing.
if [ "${DEPS_LIST:-}" = 1 ]; then
	echo $PKGS
	exit 0
fi

missing=""
for p in $PKGS; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$st" in
	*"install ok installed"*) ;;
	*) missing="$missing $p" ;;
	esac
done
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# Postfix is only used as a test peer and for smtp-source/smtp-sink: install it
# without a system configuration so no system mail server starts.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
# HAProxy, Dovecot, spamd, rspamd, clamd, the milters (clamav-milter,
# opendkim, spamass-milter) are test peers too, started privately by the tests:
# keep their packages from starting system services while they install
# (policy-rc.d, exit 101: "action forbidden"), unless the admin has a policy.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
	$SUDO chmod 755 "$POLICY"
	trap '$SUDO rm -f "$POLICY"' EXIT
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing </dev/null
