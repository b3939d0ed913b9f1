"""make deb: the Debian packages, built and taken apart (never installed).

make deb DEBDIR=<tmp> builds portcullis and portcullis-dev with
dpkg-buildpackage in a copy of the tracked files under <tmp>; the suite's
build is not touched. The packages are read with dpkg-deb and extracted
into a directory: the binary's built-in paths (-V) are the package's files,
the unit runs that binary on that configuration, the configuration is a
conffile, the pages and headers are there, the extracted daemon accepts the
extracted sample with the extracted plugins, a plugin builds against the
extracted portcullis-dev, and the maintainer scripts neither enable nor
start the service on a fresh install. Lintian has only the tags listed in
LINTIAN_ACCEPTED to say.

Only in the plain pass of make test: the package is compiled from the
source with Debian's flags, whatever build the suite runs, so the ASan pass
would build and check the very same package again.
"""

import glob
import os
import re
import shutil
import subprocess

import pytest

from kit.proxy import REPO, binary_path
from test_install import PLUGIN_C, _clean_env, _unit

# What lintian may say, and why it is left: (tag, package, context start).
LINTIAN_ACCEPTED = {
    # Not an upload to Debian: there is no ITP bug to close.
    ("initial-upload-closes-no-bugs", "portcullis", "usr/share/doc/portcullis/changelog.Debian.gz"),
    ("initial-upload-closes-no-bugs", "portcullis-dev", "usr/share/doc/portcullis-dev/changelog.Debian.gz"),
}


def _run(args, timeout=60, **kw):
    p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, **kw)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def _version():
    with open(os.path.join(REPO, "proxy", "daemon.h")) as f:
        return re.search(r'#define PORTCULLIS_VERSION "([^"]+)"', f.read()).group(1)


def _is_asan(binary):
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def _snapshot(build):
    """The suite's build directory, top level: name -> mtime."""
    return {n: os.stat(os.path.join(build, n)).st_mtime_ns for n in sorted(os.listdir(build))}


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    """make deb into a temp DEBDIR: {"dir", "portcullis", "portcullis-dev"}."""
    if _is_asan(binary_path()):
        pytest.skip("ASan pass: the package does not use the suite's build; the plain pass checked it")
    tools = ("dpkg-buildpackage", "dh", "fakeroot", "dpkg-parsechangelog")
    if any(shutil.which(t) is None for t in tools):
        _run([os.path.join(REPO, "tools", "deps.sh")], timeout=900)
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing and tools/deps.sh could not install them")

    if _run(["git", "-C", REPO, "rev-parse", "--git-dir"])[0] != 0:
        pytest.skip("not a git checkout: make deb copies the files git tracks")
    debdir = str(tmp_path_factory.mktemp("debdir"))
    build = os.path.dirname(binary_path())
    before = _snapshot(build)
    rc, out = _run(["make", "-C", REPO, "--no-print-directory", "deb", f"DEBDIR={debdir}"],
                   timeout=900, env=_clean_env())
    assert rc == 0, out[-6000:]
    # The package was built in the copy: the suite's build is as it was.
    assert _snapshot(build) == before
    assert os.path.isdir(f"{debdir}/portcullis-{_version()}/debian")

    rc, arch = _run(["dpkg", "--print-architecture"])
    ver = f"{_version()}-1"
    found = {"dir": debdir, "portcullis": f"{debdir}/portcullis_{ver}_{arch.strip()}.deb",
             "portcullis-dev": f"{debdir}/portcullis-dev_{ver}_all.deb"}
    for name in ("portcullis", "portcullis-dev"):
        assert os.path.isfile(found[name]), (found[name], os.listdir(debdir))
    return found


@pytest.fixture(scope="module")
def root(debs, tmp_path_factory):
    """Both packages extracted (dpkg-deb -x) into one directory."""
    d = str(tmp_path_factory.mktemp("root"))
    for name in ("portcullis", "portcullis-dev"):
        rc, out = _run(["dpkg-deb", "-x", debs[name], d])
        assert rc == 0, out
    return d


def _field(deb, name):
    rc, out = _run(["dpkg-deb", "-f", deb, name])
    assert rc == 0, out
    return out.strip()


