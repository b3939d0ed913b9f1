"""The shipped Lua examples (lua/examples/*.lua), each run as-is by the Lua
host (build/plugins/lua.so) through real SMTP: what the client is told, and
what the recording backend received - or did not.

policy.lua  sender domains refused from a list (subdomains too), recipients
            accepted only from a list (addresses and @domain entries); list
            files are written by each test into its tmp_path; reload.
dnsbl.lua   the client looked up at connect in blocklists served by
            kit.dnsserver, refused at RCPT except for postmaster/abuse;
            trusted networks not looked up; lookup failures block nobody.
content.lua header rules, the score header, reject and tempfail thresholds.
"""

import os
import re
import signal

import pytest

import kit.proxy as kp
from kit.messages import stuff
from kit.proxy import Proxy, ProxyError, run_check

EXAMPLES = os.path.join(kp.REPO, "lua", "examples")
POLICY = os.path.join(EXAMPLES, "policy.lua")
DNSBL = os.path.join(EXAMPLES, "dnsbl.lua")
CONTENT = os.path.join(EXAMPLES, "content.lua")
BOUND = 10.0

# 127.0.0.1 in a DNSBL zone: the test client always comes from there.
CLIENT_IP = "127.0.0.1"
CLIENT_REV = "1.0.0.127"


def message(subject="Lunch on Friday?", date=True, extra=()):
    """A small message; with date, Date and Message-ID are present so that
    content.lua's MISSING_* rules do not fire."""
    head = ["From: <a@sender.test>", "To: <b@rcpt.test>", f"Subject: {subject}"]
    if date:
        head += ["Date: Mon, 23 Nov 2026 10:00:00 +0000", "Message-ID: <1.2@sender.test>"]
    head += list(extra)
    return ("\r\n".join(head) + "\r\n\r\nHello.\r\n.a line with a leading dot\r\nBye.\r\n").encode()


BODY = message()


def transaction(c, sender, rcpts, body=BODY):
    """MAIL, each RCPT, then DATA and the message if any recipient got 250.
    Returns (MAIL reply, [RCPT replies], end-of-data reply or None)."""
    m = c.cmd(f"MAIL FROM:<{sender}>")
    if m.code != 250:
        return m, [], None
    rs = [c.cmd(f"RCPT TO:<{r}>") for r in rcpts]
    if not any(r.code == 250 for r in rs):
        c.cmd("RSET").expect(250)
        return m, rs, None
    return m, rs, c.message(stuff(body) + b".\r\n")


def lua(name, script, **keys):
    """A [lua NAME] section running script with config keys."""
    d = {"script": script}
    d.update(keys)
    return (f"lua {name}", d)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def delivered_one(recorder, rcpts, body=BODY):
    msgs = recorder.wait_for_transactions(1, timeout=BOUND)
    assert len(msgs) == 1, msgs
    t = msgs[0]
    assert t.completed, t
    assert t.accepted_rcpts == list(rcpts)
    return t


def wait_log(p, pattern):
    found = p.wait_log(pattern, timeout=BOUND)
    assert found, f"no log line matching {pattern!r}:\n{p.log()}"
    return found


# ---- policy.lua ---------------------------------------------------------------

SENDERS = """\
# Sender domains we never take mail from.
spam.example
  Bulk-Mail.TEST   # case does not matter; a comment after an entry

@at-sign.example
"""

RECIPIENTS = """\
# Our users.
alice@example.com
Bob@Example.com
postmaster@example.com
# every address at this domain (not its subdomains)
@lists.example.com
"""


@pytest.fixture
def lists(tmp_path):
    return {
        "sender_domains": write(tmp_path / "bad-senders", SENDERS),
        "recipients": write(tmp_path / "recipients", RECIPIENTS),
    }


