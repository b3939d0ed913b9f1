"""make install's developer files: a plugin built out of the tree.

make install DESTDIR=<tmp> PREFIX=/usr/local puts the public headers and
portcullis.pc under <tmp>; a plugin is then compiled in a directory of its
own with nothing but what pkg-config says (PKG_CONFIG_SYSROOT_DIR=<tmp>), and
the installed daemon loads it with -t. The install reuses the build the
suite runs (the directory of $PORTCULLIS): nothing is rebuilt. The manual
pages land under PREFIX/share/man (man -M finds them), naming the paths of
the install they belong to.
"""

import glob
import os
import re
import shutil
import subprocess

import pytest

from kit.proxy import REPO, binary_path, config_text

PREFIX = "/usr/local"

# A complete plugin, as an author outside the tree would write it: it needs
# <portcullis/plugin.h> and libevent (a timer on the host's base), nothing
# else. init says it ran, so the test knows the host called it.
PLUGIN_C = r"""
#include <stdio.h>

#include <event2/event.h>
#include <portcullis/plugin.h>

static const char *const devkit_keys[] = {"greeting", NULL};

static int
devkit_init(struct pc_init *in, void **instance)
{
	const char *greeting = "none";

	for (const struct pc_option *o = in->options; o != NULL; o = o->next)
		greeting = o->value;
	in->host->log(in->self, NULL, PC_LOG_INFO, "devkit: loaded %s, greeting %s, libevent %s",
	    in->name, greeting, event_get_version());
	*instance = NULL;
	return 0;
}

const struct pc_plugin portcullis_plugin = {
	PC_PLUGIN_ABI_INIT,
	.name = "devkit",
	.version = "1.0",
	.keys = devkit_keys,
	.init = devkit_init,
};
"""


