# hatarget — see README.md. Every target works on a fresh clone with Go installed.
SHELL     := /bin/bash
GO        ?= go
BIN       := bin/hatarget
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
RUN_ARGS  ?= --data-dir hatarget-data
FUZZTIME  ?= 5s

.PHONY: all build deb deb-check test unit vet monitoring fuzz fuzz-long conformance bench run e2e clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/hatarget

# The Debian package (deploy/deb/build.sh, dpkg-deb alone): the binary, the
# systemd unit, the default settings, completions and man pages.
DEB_DIR   ?= bin
DEB_BUILD  = deploy/deb/build.sh $(BIN) $(VERSION) $$($(GO) env GOARCH) $(DEB_DIR)
deb: build
	@$(DEB_BUILD)

# Its control file, contents and modes, and its unit (systemd-analyze).
# Without dpkg-deb (not Debian or Ubuntu) this is only reported, except in CI.
deb-check: build
	@if command -v dpkg-deb >/dev/null; then deploy/deb/check.sh "$$($(DEB_BUILD))"; \
	else echo "deb-check: dpkg-deb not found, package NOT checked" >&2; [ "$${CI:-}" != true ]; fi

# The whole suite: static checks, unit and integration tests with the race
# detector, a short run of every fuzz target, and libiscsi conformance.
test: vet monitoring deb-check unit fuzz conformance

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# The alert rules and dashboard of deploy/monitoring: promtool (Debian's
# prometheus package) checks the rules and runs their tests, and
# test/monitoring checks the metrics they name against the code. CI must
# not pass without promtool; elsewhere its absence is only reported.
monitoring:
	@if command -v promtool >/dev/null; then \
		promtool check rules deploy/monitoring/alerts.yml && \
		promtool test rules deploy/monitoring/tests/alerts_test.yml; \
	elif [ "$${CI:-}" = true ]; then \
		echo "monitoring: promtool not found; .ci/run installs it (apt-get install prometheus)" >&2; exit 1; \
	else \
		echo "monitoring: promtool not found, rules NOT checked (apt-get install --no-install-recommends prometheus)" >&2; \
	fi
	$(GO) test -count=1 ./test/monitoring/

unit: build
	HATARGET_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v /test/conformance)

fuzz:
	@./test/fuzz.sh $(FUZZTIME)

fuzz-long:
	@./test/fuzz.sh 10m

# libiscsi's iscsi-test-cu against a fresh node; fails on any regression
# against test/conformance/expected.txt.
conformance: build
	HATARGET_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 25m -v -run 'TestConformance$$' ./test/conformance/ 2>&1 | tee conformance.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|SKIP)|conformance|regress|iscsi-test-cu' ; exit $${PIPESTATUS[0]}

bench: build
	@./test/bench/bench.sh
	@./test/bench/forward.sh
	@./test/bench/replication.sh

# The Linux kernel initiator (open-iscsi + dm-multipath in a QEMU guest) against
# a three-node cluster: discovery, 3 paths, data verify, kill -9 of a node under
# I/O (E2E_SCENARIO=rolling: a rolling restart of every node instead). Needs
# root; see test/e2e/cluster-multipath.sh and $(VMI)/README.md.
VMI ?= ../shared/tools/vm-initiator
e2e: build
	VMI=$(VMI) HATARGET_BIN=$(CURDIR)/$(BIN) ./test/e2e/cluster-multipath.sh

run: build
	$(BIN) demo $(RUN_ARGS)

clean:
	rm -rf bin hatarget-data conformance.log
