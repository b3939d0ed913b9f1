"""rspamd.py - a private rspamd (Debian's /usr/bin/rspamd 3.4) on loopback.

    r = Rspamd(workdir).start()    # blocks until /checkv2 answers
    r.url                          # "http://127.0.0.1:PORT" for url =
    r.check(message_bytes)         # POST /checkv2 ourselves: the JSON reply
    r.stop(); r.start()            # same port: an outage
    r.log()                        # its log file

Started as /work/shared/PEERS.md says: in the foreground as a child of the
test, as _rspamd, with its own LOCAL_CONFDIR, RUNDIR and LOGDIR under
workdir, and no network:

  - local.d/options.inc: DNS to 127.0.0.1:1 with a 0.1 s timeout (nothing
    answers there, so every lookup fails fast), no hyperscan;
  - local.d/NAME.conf with `enabled = false;` for every module that does
    lookups or fetches maps (MODULES_OFF);
  - override.d/worker-normal.inc: the scanner on a free loopback port;
    the controller and proxy workers off (`enabled = false`), so nothing
    else takes the fixed ports 11332/11334 another rspamd may hold.

DBDIR is the one thing kept between runs (DBDIR below, under /tmp): the
first start compiles the TLD list into it (about 16 s), later ones take
about 2 s. Two starts at once on one machine (two test runs) take turns
at an flock on it until ready. The per-run files rspamd would otherwise
put there (the control socket) go to RUNDIR instead.

Readiness is a real scan: POST /checkv2 with a small message until it
answers with JSON (the port opens before the scanner has loaded its
rules). Stopped by PID: SIGTERM, then SIGKILL after a bound.

extra_local = {"actions.conf": "...", ...} adds files to local.d (custom
rules, action thresholds) for a test that needs them.
"""

import fcntl
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from kit.ports import free_port
from kit.server import PrivateServer

RSPAMD = "/usr/bin/rspamd"
USER = "_rspamd"
# Kept between runs: the compiled TLD list makes a cold start ~16 s.
DBDIR = "/tmp/portcullis-rspamd-db"
START_TIMEOUT = 90.0  # a cold start on a slow machine
STOP_TIMEOUT = 10.0

MODULES_OFF = (
    "whitelist", "mime_types", "arc", "fuzzy_check", "asn", "rbl", "phishing", "spf",
    "emails", "multimap", "dmarc", "dkim", "mid", "hfilter", "elastic", "dkim_signing",
    "metadata_exporter",
)

OPTIONS = """\
dns {
  nameserver = ["127.0.0.1:1"];
  timeout = 0.1s;
  retransmits = 1;
}
disable_hyperscan = true;
"""

PROBE = (b"From: probe@example.org\r\nTo: probe@example.org\r\nSubject: probe\r\n"
         b"Message-ID: <probe@example.org>\r\n\r\nprobe\r\n")

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def _chown_tree(path, uid, gid):
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            try:
                os.chown(os.path.join(root, n), uid, gid)
            except OSError:
                pass


