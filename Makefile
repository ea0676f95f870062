# Every target works on a fresh machine with only Go installed; e2e and bench
# install their Debian packages themselves (they need root).
GO ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build run test lint fuzz soak e2e bench bgp-interop

all: build

build:
	$(GO) build -o bin/coredns ./cmd/coredns

run:
	$(GO) run ./cmd/coredns -conf Corefile.example

# The second run: the tests that skip what only GoBGP's own data races fail under -race.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run '^(TestSessionLoss|TestBGPSurvivesReload)$$' ./bgp .

# go vet, and staticcheck at a fixed version from the module proxy.
lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Short coverage-guided runs of every fuzz target; the seed corpora also run in `make test`.
# The budget is a count of executions, not a duration: with a duration, Go 1.26's fuzz
# coordinator can report a spurious "context deadline exceeded" on a loaded machine
# (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 200000x
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./revname
	$(GO) test -run '^$$' -fuzz '^FuzzParseAdvertisement$$' -fuzztime $(FUZZTIME) ./amt
	$(GO) test -run '^$$' -fuzz '^FuzzParseDiscovery$$' -fuzztime $(FUZZTIME) ./amt
	$(GO) test -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime $(FUZZTIME) ./amt
	$(GO) test -run '^$$' -fuzz '^FuzzParseQuery$$' -fuzztime $(FUZZTIME) ./amt
	$(GO) test -run '^$$' -fuzz '^FuzzParseUpdate$$' -fuzztime $(FUZZTIME) ./amt
	$(GO) test -run '^$$' -fuzz '^FuzzParseData$$' -fuzztime $(FUZZTIME) ./amt
	$(GO) test -run '^$$' -fuzz '^FuzzParseTeardown$$' -fuzztime $(FUZZTIME) ./amt
	$(GO) test -run '^$$' -fuzz '^FuzzParseLine$$' -fuzztime $(FUZZTIME) ./table
	$(GO) test -run '^$$' -fuzz '^FuzzInZone$$' -fuzztime $(FUZZTIME) ./revname
	$(GO) test -run '^$$' -fuzz '^FuzzDiffLines$$' -fuzztime $(FUZZTIME) ./table
	$(GO) test -run '^$$' -fuzz '^FuzzFileLoader$$' -fuzztime $(FUZZTIME) ./table
	$(GO) test -run '^$$' -fuzz '^FuzzParseAdminFile$$' -fuzztime $(FUZZTIME) .

# 200 Corefile reloads on a bad day, under load, race detector on (about 40 s).
soak:
	$(GO) test -race -tags soak -run '^TestSoak$$' -count=1 -v .

e2e:
	bash e2e/run.sh

bench:
	bash bench/run.sh

# The bgp package against BIRD 2 in network namespaces of its own (root; installs bird2 if
# missing, keeping its service from starting). Prints MEASURE lines: withdraw latency, 100k routes.
bgp-interop:
	@command -v bird >/dev/null && command -v birdc >/dev/null || { \
		made=0; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made=1; }; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bird2; rc=$$?; \
		[ $$made = 0 ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; }
	$(GO) test -tags bird -count=1 -v -run '^TestBird$$' ./bgp
