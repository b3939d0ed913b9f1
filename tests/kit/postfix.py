"""postfix.py - a private, throw-away Postfix instance for integration tests.

    with Postfix() as pf:                   # starts in ~1 s, stops and cleans up
        smtplib.SMTP(pf.host, pf.port)...   # or put portcullis in front of it
        [m] = pf.wait_messages(1)           # what Postfix delivered, read back
        m.sender, m.recipients, m.data      # envelope and the exact bytes

    _postfix, postfix = postfix_fixtures()  # in a test module: one instance for
                                            # the module, settled for each test

The instance runs from its own directory tree under a temp dir (config_directory,
queue_directory, data_directory, its log file); nothing in /etc/postfix or
/var/spool/postfix is read or touched, and no system Postfix has to exist: only the
Debian "postfix" package installed with "No configuration" (as tools/deps.sh does).

Mail routing:
  - DOMAIN ("example.test") is a virtual mailbox domain. Every local part is a
    mailbox except those starting with "unknown" or "nosuch" (UNKNOWN below), which
    Postfix itself rejects at RCPT with "550 5.1.1 ... User unknown in virtual mailbox
    table" - so a test can check that a real backend's 550 is relayed. Pass
    users=[...] to accept exactly those local parts instead.
  - Delivery is a pipe(8) transport ("capture") into a tiny sh script that stores,
    per delivery, the envelope (sender, recipients) and the message exactly as Postfix
    hands it to a delivery agent: that is what Postfix received, plus the Received:
    header its smtpd prepends, with LF line endings (Postfix stores lines, not CRLF;
    pipe(8) writes them with "\\n"). Message.content() strips that one Received:
    header. Several recipients of one message in DOMAIN arrive as one delivery.
  - Any other domain is refused (554 5.7.1 Relay access denied): nothing is ever
    sent off the machine, and there is no DNS anywhere.
  - smtpd_authorized_xclient_hosts = 127.0.0.0/8, so the proxy may send XCLIENT.

Options (all off by default; the plain instance is unchanged):
  - sasl=True: SMTP AUTH (PLAIN, LOGIN) through a private Dovecot (class Dovecot
    below: its own base_dir, a passwd-file with SASL_USERS, the auth socket in a
    directory of its own; started before Postfix and stopped after it, by PID).
    Postfix offers AUTH without TLS too (smtpd_tls_auth_only = no): the proxy
    decides whether its clients may AUTH in plaintext. The Received header
    names the authenticated user (smtpd_sasl_authenticated_header).
  - tls=(cert, key) (or an object with .cert and .key, e.g. a tlskit Pair):
    STARTTLS on smtpd (smtpd_tls_security_level = may, loglevel 1, the TLS
    details in the Received header); a tlsmgr service is added to master.cf.
  - xclient_hosts: smtpd_authorized_xclient_hosts (default 127.0.0.0/8).

Gotchas, learned the hard way (each is handled below):
  - `postfix -c DIR` as root is enough for an alternate instance; the
    alternate_config_directories / multi_instance_* settings are only needed for
    the set-gid commands (postdrop, postqueue) and postmulti, which we do not use.
  - Postfix pauses 300 ms at a time, until the file is a couple of seconds old,
    whenever it reads a main.cf (or a table file) modified just now ("pausing to
    let ... settle"): a freshly written config costs ~2 s per postfix/postconf
    command. We backdate the config files' mtime.
  - queue_directory must be owned by root and not group/other-writable. `postfix
    start` creates the queue subdirectories itself (post-install create-missing,
    in postfix-script check-fatal) and runs postsuper and permission checks: ~1 s.
    We create them as postfix-files says and drop a "quick-start" file, which makes
    postfix-script skip those checks once; if that start fails we retry with the
    full checks. data_directory must belong to mail_owner (postfix). Every parent directory must be searchable by the
    postfix user and the pipe user: tempfile.mkdtemp() makes 0700 dirs, so we chmod
    the instance root to 0755.
  - Debian's master.cf runs services chrooted into the queue directory, which needs
    copies of /etc/resolv.conf, libraries... Our master.cf chroots nothing.
  - 127.0.0.1 is an "inet interface", and the default
    local_header_rewrite_clients = permit_inet_interfaces would make cleanup rewrite
    headers and add missing Date:/Message-ID:/From: to mail from the proxy: we set it
    empty, so the message is stored as sent (only Received: is added).
  - in_flow_delay (1 s) throttles smtpd when the queue manager lags: 0 for bulk.
  - smtpd_error_sleep_time (1 s) would delay replies after an error such as an
    unknown recipient: 0.
  - DNS: smtpd_peername_lookup = no (no PTR for the client), smtp_dns_support_level
    = disabled and smtp_host_lookup = native, and no outbound transport at all
    (default_transport is error:).
  - Without syslog in a container Postfix logs nowhere: maillog_file points at
    DIR/maillog (needs the postlog service in master.cf, and the directory listed
    in maillog_file_prefixes, whose default allows only /var and /dev/stdout).
  - pipe(8) never runs as root or as mail_owner: the capture script runs as
    "nobody", so the output directory belongs to nobody. The null sender would be
    passed as "MAILER-DAEMON": null_sender= makes it an empty string.
  - `postfix stop` signals master and waits up to 5 s, then kills the whole process
    group with SIGKILL; a stopped master leaves no children behind.
  - The smtpd port is chosen by binding port 0 and closing the socket; if another
    process takes it in between, start fails on bind and we retry with a new port.
"""