@pytest.mark.parametrize(
    "sender",
    ["x@spam.example", "x@SPAM.Example", "x@mx1.spam.example", "x@a.b.spam.example", "x@bulk-mail.test",
     "x@at-sign.example"],
)
def test_policy_refuses_listed_sender_domains(recorder, proxy, client, lists, sender):
    p = proxy(sections=[lua("policy", POLICY, **lists)])
    c = client(p)
    c.greet()
    r = c.cmd(f"MAIL FROM:<{sender}>")
    assert r.first == "550 5.7.1 Mail from this domain is not accepted here", r
    # The session goes on: a good sender right after is served normally.
    mail, rcpts, data = transaction(c, "x@good.example", ["alice@example.com"])
    assert mail.code == 250 and data.code == 250, (mail, rcpts, data)
    t = delivered_one(recorder, ["alice@example.com"])
    assert t.sender == "x@good.example"
    assert t.data == stuff(BODY)
    # The refused MAIL never reached the backend.
    assert [m for m in recorder.commands() if m.upper().startswith("MAIL")] == ["MAIL FROM:<x@good.example>"]
    s = p.wait_summaries(2, timeout=BOUND)
    refused = [x for x in s if x.get("status") == "rejected"]
    assert refused and refused[0]["stage"] == "mail" and refused[0]["by"] == "policy", s
    wait_log(p, r"\[policy\] sender <[^>]+> refused: domain (spam\.example|bulk-mail\.test|at-sign\.example) is listed")


@pytest.mark.parametrize("sender", ["x@notspam.example", "x@spam.example.org", "x@example", "spam.example@good.test", ""])
def test_policy_lets_other_senders_through(recorder, proxy, client, lists, sender):
    p = proxy(sections=[lua("policy", POLICY, **lists)])
    c = client(p)
    c.greet()
    mail, rcpts, data = transaction(c, sender, ["alice@example.com"])
    assert mail.code == 250, mail
    assert data is not None and data.code == 250, (rcpts, data)
    t = delivered_one(recorder, ["alice@example.com"])
    assert t.sender == sender
    assert t.data == stuff(BODY)


def test_policy_accepts_only_known_recipients(recorder, proxy, client, lists):
    p = proxy(sections=[lua("policy", POLICY, **lists)])
    c = client(p)
    c.greet()
    rcpts = [
        "alice@example.com",  # listed
        "ALICE@example.com",  # case does not matter
        "bob@EXAMPLE.COM",  # listed as Bob@Example.com
        "carol@example.com",  # not listed
        "anyone@lists.example.com",  # @domain entry
        "x@sub.lists.example.com",  # not a subdomain match
        "postmaster@example.com",
        "postmaster@other.example",  # only example.com's is listed
    ]
    mail, rs, data = transaction(c, "x@good.example", rcpts)
    codes = dict(zip(rcpts, rs))
    for a in ("alice@example.com", "ALICE@example.com", "bob@EXAMPLE.COM", "anyone@lists.example.com",
              "postmaster@example.com"):
        assert codes[a].code == 250, (a, codes[a])
    for a in ("carol@example.com", "x@sub.lists.example.com", "postmaster@other.example"):
        assert codes[a].first == f"550 5.1.1 <{a}>: User unknown", (a, codes[a])
    assert data.code == 250, data
    t = delivered_one(
        recorder,
        ["alice@example.com", "ALICE@example.com", "bob@EXAMPLE.COM", "anyone@lists.example.com",
         "postmaster@example.com"],
    )
    # The backend never heard of the unknown ones.
    assert t.recipients == t.accepted_rcpts, t.rcpts
    assert t.data == stuff(BODY)
    wait_log(p, r"\[policy\] recipient <carol@example\.com> refused: not on the recipients list")
    wait_log(p, r"to=<carol@example\.com> rejected at rcpt by=policy")


def test_policy_all_recipients_unknown_nothing_sent(recorder, proxy, client, lists):
    p = proxy(sections=[lua("policy", POLICY, **lists)])
    c = client(p)
    c.greet()
    mail, rs, data = transaction(c, "x@good.example", ["nobody@example.com", "ghost@example.net"])
    assert [r.code for r in rs] == [550, 550]
    assert data is None
    assert c.cmd("DATA").code in (503, 554)
    assert "RCPT" not in recorder.verbs() and "DATA" not in recorder.verbs()
    assert recorder.messages() == []


