# wxhub: `make run` starts everything on an embedded NATS server (with the
# WeChat simulator when no app is configured); `make test` runs the tests.
GO       ?= go
BIN      ?= bin/wxhub
PKGS     ?= ./...
TESTFLAGS ?= -race -count=1 -timeout 9m

.PHONY: all build run test vet bench chaos fuzz clean grants

all: build

# --version reports the VCS revision: Go stamps it in a clone (-buildvcs);
# the -X fallback covers git worktrees and GOFLAGS=-buildvcs=false.
REV      ?= $(shell git rev-parse HEAD 2>/dev/null)
build:
	$(GO) build -buildvcs=auto -ldflags "-X main.buildRevision=$(REV)" -o $(BIN) ./cmd/wxhub

run: build
	./$(BIN) run

test:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) test $(TESTFLAGS) $(PKGS)

vet:
	$(GO) vet $(PKGS)

# Regenerate the NATS grants in deploy/nats/accounts.inc, the Helm values,
# README.md and docs/security.md from the tables in broker/grants.
grants:
	$(GO) test ./deploy -run '^TestShippedGrantsAreGenerated$$' -count=1 -args -update

clean:
	rm -rf bin .wxhub

# Coverage-guided fuzzing of job decoding/validation and WeChat response
# decoding, FUZZTIME per target. `make test` runs their committed seeds.
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeUserLookup$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=2s ./events
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeOAuthCodeReceived$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=2s ./events
	$(GO) test -run='^$$' -fuzz='^FuzzValidate$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=2s ./events
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeAnswer$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=2s ./wechat

# Throughput, latency, token path and memory figures (a few minutes):
# prints tables and writes bench-results.json. Not part of `make test`.
bench:
	$(GO) run ./cmd/wxbench -out bench-results.json

# 10,000 jobs through worker, holder and NATS node kills and simulator
# faults on a 3-node cluster (~4 minutes): writes chaos-results.json and
# fails on any lost or duplicated job. Not part of `make test`.
chaos:
	$(GO) run ./cmd/wxchaos -out chaos-results.json
