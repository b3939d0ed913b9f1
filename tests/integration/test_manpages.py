"""The manual pages in doc/man: clean, and in step with the code.

Every page is clean under `mandoc -T lint -W warning` (errors and warnings;
style notes, such as a cross reference to a page not installed here, are
left out). portcullis.conf(5) documents exactly the keys of config.c's key
table, each with its default; portcullis(8) exactly the options main.c gives
getopt; portcullis-lua(7) every key of the Lua host's table; and
portcullis-plugin(3) every host service, field and descriptor member of
plugin.h. The lists are read from the C sources, so a key added on one side
only fails here.
"""

import os
import re
import shutil
import subprocess

import pytest

from kit.proxy import REPO

MAN = os.path.join(REPO, "doc", "man")
PAGES = ["portcullis-plugin.3", "portcullis.conf.5", "portcullis-lua.7", "portcullis.8",
         "portcullis-store.8"]


def _read(*parts):
    with open(os.path.join(REPO, *parts)) as f:
        return f.read()


def _lint(path):
    """mandoc's errors and warnings about a page: (exit status, output)."""
    if shutil.which("mandoc") is None:
        pytest.fail("mandoc is not installed: run tools/deps.sh")
    p = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def _section(page, name):
    """The source lines of one .Sh section of an mdoc page."""
    text = _read("doc", "man", page)
    m = re.search(r"^\.Sh " + re.escape(name) + r"\n(.*?)(?=^\.Sh |\Z)", text, re.M | re.S)
    assert m, f"{page}: no section {name}"
    return m.group(1)


def config_c_keys(source):
    """The key names of config.c's table: static const struct key_def keys[]."""
    m = re.search(r"static const struct key_def keys\[\] = \{(.*?)\n\};", source, re.S)
    assert m, "config.c: the key table was not found"
    return re.findall(r'\{\s*"([a-z0-9_]+)",\s*K_[A-Z_]+', m.group(1))


def documented_keys(section):
    """The keys of portcullis.conf(5)'s TOP-LEVEL KEYS: each ".It Cm KEY"
    line, with the text up to the next one."""
    blocks = re.split(r"^(?=\.It Cm )", section, flags=re.M)
    out = {}
    for b in blocks[1:]:
        key = b.split()[2]
        assert key not in out, f"{key} documented twice"
        out[key] = b
    return out


def test_every_page_is_there_and_named_for_its_file():
    assert sorted(os.listdir(MAN)) == sorted(PAGES)
    for page in PAGES:
        name, sect = page.rsplit(".", 1)
        text = _read("doc", "man", page)
        m = re.search(r"^\.(?:Dt|TH) (\S+) (\d)", text, re.M)
        assert m and m.group(1) == name.upper() and m.group(2) == sect, (page, m and m.group(0))


@pytest.mark.parametrize("page", PAGES)
def test_mandoc_lint_clean(page):
    rc, out = _lint(os.path.join(MAN, page))
    assert rc == 0 and out == "", out


def test_lint_sees_a_broken_page(tmp_path):
    """The check above can fail: a warning mandoc gives is not filtered out."""
    bad = tmp_path / "broken.8"
    bad.write_text(_read("doc", "man", "portcullis.8").replace(".Dd December", ".Dd Decembre", 1)
                   + ".Bl -tag\n.It x\n")
    rc, out = _lint(str(bad))
    assert rc != 0 and "WARNING" in out and "ERROR" in out, out


def test_conf_keys_match_config_c():
    code = config_c_keys(_read("proxy", "config.c"))
    assert len(code) >= 40 and "listen" in code and "header_score" in code, code
    assert len(set(code)) == len(code)
    doc = documented_keys(_section("portcullis.conf.5", "TOP-LEVEL KEYS"))
    assert sorted(set(code) - set(doc)) == [], "in config.c, not in portcullis.conf(5)"
    assert sorted(set(doc) - set(code)) == [], "in portcullis.conf(5), not in config.c"
    no_default = [k for k, b in doc.items() if "efault" not in b]
    assert no_default == [], "keys documented without their default"


def test_key_drift_is_seen():
    """A row added to the table (a copy of config.c) is a key the page lacks."""
    source = _read("proxy", "config.c").replace(
        '    {"listen", K_LISTEN, 0, 0, 0, 0},',
        '    {"listen", K_LISTEN, 0, 0, 0, 0},\n    {"frobnicate_limit", K_COUNT, 0, 0, 0, 0},', 1)
    doc = documented_keys(_section("portcullis.conf.5", "TOP-LEVEL KEYS"))
    assert set(config_c_keys(source)) - set(doc) == {"frobnicate_limit"}


def test_options_match_main_c():
    m = re.search(r'getopt\(argc, argv, "([^"]+)"\)', _read("proxy", "main.c"))
    assert m, "main.c: no getopt call"
    spec = m.group(1)
    takes_arg = {c: spec[i + 1:i + 2] == ":" for i, c in enumerate(spec) if c != ":"}
    assert "c" in takes_arg and "t" in takes_arg, spec
    options = _section("portcullis.8", "OPTIONS")
    documented = dict(re.findall(r"^\.It Fl (\w)(.*)$", options, re.M))
    assert sorted(documented) == sorted(takes_arg), (documented, spec)
    for c, arg in takes_arg.items():
        assert (" Ar " in documented[c] + " ") == arg, (c, documented[c])
    synopsis = _section("portcullis.8", "SYNOPSIS")
    for c in takes_arg:
        assert re.search(r"\bFl " + c + r"\b", synopsis), c


def test_lua_keys_documented():
    m = re.search(r"static const struct lh_key lh_keys\[\] = \{(.*?)\n\};", _read("lua", "host.c"), re.S)
    assert m, "lua/host.c: no key table"
    code = re.findall(r'\{"([a-z_]+)", LH_KEY_', m.group(1))
    assert "script" in code and "kv_store" in code, code
    doc = re.findall(r"^\.It Cm (\S+)", _section("portcullis-lua.7", "CONFIGURATION"), re.M)
    assert sorted(doc) == sorted(code)


def test_plugin_abi_documented():
    header = _read("include", "portcullis", "plugin.h")
    page = _read("doc", "man", "portcullis-plugin.3")
    host = re.search(r"struct pc_host \{(.*?)\n\};", header, re.S).group(1)
    services = re.findall(r"\(\*(\w+)\)\(", host)
    assert "pending_deadline" in services and "insert_header_current" in services, services
    missing = [s for s in services if not re.search(r"\bFn (host->)?" + s + r"\b", page)]
    assert missing == [], "host services not in portcullis-plugin(3)"
    fields = re.findall(r"^\t(PC_[A-Z_]+)", re.search(r"enum pc_field \{(.*?)\};", header, re.S).group(1),
                        re.M)
    assert "PC_RCPT_DOMAIN" in fields
    assert [f for f in fields if not re.search(r"\b" + f + r"\b", page)] == []
    plugin = re.search(r"struct pc_plugin \{(.*?)\n\};", header, re.S).group(1)
    members = re.findall(r"\(\*(\w+)\)\(", plugin) + re.findall(r"pc_hook_fn ([\w, ]+);", plugin)[0].split(", ")
    members += ["name", "version", "keys", "on_error"]
    assert [m for m in members if not re.search(r"\.It Va (\w+ , )*" + m + r"\b", page)] == []