def _contents(deb):
    """The files (not directories) of a package, as absolute paths."""
    rc, out = _run(["dpkg-deb", "-c", deb])
    assert rc == 0, out
    return {ln.split()[5][1:] for ln in out.splitlines() if not ln.startswith("d")}


def _built_in(binary):
    rc, out = _run([binary, "-V"])
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0] == f"portcullis {_version()}", out
    return dict(ln.split(" ", 1) for ln in lines[1:])


def test_control_fields(debs):
    main, dev = debs["portcullis"], debs["portcullis-dev"]
    assert _field(main, "Package") == "portcullis"
    assert _field(main, "Version") == f"{_version()}-1"
    assert _field(main, "Section") == "mail"
    # ${shlibs:Depends}: the libraries the binaries link, found by
    # dpkg-shlibdeps, not written by hand in debian/control.
    depends = [d.split()[0] for d in _field(main, "Depends").split(", ")]
    for lib in ("libc6", "libevent-2.1-7", "libssl3", "liblua5.4-0", "liblmdb0", "libsystemd0"):
        assert lib in depends, depends
    assert any(d.startswith("libhiredis") for d in depends), depends
    with open(os.path.join(REPO, "debian", "control")) as f:
        control = f.read()
    assert "libevent-2.1-7" not in control and "libssl3" not in control
    assert _field(dev, "Package") == "portcullis-dev"
    assert _field(dev, "Architecture") == "all"
    assert "libevent-dev" in _field(dev, "Depends")


def test_contents(debs):
    main, dev = _contents(debs["portcullis"]), _contents(debs["portcullis-dev"])
    plugins = {os.path.basename(p)[:-2] for p in glob.glob(os.path.join(REPO, "plugins", "*.c"))} | {"lua"}
    pages = [os.path.basename(p) for p in glob.glob(os.path.join(REPO, "doc", "man", "*.[1-9]"))]
    assert len(pages) >= 5 and len(plugins) >= 10, (pages, plugins)
    want_main = {"/usr/sbin/portcullis", "/usr/sbin/portcullis-store", "/etc/portcullis/portcullis.conf",
                 "/lib/systemd/system/portcullis.service", "/usr/share/doc/portcullis/README.md",
                 "/usr/share/doc/portcullis/copyright", "/usr/share/doc/portcullis/portcullis.conf.sample",
                 "/usr/share/doc/portcullis/lua/examples/policy.lua"}
    want_main |= {f"/usr/lib/portcullis/plugins/{p}.so" for p in plugins}
    want_dev = {"/usr/share/pkgconfig/portcullis.pc"}
    want_dev |= {"/usr/include/portcullis/" + os.path.basename(h)
                 for h in glob.glob(os.path.join(REPO, "include", "portcullis", "*.h"))}
    for page in pages:
        path = f"/usr/share/man/man{page.rsplit('.', 1)[1]}/{page}.gz"
        (want_dev if page.endswith(".3") else want_main).add(path)
    assert want_main <= main, sorted(want_main - main)
    assert want_dev <= dev, sorted(want_dev - dev)
    assert not main & dev, main & dev
    assert not [p for p in main | dev if p.startswith("/usr/local")]


def test_conffiles(debs, tmp_path):
    rc, out = _run(["dpkg-deb", "-e", debs["portcullis"], str(tmp_path / "control")])
    assert rc == 0, out
    with open(tmp_path / "control" / "conffiles") as f:
        assert f.read().split() == ["/etc/portcullis/portcullis.conf"]