def test_policy_list_files_with_crlf_line_ends(recorder, proxy, client, tmp_path):
    senders = write(tmp_path / "senders", "")
    with open(senders, "wb") as f:
        f.write(b"# windows\r\nspam.example\r\n\r\njunk.test # x\r\n")
    rcpts = str(tmp_path / "rcpts")
    with open(rcpts, "wb") as f:
        f.write(b"alice@example.com\r\n@lists.example.com\r\n")
    p = proxy(sections=[lua("policy", POLICY, sender_domains=senders, recipients=rcpts)])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<x@junk.test>").code == 550
    mail, rs, data = transaction(c, "x@good.example", ["alice@example.com", "a@lists.example.com", "z@example.com"])
    assert [r.code for r in rs] == [250, 250, 550]
    delivered_one(recorder, ["alice@example.com", "a@lists.example.com"])


def test_policy_without_lists_checks_nothing(recorder, proxy, client):
    p = proxy(sections=[lua("policy", POLICY)])
    c = client(p)
    c.greet()
    mail, rs, data = transaction(c, "x@spam.example", ["whoever@anywhere.test"])
    assert data.code == 250
    delivered_one(recorder, ["whoever@anywhere.test"])


def test_policy_lists_on_the_config_line(recorder, proxy, client):
    # A value without a "/" is the list itself.
    p = proxy(sections=[lua("policy", POLICY, sender_domains="spam.example junk.test",
                            recipients="alice@example.com @lists.example.com")])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<x@mx.junk.test>").code == 550
    mail, rs, data = transaction(c, "x@good.example", ["alice@example.com", "bob@example.com", "z@lists.example.com"])
    assert [r.code for r in rs] == [250, 550, 250]
    assert data.code == 250
    delivered_one(recorder, ["alice@example.com", "z@lists.example.com"])


def test_policy_reply_texts_are_configurable(recorder, proxy, client, lists):
    p = proxy(sections=[lua("policy", POLICY, sender_reply="Go away", recipient_reply="No such mailbox here",
                            **lists)])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<x@spam.example>").first == "550 5.7.1 Go away"
    c.cmd("MAIL FROM:<x@good.example>").expect(250)
    assert c.cmd("RCPT TO:<zed@example.com>").first == "550 5.1.1 <zed@example.com>: No such mailbox here"


def _refused(recorder, tmp_path, sections, **settings):
    """A proxy that must refuse to start; returns (start log, -t output)."""
    p = Proxy(str(tmp_path / "refused"), recorder.address, sections=sections, **settings)
    with pytest.raises(ProxyError):
        p.start()
    p.stop()
    assert p.returncode != 0
    log = p.log()
    assert not p.sanitizer_reports(), log
    rc, out = run_check(p.config_path)
    assert rc != 0, out
    return log, out


def test_policy_missing_list_file_stops_the_start(recorder, tmp_path):
    missing = str(tmp_path / "no-such-file")
    log, out = _refused(recorder, tmp_path, [lua("policy", POLICY, sender_domains=missing)])
    for text in (log, out):
        assert "[lua policy]" in text and "policy.lua" in text, text
        assert "sender_domains" in text and "no-such-file" in text, text


def test_policy_bad_recipient_entry_stops_the_start(recorder, tmp_path):
    bad = write(tmp_path / "rcpts", "alice@example.com\njustaname\n")
    log, out = _refused(recorder, tmp_path, [lua("policy", POLICY, recipients=bad)])
    assert "recipients: not an address or @domain: justaname" in out, out