def _clean_env(**extra):
    """The environment without what could leak the tree in: an outer make's
    flags (its BUILD, its jobserver) and the compiler's include paths."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CPATH", "C_INCLUDE_PATH",
                        "PKG_CONFIG_PATH", "PKG_CONFIG_SYSROOT_DIR", "PKG_CONFIG_LIBDIR")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """make install into a fresh DESTDIR; returns the DESTDIR."""
    dest = str(tmp_path_factory.mktemp("destdir"))
    build = os.path.dirname(binary_path())
    p = subprocess.run(
        ["make", "-C", REPO, "--no-print-directory", "install", f"BUILD={build}",
         f"DESTDIR={dest}", f"PREFIX={PREFIX}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=_clean_env(), timeout=300,
    )
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, out
    # Installing must not have compiled anything: the suite's build is used.
    assert " -c -o " not in out and " -shared " not in out, out
    return dest


def _pkg_config(dest, *args):
    env = _clean_env(PKG_CONFIG_PATH=f"{dest}{PREFIX}/lib/pkgconfig", PKG_CONFIG_SYSROOT_DIR=dest)
    p = subprocess.run(["pkg-config", *args, "portcullis"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env, timeout=20)
    out = p.stdout.decode().strip()
    assert p.returncode == 0, out
    return out


def test_headers_installed(installed):
    tree = sorted(os.path.basename(h) for h in glob.glob(os.path.join(REPO, "include/portcullis/*.h")))
    inst = f"{installed}{PREFIX}/include/portcullis"
    assert "plugin.h" in tree
    assert sorted(os.listdir(inst)) == tree
    for name in tree:
        with open(os.path.join(REPO, "include/portcullis", name), "rb") as a, \
                open(os.path.join(inst, name), "rb") as b:
            assert a.read() == b.read(), name


def test_pc_version_and_plugindir(installed):
    p = subprocess.run([f"{installed}{PREFIX}/sbin/portcullis", "-V"], stdout=subprocess.PIPE, timeout=20)
    assert p.returncode == 0
    assert p.stdout.decode().splitlines()[0].split() == ["portcullis", _pkg_config(installed, "--modversion")]
    plugindir = _pkg_config(installed, "--variable=plugindir")
    assert plugindir == f"{installed}{PREFIX}/lib/portcullis/plugins"
    assert os.path.exists(os.path.join(plugindir, "access.so"))
    assert "libevent" in _pkg_config(installed, "--print-requires")


def test_plugin_builds_out_of_tree_and_loads(installed, tmp_path):
    cflags = _pkg_config(installed, "--cflags").split()
    libs = _pkg_config(installed, "--libs").split()
    assert f"-I{installed}{PREFIX}/include" in cflags, cflags
    assert not any(REPO in f for f in cflags + libs), (cflags, libs)

    src = tmp_path / "src"
    src.mkdir()
    (src / "devkit.c").write_text(PLUGIN_C)
    p = subprocess.run(
        ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", *cflags, "-fPIC", "-shared",
         "-MD", "-MF", "devkit.d", "-o", "devkit.so", "devkit.c", *libs],
        cwd=str(src), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_clean_env(), timeout=60,
    )
    assert p.returncode == 0, p.stdout.decode()
    # The header came from the install, not from the tree.
    deps = (src / "devkit.d").read_text()
    assert f"{installed}{PREFIX}/include/portcullis/plugin.h" in deps, deps
    assert REPO not in deps, deps

    # Loaded by path = and, copied into plugindir, by name.
    plugindir = _pkg_config(installed, "--variable=plugindir")
    subprocess.run(["install", "-m", "755", str(src / "devkit.so"), plugindir], check=True)
    conf = tmp_path / "portcullis.conf"
    conf.write_text(
        config_text({"listen": "127.0.0.1:2525", "backend": "127.0.0.1:10025",
                     "hostname": "mx.test", "plugin_dir": plugindir})
        + f"\n[plugin devkit]\npath = {src / 'devkit.so'}\ngreeting = hello\n"
        + "\n[devkit again]\n"
    )
    p = subprocess.run([f"{installed}{PREFIX}/sbin/portcullis", "-t", "-c", str(conf)],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=20)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, out
    assert "devkit: loaded devkit, greeting hello, libevent 2." in out, out
    assert "devkit: loaded again, greeting none, libevent 2." in out, out
    assert "configuration OK" in out, out
    assert "AddressSanitizer" not in out and "runtime error" not in out, out


def _man_pages():
    return sorted(p for p in os.listdir(os.path.join(REPO, "doc", "man")) if re.fullmatch(r".+\.[1-9]", p))


def test_man_pages_installed(installed):
    """Every page of doc/man under PREFIX/share/man/manN, where man -M finds it."""
    mandir = f"{installed}{PREFIX}/share/man"
    pages = _man_pages()
    assert {"portcullis.8", "portcullis.conf.5", "portcullis-lua.7", "portcullis-plugin.3",
            "portcullis-store.8"} <= set(pages), pages
    for page in pages:
        path = os.path.join(mandir, "man" + page.rsplit(".", 1)[1], page)
        assert os.path.isfile(path), path
        assert os.stat(path).st_mode & 0o777 == 0o644, path
        # The default install names the paths the pages name: the same text.
        with open(os.path.join(REPO, "doc", "man", page), "rb") as a, open(path, "rb") as b:
            assert a.read() == b.read(), page
    if shutil.which("man") is None:
        return  # the paths are checked; man itself is not installed here
    for page in pages:
        name, sect = page.rsplit(".", 1)
        p = subprocess.run(["man", "-M", mandir, "-w", sect, name], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=_clean_env(MANPATH=""), timeout=20)
        out = p.stdout.decode().strip()
        assert p.returncode == 0 and out == os.path.join(mandir, "man" + sect, page), out


def test_man_pages_name_the_install_paths(tmp_path):
    """PREFIX=/usr with its own SYSCONFDIR, STOREDIR and MANDIR: the pages
    name the paths that install uses, not the defaults, and stay clean."""
    dest = str(tmp_path / "dest")
    p = subprocess.run(
        ["make", "-C", REPO, "--no-print-directory", "install-man", f"DESTDIR={dest}", "PREFIX=/usr",
         "SYSCONFDIR=/etc/mx-filter", "STOREDIR=/srv/mx-state", "MANDIR=/usr/share/man"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=_clean_env(), timeout=60,
    )
    assert p.returncode == 0, p.stdout.decode()
    mandir = f"{dest}/usr/share/man"
    with open(f"{mandir}/man5/portcullis.conf.5") as f:
        conf = f.read()
    assert ".Pa /usr/lib/portcullis/plugins ." in conf
    assert ".Pa /etc/mx-filter/portcullis.conf" in conf
    assert ".Ql lmdb:/srv/mx-state/store ." in conf
    with open(f"{mandir}/man3/portcullis-plugin.3") as f:
        assert ".It Pa /usr/include/portcullis/plugin.h" in f.read()
    for page in _man_pages():
        path = os.path.join(mandir, "man" + page.rsplit(".", 1)[1], page)
        with open(path) as f:
            text = f.read()
        for default in ("/usr/local", "/etc/portcullis", "/var/lib/portcullis"):
            assert default not in text, (page, default)
        if shutil.which("mandoc"):
            lint = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", path],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            assert lint.returncode == 0 and lint.stdout == b"", lint.stdout.decode()


def _guide_block(lang, after):
    """The first ```lang block after the text `after` in doc/plugins.md."""
    with open(os.path.join(REPO, "doc", "plugins.md")) as f:
        text = f.read()
    i = text.index(after)
    start = text.index(f"```{lang}\n", i) + len(lang) + 4
    return text[start:text.index("```", start)]


