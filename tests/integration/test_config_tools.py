"""Configuration tools (issue 17, item 6): `portcullis -T` prints the
effective configuration (defaults, then the file, then -o), every key in
the key table's order, values as the parser read them, then the sections;
`-T -n` only what differs from the defaults. An unknown key names the
known key it is likely a typo of."""

import os
import re

import pytest

from kit.proxy import REPO, Proxy, ProxyError, binary_path, config_text, plugin_dir, run, run_check

CONFIG_C = os.path.join(REPO, "proxy", "config.c")


def _write(tmp_path, text, name="p.conf"):
    path = str(tmp_path / name)
    with open(path, "w") as f:
        f.write(text)
    return path


def table_keys():
    """The top-level keys, in the order of config.c's table."""
    text = open(CONFIG_C).read()
    table = text[text.index("static const struct key_def keys[] = {"):]
    table = table[:table.index("\n};")]
    names = re.findall(r'^\s*\{"(\w+)", K_', table, re.M)
    assert len(names) > 40, names
    return names


def dump(*args):
    rc, out, err = run("-T", *args)
    assert rc == 0, err
    assert err == "", err
    return out


def keys_of(out):
    """The key of each line ('#key =' counts: a key with no value)."""
    got = []
    for line in out.splitlines():
        if line.startswith("["):
            break
        if not line:
            continue
        m = re.match(r"^#?(\w+) =(?: (\S.*))?$", line)
        assert m, f"not a key = value line: {line!r}"
        assert line.startswith("#") == (m.group(2) is None), line
        got.append(m.group(1))
    return got


BASE = {"listen": "127.0.0.1:2525", "backend": "127.0.0.1:10025", "hostname": "mx.test"}

# Many keys away from their defaults, written the long way: -T writes them
# back normalised.
RICH = """\
listen = 127.0.0.1:2525
listen = [::1]:2526 proxy_protocol
backend = [::1]:10025
hostname = mx.test
max_message_size = 10485760
max_recipients = 7
max_line_length = 4096
max_header_size = 1048577
timeout = 90000ms
data_timeout = 1h
backend_timeout = 1500ms
shutdown_timeout = 0
bare_lf = normalize
log_level = debug
plugin_dir = {plugins}
on_error = accept
dns_server = ::1
dns_timeout = 120s
proxy_trusted = 10.0.0.0/8,::1
trusted_networks = 192.0.2.0/24   2001:db8::/32
backend_tls = opportunistic
backend_tls_verify = off
backend_xclient = false
store = memory
store_max_size = 64k
reject_score = 12.5
header_score = -0.1

[headers stamp]   # a comment
add = X-Stamp: yes
remove = X-Spam-Flag

[headers two]
add = X-Two: %{{tx_id}}
"""


def test_every_key_once_in_table_order(tmp_path):
    path = _write(tmp_path, config_text(BASE))
    out = dump("-c", path)
    assert keys_of(out) == table_keys(), out


def test_values_normalised(tmp_path):
    path = _write(tmp_path, RICH.format(plugins=plugin_dir()))
    out = dump("-c", path, "-o", "max_errors=5", "-o", "tempfail_score=3")
    lines = out.splitlines()
    for want in [
        "listen = 127.0.0.1:2525",
        "listen = [::1]:2526 proxy_protocol",
        "backend = [::1]:10025",
        "max_message_size = 10M",
        "max_recipients = 7",
        "max_line_length = 4k",
        "max_header_size = 1048577",
        "max_errors = 5",
        "timeout = 90s",
        "data_timeout = 1h",
        "backend_timeout = 1500ms",
        "backend_data_timeout = 10m",
        "shutdown_timeout = 0ms",
        "bare_lf = normalize",
        "log_level = debug",
        "on_error = accept",
        "dns_server = [::1]:53",
        "dns_timeout = 2m",
        "proxy_trusted = 10.0.0.0/8 ::1/128",
        "trusted_networks = 192.0.2.0/24 2001:db8::/32",
        "backend_tls = opportunistic",
        "backend_tls_verify = no",
        "backend_xclient = no",
        "client_rdns = yes",
        "store = memory",
        "store_max_size = 64k",
        "reject_score = 12.5",
        "tempfail_score = 3",
        "header_score = -0.1",
        "#tls_cert =",
        "#backend_tls_name =",
        "tls_min_protocol = TLSv1.2",
    ]:
        assert want in lines, f"{want!r} not in:\n{out}"
    # the sections as written, after the keys
    assert out.endswith("\n[headers stamp]\nadd = X-Stamp: yes\nremove = X-Spam-Flag\n"
                        "\n[headers two]\nadd = X-Two: %{tx_id}\n"), out


def test_output_reads_back(tmp_path):
    """-T's output is a configuration: -t passes on it, and its -T is the same."""
    path = _write(tmp_path, RICH.format(plugins=plugin_dir()))
    first = dump("-c", path, "-o", "max_connections=99", "-o", "listen=127.0.0.1:2527")
    lines = first.splitlines()
    assert "max_connections = 99" in lines and "listen = 127.0.0.1:2527" in lines, first
    again = _write(tmp_path, first, "again.conf")
    rc, out = run_check(again)
    assert rc == 0, out
    assert dump("-c", again) == first
    changed = _write(tmp_path, dump("-n", "-c", path, "-o", "max_connections=99",
                                    "-o", "listen=127.0.0.1:2527"), "changed.conf")
    rc, out = run_check(changed)
    assert rc == 0, out
    assert dump("-c", changed) == first


