# portcullis - a filtering SMTP proxy.
#
#   make            build build/portcullis
#   make run        start the proxy on 127.0.0.1:2525 (BACKEND=host:port, else a demo backend)
#   make test       unit + integration tests, then the same under ASan+UBSan
#   make bench      throughput against a direct baseline measured in the same run
#   make bench-conns  10,000 idle sessions and one 50 MB message: the proxy's RSS
#   make bench-cost instructions and system calls per message, proxy against smtp-sink
#   make deps       install the Debian packages the build and tests need (idempotent)
#   make install    PREFIX=/usr/local DESTDIR= (never replaces an existing portcullis.conf)
#   make uninstall  the same variables: removes what install put, not the configuration
#   make deb        the Debian packages, into build/deb/ (debian/)
#   make format     clang-format every C file in place

PREFIX   ?= /usr/local
DESTDIR  ?=
SYSCONFDIR ?= /etc/portcullis
# Where the default store (store = lmdb:...) keeps its files.
STOREDIR ?= /var/lib/portcullis
BUILD    ?= build
CC       ?= cc
PYTHON   := /usr/bin/python3
# The version portcullis -V prints (proxy/main.c), for portcullis.pc.
VERSION  := $(shell sed -n 's/.*PORTCULLIS_VERSION "\(.*\)".*/\1/p' proxy/version.h)

WARN     := -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes \
            -Wmissing-prototypes -Wno-unused-parameter -Wformat=2
CFLAGS   ?= -O2 -g
CPPFLAGS += -Iinclude -Iproxy -D_GNU_SOURCE -DSYSCONFDIR='"$(SYSCONFDIR)"' \
            -DPLUGINDIR='"$(PREFIX)/lib/portcullis/plugins"' -DSTOREDIR='"$(STOREDIR)"'
ALL_CFLAGS = -std=c11 $(WARN) $(CFLAGS) $(SANFLAGS)
LIBS     := -levent -lssl -lcrypto -ldl -lm

PROXY_SRC := proxy/main.c proxy/config.c proxy/listener.c proxy/session.c \
             proxy/backend.c proxy/smtp_parse.c proxy/dataread.c proxy/spool.c \
             proxy/log.c proxy/conn.c proxy/chain.c proxy/plugin.c proxy/verdict.c \
             proxy/message.c proxy/tls.c proxy/proxyproto.c proxy/rdns.c proxy/netkey.c \
             proxy/server.c proxy/commands.c proxy/data.c proxy/auth.c proxy/txlog.c proxy/replies.c \
             proxy/options.c proxy/metrics.c proxy/metrics_http.c \
             proxy/master.c proxy/privilege.c proxy/shmconn.c proxy/sandbox.c
PURE_SRC  := proxy/replies.c proxy/config.c proxy/smtp_parse.c proxy/dataread.c proxy/verdict.c \
             proxy/message.c proxy/proxyproto.c proxy/netkey.c proxy/options.c
UNIT_TESTS := test_replies test_smtp_parse test_dataread test_config test_verdict test_message \
              test_chain test_proxyproto test_netkey test_backend test_session test_options
# The chain's rules are tested with fake plugins in-process: it needs the
# parts a session's chain touches, and no sockets.
CHAIN_TEST_SRC := proxy/chain.c proxy/log.c proxy/spool.c proxy/metrics.c
# The backend leg on its own, against a fake MTA on the loop (fakemx.c): only
# what backend.c needs, no session, so the leg has to stand alone.
BACKEND_TEST_SRC := proxy/backend.c proxy/conn.c proxy/smtp_parse.c proxy/rdns.c \
                    proxy/log.c proxy/config.c proxy/options.c proxy/metrics.c \
                    proxy/verdict.c