def test_policy_reload_reads_the_lists_again(recorder, proxy, client, tmp_path, lists):
    p = proxy(sections=[lua("policy", POLICY, **lists)])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<x@new-spam.example>").expect(250)
    c.cmd("RSET").expect(250)

    write(lists["sender_domains"], SENDERS + "new-spam.example\n")
    p.signal(signal.SIGHUP)
    wait_log(p, r"SIGHUP: 1 filter\(s\) reloaded, 0 failed")
    # New sessions see the new list.
    c2 = client(p)
    c2.greet()
    assert c2.cmd("MAIL FROM:<x@new-spam.example>").code == 550
    # The session opened before the reload finishes on the old script.
    assert c.cmd("MAIL FROM:<x@new-spam.example>").code == 250

    # A list that cannot be read on reload: the old one keeps serving.
    os.unlink(lists["sender_domains"])
    p.signal(signal.SIGHUP)
    wait_log(p, r"reload of \[lua policy\] failed, keeping the old one: .*sender_domains")
    wait_log(p, r"SIGHUP: 0 filter\(s\) reloaded, 1 failed")
    c3 = client(p)
    c3.greet()
    assert c3.cmd("MAIL FROM:<x@new-spam.example>").code == 550
    assert c3.cmd("MAIL FROM:<x@good.example>").code == 250
    assert p.alive()


# ---- dnsbl.lua ----------------------------------------------------------------


def dnsbl_proxy(proxy, dns, **keys):
    keys.setdefault("trusted", "192.0.2.0/24")  # not us: the test client is 127.0.0.1
    return proxy(dns_server=dns.address, dns_timeout="1s", sections=[lua("dnsbl", DNSBL, **keys)])


def test_dnsbl_listed_client_refused_at_rcpt(recorder, proxy, client, dns):
    dns.listing("bl.test", CLIENT_IP)
    p = dnsbl_proxy(proxy, dns, zones="bl.test")
    c = client(p)
    c.greet()
    wanted = ["someone@example.com", "postmaster@example.com", "Abuse@example.net", "other@example.com"]
    mail, rs, data = transaction(c, "x@sender.test", wanted)
    assert mail.code == 250
    text = f"554 5.7.1 Service unavailable; client host [{CLIENT_IP}] blocked using bl.test"
    assert rs[0].first == text and rs[3].first == text, rs
    # postmaster and abuse stay reachable (allow_rcpt), in any case.
    assert rs[1].code == 250 and rs[2].code == 250, rs
    assert data.code == 250
    t = delivered_one(recorder, ["postmaster@example.com", "Abuse@example.net"])
    assert t.recipients == ["postmaster@example.com", "Abuse@example.net"]
    assert t.data == stuff(BODY)
    assert dns.questions(name=f"{CLIENT_REV}.bl.test", qtype="A")
    wait_log(p, r"\[dnsbl\] 127\.0\.0\.1 is listed in bl\.test \(127\.0\.0\.2\)")
    wait_log(p, r"\[dnsbl\] refusing <someone@example\.com> from 127\.0\.0\.1, listed in bl\.test")
    wait_log(p, r"letting <postmaster@example\.com> through \(allow_rcpt\)")
    wait_log(p, r"to=<someone@example\.com> rejected at rcpt by=dnsbl")


def test_dnsbl_clean_client_passes(recorder, proxy, client, dns):
    dns.listing("bl.test", "192.0.2.99")  # someone else
    p = dnsbl_proxy(proxy, dns, zones="bl.test")
    c = client(p)
    c.greet()
    mail, rs, data = transaction(c, "x@sender.test", ["someone@example.com"])
    assert data.code == 250
    delivered_one(recorder, ["someone@example.com"])
    # Asked once, at connect.
    assert len(dns.questions(name=f"{CLIENT_REV}.bl.test")) == 1
    assert "is listed" not in p.log()


def test_dnsbl_several_zones_any_listing_refuses(recorder, proxy, client, dns):
    dns.listing("second.test", CLIENT_IP, "127.0.0.4")
    p = dnsbl_proxy(proxy, dns, zones="first.test Second.TEST third.test")
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<x@sender.test>").expect(250)
    r = c.cmd("RCPT TO:<someone@example.com>")
    assert r.first.startswith("554 5.7.1 ") and r.first.endswith("blocked using second.test"), r
    for z in ("first.test", "second.test", "third.test"):
        assert dns.questions(name=f"{CLIENT_REV}.{z}"), (z, dns.names())
    wait_log(p, r"is listed in second\.test \(127\.0\.0\.4\)")
    assert "RCPT" not in recorder.verbs()


