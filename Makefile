# Every target works on a fresh machine with only Go installed; e2e and bench
# install their Debian packages themselves (they need root).
GO ?= go

.PHONY: all build run test fuzz e2e bench lint

all: build

build:
	$(GO) build -o bin/coredns ./cmd/coredns

run:
	$(GO) run ./cmd/coredns -conf Corefile.example

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

# Short coverage-guided runs of every fuzz target; the seed corpora also run in `make test`.
# The budget is a count of executions, not a duration: with a duration, Go 1.26's fuzz
# coordinator can report a spurious "context deadline exceeded" on a loaded machine
# (golang/go#75804, fixed in Go 1.27).
# FuzzMatchZone (root package) is left out: fuzzing there instruments all of CoreDNS, a ten-minute
# build at a few hundred executions a second; `go test` runs its seeds, and it can be run by hand:
#   go test -run '^$' -fuzz '^FuzzMatchZone$' -fuzztime 30000x .
FUZZTIME ?= 200000x
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./revname
	$(GO) test -run '^$$' -fuzz '^FuzzParseAdvertisement$$' -fuzztime $(FUZZTIME) ./amt
	$(GO) test -run '^$$' -fuzz '^FuzzParseDiscovery$$' -fuzztime $(FUZZTIME) ./amt
	$(GO) test -run '^$$' -fuzz '^FuzzParseLine$$' -fuzztime $(FUZZTIME) ./table

e2e:
	bash e2e/run.sh

bench:
	bash bench/run.sh