class Rspamd(PrivateServer):
    stop_timeout = STOP_TIMEOUT

    def __init__(self, workdir=None, port=None, extra_local=None):
        self._own_dir = workdir is None
        self.dir = str(workdir) if workdir else tempfile.mkdtemp(prefix="pc-rspamd-")
        self.port = port or free_port()
        self.extra_local = dict(extra_local or {})
        self.proc = None
        self.local = os.path.join(self.dir, "local")
        self.rundir = os.path.join(self.dir, "run")
        self.logdir = os.path.join(self.dir, "log")
        self._write_config()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _write_config(self):
        import pwd

        pw = pwd.getpwnam(USER)
        for d in (self.dir, self.local, self.rundir, self.logdir, DBDIR,
                  os.path.join(self.local, "local.d"), os.path.join(self.local, "override.d")):
            os.makedirs(d, exist_ok=True)
        files = {"local.d/options.inc": OPTIONS}
        files["override.d/options.inc"] = 'control_socket = "%s/rspamd.sock mode=0600";\n' % self.rundir
        for m in MODULES_OFF:
            files["local.d/%s.conf" % m] = "enabled = false;\n"
        files["override.d/worker-normal.inc"] = (
            'bind_socket = "127.0.0.1:%d";\ncount = 1;\n' % self.port)
        files["override.d/worker-controller.inc"] = "enabled = false;\n"
        files["override.d/worker-proxy.inc"] = "enabled = false;\n"
        files["override.d/logging.inc"] = (
            'type = "file";\nfilename = "%s/rspamd.log";\nlevel = "info";\n' % self.logdir)
        for name, text in self.extra_local.items():
            files["local.d/" + name] = text
        for name, text in files.items():
            with open(os.path.join(self.local, name), "w") as f:
                f.write(text)
        os.chmod(self.dir, 0o755)
        _chown_tree(self.dir, pw.pw_uid, pw.pw_gid)
        _chown_tree(DBDIR, pw.pw_uid, pw.pw_gid)

    def start(self):
        if self.proc is not None:
            return self
        args = [RSPAMD, "-f", "-u", USER, "-g", USER,
                "--var=LOCAL_CONFDIR=" + self.local, "--var=DBDIR=" + DBDIR,
                "--var=RUNDIR=" + self.rundir, "--var=LOGDIR=" + self.logdir]
        with open(os.path.join(DBDIR, ".portcullis-start.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._out = open(os.path.join(self.logdir, "stderr.log"), "ab")
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._out,
                                         stderr=self._out)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self.proc = None
                    raise RuntimeError("rspamd exited at start:\n" + self.log())
                try:
                    if "action" in self.check(PROBE, timeout=5):
                        return self
                except (OSError, ValueError, urllib.error.URLError):
                    pass
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("rspamd did not answer /checkv2 within %ss:\n%s"
                           % (START_TIMEOUT, self.log()))

    def check(self, message, timeout=10, headers=None):
        """POST /checkv2 with message (bytes): the reply as a dict."""
        req = urllib.request.Request(self.url + "/checkv2", data=message, method="POST",
                                     headers=dict({"Hostname": "unknown"}, **(headers or {})))
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def stopped(self):
        self._out.close()

    def log(self):
        out = []
        for n in ("stderr.log", "rspamd.log"):
            try:
                with open(os.path.join(self.logdir, n), errors="replace") as f:
                    out.append(f.read()[-20000:])
            except OSError:
                pass
        return "\n".join(out)


class FakeRspamd:
    """A stand-in for rspamd's /checkv2 on loopback, for the replies the
    real one cannot be made to give (each action, hostile replies):

        f = FakeRspamd().start()
        f.answer({"action": "add header", "score": 7, ...})   # JSON reply
        f.answer(raw=b"not json", status=200)                  # any bytes
        f.answer(status=500)                                   # an HTTP error
        f.answer(delay=3.0, ...)                               # slow
        f.requests      # [(headers as a list of (name, value)), body bytes]
        f.stop()

    Each request is answered with the latest answer() and recorded.
    """

    def __init__(self):
        import http.server
        import threading

        fake = self
        self.requests = []
        self._reply = {"raw": b'{"action":"no action","score":0,"required_score":15}',
                       "status": 200, "delay": 0.0}
        self._lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with fake._lock:
                    fake.requests.append((list(self.headers.items()), body, self.path))
                    r = dict(fake._reply)
                if r["delay"]:
                    time.sleep(r["delay"])
                try:
                    self.send_response(r["status"])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(r["raw"])))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(r["raw"])
                except OSError:
                    pass
                self.close_connection = True

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.port = free_port()
        self.server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self._thread.start()
        return self

    def answer(self, obj=None, raw=None, status=200, delay=0.0):
        if raw is None:
            raw = json.dumps(obj if obj is not None else {}).encode()
        with self._lock:
            self._reply = {"raw": raw, "status": status, "delay": delay}

    def headers(self, i=-1):
        """The i-th request's headers as a list of (name, value)."""
        return self.requests[i][0]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