def test_dnsbl_allow_rcpt_and_reject_code_configurable(recorder, proxy, client, dns):
    dns.listing("bl.test", CLIENT_IP)
    p = dnsbl_proxy(proxy, dns, zones="bl.test", allow_rcpt="hostmaster", reject="550 5.7.1")
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<x@sender.test>").expect(250)
    assert c.cmd("RCPT TO:<postmaster@example.com>").first.startswith("550 5.7.1 Service unavailable")
    assert c.cmd("RCPT TO:<hostmaster@example.com>").code == 250


@pytest.mark.parametrize("trusted", [None, "127.0.0.1", "10.0.0.0/8 127.0.0.0/16 2001:db8::/32"],
                         ids=["default", "address", "list"])
def test_dnsbl_trusted_client_not_looked_up(recorder, proxy, client, dns, trusted):
    dns.listing("bl.test", CLIENT_IP)
    keys = {"zones": "bl.test"}
    if trusted is not None:
        keys["trusted"] = trusted
    p = proxy(dns_server=dns.address, dns_timeout="1s", sections=[lua("dnsbl", DNSBL, **keys)])
    c = client(p)
    c.greet()
    mail, rs, data = transaction(c, "x@sender.test", ["someone@example.com"])
    assert data.code == 250
    delivered_one(recorder, ["someone@example.com"])
    assert dns.questions() == [], dns.names()
    wait_log(p, r"\[dnsbl\] 127\.0\.0\.1 is in trusted network 127\.0\.0\.\d+/\d+, not looked up")


def test_dnsbl_trusted_none_looks_up_everyone(recorder, proxy, client, dns):
    dns.listing("bl.test", CLIENT_IP)
    p = proxy(dns_server=dns.address, dns_timeout="1s",
              sections=[lua("dnsbl", DNSBL, zones="bl.test", trusted="none")])
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<x@sender.test>").expect(250)
    assert c.cmd("RCPT TO:<someone@example.com>").code == 554


@pytest.mark.parametrize("failure", ["timeout", "servfail", "error-code"])
def test_dnsbl_lookup_failure_blocks_nobody(recorder, proxy, client, dns, failure):
    if failure == "timeout":
        dns.never("bl.test")
    elif failure == "servfail":
        dns.servfail("bl.test")
    else:
        # RFC 5782 error answers (Spamhaus: "query via a public resolver")
        dns.listing("bl.test", CLIENT_IP, "127.255.255.254")
    p = dnsbl_proxy(proxy, dns, zones="bl.test")
    c = client(p)
    c.greet()
    mail, rs, data = transaction(c, "x@sender.test", ["someone@example.com"])
    assert [r.code for r in rs] == [250] and data.code == 250, (rs, data)
    delivered_one(recorder, ["someone@example.com"])
    wait_log(p, r"\[dnsbl\] lookup of 127\.0\.0\.1 in bl\.test failed: .+ \(not blocking\)")
    assert "is listed" not in p.log()


def test_dnsbl_one_zone_failing_others_still_count(recorder, proxy, client, dns):
    dns.never("slow.test")
    dns.listing("bl.test", CLIENT_IP)
    p = dnsbl_proxy(proxy, dns, zones="slow.test bl.test")
    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<x@sender.test>").expect(250)
    assert c.cmd("RCPT TO:<someone@example.com>").first.endswith("blocked using bl.test")
    wait_log(p, r"lookup of 127\.0\.0\.1 in slow\.test failed")


def test_dnsbl_verdict_kept_for_the_whole_session(recorder, proxy, client, dns):
    dns.listing("bl.test", CLIENT_IP)
    p = dnsbl_proxy(proxy, dns, zones="bl.test")
    c = client(p)
    c.greet()
    for _ in range(2):
        mail, rs, data = transaction(c, "x@sender.test", ["someone@example.com", "abuse@example.com"])
        assert [r.code for r in rs] == [554, 250]
        assert data.code == 250
    assert len(recorder.wait_for_transactions(2, timeout=BOUND)) == 2
    # One lookup per session, not per transaction.
    assert len(dns.questions(name=f"{CLIENT_REV}.bl.test")) == 1


