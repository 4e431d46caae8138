# Edge-to-cloud sensor pipeline. `make help` lists the targets.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
GOFLAGS_B := -trimpath -ldflags '$(LDFLAGS)'
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.7.0

.PHONY: help build test vet lint test-race test-arm clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## host binaries into bin/
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_B) -o bin/ ./agent/cmd/edge-agent $(wildcard ./cloud/cmd/cloud-forwarder)

test: vet lint test-race test-arm ## the whole suite (README's test command; CI runs it)

vet: ## go vet
	$(GO) vet ./...

lint: ## staticcheck
	$(STATICCHECK) ./...

test-race: ## every Go test with the race detector
	$(GO) test -race -timeout 15m ./...

test-arm: ## buffer tests as 32-bit ARM (armv6) under qemu-user
	scripts/test-arm.sh

clean: ## remove build outputs
	rm -rf bin dist

# --- proof: end-to-end fault run and performance report (scripts/e2e, scripts/bench.sh) ---
.PHONY: e2e bench

e2e: build ## end-to-end proof on the real binaries: faults injected, report printed; fails if a reading is missing
	$(GO) run ./scripts/e2e -bin bin

bench: ## Go benchmarks (benchstat), e2e throughput and fault runs, peak RSS, binary sizes -> docs/PERFORMANCE.md
	scripts/bench.sh