def test_guide_example_builds_and_filters(installed, tmp_path, recorder, proxy, client):
    """doc/plugins.md's nospam.c, built with the guide's own cc command
    against the install, refuses what it says it refuses."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "nospam.c").write_text(_guide_block("c", "A whole plugin, `nospam.c`"))
    commands = _guide_block("sh", "Build it, install it where the daemon looks")
    cc = commands.split("\ninstall ")[0].replace("\\\n", " ")
    assert cc.startswith("cc ") and "pkg-config --cflags portcullis" in cc, cc
    env = _clean_env(PKG_CONFIG_PATH=f"{installed}{PREFIX}/lib/pkgconfig", PKG_CONFIG_SYSROOT_DIR=installed)
    p = subprocess.run(["sh", "-c", cc], cwd=str(src), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=env, timeout=60)
    out = p.stdout.decode()
    assert p.returncode == 0 and out == "", out  # no warnings either

    px = proxy(sections=[("plugin nospam", {"path": str(src / "nospam.so"), "domain": "spam.example"})])
    c = client(px)
    c.greet()
    assert c.cmd("MAIL FROM:<x@spam.example>").first == "550 5.7.1 Not from there"
    c.cmd("MAIL FROM:<x@ham.example>").expect(250)
    c.cmd("QUIT").expect(221)


def _build_copy(tmp_path):
    """A copy of the suite's build (times kept), for a make with other
    paths: what embeds them is compiled again there, not in the suite's."""
    build = os.path.dirname(binary_path())
    copy = str(tmp_path / "build")
    shutil.copytree(build, copy, symlinks=True,
                    ignore=lambda d, names: [n for n in names if d == build and n in ("asan", "fuzz", "tests")])
    return copy


def _build_flags(build):
    """The flags the build was made with: make asan's when it is the
    sanitizers' (the outer make's variables are not passed down here)."""
    with open(os.path.join(build, "portcullis"), "rb") as f:
        if b"__asan_init" not in f.read():
            return {}
    with open(os.path.join(REPO, "Makefile")) as f:
        m = re.search(r'^asan:\n\t\$\(MAKE\) BUILD=\S+ SANFLAGS="([^"]+)" CFLAGS="([^"]+)"', f.read(), re.M)
    assert m, "Makefile: the asan target was not found"
    return {"SANFLAGS": m.group(1), "CFLAGS": m.group(2)}


