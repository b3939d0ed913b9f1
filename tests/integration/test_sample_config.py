"""The spam sample of etc/portcullis.conf, as shipped (issue 15, "done when"):
an admin uncomments the thresholds and the dnsbl and spamd sections, points
them at their resolver and spamd, and sees GTUBE rejected and ham marked.

The sections are read out of the shipped file, so a sample that stops
working (a renamed key, a bad value) fails here."""

import os
import re

import pytest

from kit.messages import stuff
from kit.spamd import GTUBE as GTUBE_STRING, Spamd

CONF = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "portcullis.conf")
BOUND = 30.0

GTUBE = (b"Subject: test\r\nFrom: <a@x.test>\r\nTo: <b@y.test>\r\n\r\n"
         + GTUBE_STRING.encode() + b"\r\n")
HAM = (b"From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\n"
       b"Subject: lunch tomorrow\r\nMessage-ID: <lunch.42@example.com>\r\n\r\n"
       b"Shall we meet at noon at the usual place?\r\n")


def sample():
    """The commented sample: top-level keys and [TYPE NAME] sections (keyed by
    NAME), each a dict (repeated keys as lists), as an admin would uncomment
    them."""
    top, sections, current = {}, {}, None
    with open(CONF) as f:
        for line in f:
            m = re.match(r"^#\[(\w+) (\w+)\]", line)
            if m:
                current = sections.setdefault(m.group(2), {})
                continue
            m = re.match(r"^#(\w+)\s*=\s*(.*?)\s*(?:#.*)?$", line)
            if not m:
                if not line.startswith("#") or line.strip() == "":
                    current = None
                continue
            key, value = m.groups()
            target = current if current is not None else top
            if key in target:
                target[key] = (target[key] if isinstance(target[key], list) else [target[key]]) + [value]
            else:
                target[key] = value
    return top, sections


@pytest.fixture(scope="module")
def spamd():
    s = Spamd().start()
    yield s
    s.close()


def test_sample_rejects_gtube_and_marks_ham(recorder, proxy, client, dns, spamd):
    top, sections = sample()
    assert "reject_score" in top and "header_score" in top, top
    dnsbl, sd = dict(sections["dnsbl"]), dict(sections["spamd"])
    # What the admin changes: where the resolver and spamd are.
    dnsbl["dns_server"] = dns.address
    sd["socket"] = f"127.0.0.1:{spamd.port}"
    p = proxy(sections=[("plugin dnsbl", dnsbl), ("plugin spamd", sd)],
              reject_score=top["reject_score"], header_score=top["header_score"])

    c = client(p)
    c.greet()
    c.cmd("MAIL FROM:<a@x.test>").expect(250)
    c.cmd("RCPT TO:<b@y.test>").expect(250)
    r = c.message(stuff(GTUBE) + b".\r\n")
    assert r.first.startswith("550 5.7.1 Message refused as spam"), r
    c.cmd("MAIL FROM:<alice@example.com>").expect(250)
    c.cmd("RCPT TO:<bob@example.org>").expect(250)
    assert c.message(stuff(HAM) + b".\r\n").code == 250
    c.cmd("QUIT").expect(221)

    assert recorder.wait_for_transactions(2, timeout=BOUND)
    done = [t for t in recorder.messages() if t.completed]
    assert len(done) == 1, done
    head = bytes(done[0].data).split(b"\r\n\r\n", 1)[0].decode()
    assert re.search(r"^X-Spam-Status: No, score=[-0-9.]+ required=", head, re.M), head
    # Both lists were asked (the client is not listed: NXDOMAIN).
    assert any(q.lname.endswith("zen.spamhaus.org") for q in dns.questions()), dns.questions()
