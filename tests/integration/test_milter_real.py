"""The milter client (plugins/milter.c) against the real milters from
Debian, through real SMTP to the recording backend, which records exactly
what the backend got.

The peers (tests/kit/milters.py) run privately on loopback ports, offline,
each started once for the module: OpenDKIM signing with a key the kit makes
(relaxed/relaxed and simple/simple) and OpenDKIM verifying (its keys from a
TestPublicKeys file); clamd with the kit's own EICAR signature behind
clamav-milter; spamass-milter in front of the kit's spamd, rejecting and
marking; rspamd's proxy worker in milter mode. dkimpy checks every
signature over the bytes the backend got (its dnsfunc returns the kit's
key). The outage tests start peers of their own, to stop them under a
running proxy.
"""

import base64
import re
import textwrap
import time

import pytest

from kit.messages import stuff
from kit.milters import (CLAMAV_MILTER, CLAMD, EICAR, OPENDKIM, SPAMASS_MILTER, ClamavMilter,
                         Clamd, DkimKey, OpenDKIM, RspamdMilter, SpamassMilter, available,
                         close_all, dkim_verify)
from kit.rspamd import RSPAMD
from kit.spamd import GTUBE, Spamd
from kit.spamd import available as spamd_available

BOUND = 30.0  # how long we wait for what must happen

HAM = (b"From: Alice <alice@example.org>\r\n"
       b"To: Bob <bob@example.net>\r\n"
       b"Subject: lunch tomorrow\r\n"
       b"Date: Mon, 1 Jan 2024 12:00:00 +0000\r\n"
       b"Message-ID: <lunch.42@example.org>\r\n"
       b"\r\n"
       b"Shall we meet at noon at the usual place?\r\n"
       b"  Two spaces,  inside  too. \r\n"
       b"\r\n"
       b"Alice\r\n")

SPAM = (b"From: Sender <sender@example.org>\r\n"
        b"To: Recipient <bob@example.net>\r\n"
        b"Subject: Test spam mail (GTUBE)\r\n"
        b"Date: Mon, 1 Jan 2024 12:00:00 +0000\r\n"
        b"Message-ID: <GTUBE1.1010101@example.org>\r\n"
        b"\r\n"
        b"This is the GTUBE.\r\n" + GTUBE.encode() + b"\r\n")

VIRUS = (b"From: Alice <alice@example.org>\r\n"
         b"To: Bob <bob@example.net>\r\n"
         b"Subject: the file\r\n"
         b"Date: Mon, 1 Jan 2024 12:00:00 +0000\r\n"
         b"\r\n" + EICAR + b"\r\n")

ATTACHED = (b"From: Alice <alice@example.org>\r\n"
            b"To: Bob <bob@example.net>\r\n"
            b"Subject: see attachment\r\n"
            b"MIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="b1"\r\n'
            b"\r\n"
            b"--b1\r\n"
            b"Content-Type: text/plain\r\n"
            b"\r\n"
            b"The file you asked for.\r\n"
            b"--b1\r\n"
            b'Content-Type: application/octet-stream; name="eicar.com"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="eicar.com"\r\n'
            b"\r\n" + base64.encodebytes(EICAR).replace(b"\n", b"\r\n") +
            b"--b1--\r\n")


# ---- peers, once per module ------------------------------------------------------


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory):
    if not available(OPENDKIM):
        pytest.skip("opendkim is not installed (tools/deps.sh)")
    return DkimKey(tmp_path_factory.mktemp("dkimkey"))


@pytest.fixture(scope="module")
def dkim(dkim_key, tmp_path_factory):
    """Signers for both canonicalizations, a verifier, a signer on a UNIX
    socket, and a signer that also signs the headers the other filters add
    (X-Virus-Status, X-Chain), to show which ones it saw."""
    d = tmp_path_factory.mktemp("opendkim")
    peers = {
        "relaxed/relaxed": OpenDKIM(dkim_key, canon="relaxed/relaxed", workdir=d),
        "simple/simple": OpenDKIM(dkim_key, canon="simple/simple", workdir=d),
        "verify": OpenDKIM(dkim_key, mode="v", workdir=d),
        "unix": OpenDKIM(dkim_key, workdir=d, unix=True),
        "wide": OpenDKIM(dkim_key, workdir=d, extra=[
            "SignHeaders From,To,Subject,Date,Reply-To,X-Virus-Status,X-Chain"]),
    }
    try:
        for p in peers.values():
            p.start()
        yield peers
    finally:
        close_all(*peers.values())