def _make(dest, *targets, build=None, **variables):
    build = build or os.path.dirname(binary_path())
    args = ["make", "-C", REPO, "--no-print-directory", *targets, f"BUILD={build}", f"DESTDIR={dest}"]
    args += [f"{k}={v}" for k, v in {**_build_flags(build), **variables}.items()]
    p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=_clean_env(), timeout=300)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, out
    return out


def _files(dest):
    return sorted(os.path.relpath(os.path.join(d, f), dest)
                  for d, _, fs in os.walk(dest) for f in fs)


def test_unit_docs_and_paths_agree(tmp_path):
    """PREFIX=/usr with its own SYSCONFDIR: the unit runs the installed
    binary on the installed configuration, its Documentation= is there, and
    the README, the guides and the Lua examples are installed."""
    dest = str(tmp_path / "dest")
    _make(dest, "install", build=_build_copy(tmp_path), PREFIX="/usr", SYSCONFDIR="/etc/mx-filter")
    with open(f"{dest}/lib/systemd/system/portcullis.service") as f:
        unit = f.read()
    for line in ("ExecStart=/usr/sbin/portcullis -c /etc/mx-filter/portcullis.conf",
                 "ExecStartPre=/usr/sbin/portcullis -t -c /etc/mx-filter/portcullis.conf",
                 "Documentation=file:///usr/share/doc/portcullis/README.md"):
        assert line in unit.splitlines(), unit
    assert "/usr/local" not in unit and "/etc/portcullis" not in unit, unit
    for path in ("/usr/sbin/portcullis", "/etc/mx-filter/portcullis.conf",
                 "/usr/share/doc/portcullis/README.md", "/usr/share/doc/portcullis/doc/milter.md",
                 "/usr/share/doc/portcullis/lua/README.md",
                 "/usr/share/doc/portcullis/lua/examples/policy.lua",
                 "/usr/share/doc/portcullis/portcullis.conf.sample",
                 "/usr/share/doc/portcullis/grafana-portcullis.json"):
        assert os.path.isfile(dest + path), path
    # The installed daemon reads the installed sample.
    rc = subprocess.run([f"{dest}/usr/sbin/portcullis", "-t", "-c", f"{dest}/etc/mx-filter/portcullis.conf"],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert rc.returncode == 0, rc.stdout.decode()


def test_install_keeps_the_admins_configuration(tmp_path):
    dest = str(tmp_path / "dest")
    conf = f"{dest}/etc/portcullis/portcullis.conf"
    os.makedirs(os.path.dirname(conf))
    with open(conf, "w") as f:
        f.write("# mine\nbackend = 127.0.0.1:10025\n")
    os.chmod(conf, 0o600)
    out = _make(dest, "install", PREFIX=PREFIX)
    assert "kept " in out, out
    with open(conf) as f:
        assert f.read() == "# mine\nbackend = 127.0.0.1:10025\n"
    assert os.stat(conf).st_mode & 0o777 == 0o600


def test_uninstall_leaves_only_the_configuration(tmp_path):
    dest = str(tmp_path / "dest")
    build = _build_copy(tmp_path)
    _make(dest, "install", build=build, PREFIX="/usr")
    installed = _files(dest)
    assert len(installed) > 30, installed
    out = _make(dest, "uninstall", build=build, PREFIX="/usr")
    assert _files(dest) == ["etc/portcullis/portcullis.conf"], _files(dest)
    assert "kept " in out, out


def _built_in(binary):
    """portcullis -V: the version line, then "name path" for each path
    built in."""
    p = subprocess.run([binary, "-V"], stdout=subprocess.PIPE, timeout=20)
    assert p.returncode == 0
    return dict(ln.split(" ", 1) for ln in p.stdout.decode().splitlines()[1:])


def test_other_paths_rebuild_what_embeds_them(tmp_path):
    """make with another PREFIX/SYSCONFDIR/STOREDIR compiles again what
    embeds them (paths.stamp) and nothing else; the same paths again
    compile nothing."""
    build = _build_copy(tmp_path)
    assert _built_in(f"{build}/portcullis")["plugin_dir"] == "/usr/local/lib/portcullis/plugins"
    paths = {"PREFIX": "/opt/pc", "SYSCONFDIR": "/etc/pc", "STOREDIR": "/srv/pc"}
    out = _make("", "all", build=build, **paths)
    compiled = sorted(re.findall(r" -c -o \S+ (\S+\.c)$", out, re.M))
    assert compiled == ["proxy/config.c", "proxy/main.c", "tools/portcullis-store.c"], out
    assert _built_in(f"{build}/portcullis") == {
        "config": "/etc/pc/portcullis.conf", "plugin_dir": "/opt/pc/lib/portcullis/plugins",
        "store_dir": "/srv/pc", "run_dir": "/run/portcullis"}
    out = _make("", "all", build=build, **paths)
    assert " -c -o " not in out, out
    _make("", "all", build=build)
    assert _built_in(f"{build}/portcullis")["config"] == "/etc/portcullis/portcullis.conf"


def _unit(path):
    """The unit's [Service] settings: name -> list of values."""
    out = {}
    for ln in open(path).read().split("[Service]", 1)[1].split("\n[", 1)[0].splitlines():
        if ln and not ln.startswith("#"):
            k, v = ln.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def _verify(root, unit):
    """systemd-analyze verify of the unit installed under root: (status,
    what it said). The units ours names are taken from this machine."""
    for name in ("sysinit.target", "basic.target", "shutdown.target", "network-online.target"):
        for d in ("/lib/systemd/system", "/usr/lib/systemd/system"):
            if os.path.exists(f"{d}/{name}") and not os.path.exists(f"{root}/lib/systemd/system/{name}"):
                shutil.copy(f"{d}/{name}", f"{root}/lib/systemd/system/{name}")
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", unit],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=_clean_env(SYSTEMD_LOG_LEVEL="notice"), timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_installed_unit_verifies_and_agrees_with_the_binary(tmp_path):
    """make install DESTDIR=... PREFIX=/usr: systemd-analyze verify is
    silent on the unit, and the unit names the paths the binary was built
    with (-V): the binary, its configuration, the run and state
    directories."""
    dest = str(tmp_path / "dest")
    _make(dest, "install", build=_build_copy(tmp_path), PREFIX="/usr")
    unit_path = "/lib/systemd/system/portcullis.service"
    rc, out = _verify(dest, unit_path)
    assert rc == 0 and out == "", out

    unit = _unit(dest + unit_path)
    built = _built_in(f"{dest}/usr/sbin/portcullis")
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["ExecStart"] == [f"/usr/sbin/portcullis -c {built['config']}"]
    assert unit["ExecStartPre"] == [f"/usr/sbin/portcullis -t -c {built['config']}"]
    assert unit["ExecReload"] == ["/usr/sbin/portcullis -R"]
    assert os.path.isfile(dest + built["config"])
    assert os.path.isfile(f"{dest}{built['plugin_dir']}/access.so")
    assert ["/run/" + d for d in unit["RuntimeDirectory"]] == [built["run_dir"]]
    assert ["/var/lib/" + d for d in unit["StateDirectory"]] == [built["store_dir"]]

    # The check is not blind: an unknown key and a missing program are seen.
    with open(dest + unit_path) as f:
        text = f.read()
    with open(dest + unit_path, "w") as f:
        f.write(text.replace("ExecReload=/usr/sbin/portcullis -R",
                             "ExecReload=/usr/sbin/portcullis-nothere -R\nReloadSignal=SIGHUP"))
    rc, out = _verify(dest, unit_path)
    assert rc != 0 and "portcullis-nothere" in out and "ReloadSignal" in out, out


def test_unit_state_directory_follows_storedir(tmp_path):
    dest = str(tmp_path / "dest")
    _make(dest, "install", build=_build_copy(tmp_path), PREFIX="/usr", STOREDIR="/var/lib/mx/store")
    assert _unit(f"{dest}/lib/systemd/system/portcullis.service")["StateDirectory"] == ["mx/store"]
