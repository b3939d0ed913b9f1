"""The access plugin (plugins/access.c): Postfix-style access lists for the
client address, the HELO name, the sender and the recipients.

Every test runs the real daemon with build/plugins/access.so in front of the
recording backend and talks to it over a raw socket, so the exact replies
are checked, and then asks the recorder what did (and did not) arrive."""

import os
import re
import socket
import textwrap

import pytest

from kit.proxy import Proxy, ProxyError, free_port, run_check
from kit.smtpclient import RawClient

BODY = b"Subject: access test\r\n\r\nhello\r\n"

DEFAULT_REJECT = "550 5.7.1 Rejected by policy"
DEFAULT_TEMPFAIL = "451 4.7.1 Try again later"


# ---- helpers ----------------------------------------------------------------


def write_list(tmp_path, name, text):
    """A list file from an indented block; returns its path as a str."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def access_section(tmp_path, name="plugin access", **lists):
    """(header, keys) for an access section: lists maps client, helo,
    sender and recipient to the text of that list file."""
    keys = {}
    for kind, text in lists.items():
        keys[f"{kind}_list"] = write_list(tmp_path, f"{name.replace(' ', '_')}.{kind}", text)
    return (name, keys)


def start(proxy, tmp_path, **lists):
    return proxy(sections=[access_section(tmp_path, **lists)])


def mail_verbs(recorder):
    return [c for c in recorder.commands() if c.upper().startswith("MAIL")]


def rcpt_lines(recorder):
    return [c for c in recorder.commands() if c.upper().startswith("RCPT")]


def send_good(c, recorder, sender="good@ok.test", rcpt="someone@rcpt.test"):
    """A transaction that must reach the backend: proof (by ordering) that
    whatever the client sent before it was not just still on its way."""
    c.envelope(f"{sender}", f"{rcpt}")
    c.message(BODY + b".\r\n").expect(250)
    return recorder.wait_for_transactions(1)


def last_summary(p, n=1):
    s = p.wait_summaries(n)
    assert len(s) >= n, p.log()
    return s[-1]


def line_of(path, prefix, nth=0):
    """The 1-based line of the nth line starting with prefix in a file."""
    hits = [i for i, ln in enumerate(open(path).read().splitlines(), 1) if ln.startswith(prefix)]
    return hits[nth]


def check_config(tmp_path, recorder, sections):
    """Write a config with these sections; (path, rc, output) of -t."""
    p = Proxy(tmp_path / "check", recorder.address, sections=sections)
    p.write_config()
    rc, out = run_check(p.config_path)
    return p, rc, out


def refuses_to_start(tmp_path, recorder, sections):
    """Start the daemon with this config; it must exit non-zero."""
    p = Proxy(tmp_path / "refused", recorder.address, sections=sections)
    try:
        p.start()
    except ProxyError:
        return p
    p.stop()
    pytest.fail("portcullis started with a broken access list:\n" + p.log())


# ---- sender list ---------------------------------------------------------------


def test_sender_reject_default_reply(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, sender="""
        # spammers
        bad@example.com   reject
    """)
    c = client(p)
    c.greet()
    r = c.cmd("MAIL FROM:<bad@example.com>")
    assert r.first == DEFAULT_REJECT
    # Not in a transaction: RCPT needs a new MAIL.
    c.cmd("RCPT TO:<x@rcpt.test>").expect(503)
    msgs = send_good(c, recorder)
    assert [m.sender for m in msgs] == ["good@ok.test"]
    assert all("bad@example.com" not in m for m in mail_verbs(recorder))
    assert p.wait_log(r"access: sender <bad@example\.com> matched sender_list:2 -> reject")
    s = [x for x in p.wait_summaries(2) if x.get("status") == "rejected"]
    assert s, p.log()
    assert s[0]["stage"] == "mail" and s[0]["by"] == "access"
    assert s[0]["reply"] == DEFAULT_REJECT


@pytest.mark.parametrize(
    "reply,expected",
    [
        ("554 5.7.1 We do not want your mail", "554 5.7.1 We do not want your mail"),
        ("5.7.0 go away", "550 5.7.0 go away"),
        ("go away, spammer", "550 5.7.1 go away, spammer"),
    ],
    ids=["full", "enhanced", "text"],
)
def test_sender_reject_custom_reply(recorder, proxy, client, tmp_path, reply, expected):
    p = start(proxy, tmp_path, sender=f"spam.example reject {reply}\n")
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<someone@spam.example>").first == expected
    send_good(c, recorder)
    assert len(mail_verbs(recorder)) == 1


def test_sender_tempfail(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, sender="slow.example tempfail\nlater.example tempfail 4.7.2 come back later\n")
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@slow.example>").first == DEFAULT_TEMPFAIL
    assert c.cmd("MAIL FROM:<a@later.example>").first == "451 4.7.2 come back later"
    send_good(c, recorder)
    assert len(mail_verbs(recorder)) == 1
    s = [x for x in p.wait_summaries(3) if x.get("status") == "tempfail"]
    assert len(s) == 2 and all(x["stage"] == "mail" and x["by"] == "access" for x in s), p.log()


def test_sender_disconnect(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, sender="evil.example disconnect\n")
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<x@evil.example>").first == "421 4.7.0 proxy.test Closing connection"
    assert c.closed()
    assert mail_verbs(recorder) == []


def test_sender_drop_whole_transaction(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, sender="blackhole.example drop\n")
    c = client(p)
    c.greet()
    c.envelope("x@blackhole.example", "lost1@rcpt.test", "lost2@rcpt.test")
    c.message(BODY + b".\r\n").expect(250)
    s = last_summary(p)
    assert s["status"] == "dropped" and s["stage"] == "mail" and s["by"] == "access", s
    # The next transaction is a normal one, and the only one the backend saw.
    msgs = send_good(c, recorder)
    assert [m.sender for m in msgs] == ["good@ok.test"]
    assert all("blackhole" not in m for m in mail_verbs(recorder))
    assert all("lost" not in r for r in rcpt_lines(recorder))


def test_sender_accept_skips_later_filters_but_backend_decides(recorder, proxy, client, tmp_path):
    recorder.reply("MAIL", "550 5.1.8 backend dislikes this sender", match="friend@backend-no.test")
    p = proxy(
        sections=[
            access_section(tmp_path, sender="friend@ok.test accept\nfriend@backend-no.test accept\n"),
            access_section(tmp_path, name="access strict", sender="ok.test reject 550 5.7.1 strict\n"
                           "backend-no.test reject\n"),
        ]
    )
    c = client(p)
    c.greet()
    # accept: the second instance is not asked; the backend says 250.
    c.cmd("MAIL FROM:<friend@ok.test>").expect(250)
    c.cmd("RSET").expect(250)
    # Not accepted by the first: the second one rejects.
    assert c.cmd("MAIL FROM:<other@ok.test>").first == "550 5.7.1 strict"
    # accept is not delivery: the backend's 550 still reaches the client.
    assert c.cmd("MAIL FROM:<friend@backend-no.test>").first == "550 5.1.8 backend dislikes this sender"
    senders = [re.search(r"<([^>]*)>", m).group(1) for m in mail_verbs(recorder)]
    assert senders == ["friend@ok.test", "friend@backend-no.test"]
    assert p.wait_log(r"matched sender_list:1 -> accept")


def test_sender_address_forms(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, sender="""
        Bad@Example.COM        reject 550 5.7.1 whole address
        example.net            reject 550 5.7.1 domain
        .example.org           reject 550 5.7.1 subdomains
        noreply@               reject 550 5.7.1 local part
    """)
    c = client(p)
    c.greet()
    cases = [
        ("bAD@example.com", "550 5.7.1 whole address"),
        ("good@example.com", None),
        ("x@example.net", "550 5.7.1 domain"),
        ("x@EXAMPLE.NET", "550 5.7.1 domain"),
        ("x@sub.example.net", None),  # a domain entry does not cover its subdomains
        ("x@example.org", None),  # a .domain entry does not cover the domain itself
        ("x@a.example.org", "550 5.7.1 subdomains"),
        ("x@b.a.example.org", "550 5.7.1 subdomains"),
        ("x@notexample.org", None),
        ("noreply@anywhere.test", "550 5.7.1 local part"),
        ("NoReply@elsewhere.test", "550 5.7.1 local part"),
        ("noreplyx@anywhere.test", None),
    ]
    for sender, want in cases:
        r = c.cmd(f"MAIL FROM:<{sender}>")
        if want is None:
            assert r.code == 250, (sender, r)
            c.cmd("RSET").expect(250)
        else:
            assert r.first == want, (sender, r)
    passed = [re.search(r"<([^>]*)>", m).group(1) for m in mail_verbs(recorder)]
    assert passed == [s for s, w in cases if w is None]


def test_sender_regex_and_case(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, sender=r"""
        /^spam[0-9]+@/i            reject 550 5.7.1 numbered spammer
        /^Caps@/                   reject 550 5.7.1 case matters
        /@(mx|mail)\.bulk\.test$/  tempfail
    """)
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<SPAM42@x.test>").first == "550 5.7.1 numbered spammer"
    assert c.cmd("MAIL FROM:<spam7@y.test>").first == "550 5.7.1 numbered spammer"
    assert c.cmd("MAIL FROM:<Caps@x.test>").first == "550 5.7.1 case matters"
    assert c.cmd("MAIL FROM:<x@mail.bulk.test>").first == DEFAULT_TEMPFAIL
    c.cmd("MAIL FROM:<spam@x.test>").expect(250)
    c.cmd("RSET").expect(250)
    c.cmd("MAIL FROM:<caps@x.test>").expect(250)
    c.cmd("RSET").expect(250)
    c.cmd("MAIL FROM:<x@www.bulk.test>").expect(250)
    assert len(mail_verbs(recorder)) == 3


def test_null_sender(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, sender="<>  reject 550 5.7.1 No bounces here\n")
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<>").first == "550 5.7.1 No bounces here"
    send_good(c, recorder)
    assert len(mail_verbs(recorder)) == 1
    assert p.wait_log(r"access: sender <> matched sender_list:1 -> reject")


def test_regex_sees_null_sender_as_empty(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, sender="/^$/ reject 550 5.7.1 empty\n")
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<>").first == "550 5.7.1 empty"
    c.cmd("MAIL FROM:<a@b.test>").expect(250)


def test_first_matching_line_wins(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, sender="""
        ok@spam.example      accept
        spam.example         reject 550 5.7.1 line two
        /^vip@/              tempfail
        vip@vip.example      accept
        .spam.example        reject 550 5.7.1 line five
        /@x\\.spam\\.example$/ accept
    """)
    c = client(p)
    c.greet()
    # exact address (line 1) before the domain (line 2)
    c.cmd("MAIL FROM:<ok@spam.example>").expect(250)
    c.cmd("RSET").expect(250)
    assert c.cmd("MAIL FROM:<other@spam.example>").first == "550 5.7.1 line two"
    # a regex (line 3) before an exact address (line 4)
    assert c.cmd("MAIL FROM:<vip@vip.example>").first == DEFAULT_TEMPFAIL
    # a .domain (line 5) before a regex (line 6)
    assert c.cmd("MAIL FROM:<a@x.spam.example>").first == "550 5.7.1 line five"
    assert p.wait_log(r"sender <vip@vip\.example> matched sender_list:3 -> tempfail")


def test_first_match_order_reversed(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, sender="spam.example reject\nok@spam.example accept\n")
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<ok@spam.example>").first == DEFAULT_REJECT
    assert mail_verbs(recorder) == []


# ---- recipient list ---------------------------------------------------------------


def test_recipient_reject_and_tempfail(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, recipient="""
        closed@rcpt.test   reject 550 5.1.1 Mailbox closed
        abuse@             reject
        busy@rcpt.test     tempfail
    """)
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@sender.test>").expect(250)
    assert c.cmd("RCPT TO:<closed@rcpt.test>").first == "550 5.1.1 Mailbox closed"
    assert c.cmd("RCPT TO:<Abuse@Anywhere.test>").first == DEFAULT_REJECT
    assert c.cmd("RCPT TO:<busy@rcpt.test>").first == DEFAULT_TEMPFAIL
    c.cmd("RCPT TO:<open@rcpt.test>").expect(250)
    c.message(BODY + b".\r\n").expect(250)
    t = recorder.wait_for_transactions(1)[0]
    assert t.recipients == ["open@rcpt.test"]
    assert t.data == BODY
    assert p.wait_log(r"access: recipient <Abuse@Anywhere\.test> matched recipient_list:2 -> reject")
    s = last_summary(p)
    assert s["status"] == "sent"
    assert "closed@" not in s.get("to", "") and "open@rcpt.test" in s.get("to", "")


def test_recipient_without_domain_matches_local_part(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, recipient="postmaster@ reject 550 5.7.1 not here\n")
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@sender.test>").expect(250)
    assert c.cmd("RCPT TO:<postmaster>").first == "550 5.7.1 not here"
    assert c.cmd("RCPT TO:<PostMaster@rcpt.test>").first == "550 5.7.1 not here"
    assert rcpt_lines(recorder) == []


def test_recipient_drop(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, recipient="ghost@rcpt.test drop\n")
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@sender.test>").expect(250)
    assert c.cmd("RCPT TO:<ghost@rcpt.test>").first == "250 2.1.5 Ok"
    c.cmd("RCPT TO:<real@rcpt.test>").expect(250)
    c.message(BODY + b".\r\n").expect(250)
    t = recorder.wait_for_transactions(1)[0]
    assert t.recipients == ["real@rcpt.test"]
    assert all("ghost" not in r for r in rcpt_lines(recorder))


def test_recipient_disconnect(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, recipient="trap@rcpt.test disconnect 421 4.7.0 spam trap hit\n")
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@sender.test>").expect(250)
    assert c.cmd("RCPT TO:<trap@rcpt.test>").first == "421 4.7.0 spam trap hit"
    assert c.closed()
    assert rcpt_lines(recorder) == []
    assert recorder.messages() == []


def test_recipient_accept_still_asks_backend(recorder, proxy, client, tmp_path):
    recorder.reply("RCPT", "550 5.1.1 no such user", match="vip@")
    p = start(proxy, tmp_path, recipient="vip@rcpt.test accept\n")
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@sender.test>").expect(250)
    assert c.cmd("RCPT TO:<vip@rcpt.test>").first == "550 5.1.1 no such user"
    assert rcpt_lines(recorder) == ["RCPT TO:<vip@rcpt.test>"]


# ---- client list -------------------------------------------------------------------


def test_client_reject_at_connect(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, client="""
        # nobody from here
        127.0.0.0/8 reject
    """)
    c = client(p)
    assert c.banner().first == "554 5.7.1 Rejected by policy"
    # Every later command but QUIT and NOOP gets the same reply.
    assert c.cmd("EHLO client.test").first == "554 5.7.1 Rejected by policy"
    assert c.cmd("MAIL FROM:<a@sender.test>").first == "554 5.7.1 Rejected by policy"
    c.cmd("NOOP").expect(250)
    c.cmd("QUIT").expect(221)
    assert c.closed()
    assert mail_verbs(recorder) == []
    assert p.wait_log(r"access: client 127\.0\.0\.1 matched client_list:2 -> reject")


def test_client_reject_custom_reply(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, client="127.0.0.1 reject 554 5.7.1 Your network is blocked\n")
    c = client(p)
    assert c.banner().first == "554 5.7.1 Your network is blocked"
    c.cmd("QUIT").expect(221)


def test_client_tempfail_at_connect(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, client="127.0.0.1/32 tempfail\n")
    c = client(p)
    assert c.banner().first == "421 4.7.1 proxy.test Try again later"
    assert c.closed()
    assert mail_verbs(recorder) == []


def test_client_disconnect_at_connect(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, client="127.0.0.0/24 disconnect\n")
    c = client(p)
    assert c.banner().first == "421 4.7.0 proxy.test Closing connection"
    assert c.closed()


def test_client_drop_whole_session(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, client="127.0.0.1 drop\n")
    c = client(p)
    c.banner().expect(220)
    c.cmd("EHLO client.test").expect(250)
    c.envelope("a@sender.test", "b@rcpt.test")
    c.message(BODY + b".\r\n").expect(250)
    c.cmd("QUIT").expect(221)
    assert c.closed()
    assert mail_verbs(recorder) == []
    assert recorder.messages() == []


def test_client_no_match_and_order(recorder, proxy, client, tmp_path):
    # 127.0.0.1 is in the /8 on line 2 (accept), which comes before the exact
    # reject on line 3; 10/8 and the IPv6 block do not apply.
    p = start(proxy, tmp_path, client="""
        10.0.0.0/8     reject
        127.0.0.0/8    accept
        127.0.0.1      reject
        2001:db8::/32  reject
        ::/0           reject
    """)
    c = client(p)
    c.greet()
    send_good(c, recorder)
    assert p.wait_log(r"client 127\.0\.0\.1 matched client_list:2 -> accept")


def test_client_exact_before_cidr(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, client="127.0.0.1 reject 554 5.7.1 exact\n127.0.0.0/8 accept\n")
    c = client(p)
    assert c.banner().first == "554 5.7.1 exact"


def _ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_client_ipv6_cidr_on_the_wire(recorder, tmp_path):
    port6 = free_port()
    section = access_section(tmp_path, client="""
        2001:db8::/32   reject 554 5.7.1 documentation
        ::1/128         reject 554 5.7.1 loopback six
        127.0.0.0/8     reject 554 5.7.1 loopback four
    """)
    # Built by hand: the kit's proxy fixture listens on one IPv4 port only.
    p = Proxy(tmp_path / "v6", recorder.address, sections=[section])
    p.settings["listen"] = [f"127.0.0.1:{p.port}", f"[::1]:{port6}"]
    p.start()
    try:
        with RawClient(port6, host="::1") as c6:
            assert c6.banner().first == "554 5.7.1 loopback six"
        with RawClient(p.port) as c4:
            assert c4.banner().first == "554 5.7.1 loopback four"
        assert p.wait_log(r"access: client ::1 matched client_list:2 -> reject"), p.log()
    finally:
        rc = p.stop()
    assert rc == 0 and not p.sanitizer_reports(), p.log()


# ---- helo list ---------------------------------------------------------------------


def test_helo_list(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, helo=r"""
        Bad.Example              reject 550 5.7.1 exact name
        .dyn.example             tempfail
        /^\[?[0-9.]+\]?$/        reject 550 5.7.1 no bare addresses
        /^localhost$/i           disconnect
    """)
    c = client(p)
    c.banner().expect(220)
    assert c.cmd("EHLO bad.example").first == "550 5.7.1 exact name"
    assert c.cmd("HELO BAD.EXAMPLE").first == "550 5.7.1 exact name"
    assert c.cmd("EHLO host1.dyn.example").first == DEFAULT_TEMPFAIL
    assert c.cmd("EHLO 192.0.2.1").first == "550 5.7.1 no bare addresses"
    assert c.cmd("EHLO [192.0.2.1]").first == "550 5.7.1 no bare addresses"
    # neither a subdomain of bad.example nor dyn.example itself
    c.cmd("EHLO x.bad.example").expect(250)
    c.cmd("EHLO dyn.example").expect(250)
    send_good(c, recorder)
    assert p.wait_log(r"access: helo host1\.dyn\.example matched helo_list:2 -> tempfail")
    assert c.cmd("EHLO LocalHost").first == "421 4.7.0 proxy.test Closing connection"
    assert c.closed()


def test_helo_drop_whole_session(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, helo="spammer.example drop\n")
    c = client(p)
    c.banner().expect(220)
    c.cmd("EHLO spammer.example").expect(250)
    c.envelope("a@sender.test", "b@rcpt.test")
    c.message(BODY + b".\r\n").expect(250)
    c.cmd("QUIT").expect(221)
    assert mail_verbs(recorder) == []
    assert recorder.messages() == []


# ---- all four lists and the instance name ------------------------------------------


def test_all_lists_in_one_named_instance(recorder, proxy, client, tmp_path):
    p = proxy(
        sections=[
            access_section(
                tmp_path,
                name="access blocklist",
                client="192.0.2.0/24 reject\n",
                helo="evil.example reject\n",
                sender="evil.example reject\n",
                recipient="evil.example reject\n",
            )
        ]
    )
    c = client(p)
    c.banner().expect(220)
    assert c.cmd("EHLO evil.example").first == DEFAULT_REJECT
    c.cmd("EHLO fine.example").expect(250)
    assert c.cmd("MAIL FROM:<a@evil.example>").first == DEFAULT_REJECT
    c.cmd("MAIL FROM:<a@fine.example>").expect(250)
    assert c.cmd("RCPT TO:<b@evil.example>").first == DEFAULT_REJECT
    c.cmd("RCPT TO:<b@fine.example>").expect(250)
    c.message(BODY + b".\r\n").expect(250)
    t = recorder.wait_for_transactions(1)[0]
    assert t.sender == "a@fine.example" and t.recipients == ["b@fine.example"]
    s = [x for x in p.wait_summaries(2) if x.get("status") == "rejected"]
    assert s and s[0]["by"] == "blocklist", p.log()


# ---- configuration errors -----------------------------------------------------------

BAD_LISTS = [
    # (list kind, file text, bad line in the list file, part of the message)
    ("client", "192.0.2.0/24 reject\n192.0.2.0/33 reject\n", 2, "bad CIDR"),
    ("client", "192.0.2.1/24 reject\n", 1, "192.0.2.1/24"),
    ("client", "not-an-address reject\n", 1, "bad address"),
    ("client", "2001:db8::/200 reject\n", 1, "bad CIDR"),
    ("client", "2001:db8:::1 reject\n", 1, "bad address"),
    ("client", "/^127/ reject\n", 1, "not allowed in client_list"),
    ("helo", "# fine\n\n/([a-z]/ reject\n", 3, "bad regular expression"),
    ("sender", "a@b.test reject\n\n# x\nspam.example rejct\n", 4, 'unknown action "rejct"'),
    ("sender", "spam.example\n", 1, "has no action"),
    ("sender", "/unterminated reject\n", 1, "no closing"),
    ("sender", "spam.example reject 450 4.7.1 wrong class\n", 1, "5xx"),
    ("sender", "spam.example tempfail 5.7.1 wrong class\n", 1, "4.Y.Z"),
    ("sender", "spam.example accept 250 ok\n", 1, "take a reply"),
    ("sender", "a@b.test reject\nspam.example reject 550 5.7.1 a\tb\n", 2, "control character"),
    ("sender", "<spam@example.com> reject\n", 1, "without <>"),
    ("recipient", "<> reject\n", 1, "only makes sense in sender_list"),
]


@pytest.mark.parametrize("kind,text,bad_line,message", BAD_LISTS)
def test_bad_list_file(recorder, tmp_path, kind, text, bad_line, message):
    section = access_section(tmp_path, **{kind: text})
    list_path = section[1][f"{kind}_list"]
    p, rc, out = check_config(tmp_path, recorder, [section])
    assert rc != 0, out
    key_line = line_of(p.config_path, f"{kind}_list =")
    # file:line of the config key, then the list file and its line
    assert re.search(rf"^{re.escape(p.config_path)}:{key_line}: .*{kind}_list "
                     rf"{re.escape(list_path)}:{bad_line}: ", out, re.M), out
    assert message in out, out
    assert "AddressSanitizer" not in out and "runtime error" not in out
    refuses_to_start(tmp_path, recorder, [section])


def test_bad_regex_reports_regerror(recorder, tmp_path):
    section = access_section(tmp_path, sender="/a{2,1}/ reject\n")
    _, rc, out = check_config(tmp_path, recorder, [section])
    assert rc != 0
    # glibc's regerror text for a bad interval
    assert re.search(r"bad regular expression /a\{2,1\}/: \S", out), out


def test_missing_list_file(recorder, tmp_path):
    missing = str(tmp_path / "no-such-file")
    section = ("plugin access", {"sender_list": missing})
    p, rc, out = check_config(tmp_path, recorder, [section])
    assert rc != 0
    key_line = line_of(p.config_path, "sender_list =")
    assert re.search(rf"^{re.escape(p.config_path)}:{key_line}: .*sender_list {re.escape(missing)}: "
                     r"cannot open: No such file or directory", out, re.M), out
    refuses_to_start(tmp_path, recorder, [section])


def test_unreadable_list_file(recorder, tmp_path):
    # We run as root, so mode 000 does not stop us: a directory cannot be
    # read as a file by anyone.
    d = tmp_path / "a-directory"
    d.mkdir()
    section = ("plugin access", {"recipient_list": str(d)})
    p, rc, out = check_config(tmp_path, recorder, [section])
    assert rc != 0
    key_line = line_of(p.config_path, "recipient_list =")
    assert re.search(rf"^{re.escape(p.config_path)}:{key_line}: .*recipient_list {re.escape(str(d))}: "
                     r"cannot read", out, re.M), out
    if os.geteuid() != 0:
        f = tmp_path / "secret"
        f.write_text("a@b.test reject\n")
        f.chmod(0)
        _, rc, out = check_config(tmp_path, recorder, [("plugin access", {"sender_list": str(f)})])
        assert rc != 0 and "Permission denied" in out


def test_no_list_at_all(recorder, tmp_path):
    p, rc, out = check_config(tmp_path, recorder, [("plugin access", {})])
    assert rc != 0
    section_line = line_of(p.config_path, "[plugin access]")
    assert re.search(rf"^{re.escape(p.config_path)}:{section_line}: .*no list given", out, re.M), out


def test_unknown_key_refused(recorder, tmp_path):
    lst = write_list(tmp_path, "s", "a@b.test reject\n")
    p, rc, out = check_config(tmp_path, recorder,
                              [("plugin access", {"sender_list": lst, "default_reply": "x"})])
    assert rc != 0
    key_line = line_of(p.config_path, "default_reply =")
    assert re.search(rf"^{re.escape(p.config_path)}:{key_line}: .*unknown key", out, re.M), out


def test_same_list_twice_refused(recorder, tmp_path):
    lst = write_list(tmp_path, "s", "a@b.test reject\n")
    p = Proxy(tmp_path / "check", recorder.address, sections=[("plugin access", {"sender_list": lst})])
    p.write_config()
    with open(p.config_path, "a") as f:
        f.write(f"sender_list = {lst}\n")
    rc, out = run_check(p.config_path)
    assert rc != 0
    key_line = line_of(p.config_path, "sender_list =", 1)
    assert re.search(rf"^{re.escape(p.config_path)}:{key_line}: .*given twice", out, re.M), out


def test_good_lists_pass_check(recorder, tmp_path):
    """Every pattern form, IPv6 included, passes -t."""
    section = access_section(
        tmp_path,
        client="""
            192.0.2.7                 reject
            192.0.2.0/24              tempfail 421 4.7.0 later
            0.0.0.0/0                 accept
            2001:db8::1               reject
            2001:db8::/32             reject 554 5.7.1 v6 block
            ::ffff:198.51.100.0/120   drop
            ::/0                      accept
        """,
        helo=r"""
            host.example     reject
            .example         accept
            /^[0-9.]+$/      reject
            /a b\/c/i        drop
        """,
        sender="""
            user@example.com  reject
            example.com       reject 5.7.1 nope
            .example.com      tempfail
            user@             disconnect
            <>                accept
            /^x/i             drop
            A@B.TEST          REJECT
        """,
        recipient="abuse@ accept\n",
    )
    _, rc, out = check_config(tmp_path, recorder, [section])
    assert rc == 0, out


def test_duplicate_pattern_first_wins(recorder, proxy, client, tmp_path):
    p = start(proxy, tmp_path, sender="dup.example reject 550 5.7.1 first\nDUP.example accept\n")
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<a@dup.example>").first == "550 5.7.1 first"
    assert p.wait_log(r"sender_list \S+:2: duplicate pattern, line 1 wins")
