"""Fixtures for the integration tests.

recorder  the recording backend (one server for the whole run, reset for
          every test: rules, capabilities, banner and recordings start fresh)
proxy     a factory: proxy(**config) starts build/portcullis in front of the
          recorder (backend= overrides) in the test's temp dir and returns a
          kit.proxy.Proxy; every proxy is stopped at the end of the test and
          the test fails if it did not exit 0 on SIGTERM or if its stderr holds
          an AddressSanitizer, UndefinedBehaviorSanitizer or LeakSanitizer
          report.
client    a factory: client(proxy_or_port, **kw) -> kit.smtpclient.RawClient,
          closed at the end of the test.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kit.dnsserver import DnsServer  # noqa: E402
from kit.proxy import Proxy, binary_path, stop_all  # noqa: E402
from kit.recorder import Recorder  # noqa: E402
from kit.smtpclient import RawClient  # noqa: E402


def pytest_sessionstart(session):
    if not os.access(binary_path(), os.X_OK):
        raise pytest.UsageError(f"portcullis binary not found at {binary_path()} (set PORTCULLIS or run make)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def _shared_recorder():
    rec = Recorder().start()
    yield rec
    rec.stop()


@pytest.fixture
def recorder(_shared_recorder):
    _shared_recorder.reset()
    yield _shared_recorder
    _shared_recorder.reset()


@pytest.fixture
def proxy(request, recorder, tmp_path):
    started = []

    def start(backend=None, args=(), sections=None, **settings):
        n = len(started)
        workdir = tmp_path / (f"proxy{n}" if n else "proxy")
        p = Proxy(workdir, backend or recorder.address, args=args, sections=sections, **settings)
        started.append(p)
        return p.start()

    yield start

    failed = getattr(request.node, "rep_call", None)
    problems = stop_all(started, failed is not None and failed.failed)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def client(proxy):
    # Depends on proxy so that clients are closed before the proxies stop.
    made = []

    def connect(target, **kw):
        port = target.port if hasattr(target, "port") else int(target)
        c = RawClient(port, **kw)
        made.append(c)
        return c

    yield connect
    for c in made:
        c.close()


@pytest.fixture
def dns():
    """A DNS responder on 127.0.0.1 (kit.dnsserver), for dns_server =."""
    d = DnsServer().start()
    yield d
    d.stop()