# A whole session between a fake client and the fake MTA: every proxy source
# but main.c and master.c (the processes, not a session).
SESSION_TEST_SRC = $(filter-out proxy/main.c proxy/master.c,$(PROXY_SRC))
FAKEMX_OBJ := $(BUILD)/tests/unit/fakemx.o
# ABI 2: scores, message changes and the services that reach them.
PROXY_SRC += proxy/chainhost.c proxy/edit.c proxy/score.c
UNIT_TESTS += test_edit
CHAIN_TEST_SRC += proxy/chainhost.c proxy/edit.c proxy/score.c
# The store (store.h): the front and its backends; ABI 2.1 hands it to plugins.
STORE_SRC := proxy/store.c proxy/store_memory.c proxy/store_lmdb.c
LIBS += -llmdb
STORE_SRC += proxy/store_redis.c
LIBS += -lhiredis
PROXY_SRC += $(STORE_SRC)
CHAIN_TEST_SRC += $(STORE_SRC)
UNIT_TESTS += test_store
STORE_TEST_SRC = $(STORE_SRC) proxy/log.c proxy/config.c proxy/options.c
# The greylist plugin's keys (plugins/greylist_key.h), shared with portcullis-store.
UNIT_TESTS += test_greylist_key
# The spamd plugin's reply parser (plugins/spamd_reply.h).
UNIT_TESTS += test_spamd_reply
# The rspamd plugin's JSON reader (plugins/rspamd_json.h).
UNIT_TESTS += test_rspamd_json
# The milter client's wire format (plugins/milter_proto.h).
UNIT_TESTS += test_milter_proto
# systemd: sd_notify and the reload state file portcullis -R reads (notify.c).
PROXY_SRC += proxy/notify.c
LIBS += -lsystemd
LIBS += -lseccomp