@pytest.fixture(scope="module")
def clam(tmp_path_factory):
    if not available(CLAMD, CLAMAV_MILTER):
        pytest.skip("clamd or clamav-milter is not installed (tools/deps.sh)")
    c = m = None
    try:
        c = Clamd(tmp_path_factory.mktemp("clamd")).start()
        m = ClamavMilter(c, tmp_path_factory.mktemp("clamav-milter")).start()
        yield m
    finally:
        close_all(m, c)


@pytest.fixture(scope="module")
def spamass():
    """spamass-milter rejecting at score 15 ("reject") and marking only
    ("mark"), both in front of one private spamd."""
    if not (available(SPAMASS_MILTER) and spamd_available()):
        pytest.skip("spamass-milter or spamd is not installed (tools/deps.sh)")
    s = None
    peers = {}
    try:
        # Its own directory under /tmp: spamd's children run as nobody.
        s = Spamd().start()
        peers["reject"] = SpamassMilter(s, reject=15).start()
        peers["mark"] = SpamassMilter(s, reject=None).start()
        yield peers
    finally:
        close_all(*peers.values(), s)


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory):
    if not available(RSPAMD):
        pytest.skip("rspamd is not installed (tools/deps.sh)")
    r = RspamdMilter(tmp_path_factory.mktemp("rspamd")).start()
    yield r
    r.close()


# ---- helpers --------------------------------------------------------------------


def milter(name, peer, **keys):
    d = {"socket": peer.socket, "timeout_connect": "5s", "timeout_command": "30s",
         "timeout_eom": "30s", "on_error": "tempfail"}
    d.update(keys)
    return (f"milter {name}", d)


def lua(tmp_path, name, text):
    path = tmp_path / f"{name}.lua"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return (f"lua {name}", {"script": str(path)})


def edits(**keys):
    from kit.proxy import test_plugin

    return ("plugin edits", dict(path=test_plugin("edits"), **keys))


def send(client, p, msg, sender="alice@example.org", rcpts=("bob@example.net",)):
    """One session, one message (msg: unstuffed bytes with CRLF lines): the
    reply to the end of data."""
    c = client(p)
    c.greet()
    c.envelope(sender, *rcpts)
    r = c.message(stuff(msg) + b".\r\n")
    c.cmd("QUIT")
    return r


def delivered(recorder, n=1):
    """The n-th delivered message as the backend got it, un-dot-stuffed."""
    recorder.wait_for(lambda: len(recorder.delivered()) >= n, BOUND)
    got = recorder.delivered()
    assert len(got) >= n, f"{len(got)} messages delivered, want {n}"
    return re.sub(rb"(?m)^\.\.", b".", bytes(got[n - 1].data))


def split(data):
    head, _, body = data.partition(b"\r\n\r\n")
    return head + b"\r\n", body


def fields(data):
    """[(name, value)] of the header section, unfolded (CRLF + WSP -> " ")."""
    head = split(data)[0].decode("latin-1")
    head = re.sub(r"\r\n[ \t]+", " ", head)
    out = []
    for ln in head.split("\r\n"):
        if ln:
            k, v = ln.split(":", 1)
            out.append((k, v.strip()))
    return out


def values(data, name):
    return [v for k, v in fields(data) if k.lower() == name.lower()]


def tags(sig):
    """A DKIM-Signature's tags as a dict (whitespace removed)."""
    out = {}
    for part in re.sub(r"\s+", "", sig).split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


def without_field(data, name):
    """data with every field called name (and its folded lines) left out."""
    head, body = split(data)
    kept = re.sub(rb"(?mi)^" + re.escape(name.encode()) + rb":.*\r\n(?:[ \t].*\r\n)*", b"", head)
    return kept + b"\r\n" + body


def assert_signed(data, key, canon, signed=()):
    """One DKIM-Signature, by our key with
    canon, listing the fields in signed; dkimpy verifies it over data, and
    no longer once the body changes."""
    sigs = values(data, "DKIM-Signature")
    assert len(sigs) == 1, data[:600]
    t = tags(sigs[0])
    assert (t["d"], t["s"], t["c"]) == ("example.org", "test", canon), t
    h = [x.lower() for x in t["h"].split(":")]
    for name in ("from",) + tuple(n.lower() for n in signed):
        assert name in h, (name, t["h"])
    assert dkim_verify(data, key), data
    head, body = split(data)
    assert not dkim_verify(head + b"\r\n" + body + b"one more line\r\n", key)
    return t


