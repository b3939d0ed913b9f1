"""Where a plugin's init runs (include/portcullis/plugin.h, PROCESSES AND
PRIVILEGE; issue 18, item 4): with workers = 2, in each worker for real
(check_only 0) and in the master only as a check (check_only 1, then fini),
at start and at each SIGHUP; with workers = 1, once in the one process.
The test plugin tests/plugins/initwhere.c logs its pid and check_only."""

import re
import signal

from kit.proxy import test_plugin

BOUND = 30.0
INIT = re.compile(r"initwhere: init pid=(\d+) uid=\d+ check_only=(\d)")
FINI = re.compile(r"initwhere: fini pid=(\d+)")


def _section():
    return [("plugin where", {"path": test_plugin("initwhere")})]


def _inits(p):
    return [(int(pid), int(check)) for pid, check in INIT.findall(p.log())]


def test_workers_init_in_each_worker_and_check_in_the_master(proxy):
    p = proxy(sections=_section(), workers="2")
    assert p.wait_log(r"portcullis \S+ started, backend .*, 2 workers", timeout=BOUND), p.log()
    inits = _inits(p)
    master = [c for pid, c in inits if pid == p.pid]
    workers = [(pid, c) for pid, c in inits if pid != p.pid]
    # The master initialises only to check the configuration, never for real.
    assert master == [1], inits
    assert len(workers) == 2 and len({pid for pid, _ in workers}) == 2, inits
    assert all(c == 0 for _, c in workers), inits
    assert p.pid in [int(x) for x in FINI.findall(p.log())], p.log()

    p.signal(signal.SIGHUP)
    assert p.wait_log(r"SIGHUP: 2 worker\(s\) of generation 2 serving", timeout=BOUND), p.log()
    inits = _inits(p)
    assert [c for pid, c in inits if pid == p.pid] == [1, 1], inits
    new = [(pid, c) for pid, c in inits if pid != p.pid and (pid, c) not in workers]
    assert len(new) == 2 and all(c == 0 for _, c in new), inits
    # The old workers' instances end with them.
    old = {pid for pid, _ in workers}
    assert p.wait_log(r"exited with status 0 after [0-9.]+ s, as asked", timeout=BOUND, count=2), p.log()
    assert old <= {int(x) for x in FINI.findall(p.log())}, p.log()


def test_single_process_inits_once_for_real(proxy):
    p = proxy(sections=_section())
    assert p.wait_log(r"portcullis \S+ started, backend", timeout=BOUND), p.log()
    assert _inits(p) == [(p.pid, 0)], p.log()
