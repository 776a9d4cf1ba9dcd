# wxhub: `make run` starts everything on an embedded NATS server (with the
# WeChat simulator when no app is configured); `make test` runs the tests.
GO       ?= go
BIN      ?= bin/wxhub
PKGS     ?= ./...
TESTFLAGS ?= -race -count=1 -timeout 9m

.PHONY: all build run test vet bench chaos fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/wxhub

run: build
	./$(BIN) run

test:
	$(GO) vet $(PKGS)
	$(GO) test $(TESTFLAGS) $(PKGS)

vet:
	$(GO) vet $(PKGS)

clean:
	rm -rf bin .wxhub