def log_has(p, pattern, count=1):
    found = p.wait_log(pattern, timeout=BOUND, count=count)
    assert len(found) >= count, f"{pattern!r} not in the log:\n{p.log()}"
    return found


# ---- OpenDKIM ----------------------------------------------------------------------


@pytest.mark.parametrize("canon", ["relaxed/relaxed", "simple/simple"])
def test_dkim_signs(proxy, client, recorder, dkim, dkim_key, canon):
    p = proxy(sections=[milter("dkim", dkim[canon])])
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    # The signature is inserted first (SMFIR_INSHEADER 0); the message
    # follows unchanged.
    assert fields(data)[0][0] == "DKIM-Signature", data[:600]
    first_end = re.search(rb"\r\n(?![ \t])", data).end()
    assert data[first_end:] == HAM, data
    assert_signed(data, dkim_key, canon, ("to", "subject", "date"))


@pytest.mark.parametrize("scheme", ["unix", "local"])
def test_dkim_signs_over_a_unix_socket(proxy, client, recorder, dkim, dkim_key, scheme):
    peer = dkim["unix"]
    p = proxy(sections=[milter("dkim", peer, socket=f"{scheme}:{peer.path}")])
    send(client, p, HAM).expect(250)
    assert_signed(delivered(recorder), dkim_key, "relaxed/relaxed")


def test_dkim_signs_each_message_of_a_session(proxy, client, recorder, dkim, dkim_key):
    p = proxy(sections=[milter("dkim", dkim["relaxed/relaxed"])])
    c = client(p)
    c.greet()
    for i in range(3):
        c.envelope("alice@example.org", "bob@example.net")
        msg = HAM.replace(b"lunch tomorrow", b"lunch number %d" % i)
        c.message(stuff(msg) + b".\r\n").expect(250)
    c.cmd("QUIT")
    for i in range(3):
        data = delivered(recorder, i + 1)
        assert b"Subject: lunch number %d\r\n" % i in data
        assert_signed(data, dkim_key, "relaxed/relaxed")


def test_dkim_verified_by_a_second_milter(proxy, client, recorder, dkim, dkim_key):
    p = proxy(sections=[milter("sign", dkim["relaxed/relaxed"]),
                        milter("verify", dkim["verify"])])
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    t = assert_signed(data, dkim_key, "relaxed/relaxed")
    (ar,) = values(data, "Authentication-Results")
    assert ar.startswith("verifier.test;"), ar
    m = re.search(r"dkim=(\w+) .*header\.d=example\.org .*header\.s=test header\.b=(\S+?);", ar)
    assert m and m.group(1) == "pass", ar
    assert t["b"].startswith(m.group(2)), (ar, t["b"][:20])


def test_dkim_verifier_sees_a_change_made_after_signing(proxy, client, recorder, dkim, dkim_key):
    """A filter between the signer and the verifier changes the Subject:
    the verifier sees the changed message and says fail."""
    p = proxy(sections=[milter("sign", dkim["relaxed/relaxed"]),
                        edits(change_header="Subject:0:changed after signing"),
                        milter("verify", dkim["verify"])])
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    assert values(data, "Subject") == ["changed after signing"]
    (ar,) = values(data, "Authentication-Results")
    assert re.search(r"\bdkim=fail\b", ar), ar
    assert not dkim_verify(data, dkim_key)


def test_dkim_verifier_without_signature(proxy, client, recorder, dkim):
    p = proxy(sections=[milter("verify", dkim["verify"])])
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    (ar,) = values(data, "Authentication-Results")
    assert re.search(r"\bdkim=none\b", ar) and "dkim=pass" not in ar, ar


def test_dkim_signs_a_header_added_by_lua(proxy, client, recorder, dkim, dkim_key, tmp_path):
    p = proxy(sections=[
        lua(tmp_path, "addhdr", """
            function on_data(tx, msg)
              tx:add_header("Reply-To", "Team <team@example.org>")
            end
        """),
        milter("dkim", dkim["simple/simple"])])
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    assert values(data, "Reply-To") == ["Team <team@example.org>"], data[:600]
    assert_signed(data, dkim_key, "simple/simple", ("reply-to",))
    # The signature covers it: without it, it no longer verifies.
    assert not dkim_verify(without_field(data, "Reply-To"), dkim_key)


