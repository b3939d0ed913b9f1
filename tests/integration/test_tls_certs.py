"""An RSA and an ECDSA certificate served at once (issue 19, item 6):
tls_cert, tls_key (and tls_chain) take two files each, paired in order, and
OpenSSL gives each client the certificate it can verify.

TLS 1.2: a Python client restricted to ECDHE-ECDSA suites gets the ECDSA
certificate, one restricted to ECDHE-RSA the RSA one (compared byte for
byte with the files). TLS 1.3 has no suite per key type: `openssl
s_client -sigalgs` restricts the signature algorithms instead, and reports
the signature it got. The configuration check refuses two certificates of
one type, a key of the other type than its certificate, and counts that do
not pair.
"""

import ssl
import subprocess

import pytest

from kit.proxy import Proxy, run_check
from test_tls import HOST, READY, config_line, raw, tls, tproxy  # noqa: F401 (fixtures)

TLS12 = ssl.TLSVersion.TLSv1_2


def both(kit, rsa_first=False):
    """tls_cert/tls_key naming kit.proxy (ECDSA P-256) and kit.proxy_rsa."""
    pairs = [kit.proxy, kit.proxy_rsa]
    if rsa_first:
        pairs.reverse()
    return {"tls_cert": " ".join(p.cert for p in pairs), "tls_key": " ".join(p.key for p in pairs)}


def der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def peer_cert(c, ctx):
    """STARTTLS on raw client c with ctx: the server's certificate (DER)."""
    c.greet()
    assert c.cmd("STARTTLS").first == READY
    c.sock.settimeout(c.timeout)
    c.sock = ctx.wrap_socket(c.sock, server_hostname=HOST)
    c.ehlo().expect(250)
    return c.sock.getpeercert(binary_form=True), c.sock.cipher()[0]


@pytest.mark.parametrize("rsa_first", [False, True], ids=["ecdsa-rsa", "rsa-ecdsa"])
def test_tls12_client_gets_the_certificate_its_suites_allow(tproxy, raw, tls, rsa_first):
    p = tproxy(**both(tls, rsa_first))
    for suites, want in (("ECDHE-ECDSA-AES128-GCM-SHA256", tls.proxy.cert),
                         ("ECDHE-RSA-AES128-GCM-SHA256", tls.proxy_rsa.cert)):
        ctx = tls.client_context(minimum=TLS12, maximum=TLS12)
        ctx.set_ciphers(suites)
        cert, cipher = peer_cert(raw(p), ctx)
        assert cipher == suites
        assert cert == der(want), f"{suites}: not {want}"


def s_client_signature(port, sigalgs, ca):
    """openssl s_client -tls1_3 -sigalgs SIGALGS on an implicit-TLS port:
    (rc, "Signature type: ..." line or None)."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
                        "-sigalgs", sigalgs, "-CAfile", ca, "-verify_return_error", "-brief"],
                       input="QUIT\n", capture_output=True, text=True, timeout=30)
    lines = [ln.strip() for ln in (r.stdout + r.stderr).splitlines()
             if ln.strip().startswith("Signature type:")]
    return r.returncode, lines[0] if lines else None


def test_tls13_client_gets_the_certificate_its_sigalgs_allow(tproxy, tls):
    p = tproxy(listen_opts="tls", **both(tls))
    assert s_client_signature(p.port, "ECDSA+SHA256", tls.ca) == (0, "Signature type: ECDSA")
    assert s_client_signature(p.port, "rsa_pss_rsae_sha256", tls.ca) == (0, "Signature type: RSA-PSS")


def test_one_certificate_serves_only_its_type(tproxy, tls):
    """The control: with the ECDSA certificate alone, an RSA-only client
    finds nothing it can verify."""
    p = tproxy(listen_opts="tls", tls_cert=tls.proxy.cert, tls_key=tls.proxy.key)
    assert s_client_signature(p.port, "ECDSA+SHA256", tls.ca) == (0, "Signature type: ECDSA")
    rc, sig = s_client_signature(p.port, "rsa_pss_rsae_sha256", tls.ca)
    assert rc != 0 and sig is None


def test_chain_files_pair_with_certificates(tmp_path, tls):
    p = Proxy(tmp_path / "ok", "127.0.0.1:25", tls_chain=f"{tls.ca} {tls.ca}", **both(tls))
    p.write_config()
    rc, out = run_check(p.config_path)
    assert rc == 0, out


def _refused(tmp_path, name, key, **settings):
    p = Proxy(tmp_path / name, "127.0.0.1:25", **settings)
    p.write_config()
    rc, out = run_check(p.config_path)
    assert rc != 0, out
    assert f"{p.config_path}:{config_line(p, key)}:" in out, out
    return out


def test_two_certificates_of_one_type_refused(tmp_path, tls):
    out = _refused(tmp_path, "two-ec", "tls_cert", tls_cert=f"{tls.proxy.cert} {tls.expired.cert}",
                   tls_key=f"{tls.proxy.key} {tls.expired.key}")
    assert "two EC certificates" in out, out


@pytest.mark.parametrize("keys", ["swapped", "same-twice"])
def test_key_of_the_other_type_refused(tmp_path, tls, keys):
    k = {"swapped": f"{tls.proxy_rsa.key} {tls.proxy.key}",
         "same-twice": f"{tls.proxy.key} {tls.proxy.key}"}[keys]
    out = _refused(tmp_path, keys, "tls_key", tls_cert=f"{tls.proxy.cert} {tls.proxy_rsa.cert}",
                   tls_key=k)
    assert "does not match tls_cert" in out, out


@pytest.mark.parametrize("case, key", [
    ("one-key", "tls_key"), ("three", "tls_cert"), ("one-chain", "tls_chain"),
])
def test_counts_that_do_not_pair_refused(tmp_path, tls, case, key):
    settings = {
        "one-key": dict(tls_cert=f"{tls.proxy.cert} {tls.proxy_rsa.cert}", tls_key=tls.proxy.key),
        "three": dict(tls_cert=f"{tls.proxy.cert} {tls.proxy_rsa.cert} {tls.expired.cert}",
                      tls_key=f"{tls.proxy.key} {tls.proxy_rsa.key} {tls.expired.key}"),
        "one-chain": dict(tls_chain=tls.ca, **both(tls)),
    }[case]
    _refused(tmp_path, case, key, **settings)