def test_binary_unit_and_files_agree(root):
    """-V's paths are the package's files; the unit runs that binary on
    that configuration with those run and state directories."""
    built = _built_in(f"{root}/usr/sbin/portcullis")
    assert built == {"config": "/etc/portcullis/portcullis.conf",
                     "plugin_dir": "/usr/lib/portcullis/plugins",
                     "store_dir": "/var/lib/portcullis", "run_dir": "/run/portcullis"}, built
    assert os.path.isfile(root + built["config"])
    assert os.path.isfile(f"{root}{built['plugin_dir']}/access.so")
    unit = _unit(f"{root}/lib/systemd/system/portcullis.service")
    assert unit["ExecStart"] == [f"/usr/sbin/portcullis -c {built['config']}"]
    assert unit["ExecStartPre"] == [f"/usr/sbin/portcullis -t -c {built['config']}"]
    assert unit["ExecReload"] == ["/usr/sbin/portcullis -R"]
    assert ["/run/" + d for d in unit["RuntimeDirectory"]] == [built["run_dir"]]
    assert ["/var/lib/" + d for d in unit["StateDirectory"]] == [built["store_dir"]]
    for exe in (unit["ExecStart"] + unit["ExecStartPre"] + unit["ExecReload"]):
        assert os.access(root + exe.split()[0], os.X_OK), exe
    with open(f"{root}/lib/systemd/system/portcullis.service") as f:
        docs = [ln.strip().split("=", 1)[1] for ln in f if ln.startswith("Documentation=file://")]
    assert docs and all(os.path.isfile(root + d[len("file://"):]) for d in docs), docs
    # portcullis-store reads the same configuration.
    with open(f"{root}/usr/sbin/portcullis-store", "rb") as f:
        assert built["config"].encode() in f.read()


def test_extracted_daemon_accepts_the_sample_with_the_plugins(root, tmp_path):
    plugin_dir = f"{root}/usr/lib/portcullis/plugins"
    conf = tmp_path / "portcullis.conf"
    with open(f"{root}/etc/portcullis/portcullis.conf") as f:
        sample = f.read()
    conf.write_text(sample)
    rc, out = _run([f"{root}/usr/sbin/portcullis", "-t", "-c", str(conf), "-o", f"plugin_dir={plugin_dir}"])
    assert rc == 0 and "configuration OK" in out, out

    # Plugins found by name in plugin_dir, Lua running a packaged example.
    conf.write_text(sample + "\n[plugin greylist]\n\n[plugin spamd]\n\n[plugin tarpit]\n\n[plugin lua]\n"
                    f"script = {root}/usr/share/doc/portcullis/lua/examples/policy.lua\n")
    rc, out = _run([f"{root}/usr/sbin/portcullis", "-t", "-c", str(conf), "-o", f"plugin_dir={plugin_dir}"])
    assert rc == 0 and "configuration OK" in out, out
    # ... and only there: an empty plugin_dir fails.
    (tmp_path / "empty").mkdir()
    rc, out = _run([f"{root}/usr/sbin/portcullis", "-t", "-c", str(conf), "-o",
                    f"plugin_dir={tmp_path / 'empty'}"])
    assert rc != 0 and "greylist.so" in out, out


def test_plugin_builds_against_the_dev_package(root, tmp_path):
    env = _clean_env(PKG_CONFIG_PATH=f"{root}/usr/share/pkgconfig", PKG_CONFIG_SYSROOT_DIR=root)
    rc, plugindir = _run(["pkg-config", "--variable=plugindir", "portcullis"], env=env)
    assert rc == 0, plugindir
    assert plugindir.strip() == root + _built_in(f"{root}/usr/sbin/portcullis")["plugin_dir"]
    rc, flags = _run(["pkg-config", "--cflags", "--libs", "portcullis"], env=env)
    assert rc == 0 and f"-I{root}/usr/include" in flags.split(), flags
    (tmp_path / "devkit.c").write_text(PLUGIN_C)
    rc, out = _run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", *flags.split(), "-fPIC", "-shared",
                    "-o", str(tmp_path / "devkit.so"), str(tmp_path / "devkit.c")], env=env)
    assert rc == 0, out
    conf = tmp_path / "portcullis.conf"
    conf.write_text(f"backend = 127.0.0.1:10025\nhostname = mx.test\n\n[plugin devkit]\n"
                    f"path = {tmp_path / 'devkit.so'}\n")
    rc, out = _run([f"{root}/usr/sbin/portcullis", "-t", "-c", str(conf)])
    assert rc == 0 and "devkit: loaded devkit" in out, out