def test_dkim_signature_first_before_a_lua_header(proxy, client, recorder, dkim, tmp_path):
    """OpenDKIM inserts its signature at index 0 of the message it saw,
    which began with the header Lua added: so the signature comes first,
    before it (SMFIR_INSHEADER: 0 = first)."""
    p = proxy(sections=[
        lua(tmp_path, "addhdr", """
            function on_data(tx, msg)
              tx:add_header("Reply-To", "Team <team@example.org>")
            end
        """),
        milter("dkim", dkim["relaxed/relaxed"])])
    send(client, p, HAM).expect(250)
    names = [k for k, _ in fields(delivered(recorder))]
    assert names[:3] == ["DKIM-Signature", "Reply-To", "From"], names


def test_dkim_signs_changed_header_and_replaced_body(proxy, client, recorder, dkim, dkim_key):
    new_body = "A new body\\r\\nwritten by a filter.\\r\\n"
    p = proxy(sections=[edits(change_header="Subject:0:rewritten by a filter",
                              replace_body=new_body),
                        milter("dkim", dkim["relaxed/relaxed"])])
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    head, body = split(data)
    assert body == b"A new body\r\nwritten by a filter.\r\n", data
    assert values(data, "Subject") == ["rewritten by a filter"]
    assert_signed(data, dkim_key, "relaxed/relaxed", ("subject",))
    # Signed as changed: the original body or Subject no longer verify.
    assert not dkim_verify(head + b"\r\n" + split(HAM)[1], dkim_key)
    assert not dkim_verify(data.replace(b"rewritten by a filter", b"lunch tomorrow"), dkim_key)


# ---- ClamAV ----------------------------------------------------------------------------


@pytest.mark.parametrize("msg", [VIRUS, ATTACHED], ids=["inline", "base64-attachment"])
def test_clamav_rejects_eicar(proxy, client, recorder, clam, msg):
    p = proxy(sections=[milter("clamav", clam)])
    r = send(client, p, msg)
    assert r.code // 100 == 5, r
    r.expect(550, "5.7.1")
    assert recorder.delivered() == []
    # ... and the session goes on: clean mail after it passes.
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    assert values(data, "X-Virus-Status") == ["Clean"], data[:800]


def test_clamav_clean_mail_marked(proxy, client, recorder, clam):
    p = proxy(sections=[milter("clamav", clam)])
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    head, body = split(data)
    assert body == split(HAM)[1]
    # Its headers are appended at the end of the header section.
    assert head.startswith(split(HAM)[0]), data
    names = [k for k, _ in fields(data)]
    assert names[-2:] == ["X-Virus-Scanned", "X-Virus-Status"], names
    assert values(data, "X-Virus-Status") == ["Clean"]
    assert values(data, "X-Virus-Scanned")[0].startswith("clamav-milter ")


@pytest.fixture
def own_clam(tmp_path):
    """A clamd + clamav-milter pair of this test's own, to stop."""
    if not available(CLAMD, CLAMAV_MILTER):
        pytest.skip("clamd or clamav-milter is not installed (tools/deps.sh)")
    c = m = None
    try:
        c = Clamd(tmp_path / "clamd").start()
        m = ClamavMilter(c, tmp_path / "milter").start()
        yield c, m
    finally:
        close_all(m, c)


def test_clamd_down_defers(proxy, client, recorder, own_clam):
    """clamd stopped: clamav-milter's OnFail Defer is a tempfail, which the
    proxy gives the client as 451; clamd back: mail passes again."""
    clamd, m = own_clam
    p = proxy(sections=[milter("clamav", m, on_error="accept")])
    send(client, p, HAM).expect(250)
    clamd.stop()
    r = send(client, p, HAM)
    r.expect(451, "4.7.1")
    assert len(recorder.delivered()) == 1
    clamd.start()
    # clamav-milter finds clamd again within a second or two.
    deadline = time.monotonic() + BOUND
    while True:
        r = send(client, p, HAM)
        if r.code == 250 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    r.expect(250)
    data = delivered(recorder, 2)
    assert values(data, "X-Virus-Status") == ["Clean"]


