"""Plugin ABI 2 (include/portcullis/plugin.h, VERSIONS; DESIGN.md §5): the
loader refuses another major version and a newer minor, naming both
versions, at start and at -t; a descriptor smaller than this host's (a
plugin built for an older minor) loads, its hooks run, and nothing past its
struct_size is ever read or called."""

import re
import signal

import kit.proxy as kp
from kit.dialogue import refused, start_txn
from kit.messages import stuff

BOUND = 10.0
BODY = b"Subject: abi\r\n\r\nhello\r\n"


def _versions(text, so, theirs, ours=kp.abi_version()):
    """The lines of text that name the plugin, its ABI and ours."""
    rx = re.compile(rf"\bABI {re.escape(theirs)}\b.*\bABI {re.escape(ours)}\b")
    return [ln for ln in text.splitlines() if so in ln and rx.search(ln)]


def test_old_major_refused(recorder, tmp_path):
    so = kp.test_plugin("oldabi")
    path, log, out = refused(recorder, tmp_path, [("plugin old", {"path": so})])
    for text in (log, out):
        lines = _versions(text, so, "1")
        assert lines, text
        assert re.search(rf"^{re.escape(path)}:\d+: \[plugin old\]: plugin {re.escape(so)} was built for ABI 1,",
                         text, re.M), text


def test_newer_major_refused(recorder, tmp_path):
    so = kp.test_plugin("badabi")
    _, log, out = refused(recorder, tmp_path, [("plugin bad", {"path": so})])
    for text in (log, out):
        assert _versions(text, so, "3.0"), text


def test_newer_minor_refused(recorder, tmp_path):
    so = kp.test_plugin("newminor")
    _, log, out = refused(recorder, tmp_path, [("plugin nm", {"path": so})])
    for text in (log, out):
        major, minor = kp.abi_version().split(".")
        assert _versions(text, so, f"{major}.{int(minor) + 1}"), text
        assert "upgrade portcullis" in text, text


def test_smaller_descriptor_loads_and_runs(recorder, proxy, client):
    p = proxy(sections=[("plugin small", {"path": kp.test_plugin("smalldesc")})])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    assert c.cmd("RCPT TO:<reject@y.test>").first == "550 5.1.1 smalldesc says no"
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    assert c.message(stuff(BODY) + b".\r\n").code == 250
    c.cmd("RSET").expect(250)
    c.cmd("QUIT").expect(221)
    assert recorder.wait_for_transactions(1, timeout=BOUND)
    assert p.wait_log(r"smalldesc: hook mail")
    assert p.wait_log(r"smalldesc: hook rcpt", count=2)
    # SIGHUP: reload is past struct_size too (and must not be called).
    p.signal(signal.SIGHUP)
    assert p.wait_log(r"SIGHUP: ", timeout=BOUND)
    p.stop()
    assert "TRAP" not in p.log(), p.log()


def test_smaller_descriptor_passes_check(recorder, tmp_path):
    p = kp.Proxy(str(tmp_path / "ok"), recorder.address,
                 sections=[("plugin small", {"path": kp.test_plugin("smalldesc")})])
    p.write_config()
    rc, out = kp.run_check(p.config_path)
    assert rc == 0, out
    assert "TRAP" not in out and "AddressSanitizer" not in out, out