# systemctl as deb-systemd-invoke asks it: a unit is enabled when its
# [Install] link is in DPKG_ROOT, active when UNIT_ACTIVE says so. Every
# call is logged.
SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$STUB_LOG"
case "$*" in
*is-enabled*)
	if [ -L "$DPKG_ROOT/etc/systemd/system/multi-user.target.wants/portcullis.service" ]; then
		echo enabled; exit 0
	fi
	echo disabled; exit 1;;
*is-active*) [ "$UNIT_ACTIVE" = 1 ]; exit $?;;
esac
exit 0
"""


def _postinst(tmp_path, debs, old_version=None, before=(), active=False):
    """The package's postinst configure, as dpkg runs it on a systemd
    machine, on the package extracted into DPKG_ROOT. deb-systemd-helper
    and deb-systemd-invoke are the real ones (the first keeps its links and
    state under DPKG_ROOT, the second decides whether a unit starts);
    systemctl is a stub. before: deb-systemd-helper actions run first, as
    the previous version left things. Returns (systemctl's log, enabled)."""
    work = tmp_path / (old_version or "fresh")
    root = work / "root"
    for d in ("bin", "run-systemd", "root"):
        (work / d).mkdir(parents=True)
    (work / "bin" / "systemctl").write_text(SYSTEMCTL)
    os.chmod(work / "bin" / "systemctl", 0o755)
    rc, out = _run(["dpkg-deb", "-R", debs["portcullis"], str(root)])
    assert rc == 0, out
    script = (root / "DEBIAN" / "postinst").read_text()
    assert "/run/systemd/system" in script
    (work / "postinst").write_text(script.replace("/run/systemd/system", str(work / "run-systemd")))
    log = work / "log"
    log.write_text("")
    # DPKG_ROOT also keeps this machine's policy-rc.d out of it.
    env = dict(os.environ, PATH=f"{work / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", STUB_LOG=str(log),
               UNIT_ACTIVE="1" if active else "0", DPKG_ROOT=str(root),
               DPKG_MAINTSCRIPT_PACKAGE="portcullis", DPKG_MAINTSCRIPT_NAME="postinst")
    for action in before:
        rc, out = _run(["deb-systemd-helper", action, "portcullis.service"], env=env)
        assert rc == 0, out
    args = ["sh", str(work / "postinst"), "configure"] + ([old_version] if old_version else [])
    rc, out = _run(args, env=env)
    assert rc == 0, out
    # deb-systemd-helper ran (postinst ignores its failures): its state is there.
    assert os.path.isdir(root / "var/lib/systemd/deb-systemd-helper-enabled"), out
    link = root / "etc/systemd/system/multi-user.target.wants/portcullis.service"
    return log.read_text().splitlines(), os.path.islink(link)


def _starts(log):
    return [ln for ln in log if re.search(r" (enable|start|restart) ", ln + " ")]


def test_fresh_install_neither_enables_nor_starts(debs, tmp_path):
    log, enabled = _postinst(tmp_path, debs)
    assert "systemctl --system daemon-reload" in log, log  # the systemd branch ran
    assert any("is-enabled" in ln for ln in log), log  # deb-systemd-invoke asked
    assert not enabled
    assert not _starts(log), log


def test_upgrade_restarts_a_service_in_use(debs, tmp_path):
    log, enabled = _postinst(tmp_path, debs, "0.0.1-1", before=["enable"], active=True)
    assert enabled
    assert [ln for ln in log if ln.endswith(" restart portcullis.service")], log
    # Installed before but never enabled, and stopped: an upgrade leaves it so.
    log, enabled = _postinst(tmp_path, debs, "0.0.2-1", before=["update-state"])
    assert not enabled
    assert not _starts(log), log


def test_lintian(debs):
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed (tools/deps.sh installs it)")
    rc, out = _run(["lintian", "--no-cfg", "--fail-on", "none", debs["portcullis"], debs["portcullis-dev"]],
                   timeout=300)
    assert rc == 0, out
    seen = set()
    for ln in out.splitlines():
        m = re.match(r"[EWX]: (\S+): (\S+)", ln)
        if m:
            ctx = re.search(r" \[([^\]]+?)(?::\d+)?\]$", ln)
            seen.add((m.group(2), m.group(1), ctx.group(1) if ctx else ""))
    assert not seen - LINTIAN_ACCEPTED, out