def test_clamav_milter_down_on_error(proxy, client, recorder, own_clam):
    """The milter itself stopped: each section's on_error decides. accept:
    the mail flows unchanged (no X-Virus-* headers); tempfail: 4xx at the
    first stage (at connect: 421 and close); reject: 5xx."""
    _, m = own_clam
    m.stop()
    for on_error in ("accept", "tempfail", "reject"):
        recorder.reset()
        p = proxy(sections=[milter("clamav", m, on_error=on_error)])
        c = client(p)
        if on_error == "accept":
            c.greet()
            c.envelope("alice@example.org", "bob@example.net")
            c.message(stuff(HAM) + b".\r\n").expect(250)
            c.cmd("QUIT")
            assert delivered(recorder) == HAM
        else:
            want = 4 if on_error == "tempfail" else 5
            first = c.banner()
            if first.code == 220:
                c.ehlo()
                r = c.cmd("MAIL FROM:<alice@example.org>")
                assert r.code // 100 == want, (on_error, r)
            else:
                assert first.code // 100 == want, (on_error, first)
            if on_error == "tempfail":
                assert first.code == 421 and c.closed(), first
            assert recorder.delivered() == []
        log_has(p, r"clamav.*cannot connect to inet:%d@127\.0\.0\.1: Connection refused" % m.port)


# ---- spamass-milter ------------------------------------------------------------------


def test_spamass_rejects_gtube(proxy, client, recorder, spamass):
    p = proxy(sections=[milter("spamassassin", spamass["reject"])])
    r = send(client, p, SPAM)
    r.expect(550, "5.7.1")
    assert r.text.endswith("Blocked by SpamAssassin"), r
    assert recorder.delivered() == []


def test_spamass_marks_ham(proxy, client, recorder, spamass):
    p = proxy(sections=[milter("spamassassin", spamass["reject"])])
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    (status,) = values(data, "X-Spam-Status")
    assert re.match(r"No, score=-?\d+\.\d required=5\.0 tests=", status), status
    assert values(data, "X-Spam-Checker-Version")[0].startswith("SpamAssassin ")
    assert split(data)[1] == split(HAM)[1]


def test_spamass_marks_gtube_without_reject(proxy, client, recorder, spamass):
    p = proxy(sections=[milter("spamassassin", spamass["mark"])])
    send(client, p, SPAM).expect(250)
    data = delivered(recorder)
    assert values(data, "X-Spam-Flag") == ["YES"], data[:800]
    (status,) = values(data, "X-Spam-Status")
    assert re.match(r"Yes, score=10\d\d\.\d required=5\.0 tests=.*\bGTUBE\b", status), status
    # -m: the body and Subject are left alone.
    assert split(data)[1] == split(SPAM)[1]
    assert values(data, "Subject") == ["Test spam mail (GTUBE)"]


def test_spamass_replaces_forged_headers(proxy, client, recorder, spamass):
    """A message that arrives with its own X-Spam-Status and X-Spam-Flag:
    spamass-milter changes the first (SMFIR_CHGHEADER) and deletes the
    second (a change with an empty value)."""
    forged = HAM.replace(b"Subject:", b"X-Spam-Flag: YES\r\nX-Spam-Status: Yes, forged\r\nSubject:")
    p = proxy(sections=[milter("spamassassin", spamass["mark"])])
    send(client, p, forged).expect(250)
    data = delivered(recorder)
    assert values(data, "X-Spam-Flag") == [], data[:800]
    (status,) = values(data, "X-Spam-Status")
    assert status.startswith("No, score="), status


# ---- rspamd in milter mode -----------------------------------------------------------


def test_rspamd_rejects_gtube(proxy, client, recorder, rspamd):
    p = proxy(sections=[milter("rspamd", rspamd)])
    r = send(client, p, SPAM)
    r.expect(554, "5.7.1")
    assert r.text == "5.7.1 Gtube pattern", r
    assert recorder.delivered() == []


def test_rspamd_marks_ham(proxy, client, recorder, rspamd):
    p = proxy(sections=[milter("rspamd", rspamd)])
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    assert len(values(data, "X-Rspamd-Server")) == 1, data[:800]
    (result,) = values(data, "X-Spamd-Result")
    assert re.match(r"default: False \[-?\d+\.\d\d / 15\.00\];", result), result
    (status,) = values(data, "X-Spam-Status")
    assert status.startswith("No, score="), status
    # Authentication-Results: rspamd inserts it as the second field.
    assert fields(data)[1][0] == "Authentication-Results", fields(data)
    assert split(data)[1] == split(HAM)[1]


# ---- a chain: Lua, clamav-milter, OpenDKIM ------------------------------------------


