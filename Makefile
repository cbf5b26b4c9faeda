# mimoto — see README.md. `make run` starts the whole system in dev mode on loopback;
# `make test` runs vet and every test against a real PostgreSQL.
GO       ?= go
BIN      ?= bin/mimoto
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# Finds PostgreSQL (DATABASE_URL, else 127.0.0.1:5432, else a private server under .data/).
PG_URL    = $$($(BIN) dev-postgres)

NODE_RP  := oidc/conformance/node

.PHONY: all build run test vet fmt bench generate clean node-deps

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/mimoto

run: build
	$(BIN) dev

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)

# The independent relying party (npm openid-client) that the provider tests run.
node-deps: $(NODE_RP)/node_modules/.package-lock.json

$(NODE_RP)/node_modules/.package-lock.json: $(NODE_RP)/package-lock.json
	npm ci --prefix $(NODE_RP) --no-audit --no-fund

test: build vet node-deps
	DATABASE_URL="$(PG_URL)" $(GO) test -race -count=1 ./...

# Load drivers run a fixed number of operations (a second of them would be mostly
# warm-up: new connections preparing their statements); micro-benchmarks run by time.
# -p 1: one package's benchmarks at a time (run side by side they measure each other).
bench: build
	DATABASE_URL="$(PG_URL)" $(GO) test -run '^$$' -bench . -benchmem -count=1 -p 1 $$($(GO) list ./... | grep -v -e /oidc/provider$$ -e /oidc/broker$$ -e /graph$$)
	DATABASE_URL="$(PG_URL)" $(GO) test -run '^$$' -bench . -benchmem -count=1 -benchtime 3000x -timeout 30m -p 1 ./oidc/provider ./graph
	DATABASE_URL="$(PG_URL)" $(GO) test -run '^$$' -bench . -benchmem -count=1 -benchtime 2000x -timeout 30m ./oidc/broker

generate:
	$(GO) generate ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
