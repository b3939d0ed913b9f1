"""tlskit.py - certificates for the TLS tests, made with the openssl CLI.

    kit = TLSKit().make()         # or tlskit.shared(): one kit per test run
    kit.ca                        # the test CA's certificate (PEM path)
    kit.proxy.cert, kit.proxy.key # "proxy.test", IP 127.0.0.1 (the proxy's)
    kit.backend                   # "mx.postfix.test", IP 127.0.0.1 (Postfix's)
    kit.expired                   # "proxy.test", valid in January 2020 only
    kit.wrong_name                # "wrong.test" only (no IP address either)
    kit.proxy.fullchain           # the proxy's certificate followed by the CA's
    kit.proxy_rsa                 # "proxy.test" again, with an RSA key (RSA suites)
    kit.other_key                 # a key that matches none of the certificates
    kit.client_context()          # ssl.SSLContext trusting the test CA only
    kit.cleanup()

Everything lives in a temp dir (0755, files 0644: Postfix's and Dovecot's
unprivileged users may have to read them). Keys are EC P-256: generating
them takes milliseconds; proxy_rsa alone has an RSA 2048 key, for the
suites that need one (ECDHE-RSA, DHE-RSA, static RSA). Certificates are issued with `openssl ca` (not
`openssl x509 -req`) because only `ca` takes explicit start and end dates,
which the expired certificate needs; all of them carry subjectAltName
entries (DNS and IP), which is what OpenSSL and Python check, never the CN.
"""

import atexit
import os
import shutil
import ssl
import subprocess
import tempfile

OPENSSL = "openssl"

CA_CNF = """\
[ ca ]
default_ca = testca

[ testca ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
email_in_dn = no

[ anything ]
commonName = supplied

[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused

[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ v3_server ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $ENV::TLSKIT_SAN
"""


class Pair:
    """A certificate and its key (PEM paths); fullchain = cert + CA cert."""

    def __init__(self, name, cert, key, fullchain=None):
        self.name = name
        self.cert = cert
        self.key = key
        self.fullchain = fullchain

    def __repr__(self):
        return "Pair(%s: %s)" % (self.name, self.cert)


class TLSKit:
    def __init__(self, root=None):
        self.own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="portcullis-tls-")
        self.ca = os.path.join(self.root, "ca.pem")
        self.ca_key = os.path.join(self.root, "ca.key")
        self.proxy = self.proxy_rsa = self.backend = self.expired = self.wrong_name = None
        self.other_key = None

    # -- openssl ---------------------------------------------------------------
    def _run(self, *args, env=None):
        e = dict(os.environ)
        e.setdefault("TLSKIT_SAN", "DNS:unused")
        e.update(env or {})
        r = subprocess.run([OPENSSL, *args], cwd=self.root, env=e, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("openssl %s failed (%d):\n%s%s" % (" ".join(args), r.returncode,
                                                                  r.stdout, r.stderr))
        return r.stdout

    def _key(self, name, rsa=False):
        path = os.path.join(self.root, name + ".key")
        if rsa:
            self._run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)
        else:
            self._run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", path)
        os.chmod(path, 0o644)
        return path

    def issue(self, name, dns=(), ips=(), start=None, end=None, days=3650, rsa=False):
        """A certificate signed by the test CA for CN=dns[0] (or name) with
        subjectAltName DNS:dns..., IP:ips...; start/end as YYYYMMDDHHMMSSZ."""
        key = self._key(name, rsa)
        csr = os.path.join(self.root, name + ".csr")
        cert = os.path.join(self.root, name + ".pem")
        cn = dns[0] if dns else name
        self._run("req", "-new", "-config", self.cnf, "-key", key, "-subj", "/CN=" + cn,
                  "-out", csr)
        san = ",".join(["DNS:" + d for d in dns] + ["IP:" + i for i in ips]) or "DNS:" + cn
        args = ["ca", "-batch", "-notext", "-config", self.cnf, "-extensions", "v3_server",
                "-cert", self.ca, "-keyfile", self.ca_key, "-in", csr, "-out", cert]
        if start or end:
            args += ["-startdate", start or "20200101000000Z", "-enddate", end or "20300101000000Z"]
        else:
            args += ["-days", str(days)]
        self._run(*args, env={"TLSKIT_SAN": san})
        os.chmod(cert, 0o644)
        full = os.path.join(self.root, name + "-fullchain.pem")
        with open(full, "w") as f:
            f.write(open(cert).read() + open(self.ca).read())
        os.chmod(full, 0o644)
        return Pair(cn, cert, key, full)

    def make(self):
        os.chmod(self.root, 0o755)
        os.makedirs(os.path.join(self.root, "newcerts"), exist_ok=True)
        open(os.path.join(self.root, "index.txt"), "w").close()
        with open(os.path.join(self.root, "serial"), "w") as f:
            f.write("1000\n")
        self.cnf = os.path.join(self.root, "ca.cnf")
        with open(self.cnf, "w") as f:
            f.write(CA_CNF.format(dir=self.root))
        self._key("ca")
        self._run("req", "-new", "-x509", "-config", self.cnf, "-extensions", "v3_ca",
                  "-key", self.ca_key, "-subj", "/CN=portcullis test CA", "-days", "3650",
                  "-out", self.ca)
        os.chmod(self.ca, 0o644)
        self.proxy = self.issue("proxy", dns=["proxy.test"], ips=["127.0.0.1"])
        self.proxy_rsa = self.issue("proxy-rsa", dns=["proxy.test"], ips=["127.0.0.1"], rsa=True)
        self.backend = self.issue("backend", dns=["mx.postfix.test"], ips=["127.0.0.1"])
        self.expired = self.issue("expired", dns=["proxy.test"], ips=["127.0.0.1"],
                                  start="20200101000000Z", end="20200201000000Z")
        self.wrong_name = self.issue("wrong", dns=["wrong.test"])
        self.other_key = self._key("other")
        return self

    # -- clients ---------------------------------------------------------------
    def client_context(self, verify=True, minimum=None, maximum=None):
        """An ssl.SSLContext for a client: trusts the test CA only (and checks
        the host name) when verify, else checks nothing."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if verify:
            ctx.load_verify_locations(self.ca)
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
        return ctx

    def subject(self, cert):
        return self._run("x509", "-in", cert, "-noout", "-subject").strip()

    def cleanup(self):
        if self.own_root and not os.environ.get("PORTCULLIS_KEEP_TLS"):
            shutil.rmtree(self.root, ignore_errors=True)


_shared = None


def shared():
    """One kit for the whole test run (made on first use, removed at exit)."""
    global _shared
    if _shared is None:
        _shared = TLSKit().make()
        atexit.register(_shared.cleanup)
    return _shared


if __name__ == "__main__":
    k = TLSKit().make()
    for p in (k.proxy, k.backend, k.expired, k.wrong_name):
        print(p.name, p.cert, k.subject(p.cert))
    print("CA", k.ca, "dir", k.root)
