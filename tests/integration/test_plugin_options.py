"""The option parsers a C plugin gets in struct pc_host (opt_size,
opt_time, opt_bool, opt_list, opt_cidr/_match/_free, opt_file): the same
parsers and messages as the top-level keys, through the real host table.
tests/plugins/options.c logs what it parsed."""

import pytest

import kit.proxy as kp
from kit.dialogue import config_line, refused

OPTIONS = kp.test_plugin("options")


def opts(**keys):
    return ("plugin options", {"path": OPTIONS, **keys})


def test_parsed_as_the_daemon_parses(recorder, proxy, client, tmp_path):
    listed = tmp_path / "list"
    listed.write_text("x\n")
    p = proxy(sections=[opts(size="64k", time="5m", bool="On", list=" a, b c,,d ",
                             cidr="127.0.0.0/8, 2001:db8::/32 192.0.2.7",
                             probe="127.9.9.9 ::ffff:127.0.0.1 192.0.2.8 2001:db8::1 nope",
                             file=str(listed))])
    got = p.wait_log(r"options: size=.*")
    assert got, p.log()
    assert got[0].group(0) == ("options: size=65536 time=300000 bool=1 list=a|b|c|d cidr=ok "
                      "probe=127.9.9.9:1,::ffff:127.0.0.1:1,192.0.2.8:0,2001:db8::1:1,nope:-1 "
                      "file=ok"), got
    c = client(p)
    c.greet()
    assert p.wait_log(r"options: client in cidr: 1"), p.log()


@pytest.mark.parametrize("key,value,why", [
    ("size", "99999999999999G", 'bad value "99999999999999G": expected a size (e.g. 10, 64k, 50M, 1G)'),
    ("size", "10 M", 'bad value "10 M": expected a size (e.g. 10, 64k, 50M, 1G)'),
    ("time", "1.5s", 'bad value "1.5s": expected a time (e.g. 500ms, 30s, 5m, 1h, 2d)'),
    ("bool", "maybe", 'bad value "maybe": expected yes or no'),
    ("cidr", "10.0.0.1/8", 'bad value "10.0.0.1/8": 10.0.0.1/8 has bits set past its /8 prefix '
                           "(the network is 10.0.0.0/8)"),
    ("cidr", "10.0.0.0/33 ::1",
     'bad value "10.0.0.0/33 ::1": expected addresses or networks (e.g. 127.0.0.1/32 ::1 10.0.0.0/8)'),
    ("file", "/nonexistent/list", 'cannot read "/nonexistent/list": No such file or directory'),
    ("file", "/tmp", 'cannot read "/tmp": Is a directory'),
])
def test_bad_values_refused_with_the_hosts_message(recorder, tmp_path, key, value, why):
    path, log, out = refused(recorder, tmp_path, [opts(**{key: value})])
    line = config_line(path, f"{key} =")
    want = f"{path}:{line}: [plugin options]: {key}: {why}"
    assert want in out, out
    assert want in log, log