def test_dnsbl_bad_trusted_entry_stops_the_start(recorder, tmp_path):
    log, out = _refused(recorder, tmp_path, [lua("dnsbl", DNSBL, trusted="10.0.0.0/99")])
    assert "trusted: bad prefix length in 10.0.0.0/99" in out, out


# ---- content.lua --------------------------------------------------------------


def content_session(proxy, client, body, **keys):
    p = proxy(sections=[lua("content", CONTENT, **keys)])
    c = client(p)
    c.greet()
    mail, rs, data = transaction(c, "a@sender.test", ["b@rcpt.test"], body=body)
    return p, data


@pytest.mark.parametrize(
    "subject, header",
    [
        ("Lunch on Friday?", b"0 (none)"),
        ("Free money for you", b"6 (SUBJ_FREE_MONEY)"),
        ("URGENT: call me", b"2 (SUBJ_URGENT)"),
        ("Not urgently needed", b"0 (none)"),
        ("QUARTERLY NUMBERS", b"3 (SUBJ_ALL_CAPS)"),
        ("OK", b"0 (none)"),
        ("You have won, urgent!", b"7 (SUBJ_LOTTERY_WIN, SUBJ_URGENT)"),
    ],
)
def test_content_scores_and_marks(recorder, proxy, client, subject, header):
    body = message(subject)
    p, data = content_session(proxy, client, body)
    assert data.code == 250, data
    t = delivered_one(recorder, ["b@rcpt.test"])
    # The header comes first, the message follows byte for byte.
    assert t.data == b"X-Spam-Score: " + header + b"\r\n" + stuff(body), t.data[:200]
    wait_log(p, r"\[content\] score " + re.escape(header.decode()) + r": passed")


def test_content_missing_headers_and_other_fields(recorder, proxy, client):
    body = message("hello", date=False, extra=["X-Mailer: MassMailer Pro 2.0"])
    p, data = content_session(proxy, client, body)
    assert data.code == 250
    t = delivered_one(recorder, ["b@rcpt.test"])
    assert t.data.startswith(b"X-Spam-Score: 6 (MASS_MAILER, MISSING_DATE, MISSING_MESSAGE_ID)\r\n"), t.data[:200]


def test_content_folded_subject_is_matched_unfolded(recorder, proxy, client):
    body = message("Congratulations, you have\r\n won")
    p, data = content_session(proxy, client, body)
    assert data.code == 250
    t = delivered_one(recorder, ["b@rcpt.test"])
    assert t.data.startswith(b"X-Spam-Score: 5 (SUBJ_LOTTERY_WIN)\r\n"), t.data[:200]


def test_content_reject_over_threshold(recorder, proxy, client):
    # free money 6 + urgent 2 + all caps 3 = 11 >= 10
    p, data = content_session(proxy, client, message("URGENT: FREE MONEY NOW"))
    assert data.first == "550 5.7.1 Message refused as spam", data
    assert "DATA" not in recorder.verbs()
    assert recorder.messages() == []
    wait_log(p, r"\[content\] score 11 \(SUBJ_ALL_CAPS, SUBJ_FREE_MONEY, SUBJ_URGENT\): refused")
    s = p.wait_summaries(1, timeout=BOUND)
    assert s and s[-1]["status"] == "rejected" and s[-1]["stage"] == "data" and s[-1]["by"] == "content", s


def test_content_threshold_is_inclusive_and_configurable(recorder, proxy, client):
    p, data = content_session(proxy, client, message("cheap viagra"), reject_score="8")
    assert data.first == "550 5.7.1 Message refused as spam", data
    assert recorder.messages() == []


def test_content_below_threshold_delivered(recorder, proxy, client):
    p, data = content_session(proxy, client, message("cheap viagra"), reject_score="8.5")
    assert data.code == 250
    t = delivered_one(recorder, ["b@rcpt.test"])
    assert t.data.startswith(b"X-Spam-Score: 8 (SUBJ_VIAGRA)\r\n")


