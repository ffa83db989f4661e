# snitools — build, test, install.  `make help` lists the targets.

GO      ?= go
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib/snitools
MANDIR  ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share/snitools
# systemd reads units, tmpfiles.d and sysusers.d under /usr/local/lib too.
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR    ?= $(PREFIX)/lib/tmpfiles.d
SYSUSERSDIR    ?= $(PREFIX)/lib/sysusers.d
DEBDIR  ?= .
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
CC      ?= cc
CFLAGS  ?= -O2 -g -Wall -Wextra -std=c99 -D_GNU_SOURCE -fPIC
CPPFLAGS ?=
SO_LDFLAGS ?=
FUZZTIME ?= 60s

export GOTOOLCHAIN ?= local
export GOFLAGS ?= -buildvcs=false

COMMANDS := $(notdir $(wildcard cmd/*))
BINARIES := $(COMMANDS:%=bin/%)
PRELOAD  := $(if $(wildcard cmd/bindshim/preload/*.c),bin/libbindshim.so)
MANPAGES := $(wildcard man/*.[0-9])
UNITS    := $(wildcard dist/systemd/*.service dist/systemd/*.socket)
RULES    := $(filter-out %_test.yml,$(wildcard dist/prometheus/*.yml))
SYSCONF  := $(wildcard dist/tmpfiles.d/snitools.conf dist/sysusers.d/snitools.conf)
LDFLAGS  := -s -w -X github.com/snitools/snitools/lib/version.Version=$(VERSION) \
            -X github.com/snitools/snitools/lib/version.LibDir=$(LIBDIR)

.PHONY: fuzz-slice all static deb deps test check-deps fmt-check vet lint-man unit install uninstall demo bench bench-quick fuzz soak clean help

all: $(BINARIES) $(PRELOAD)

help:
	@echo 'make          build every command into bin/'
	@echo 'make demo     build and run snilisten on a built-in demo'
	@echo 'make test     everything CI runs (format, vet, unit and end-to-end tests, man lint)'
	@echo 'make bench    side-by-side benchmarks against other proxies (bench/)'
	@echo 'make fuzz     run every fuzz target for FUZZTIME (default $(FUZZTIME)) each'
	@echo 'make soak     long reliability runs'
	@echo 'make install  install into $$(DESTDIR)$$(PREFIX) (default /usr/local)'
	@echo 'make deb      the Debian package snitools_<version>_<arch>.deb, into DEBDIR (default .)'
	@echo 'make static   build, and check that every command is statically linked'

# Commands are static (no cgo): they run on any Linux of the same architecture.
bin/%: FORCE
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

bin/libbindshim.so: $(wildcard cmd/bindshim/preload/*.c cmd/bindshim/preload/*.h)
	@mkdir -p bin
	$(CC) $(CPPFLAGS) $(CFLAGS) $(SO_LDFLAGS) -shared -o $@ $(filter %.c,$^) -ldl

FORCE:

# The default build is already static; this says so, or fails.
static: all
	@for b in $(BINARIES); do \
		file -L $$b | grep -q 'statically linked' || { file $$b; echo "$$b: not statically linked" >&2; exit 1; }; \
	done; echo 'static: $(BINARIES) are statically linked'

# The Debian package, built by dpkg-buildpackage (debian/) in a copy of the
# tree, so that neither bin/ nor the parent directory is touched. The Go
# module cache is filled here; the package build itself runs with
# GOPROXY=off. The Debian version comes from git describe
# (tools/debversion).
deb:
	@tools/install-deps deb
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; mkdir "$$tmp/snitools"; \
	{ git ls-files -z -c -o --exclude-standard 2>/dev/null || find . -path ./.git -prune -o -path ./bin -prune -o -type f -print0; } | \
		tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$$tmp/snitools"; \
	sed -i "1s/([^)]*)/($$(tools/debversion '$(VERSION)'))/" "$$tmp/snitools/debian/changelog"; \
	cd "$$tmp/snitools"; \
	VERSION='$(VERSION)' GOMODCACHE="$$($(GO) env GOMODCACHE)" GOCACHE="$$($(GO) env GOCACHE)" \
		DEB_BUILD_OPTIONS="nocheck noddebs $$DEB_BUILD_OPTIONS" dpkg-buildpackage -b -us -uc; \
	cd - >/dev/null; rm -f $(DEBDIR)/snitools_*.deb; mv "$$tmp"/snitools_*.deb $(DEBDIR)/; ls $(DEBDIR)/snitools_*.deb

# Installs the Debian packages and Go modules the tests need, or says how.
deps:
	@tools/install-deps test

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

lint-man:
	mandoc -Tlint -Wwarning $(MANPAGES)

unit:
	$(GO) test -count=1 -timeout 15m ./...

# FUZZ_SLICE: how long CI runs each fuzz target inside `make test`.
FUZZ_SLICE ?= 3s
fuzz-slice:
	@tools/fuzz $(FUZZ_SLICE)

test: deps all fmt-check vet lint-man unit fuzz-slice

fuzz: all
	@tools/fuzz $(FUZZTIME)

demo: all
	@tools/install-deps demo
	$(GO) run ./tools/demo

bench: all
	@tools/install-deps bench
	$(GO) run ./bench $(BENCHFLAGS)

bench-quick: all
	@tools/install-deps bench
	$(GO) run ./bench -quick $(BENCHFLAGS)

# The long forms of the reliability suite (tests/RELIABILITY.md); the
# soak lasts SNITOOLS_SOAK_DURATION (5m) in unix mode.
soak: all
	SNITOOLS_SOAK=1 $(GO) test -count=1 -timeout 60m -run 'Soak|Reliability|Hostile|Admission|Refusal|Destinations|HandoffTrust' -v ./tests/

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(BINARIES) $(DESTDIR)$(BINDIR)/
	$(if $(PRELOAD),install -d $(DESTDIR)$(LIBDIR) && install -m 0644 $(PRELOAD) $(DESTDIR)$(LIBDIR)/)
	for m in $(MANPAGES); do s=$${m##*.}; install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done
	$(if $(UNITS),install -d $(DESTDIR)$(SYSTEMDUNITDIR))
	for u in $(UNITS); do sed 's|/usr/bin/|$(BINDIR)/|g' $$u >$(DESTDIR)$(SYSTEMDUNITDIR)/$${u##*/}; chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$${u##*/}; done
	$(if $(filter %/tmpfiles.d/snitools.conf,$(SYSCONF)),install -D -m 0644 dist/tmpfiles.d/snitools.conf $(DESTDIR)$(TMPFILESDIR)/snitools.conf)
	$(if $(filter %/sysusers.d/snitools.conf,$(SYSCONF)),install -D -m 0644 dist/sysusers.d/snitools.conf $(DESTDIR)$(SYSUSERSDIR)/snitools.conf)
	$(if $(RULES),install -d $(DESTDIR)$(DATADIR) && install -m 0644 $(RULES) $(DESTDIR)$(DATADIR)/)

uninstall:
	rm -f $(COMMANDS:%=$(DESTDIR)$(BINDIR)/%) $(DESTDIR)$(LIBDIR)/libbindshim.so
	for m in $(MANPAGES); do s=$${m##*.}; rm -f $(DESTDIR)$(MANDIR)/man$$s/$${m##*/}; done
	rm -f $(UNITS:dist/systemd/%=$(DESTDIR)$(SYSTEMDUNITDIR)/%) $(RULES:dist/prometheus/%=$(DESTDIR)$(DATADIR)/%)
	rm -f $(DESTDIR)$(TMPFILESDIR)/snitools.conf $(DESTDIR)$(SYSUSERSDIR)/snitools.conf

clean:
	rm -rf bin