# Plugins shipped (plugins/NAME.c) and the test plugins (tests/plugins/NAME.c).
PLUGINS      := $(patsubst plugins/%.c,%,$(wildcard plugins/*.c))
TEST_PLUGINS := $(patsubst tests/plugins/%.c,%,$(wildcard tests/plugins/*.c))
PLUGIN_SO    := $(PLUGINS:%=$(BUILD)/plugins/%.so) $(BUILD)/plugins/lua.so
# The Lua host (lua/*.c) is a plugin like any other; only it links Lua.
LUA_SRC      := $(wildcard lua/*.c)
LUA_CFLAGS   := $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
LUA_LIBS     := $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)
TEST_PLUGIN_SO := $(TEST_PLUGINS:%=$(BUILD)/tests/plugins/%.so)

PROXY_OBJ := $(PROXY_SRC:%.c=$(BUILD)/%.o)
DEPFILES  := $(PROXY_OBJ:.o=.d)

.PHONY: all deps run test unit integration asan bench fuzz install uninstall clean format check-format
.DELETE_ON_ERROR:

all: $(BUILD)/portcullis $(PLUGIN_SO)

$(BUILD)/portcullis: $(PROXY_OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LIBS)

# The store's admin tool (tools/portcullis-store.c, doc/man/portcullis-store.8):
# the store and what reading the configuration needs, no session.
STORE_TOOL_SRC = $(STORE_SRC) proxy/log.c proxy/config.c proxy/options.c
all: $(BUILD)/portcullis-store
$(BUILD)/portcullis-store: $(BUILD)/tools/portcullis-store.o $(STORE_TOOL_SRC:%.c=$(BUILD)/%.o)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LIBS)
# The greylist plugin shares its keys with the tool.
$(BUILD)/plugins/greylist.so: plugins/greylist_key.h
$(BUILD)/plugins/spamd.so: plugins/spamd_reply.h
# The rspamd plugin's JSON reader is a header of its own.
$(BUILD)/plugins/rspamd.so: plugins/rspamd_json.h
# The blocklist plugins' shared zones, cache and lookup job.
$(BUILD)/plugins/dnsbl.so $(BUILD)/plugins/rhsbl.so: plugins/dnsbl_common.h
# The milter client's wire format and parsers.
$(BUILD)/plugins/milter.so: plugins/milter_proto.h

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(PURE_SRC:%.c=$(BUILD)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -Wno-missing-prototypes -o $@ $^ -lcmocka $(LIBS)

# A plugin is one .c file and needs only include/portcullis/plugin.h; the
# daemon hands it libevent's base, so it links against nothing else.
$(BUILD)/plugins/%.so: plugins/%.c include/portcullis/plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -fPIC -shared -o $@ $< -levent

$(BUILD)/plugins/lua.so: $(LUA_SRC) lua/luahost.h include/portcullis/plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(LUA_CFLAGS) $(ALL_CFLAGS) -fPIC -shared -o $@ $(LUA_SRC) $(LUA_LIBS) -levent

$(BUILD)/tests/plugins/%.so: tests/plugins/%.c include/portcullis/plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -fPIC -shared -o $@ $< -levent

$(BUILD)/tests/test_chain: tests/unit/test_chain.c $(PURE_SRC:%.c=$(BUILD)/%.o) $(CHAIN_TEST_SRC:%.c=$(BUILD)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -Wno-missing-prototypes -o $@ $^ -lcmocka $(LIBS)

# The connection counts shared by workers (issue 18), with fork.
UNIT_TESTS += test_shmconn
$(BUILD)/tests/test_shmconn: tests/unit/test_shmconn.c $(BUILD)/proxy/shmconn.o
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -Wno-missing-prototypes -o $@ $^ -lcmocka

# The worker's seccomp filter (issue 18), each case in a child.
UNIT_TESTS += test_sandbox
$(BUILD)/tests/test_sandbox: tests/unit/test_sandbox.c $(BUILD)/proxy/sandbox.o $(BUILD)/proxy/log.o
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -Wno-missing-prototypes -o $@ $^ -lcmocka -lseccomp -levent

# Looking up user and group, and the drop (issue 18), in children.
UNIT_TESTS += test_privilege
$(BUILD)/tests/test_privilege: tests/unit/test_privilege.c $(BUILD)/proxy/privilege.o
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -Wno-missing-prototypes -o $@ $^ -lcmocka

# The metrics block and its rendering, on their own.
UNIT_TESTS += test_metrics
$(BUILD)/tests/test_metrics: tests/unit/test_metrics.c $(PURE_SRC:%.c=$(BUILD)/%.o) $(BUILD)/proxy/metrics.o
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -Wno-missing-prototypes -o $@ $^ -lcmocka $(LIBS)

$(BUILD)/tests/test_backend: $(BUILD)/tests/unit/test_backend.o $(FAKEMX_OBJ) \
    $(BACKEND_TEST_SRC:%.c=$(BUILD)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $^ -lcmocka $(LIBS)

$(BUILD)/tests/test_session: $(BUILD)/tests/unit/test_session.o $(FAKEMX_OBJ) \
    $(SESSION_TEST_SRC:%.c=$(BUILD)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $^ -lcmocka $(LIBS)

$(BUILD)/tests/test_store: $(BUILD)/tests/unit/test_store.o $(STORE_TEST_SRC:%.c=$(BUILD)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $^ -lcmocka $(LIBS)

# The Redis backend against a redis-server and fake servers it starts; the
# log captured (log_msg wrapped) to check what an outage logs.
UNIT_TESTS += test_store_redis
$(BUILD)/tests/test_store_redis: $(BUILD)/tests/unit/test_store_redis.o $(STORE_TEST_SRC:%.c=$(BUILD)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Wl,--wrap=log_msg -o $@ $^ -lcmocka $(LIBS)

# The log's JSON encoder and lines (proxy/log.c), stderr captured; its
# writes counted (the batch, issue 19).
UNIT_TESTS += test_log
$(BUILD)/tests/test_log: $(BUILD)/tests/unit/test_log.o $(BUILD)/proxy/log.o
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Wl,--wrap=write -o $@ $^ -lcmocka $(LIBS)

# Test sources that link with proxy objects: no prototypes for cmocka's cases.
$(BUILD)/tests/unit/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -Wno-missing-prototypes -MMD -MP -c -o $@ $<


$(BUILD)/tests/test_edit: tests/unit/test_edit.c $(PURE_SRC:%.c=$(BUILD)/%.o) $(CHAIN_TEST_SRC:%.c=$(BUILD)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -Wno-missing-prototypes -o $@ $^ -lcmocka $(LIBS)

-include $(DEPFILES) $(wildcard $(BUILD)/tests/unit/*.d) $(wildcard $(BUILD)/tools/*.d)

# The paths built in (-V prints them): paths.stamp changes when they do, and
# what embeds them is compiled again (make install PREFIX=/usr after make).
PATHS_BUILT_IN := $(SYSCONFDIR) $(PREFIX)/lib/portcullis/plugins $(STOREDIR)
$(BUILD)/paths.stamp: FORCE
	@mkdir -p $(dir $@)
	@echo '$(PATHS_BUILT_IN)' | cmp -s - $@ || echo '$(PATHS_BUILT_IN)' > $@
$(BUILD)/proxy/config.o $(BUILD)/proxy/main.o $(BUILD)/tools/portcullis-store.o: $(BUILD)/paths.stamp
.PHONY: FORCE
FORCE:

deps:
	@tools/deps.sh

# Only what building and running take (deps.sh --run), not the test peers.
run: run-deps all
	@tools/run.sh $(BUILD)/portcullis
.PHONY: run-deps
run-deps:
	@tools/deps.sh --run

unit: $(UNIT_TESTS:%=$(BUILD)/tests/%)
	@set -e; for t in $^; do echo "== $$t"; $$t; done

integration: all $(TEST_PLUGIN_SO)
	PORTCULLIS=$(BUILD)/portcullis PLUGIN_DIR=$(BUILD)/plugins TEST_PLUGIN_DIR=$(BUILD)/tests/plugins $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

# The same suite again under AddressSanitizer and UndefinedBehaviorSanitizer.
asan:
	$(MAKE) BUILD=build/asan SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" CFLAGS="-O1 -g" unit integration

test: deps check-format
	$(MAKE) unit integration
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 $(MAKE) asan
	@echo "make test: all suites passed (plain and ASan+UBSan)"

bench: deps all
	@bench/run.sh $(BUILD)/portcullis

# 10,000 idle sessions, then a 50 MB message through them (issue 19), with
# workers = 1 and 2: the proxy's RSS, per session and during the message.
.PHONY: bench-conns
bench-conns: deps all
	@$(PYTHON) bench/conns.py $(BUILD)/portcullis

# Instructions (callgrind) and system calls (strace) per message, the proxy's
# against smtp-sink's on the same workload (bench/cost.sh, issue 19).
.PHONY: bench-cost
bench-cost: deps all
	@tools/deps.sh valgrind strace
	@bench/cost.sh $(BUILD)/portcullis

# The parsers under libFuzzer with ASan+UBSan (clang), for FUZZ_SECONDS
# (default 60); new inputs that reach new code go to build/fuzz/corpus.
# Then the session state machine as long (tests/fuzz/fuzz_session.c):
# session.c, backend.c and conn.c on the real loop, between a fake client and
# a fake backend, driven by a script of client bytes and backend replies; its
# corpus is build/fuzz/corpus-session, seeded from tests/fuzz/seeds/session
# (tests/fuzz/session_seeds.py writes them). Crash inputs go to
# build/fuzz/findings; both fuzzers run, and the target fails if either found
# something. Not part of make test: a fuzzer's findings depend on how long it
# runs.
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
               -Wall -Wextra -Werror
# The session harness links every proxy source: main.c's main() renamed, the
# log formatted but not written.
FUZZ_SESSION_FLAGS := -Wno-unused-parameter -Dmain=portcullis_main -Wl,--wrap=log_msg
fuzz:
	@tools/deps.sh clang libclang-rt-14-dev
	@mkdir -p build/fuzz/corpus build/fuzz/corpus-session build/fuzz/findings
	clang $(CPPFLAGS) -std=c11 $(FUZZ_CFLAGS) -o build/fuzz/fuzz_parsers \
	    tests/fuzz/fuzz_parsers.c $(PURE_SRC)
	clang $(CPPFLAGS) -std=c11 $(FUZZ_CFLAGS) $(FUZZ_SESSION_FLAGS) -o build/fuzz/fuzz_session \
	    tests/fuzz/fuzz_session.c $(wildcard proxy/*.c) $(LIBS)
	cp tests/fuzz/seeds/session/* build/fuzz/corpus-session/
	rc=0; \
	build/fuzz/fuzz_parsers -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    -print_final_stats=1 -artifact_prefix=build/fuzz/findings/parsers- \
	    build/fuzz/corpus || rc=1; \
	build/fuzz/fuzz_session -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=10 \
	    -print_final_stats=1 -artifact_prefix=build/fuzz/findings/session- \
	    build/fuzz/corpus-session || rc=1; \
	exit $$rc

# The manual pages, doc/man/NAME.N into MANDIR/manN, naming the paths of
# this install (PREFIX, SYSCONFDIR, STOREDIR) where they name the defaults.
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/portcullis
UNITDIR ?= /lib/systemd/system
# The default paths a page, the unit or the sample names, made this install's.
INSTALL_PATHS = sed -e 's|/usr/local/|$(PREFIX)/|g' \
	-e 's|/etc/portcullis|$(SYSCONFDIR)|g' -e 's|/var/lib/portcullis|$(STOREDIR)|g'
# The unit's StateDirectory= is STOREDIR under /var/lib; elsewhere the
# service may write there (its owner is yours to set).
UNIT_STATE = $(if $(filter /var/lib/%,$(STOREDIR)),StateDirectory=$(STOREDIR:/var/lib/%=%),ReadWritePaths=$(STOREDIR))
.PHONY: install-man
install-man:
	@set -e; for p in $(wildcard doc/man/*.[1-9]); do \
		d=$(DESTDIR)$(MANDIR)/man$${p##*.}; install -d $$d; echo "install $$p $$d"; \
		$(INSTALL_PATHS) $$p > $$d/$${p##*/}; chmod 644 $$d/$${p##*/}; done

# The developer files go in too: every public header, and portcullis.pc
# (etc/portcullis.pc.in) so that a plugin builds out of tree with
#   cc $(pkg-config --cflags portcullis) -fPIC -shared -o x.so x.c
# The .pc is written here, not at build time, because PREFIX may differ
# between the two.
install: all install-man
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(SYSCONFDIR)
	install -m 755 $(BUILD)/portcullis $(DESTDIR)$(PREFIX)/sbin/portcullis
	install -m 755 $(BUILD)/portcullis-store $(DESTDIR)$(PREFIX)/sbin/portcullis-store
	install -d $(DESTDIR)$(PREFIX)/lib/portcullis/plugins $(DESTDIR)$(PREFIX)/include/portcullis
	install -m 755 $(PLUGIN_SO) $(DESTDIR)$(PREFIX)/lib/portcullis/plugins/
	install -m 644 $(wildcard include/portcullis/*.h) $(DESTDIR)$(PREFIX)/include/portcullis/
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' etc/portcullis.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/portcullis.pc
	chmod 644 $(DESTDIR)$(PREFIX)/lib/pkgconfig/portcullis.pc
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/portcullis.conf ]; then \
		echo "kept $(DESTDIR)$(SYSCONFDIR)/portcullis.conf (the sample is in $(DOCDIR))"; \
	else \
		$(INSTALL_PATHS) etc/portcullis.conf > $(DESTDIR)$(SYSCONFDIR)/portcullis.conf; \
		chmod 644 $(DESTDIR)$(SYSCONFDIR)/portcullis.conf; \
	fi
	install -d $(DESTDIR)$(UNITDIR)
	$(INSTALL_PATHS) -e 's|^StateDirectory=portcullis$$|$(UNIT_STATE)|' etc/portcullis.service \
		> $(DESTDIR)$(UNITDIR)/portcullis.service
	chmod 644 $(DESTDIR)$(UNITDIR)/portcullis.service
	install -d $(DESTDIR)$(DOCDIR)/doc $(DESTDIR)$(DOCDIR)/lua/examples
	install -m 644 README.md $(DESTDIR)$(DOCDIR)/
	install -m 644 $(wildcard doc/*.md) $(DESTDIR)$(DOCDIR)/doc/
	install -m 644 etc/grafana-portcullis.json $(DESTDIR)$(DOCDIR)/
	install -m 644 lua/README.md $(DESTDIR)$(DOCDIR)/lua/
	install -m 644 $(wildcard lua/examples/*.lua) $(DESTDIR)$(DOCDIR)/lua/examples/
	$(INSTALL_PATHS) etc/portcullis.conf > $(DESTDIR)$(DOCDIR)/portcullis.conf.sample
	chmod 644 $(DESTDIR)$(DOCDIR)/portcullis.conf.sample

# make uninstall - what make install put there, with the same PREFIX,
# DESTDIR and friends; the configuration in SYSCONFDIR stays (it is the
# admin's), and so does the state in STOREDIR.
.PHONY: uninstall
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/sbin/portcullis $(DESTDIR)$(PREFIX)/sbin/portcullis-store
	rm -rf $(DESTDIR)$(PREFIX)/lib/portcullis $(DESTDIR)$(PREFIX)/include/portcullis
	rm -rf $(DESTDIR)$(DOCDIR)
	rm -f $(DESTDIR)$(PREFIX)/lib/pkgconfig/portcullis.pc
	rm -f $(DESTDIR)$(UNITDIR)/portcullis.service
	@set -e; for p in $(wildcard doc/man/*.[1-9]); do \
		echo "rm -f $(DESTDIR)$(MANDIR)/man$${p##*.}/$${p##*/}"; \
		rm -f $(DESTDIR)$(MANDIR)/man$${p##*.}/$${p##*/}; done
	@test ! -e $(DESTDIR)$(SYSCONFDIR)/portcullis.conf || \
		echo "kept $(DESTDIR)$(SYSCONFDIR)/portcullis.conf (yours: remove it by hand)"

# make deb: the Debian packages of debian/ (portcullis, portcullis-dev),
# built by dpkg-buildpackage -b in a copy of the tracked files under
# DEBDIR, where the .debs land; its clean step empties the copy's build/,
# never this one. Unsigned; no tests inside (make test runs them).
DEBDIR ?= $(BUILD)/deb
.PHONY: deb
deb:
	@v=$$(dpkg-parsechangelog -S Version); [ "$${v%-*}" = "$(VERSION)" ] || \
		{ echo "debian/changelog is at $$v, proxy/main.c at $(VERSION): add an entry"; exit 1; }
	rm -rf $(DEBDIR)/portcullis-$(VERSION) && mkdir -p $(DEBDIR)/portcullis-$(VERSION)
	git ls-files -z | tar --null -T - -cf - | tar -xf - -C $(DEBDIR)/portcullis-$(VERSION)
	cd $(DEBDIR)/portcullis-$(VERSION) && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
		dpkg-buildpackage -us -uc -b -Jauto
	@ls $(DEBDIR)/portcullis*_$(VERSION)-*.deb

C_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)

format:
	clang-format -i $(C_FILES)

check-format:
	@out=$$(for f in $(C_FILES); do clang-format --dry-run -Werror $$f 2>&1 >/dev/null || echo $$f; done); \
	if [ -n "$$out" ]; then echo "not clang-formatted (run 'make format'):"; echo "$$out"; exit 1; fi

clean:
	rm -rf build