import atexit
import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

from kit.ports import free_port

POSTFIX = "/usr/sbin/postfix"
DOMAIN = "example.test"
UNKNOWN = "unknown@" + DOMAIN  # any local part starting with unknown/nosuch is refused
PIPE_USER = "nobody"
MAIL_OWNER = "postfix"
DOVECOT = "/usr/sbin/dovecot"

# The SASL users of Postfix(sasl=True): name -> password.
SASL_USERS = {"alice": "secret", "bob": "hunter2"}

# The delivery script. argv: outdir queue_id sender recipient... The message is on
# stdin. Exit 75 (EX_TEMPFAIL) makes Postfix defer and retry instead of bouncing.
# Files are named QUEUEID.PID; the .env file (sender on the first line, then one
# recipient per line) is renamed into place last: its presence means the delivery
# is complete. Few processes per delivery (sh, cat, mv): bulk tests deliver many.
CAPTURE_SH = r"""#!/bin/sh
umask 022
out=$1; qid=$2; shift 2
base="$out/$qid.$$"
cat > "$base.eml" || exit 75
printf '%s\n' "$@" > "$out/.tmp.$qid.$$" || exit 75
mv "$out/.tmp.$qid.$$" "$base.env" || exit 75
"""


# Queue subdirectories: name, mode, group is setgid_group (from postfix-files).
QUEUE_DIRS = [("active", 0o700, False), ("bounce", 0o700, False),
              ("corrupt", 0o700, False), ("defer", 0o700, False),
              ("deferred", 0o700, False), ("flush", 0o700, False),
              ("hold", 0o700, False), ("incoming", 0o700, False),
              ("private", 0o700, False), ("maildrop", 0o1730, True),
              ("public", 0o2710, True), ("pid", 0o755, False),
              ("saved", 0o700, False), ("trace", 0o700, False)]


class Message:
    """One delivery as the capture transport stored it."""

    def __init__(self, queue_id, sender, recipients, data, path):
        self.queue_id = queue_id
        self.sender = sender  # "" for the null sender <>
        self.recipients = recipients  # in Postfix's order (not necessarily RCPT order)
        self.data = data  # bytes exactly as delivered: Received: + message, LF endings
        self.path = path

    def content(self):
        """The message without the Received: header Postfix's smtpd prepended (the
        first header, and its folded continuation lines). LF line endings."""
        lines = self.data.split(b"\n")
        if not lines[0].lower().startswith(b"received:"):
            raise AssertionError("first line is not Postfix's Received: %r" % lines[0])
        i = 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
        return b"\n".join(lines[i:])

    def received(self):
        """Postfix's own Received: header (unfolded text, without the name)."""
        lines = self.data.split(b"\n")
        out = [lines[0]]
        for line in lines[1:]:
            if line[:1] not in (b" ", b"\t"):
                break
            out.append(line)
        return b" ".join(x.strip() for x in out)[len(b"received:"):].strip().decode()

    def __repr__(self):
        return "Message(%s from=<%s> to=%r %d bytes)" % (
            self.queue_id, self.sender, self.recipients, len(self.data))


