# snitools — build, test, install.  `make help` lists the targets.

GO      ?= go
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib/snitools
MANDIR  ?= $(PREFIX)/share/man
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
CC      ?= cc
CFLAGS  ?= -O2 -g -Wall -Wextra -std=c99 -D_GNU_SOURCE -fPIC
FUZZTIME ?= 60s

export GOTOOLCHAIN ?= local
export GOFLAGS ?= -buildvcs=false

COMMANDS := $(notdir $(wildcard cmd/*))
BINARIES := $(COMMANDS:%=bin/%)
PRELOAD  := $(if $(wildcard cmd/bindshim/preload/*.c),bin/libbindshim.so)
MANPAGES := $(wildcard man/*.[0-9])
LDFLAGS  := -s -w -X github.com/snitools/snitools/lib/version.Version=$(VERSION) \
            -X github.com/snitools/snitools/lib/version.LibDir=$(LIBDIR)

.PHONY: fuzz-slice all deps test check-deps fmt-check vet lint-man unit install uninstall demo bench bench-quick fuzz soak clean help

all: $(BINARIES) $(PRELOAD)

help:
	@echo 'make          build every command into bin/'
	@echo 'make demo     build and run snilisten on a built-in demo'
	@echo 'make test     everything CI runs (format, vet, unit and end-to-end tests, man lint)'
	@echo 'make bench    side-by-side benchmarks against other proxies (bench/)'
	@echo 'make fuzz     run every fuzz target for FUZZTIME (default $(FUZZTIME)) each'
	@echo 'make soak     long reliability runs'
	@echo 'make install  install into $$(DESTDIR)$$(PREFIX) (default /usr/local)'

# Commands are static (no cgo): they run on any Linux of the same architecture.
bin/%: FORCE
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

bin/libbindshim.so: $(wildcard cmd/bindshim/preload/*.c cmd/bindshim/preload/*.h)
	@mkdir -p bin
	$(CC) $(CFLAGS) -shared -o $@ $(filter %.c,$^) -ldl

FORCE:

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

soak: all
	SNITOOLS_SOAK=1 $(GO) test -count=1 -timeout 60m -run Soak -v ./tests/

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(BINARIES) $(DESTDIR)$(BINDIR)/
	$(if $(PRELOAD),install -d $(DESTDIR)$(LIBDIR) && install -m 0644 $(PRELOAD) $(DESTDIR)$(LIBDIR)/)
	for m in $(MANPAGES); do s=$${m##*.}; install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done

uninstall:
	rm -f $(COMMANDS:%=$(DESTDIR)$(BINDIR)/%) $(DESTDIR)$(LIBDIR)/libbindshim.so
	for m in $(MANPAGES); do s=$${m##*.}; rm -f $(DESTDIR)$(MANDIR)/man$$s/$${m##*/}; done

clean:
	rm -rf bin