def test_chain_lua_clamav_dkim(proxy, client, recorder, dkim, dkim_key, clam, tmp_path):
    """Lua adds X-Chain, clamav-milter adds X-Virus-Status, OpenDKIM signs
    last: it saw both (its SignHeaders lists them, and h= names only the
    fields it saw), and the signature verifies over what the backend got."""
    p = proxy(sections=[
        lua(tmp_path, "chain", """
            function on_data(tx, msg)
              tx:add_header("X-Chain", "lua was here")
            end
        """),
        milter("clamav", clam),
        milter("dkim", dkim["wide"])])
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    assert values(data, "X-Chain") == ["lua was here"]
    assert values(data, "X-Virus-Status") == ["Clean"]
    assert_signed(data, dkim_key, "relaxed/relaxed", ("x-chain", "x-virus-status"))
    assert split(data)[1] == split(HAM)[1]
    assert not dkim_verify(data.replace(b"X-Virus-Status: Clean", b"X-Virus-Status: Infected"),
                           dkim_key)
    # A virus stops the chain at clamav-milter.
    r = send(client, p, VIRUS)
    r.expect(550, "5.7.1")
    assert len(recorder.delivered()) == 1


def test_chain_order_reversed(proxy, client, recorder, dkim, dkim_key, clam):
    """OpenDKIM before clamav-milter: it never saw X-Virus-Status, so h=
    leaves it out, and the signature still verifies."""
    p = proxy(sections=[milter("dkim", dkim["wide"]), milter("clamav", clam)])
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    assert values(data, "X-Virus-Status") == ["Clean"]
    t = assert_signed(data, dkim_key, "relaxed/relaxed")
    assert "x-virus-status" not in t["h"].lower(), t["h"]


# ---- header indices count the fields an earlier filter added ------------------------


def test_rspamd_header_index_after_a_lua_header(proxy, client, recorder, rspamd, tmp_path):
    """rspamd inserts Authentication-Results at index 1 of the message it
    saw, which began with the header Lua added: so it lands right after
    that header, before From."""
    p = proxy(sections=[
        lua(tmp_path, "addhdr", """
            function on_data(tx, msg)
              tx:add_header("X-First", "added by lua")
            end
        """),
        milter("rspamd", rspamd)])
    send(client, p, HAM).expect(250)
    names = [k for k, _ in fields(delivered(recorder))]
    assert names[:3] == ["X-First", "Authentication-Results", "From"], names


def test_spamass_deletes_a_flag_added_by_lua(proxy, client, recorder, spamass, tmp_path):
    """A filter before spamass-milter adds X-Spam-Flag: YES; spamass-milter
    sees it and, as the message is ham, deletes it (SMFIR_CHGHEADER index
    1, empty value): the backend gets no X-Spam-Flag."""
    p = proxy(sections=[
        lua(tmp_path, "addflag", """
            function on_data(tx, msg)
              tx:add_header("X-Spam-Flag", "YES")
            end
        """),
        milter("spamassassin", spamass["mark"])])
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    assert values(data, "X-Spam-Flag") == [], data[:800]
    assert values(data, "X-Spam-Status")[0].startswith("No, score="), data[:800]


# ---- the README's recipe, as an admin copies it ----------------------------------


def readme_milters():
    """The first configuration block of the README's "Milters" section:
    [(header, {key: value})] in order, comments dropped."""
    import os

    with open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")) as f:
        text = f.read()
    section = text.split("\n## Milters\n", 1)[1]
    block = section.split("```\n", 2)[1]
    out = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"\[(\w+ \w+)\]", line)
        if m:
            out.append((m.group(1), {}))
        elif "=" in line:
            k, v = (x.strip() for x in line.split("=", 1))
            out[-1][1][k] = v
    return out


def test_readme_recipe_signs_and_scans(proxy, client, recorder, dkim, dkim_key, clam):
    """Issue 16's "done when": the README's [milter clamav] and [milter dkim]
    sections, pointed at these peers: a virus is refused, clean mail
    arrives scanned and signed."""
    sections = readme_milters()
    assert [h for h, _ in sections] == ["milter clamav", "milter dkim"], sections
    peers = {"milter clamav": clam, "milter dkim": dkim["relaxed/relaxed"]}
    for header, keys in sections:
        assert keys["socket"].startswith("inet:127.0.0.1:"), keys
        keys["socket"] = peers[header].socket
    p = proxy(sections=sections)
    send(client, p, VIRUS).expect(550, "5.7.1")
    assert recorder.delivered() == []
    send(client, p, HAM).expect(250)
    data = delivered(recorder)
    assert values(data, "X-Virus-Status") == ["Clean"], data[:800]
    assert_signed(data, dkim_key, "relaxed/relaxed")