def test_content_tempfail_band(recorder, proxy, client):
    p, data = content_session(proxy, client, message("Free money for you"), tempfail_score="5")
    assert data.first == "451 4.7.1 Message deferred, try again later", data
    assert recorder.messages() == []
    wait_log(p, r"\[content\] score 6 \(SUBJ_FREE_MONEY\): deferred")


def test_content_tempfail_band_still_rejects_above(recorder, proxy, client):
    p, data = content_session(proxy, client, message("URGENT: FREE MONEY NOW"), tempfail_score="5")
    assert data.code == 550, data


def test_content_observe_delivers_marked(recorder, proxy, client):
    # observe = yes: nothing is refused, the score still shows in the header.
    body = message("URGENT: FREE MONEY NOW")
    p, data = content_session(proxy, client, body, observe="yes")
    assert data.code == 250, data
    t = delivered_one(recorder, ["b@rcpt.test"])
    assert t.data == b"X-Spam-Score: 11 (SUBJ_ALL_CAPS, SUBJ_FREE_MONEY, SUBJ_URGENT)\r\n" + stuff(body)
    wait_log(p, r"observe: content would reject at data")


def test_content_header_name_configurable(recorder, proxy, client):
    p, data = content_session(proxy, client, message("hi"), header="X-Our-Score")
    assert data.code == 250
    t = delivered_one(recorder, ["b@rcpt.test"])
    assert t.data.startswith(b"X-Our-Score: 0 (none)\r\n")


def test_content_score_is_per_transaction(recorder, proxy, client):
    p = proxy(sections=[lua("content", CONTENT)])
    c = client(p)
    c.greet()
    for subject in ("Free money for you", "Free money for you", "hello"):
        mail, rs, data = transaction(c, "a@sender.test", ["b@rcpt.test"], body=message(subject))
        assert data.code == 250
    msgs = recorder.wait_for_transactions(3, timeout=BOUND)
    assert [m.data.split(b"\r\n", 1)[0] for m in msgs] == [
        b"X-Spam-Score: 6 (SUBJ_FREE_MONEY)",
        b"X-Spam-Score: 6 (SUBJ_FREE_MONEY)",
        b"X-Spam-Score: 0 (none)",
    ]


def test_content_bad_thresholds_stop_the_start(recorder, tmp_path):
    log, out = _refused(recorder, tmp_path, [lua("content", CONTENT, reject_score="5", tempfail_score="6")])
    assert "tempfail_score must be below reject_score" in out, out


# ---- all three, as an admin would chain them ---------------------------------------


def test_examples_load_with_defaults(recorder, tmp_path):
    p = Proxy(str(tmp_path / "check"), recorder.address, sections=[
        lua("policy", POLICY), lua("dnsbl", DNSBL), lua("content", CONTENT)])
    p.write_config()
    rc, out = run_check(p.config_path)
    assert rc == 0, out


def test_examples_chained(recorder, proxy, client, dns, lists):
    dns.listing("bl.test", "192.0.2.99")
    p = proxy(dns_server=dns.address, dns_timeout="1s", sections=[
        lua("dnsbl", DNSBL, zones="bl.test", trusted="none"),
        lua("policy", POLICY, **lists),
        lua("content", CONTENT),
    ])
    c = client(p)
    c.greet()
    assert c.cmd("MAIL FROM:<x@spam.example>").code == 550
    mail, rs, data = transaction(c, "x@good.example", ["alice@example.com", "nobody@example.com"],
                                 body=message("Free money for you"))
    assert [r.code for r in rs] == [250, 550]
    assert data.code == 250
    t = delivered_one(recorder, ["alice@example.com"])
    assert t.data.startswith(b"X-Spam-Score: 6 (SUBJ_FREE_MONEY)\r\n")
    mail, rs, data = transaction(c, "x@good.example", ["alice@example.com"], body=message("URGENT: FREE MONEY NOW"))
    assert data.code == 550
    assert len(recorder.messages()) == 1