def test_defaults_read_back(tmp_path):
    path = _write(tmp_path, config_text(BASE))
    first = dump("-c", path)
    again = _write(tmp_path, first, "again.conf")
    rc, out = run_check(again)
    assert rc == 0, out
    assert dump("-c", again) == first


def test_changed_only(tmp_path):
    path = _write(tmp_path, config_text(BASE) + "timeout = 300s\nmax_recipients = 100\n"
                  "tls_ciphers = HIGH\n\n[headers h]\nadd = X-A: b\n")
    out = dump("-n", "-c", path, "-o", "max_errors=20", "-o", "max_errors=21")
    # timeout = 300s is the default: left out, as is max_errors set to it and back
    assert out == ("listen = 127.0.0.1:2525\nbackend = 127.0.0.1:10025\nhostname = mx.test\n"
                   "max_recipients = 100\nmax_errors = 21\ntls_ciphers = HIGH\n"
                   "\n[headers h]\nadd = X-A: b\n"), out


def test_default_listen_and_tls_ciphers_shown(tmp_path):
    path = _write(tmp_path, "backend = 127.0.0.1:10025\n")
    out = dump("-c", path).splitlines()
    assert "listen = 0.0.0.0:25" in out
    assert ("tls_ciphers = ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
            "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"
            "ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:"
            "DHE-RSA-CHACHA20-POLY1305") in out
    assert dump("-n", "-c", path) == "backend = 127.0.0.1:10025\n"


def test_broken_config_no_dump(tmp_path):
    path = _write(tmp_path, config_text(BASE) + "max_recipients = lots\n")
    rc, out, err = run("-T", "-c", path)
    assert rc == 1 and out == "", out
    assert f'{path}:4: max_recipients: bad value "lots"' in err, err


@pytest.mark.parametrize("args", [("-n",), ("-T", "-t"), ("-n", "-t")])
def test_flag_misuse(tmp_path, args):
    path = _write(tmp_path, config_text(BASE))
    rc, out, err = run(*args, "-c", path)
    assert rc == 2 and out == "", out
    assert "usage:" in err


def test_usage_names_T():
    rc, out, err = run("-h")
    assert rc == 2
    assert re.search(r"^\s+-T\s+print the effective configuration", err, re.M), err
    assert re.search(r"^\s+-n\s+with -T: only the keys that differ", err, re.M), err


# ---- did you mean ------------------------------------------------------------------


@pytest.mark.parametrize("key,near", [
    ("max_recipient", "max_recipients"),        # one letter short
    ("max_recipeints", "max_recipients"),       # two swapped
    ("Max_Recipients", "max_recipients"),       # case
    ("max-recipients", "max_recipients"),
    ("recipients", "max_recipients"),           # a suffix
    ("max_recipients_per_message", "max_recipients"),  # a prefix
    ("tls_cipher", "tls_ciphers"),
    ("backend_tls_verfy", "backend_tls_verify"),
    ("store_purge", "store_purge_interval"),
    ("tmeout", "timeout"),
    ("colour", None),
    ("frobnicate_widgets", None),
])
def test_unknown_key_suggests(tmp_path, key, near):
    path = _write(tmp_path, config_text(BASE) + f"{key} = 5\n")
    rc, out = run_check(path)
    assert rc != 0, out
    msg = f'{path}:4: unknown key "{key}"'
    if near:
        assert f"{msg}: did you mean {near}?\n" in out, out
    else:
        assert f"{msg}\n" in out and "did you mean" not in out, out
    # the same for -o, and for -T
    rc, out = run_check(_write(tmp_path, config_text(BASE), "ok.conf"), "-o", f"{key}=5")
    assert rc != 0
    want = f'command line: unknown key "{key}"' + (f": did you mean {near}?" if near else "")
    assert want + "\n" in out, out
    rc, out, err = run("-T", "-c", path)
    assert rc == 1 and msg in err, err


def test_unknown_key_suggests_at_start(tmp_path):
    p = Proxy(tmp_path / "s", "127.0.0.1:25", max_recipent="5")
    with pytest.raises(ProxyError) as e:
        p.start()
    p.stop()
    assert 'unknown key "max_recipent": did you mean max_recipients?' in str(e.value), str(e.value)


@pytest.mark.parametrize("key,near", [
    ("remov", "remove"),
    ("ad", "add"),
    ("filter_timout", "filter_timeout"),
    ("observed", "observe"),
    ("colour", None),
])
def test_unknown_section_key_suggests(tmp_path, key, near):
    """A plugin that lists its keys (headers): the message names the near one."""
    path = _write(tmp_path, config_text(dict(BASE, plugin_dir=plugin_dir()))
                  + f"\n[headers h]\nadd = X-A: b\n{key} = X-B\n")
    rc, out = run_check(path)
    assert rc != 0, out
    msg = f'{path}:8: [headers h]: unknown key "{key}"'
    hint = f": did you mean {near}?" if near else ""
    assert f"{msg}{hint} (plugin headers takes: path, observe, on_error, filter_timeout, add, remove)" in out, out