class Postfix:
    """A private Postfix instance on 127.0.0.1:<free port>. Use as a context manager
    or call start()/stop(). main_cf: extra or overriding main.cf settings."""

    def __init__(self, users=None, main_cf=None, port=None, keep=False, sasl=False, tls=None,
                 xclient_hosts="127.0.0.0/8"):
        self.users = users
        self.extra = dict(main_cf or {})
        self.sasl = sasl
        self.sasl_users = dict(SASL_USERS if sasl is True else (sasl or {}))
        if tls is not None and not isinstance(tls, (tuple, list)):
            tls = (tls.cert, tls.key)
        self.tls = tls
        self.xclient_hosts = xclient_hosts
        self.dovecot = None
        self.host = "127.0.0.1"
        self.port = port
        self.keep = keep or bool(os.environ.get("PORTCULLIS_KEEP_POSTFIX"))
        self.root = None
        self.running = False
        self._seen = set()

    # -- paths -------------------------------------------------------------
    @property
    def config_dir(self):
        return os.path.join(self.root, "etc")

    @property
    def queue_dir(self):
        return os.path.join(self.root, "spool")

    @property
    def data_dir(self):
        return os.path.join(self.root, "data")

    @property
    def out_dir(self):
        return os.path.join(self.root, "out")

    @property
    def log_path(self):
        return os.path.join(self.root, "maillog")

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    # -- configuration -----------------------------------------------------
    def _main_cf(self):
        r = self.root
        cf = {
            "compatibility_level": "3.6",
            "config_directory": self.config_dir,
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": MAIL_OWNER,
            "setgid_group": "postdrop",
            "myhostname": "mx.postfix.test",
            "mydomain": "postfix.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_authorized_xclient_hosts": self.xclient_hosts,
            # Only DOMAIN is accepted; everything else is refused, never relayed.
            "relay_domains": "",
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtpd_client_restrictions": "",
            "smtpd_helo_restrictions": "",
            "smtpd_sender_restrictions": "",
            "virtual_mailbox_domains": DOMAIN,
            "virtual_mailbox_maps": self._mailbox_map(),
            "virtual_transport": "capture",
            "capture_destination_recipient_limit": "1000",
            "capture_destination_concurrency_limit": "20",
            "capture_initial_destination_concurrency": "20",
            "unknown_virtual_mailbox_reject_code": "550",
            "local_transport": "error:5.1.1 local delivery is disabled",
            "default_transport": "error:5.7.1 no outbound mail from a test instance",
            "relay_transport": "error:5.7.1 no relaying from a test instance",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            # Store the message as it came: no header rewriting for 127.0.0.1.
            "local_header_rewrite_clients": "",
            "always_add_missing_headers": "no",
            # Nothing slow.
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "disable_dns_lookups": "yes",
            "in_flow_delay": "0",
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "100",
            "smtpd_hard_error_limit": "1000",
            "smtpd_junk_command_limit": "1000",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "maximal_queue_lifetime": "1h",
            "bounce_queue_lifetime": "1h",
            "delay_warning_time": "0",
            "notify_classes": "",
            "biff": "no",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "message_size_limit": str(100 * 1024 * 1024),
            "mailbox_size_limit": "0",
            "default_process_limit": "200",
            "maillog_file": self.log_path,
            "maillog_file_prefixes": r,
        }
        if self.sasl:
            cf.update({
                "smtpd_sasl_auth_enable": "yes",
                "smtpd_sasl_type": "dovecot",
                "smtpd_sasl_path": self.dovecot.auth_socket,
                "smtpd_sasl_security_options": "noanonymous",
                "smtpd_tls_auth_only": "no",
                "smtpd_sasl_authenticated_header": "yes",
                "broken_sasl_auth_clients": "no",
            })
        if self.tls:
            cf.update({
                "smtpd_tls_security_level": "may",
                "smtpd_tls_cert_file": self.tls[0],
                "smtpd_tls_key_file": self.tls[1],
                "smtpd_tls_loglevel": "1",
                "smtpd_tls_received_header": "yes",
                "smtpd_tls_session_cache_database": "",
            })
        cf.update(self.extra)
        return "".join("%s = %s\n" % kv for kv in cf.items())

    def _mailbox_map(self):
        d = self.config_dir
        if self.users is None:
            # regexp: tables see the full address only. "!/re/" matches when re does not.
            path = os.path.join(d, "vmailbox.regexp")
            with open(path, "w") as f:
                f.write("!/^(unknown|nosuch)[^@]*@/ OK\n")
            return "regexp:" + path
        path = os.path.join(d, "vmailbox")
        with open(path, "w") as f:  # texthash: no postmap/.db file needed
            for u in self.users:
                f.write("%s@%s OK\n" % (u, DOMAIN))
        return "texthash:" + path

    def _master_cf(self):
        capture = os.path.join(self.root, "capture.sh")
        # service type private unpriv chroot wakeup maxproc command
        return "\n".join([
            "%s:%d inet n - n - - smtpd" % (self.host, self.port),
            "cleanup   unix n - n - 0 cleanup",
            "qmgr      unix n - n 300 1 qmgr",
            "rewrite   unix - - n - - trivial-rewrite",
            "bounce    unix - - n - 0 bounce",
            "defer     unix - - n - 0 bounce",
            "trace     unix - - n - 0 bounce",
            "verify    unix - - n - 1 verify",
            "flush     unix n - n 1000? 0 flush",
            "proxymap  unix - - n - - proxymap",
            "showq     unix n - n - - showq",
            "error     unix - - n - - error",
            "retry     unix - - n - - error",
            "discard   unix - - n - - discard",
            "anvil     unix - - n - 1 anvil",
            "scache    unix - - n - 1 scache",
            "postlog   unix-dgram n - n - 1 postlogd",
        ] + (["tlsmgr    unix - - n 1000? 1 tlsmgr"] if self.tls else []) + [
            "capture   unix - n n - - pipe",
            "  flags= user=%s null_sender=" % PIPE_USER,
            "  argv=/bin/sh %s %s ${queue_id} ${sender} ${recipient}" % (
                capture, self.out_dir),
            "",
        ])

    def _write_tree(self):
        os.chmod(self.root, 0o755)
        for d in (self.config_dir, self.queue_dir):
            os.makedirs(d, mode=0o755, exist_ok=True)
        pw = pwd.getpwnam(MAIL_OWNER)
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        nob = pwd.getpwnam(PIPE_USER)
        os.makedirs(self.out_dir, mode=0o755, exist_ok=True)
        os.chown(self.out_dir, nob.pw_uid, nob.pw_gid)
        with open(os.path.join(self.root, "capture.sh"), "w") as f:
            f.write(CAPTURE_SH)
        os.chmod(os.path.join(self.root, "capture.sh"), 0o755)
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            f.write(self._main_cf())
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write(self._master_cf())
        # Postfix re-reads a file modified within the last second or so, pausing
        # 300 ms each time until it is older ("pausing to let main.cf settle"):
        # ~2 s per command for a just-written main.cf. Backdate everything.
        old = time.time() - 60
        for name in os.listdir(self.config_dir):
            os.utime(os.path.join(self.config_dir, name), (old, old))

    def _make_queue(self):
        """Create the queue subdirectories the way post-install create-missing
        would (owners and modes from postfix-files), so that `postfix start` can skip
        its integrity checks, which take ~2 s (see start())."""
        pw = pwd.getpwnam(MAIL_OWNER)
        gid_drop = grp.getgrnam("postdrop").gr_gid
        for name, mode, group in QUEUE_DIRS:
            d = os.path.join(self.queue_dir, name)
            os.makedirs(d, exist_ok=True)
            if name == "pid":
                os.chown(d, 0, 0)
            else:
                os.chown(d, pw.pw_uid, gid_drop if group else pw.pw_gid)
            os.chmod(d, mode)

    # -- life cycle ----------------------------------------------------------
    def _postfix(self, *args, timeout=30):
        return subprocess.run([POSTFIX, "-c", self.config_dir] + list(args),
                              stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)

    def start(self, timeout=20):
        if not os.path.exists(POSTFIX):
            raise RuntimeError("postfix is not installed (tools/deps.sh installs it)")
        self.root = tempfile.mkdtemp(prefix="portcullis-postfix-")
        if self.sasl:
            os.chmod(self.root, 0o755)
            self.dovecot = Dovecot(os.path.join(self.root, "dovecot"), self.sasl_users)
            try:
                self.dovecot.start()
            except Exception:
                self.dovecot.stop()
                self._cleanup_dir()
                raise
        fixed = self.port is not None
        err = ""
        quick = True
        for _ in range(4):
            if not fixed:
                self.port = free_port(self.host)
            self._write_tree()
            if quick:
                # postfix-script skips check-fatal/check-warn (create-missing,
                # postsuper, permission checks: ~2 s) once when this file exists.
                # If our own queue set-up were wrong, the full start runs next.
                self._make_queue()
                open(os.path.join(self.queue_dir, "quick-start"), "w").close()
            r = self._postfix("start", timeout=timeout)
            if r.returncode == 0:
                self.running = True
                atexit.register(self.stop)  # a test run that dies still stops it
                try:
                    self._wait_banner(timeout)
                except Exception:
                    self.stop()
                    raise
                return self
            err = (r.stdout + r.stderr + self.log()).strip()
            if "address already in use" in err.lower() and not fixed:
                continue
            if not quick:
                break
            quick = False
        if self.dovecot is not None:
            self.dovecot.stop()
        self._cleanup_dir()
        raise RuntimeError("postfix start failed:\n" + err)

    def _wait_banner(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=5) as s:
                    f = s.makefile("rb")
                    line = f.readline()
                    if line.startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return
                    last = line
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError("postfix smtpd on %s never said 220 (%r)\n%s" % (
            self.addr, last, self.log()))

    def stop(self):
        if self.running:
            r = self._postfix("stop", timeout=30)
            self.running = False
            if r.returncode != 0:
                # Last resort, and only our own master: its pid file names it.
                try:
                    with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
                        pid = int(f.read().split()[0])
                    os.killpg(pid, 9)
                except (OSError, ValueError, IndexError):
                    pass
        if self.dovecot is not None:
            self.dovecot.stop()
        self._cleanup_dir()

    def _cleanup_dir(self):
        if self.root and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- reading back --------------------------------------------------------
    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def messages(self):
        """Every delivery so far, oldest first."""
        out = []
        try:
            names = [n for n in os.listdir(self.out_dir)
                     if n.endswith(".env") and not n.startswith(".")]
            when = {n: os.stat(os.path.join(self.out_dir, n)).st_mtime_ns for n in names}
        except OSError:
            return out
        names.sort(key=lambda n: (when[n], n))
        for n in names:
            base = os.path.join(self.out_dir, n[:-4])
            with open(base + ".env", "rb") as f:
                env = f.read().decode("utf-8", "surrogateescape").split("\n")
            with open(base + ".eml", "rb") as f:
                data = f.read()
            qid = n.split(".")[0]
            out.append(Message(qid, env[0], [x for x in env[1:] if x], data,
                               base + ".eml"))
        return out

    def new_messages(self):
        """Deliveries not returned by an earlier new_messages()/wait_messages()."""
        fresh = [m for m in self.messages() if m.path not in self._seen]
        self._seen.update(m.path for m in fresh)
        return fresh

    def wait_messages(self, n, timeout=15):
        """Wait until n new deliveries exist and return them (all new ones).
        Raises AssertionError with the tail of Postfix's log on timeout."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            got += self.new_messages()
            if len(got) >= n or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if len(got) < n:
            raise AssertionError("postfix delivered %d of %d messages in %ss; log:\n%s"
                                 % (len(got), n, timeout, self.log()[-4000:]))
        return got

    def wait_log(self, needle, timeout=10):
        """Wait until Postfix's log contains needle (a string); returns the
        matching lines (empty after timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [ln for ln in self.log().splitlines() if needle in ln]
            if lines or time.monotonic() >= deadline:
                return lines
            time.sleep(0.05)

    def count(self):
        try:
            return sum(1 for n in os.listdir(self.out_dir)
                       if n.endswith(".env") and not n.startswith("."))
        except OSError:
            return 0

    def queue_empty(self):
        """True when nothing is waiting in Postfix's queues (deferred included)."""
        for q in ("incoming", "active", "deferred", "hold", "maildrop"):
            for _dir, _sub, files in os.walk(os.path.join(self.queue_dir, q)):
                if files:
                    return False
        return True


DOVECOT_CONF = """\
# A private Dovecot that only authenticates (for Postfix's SASL): no mail
# protocols, no SSL, no system paths.
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener {root}/sock/auth {{
    mode = 0660
    user = {owner}
    group = {owner}
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


class Dovecot:
    """A private Dovecot auth server for Postfix's SASL (smtpd_sasl_type = dovecot).

    Runs in the foreground (dovecot -F) as a child of the test from its own
    directory: config, base_dir, state_dir, log, a passwd-file with the users
    (plain-text passwords: test users only) and the auth socket in sock/
    (owned by Postfix's mail_owner). Stopped by PID: SIGTERM, then SIGKILL."""

    def __init__(self, root, users, owner=MAIL_OWNER):
        self.root = root
        self.users = dict(users)
        self.owner = owner
        self.proc = None

    @property
    def auth_socket(self):
        return os.path.join(self.root, "sock", "auth")

    @property
    def config_path(self):
        return os.path.join(self.root, "dovecot.conf")

    @property
    def log_path(self):
        return os.path.join(self.root, "dovecot.log")

    def start(self, timeout=15):
        if not os.path.exists(DOVECOT):
            raise RuntimeError("dovecot is not installed (tools/deps.sh installs dovecot-core)")
        for d in ("", "run", "state", "sock"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
            os.chmod(os.path.join(self.root, d), 0o755)
        with open(os.path.join(self.root, "users"), "w") as f:
            for u, pw in self.users.items():
                f.write("%s:{PLAIN}%s::::::\n" % (u, pw))
        # The auth process reads the passwd-file as root before dropping privileges,
        # but auth-worker processes may not: readable by the internal user.
        os.chmod(os.path.join(self.root, "users"), 0o644)
        with open(self.config_path, "w") as f:
            f.write(DOVECOT_CONF.format(root=self.root, owner=self.owner))
        self._out = open(os.path.join(self.root, "stdout.log"), "ab")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.auth_socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.log()
                self.stop()
                raise RuntimeError("dovecot did not create %s:\n%s" % (self.auth_socket, out))
            time.sleep(0.02)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_out", None) is not None and not self._out.closed:
            self._out.close()

    def log(self):
        out = ""
        for name in ("stdout.log", "dovecot.log"):
            try:
                with open(os.path.join(self.root, name), errors="replace") as f:
                    out += f.read()
            except OSError:
                pass
        return out



# -- pytest glue: one instance per test module ---------------------------------


def settle(postfix, timeout=15):
    """Let an earlier test's mail leave Postfix's queue, then set every
    delivery so far aside: the next wait_messages() sees only new ones."""
    deadline = time.monotonic() + timeout
    while not postfix.queue_empty() and time.monotonic() < deadline:
        time.sleep(0.05)
    postfix.new_messages()


def postfix_fixtures(name="postfix", **options):
    """The two pytest fixtures a test module needs to run against a Postfix,
    for its top level:

        _postfix, postfix = postfix_fixtures(sasl=True)

    "_NAME" (module scope) starts Postfix(**options) once for the module and
    stops it after. "NAME" (each test) hands over that instance settled (see
    settle()), with pf.since(): its log since the test began. When the test
    fails, that log (and Dovecot's, with sasl) goes to stderr. Another NAME
    gives a second pair in the same module: postfix_fixtures("tls_postfix",
    tls=...) makes _tls_postfix and tls_postfix."""
    import sys

    import pytest

    @pytest.fixture(scope="module", name="_" + name)
    def instance():
        with Postfix(**options) as pf:
            yield pf

    @pytest.fixture(name=name)
    def per_test(request):
        pf = request.getfixturevalue("_" + name)
        settle(pf)
        start = len(pf.log())
        pf.since = lambda: pf.log()[start:]
        yield pf
        rep = getattr(request.node, "rep_call", None)  # conftest.py records it
        if rep is not None and rep.failed:
            sys.stderr.write("\n----- postfix log -----\n%s\n" % pf.since()[-6000:])
            if pf.dovecot is not None:
                sys.stderr.write("\n----- dovecot log -----\n%s\n" % pf.dovecot.log()[-3000:])

    return instance, per_test

if __name__ == "__main__":
    # Manual use: /usr/bin/python3 tests/kit/postfix.py  -> prints the port, runs
    # until Ctrl-C, prints each delivery as it arrives.
    with Postfix() as pf:
        print("postfix on %s (dir %s); mail to anything@%s; Ctrl-C stops"
              % (pf.addr, pf.root, DOMAIN), flush=True)
        try:
            while True:
                for m in pf.new_messages():
                    print(m, flush=True)
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
