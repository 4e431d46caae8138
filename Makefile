# Edge-to-cloud sensor pipeline. `make help` lists the targets.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
GOFLAGS_B := -trimpath -ldflags '$(LDFLAGS)'
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.7.0

.PHONY: help build test vet lint test-race test-memory test-week test-arm clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## host binaries into bin/
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_B) -o bin/ ./agent/cmd/edge-agent ./cloud/cmd/cloud-forwarder

test: vet lint test-race test-memory test-week test-arm test-qemu ## the whole suite (README's test command; CI runs it)

vet: ## go vet, and gofmt has nothing to change
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		[ -z "$$unformatted" ] || { echo "gofmt would change: $$unformatted" >&2; exit 1; }

lint: ## staticcheck
	$(STATICCHECK) ./...

test-race: ## every Go test with the race detector (but the memory-cgroup drain, which test-memory runs)
	$(GO) test -race -count=1 -timeout 15m -skip '^TestFullBufferDrainsUnderMemoryMax$$' ./...

test-week: ## downsampling at full size: a 16 MiB buffer, 4 sensors at 1 Hz, a week offline (test-race runs it 28 times smaller)
	$(GO) test -count=1 -timeout 10m -run '^TestDownsampleKeepsTheWeek$$' -v ./buffer/

test-memory: ## the real agent drains a full 256 MiB buffer inside a 64 MiB memory cgroup (root; skips without a writable cgroup)
	# Without -race: the limit is on the agent binary, which is never built
	# with the race detector; under -race only the test process's fill and
	# confirmer slow down (515 s instead of about 4 min), for nothing.
	$(GO) test -count=1 -timeout 15m -run '^TestFullBufferDrainsUnderMemoryMax$$' -v ./agent/daemon/

test-arm: ## buffer, drivers and agent package tests as 32-bit ARM (armv6) under qemu-user
	scripts/test-arm.sh

# --- shipping: Pi binaries, .debs, container, demo, install (scripts/, systemd/) ---
.PHONY: pi deb release image demo install test-qemu test-systemd
PI_ARCHES := armv6 armv7 arm64
goenv_armv6 := GOARCH=arm GOARM=6
goenv_armv7 := GOARCH=arm GOARM=7
goenv_arm64 := GOARCH=arm64
goenv_amd64 := GOARCH=amd64

pi: ## static stripped edge-agent for Pi Zero/1 (armv6), Pi 2/3 (armv7), 64-bit Pi (arm64) into dist/ + SHA256SUMS
	@mkdir -p dist
	$(foreach a,$(PI_ARCHES),CGO_ENABLED=0 GOOS=linux $(goenv_$(a)) $(GO) build $(GOFLAGS_B) -o dist/edge-agent_linux_$(a) ./agent/cmd/edge-agent &&) true
	cd dist && sha256sum edge-agent_linux_* > SHA256SUMS

deb: pi ## .deb packages (armhf, arm64, amd64) into dist/, built with nfpm by scripts/mkdeb
	rm -f dist/*.deb
	CGO_ENABLED=0 GOOS=linux $(goenv_amd64) $(GO) build $(GOFLAGS_B) -o dist/edge-agent_linux_amd64 ./agent/cmd/edge-agent
	$(GO) run ./scripts/mkdeb -version $(VERSION) -out dist \
		armhf=dist/edge-agent_linux_armv6 arm64=dist/edge-agent_linux_arm64 amd64=dist/edge-agent_linux_amd64
	cd dist && sha256sum edge-agent_linux_* *.deb > SHA256SUMS

# An over-the-air release (docs/UPDATE.md): the four static agents (as `make pi` builds them, plus
# amd64), a manifest for each signed with the release key, and SHA256SUMS. RELEASE_URL is where
# dist/release/ will be served: the binaries are downloaded from RELEASE_URL/VERSION/.
RELEASE_ARCHES := $(PI_ARCHES) amd64
RELEASE_DIR     = dist/release/$(VERSION)
release: ## signed OTA release into dist/release/VERSION/: make release VERSION=x.y.z RELEASE_KEY_FILE=... RELEASE_URL=https://host/path/
	@[ -n "$(RELEASE_KEY_FILE)" ] || { echo "make release: set RELEASE_KEY_FILE to the release key (Ed25519 PEM; cloud-forwarder fleet keygen makes one; not the fleet key)" >&2; exit 2; }
	@[ -n "$(RELEASE_URL)" ] || { echo "make release: set RELEASE_URL to the https URL dist/release/ will be served from" >&2; exit 2; }
	@echo "$(VERSION)" | grep -Eq '^v?[0-9]+\.[0-9]+\.[0-9]+([-+].*)?$$' || { echo "make release: VERSION=$(VERSION) is not semver MAJOR.MINOR.PATCH (agents take offers only from release builds)" >&2; exit 2; }
	rm -rf $(RELEASE_DIR) && mkdir -p $(RELEASE_DIR)
	$(foreach a,$(RELEASE_ARCHES),CGO_ENABLED=0 GOOS=linux $(goenv_$(a)) $(GO) build $(GOFLAGS_B) -o $(RELEASE_DIR)/edge-agent_$(VERSION)_$(a) ./agent/cmd/edge-agent &&) true
	RELEASE_KEY_FILE=$(RELEASE_KEY_FILE) $(GO) run ./cloud/cmd/cloud-forwarder fleet release \
		--version $(VERSION) --url $(patsubst %/,%,$(RELEASE_URL))/$(VERSION)/ $(RELEASE_DIR)
	cd $(RELEASE_DIR) && sha256sum edge-agent_* > SHA256SUMS

image: ## the cloud-forwarder container image (scripts/build-image.sh)
	scripts/build-image.sh

demo: build ## the whole pipeline on this machine: sim sensors -> MQTT -> Kafka, readings printed; Ctrl-C stops
	$(GO) build -o bin/demo ./scripts/demo
	bin/demo -bin bin

install: pi ## install the agent on a Pi over ssh (scripts/install-pi.sh): make install PI=pi@raspberrypi.local
	@[ -n "$(PI)" ] || { echo "usage: make install PI=user@host" >&2; exit 2; }
	scripts/install-pi.sh $(PI)

test-qemu: pi ## run the dist/ binaries for armv6, armv7 and arm64 under qemu-user
	scripts/test-qemu.sh

test-systemd: deb ## boot Debian under systemd-nspawn: the amd64 .deb and flash-sd.sh units run, OTA updates commit, refuse and roll back (root, network; CI runs it after make test)
	scripts/test-systemd.sh

clean: ## remove build outputs
	rm -rf bin dist

# --- proof: end-to-end fault run and performance report (scripts/e2e, scripts/bench.sh) ---
.PHONY: e2e bench bench-distance

e2e: build ## end-to-end proof on the real binaries: faults injected, report printed; fails if a reading is missing
	$(GO) run ./scripts/e2e -bin bin
	@echo "== the confirmation faults again with delivery=broker: what deleting at PUBACK loses (reported, not failed);"
	@echo "== and the mid-drain kill, whose duplicates there are the broker's redelivery alone (no agent re-sends)"
	$(GO) run ./scripts/e2e -bin bin -delivery broker -report-loss -settle 20s -warmup 5s \
		-only broker-restart,kafka-outage,forwarders-down,forwarder-kill-unconfirmed,forwarder-kill-mid-drain

bench: ## Go benchmarks (benchstat), drains and latency at 0/20/50 ms, e2e runs, peak RSS, binary sizes -> docs/PERFORMANCE.md
	scripts/bench.sh

bench-distance: ## forwarder and agent drains, live latency, memory with Kafka/broker 0, 20, 50 ms away (markdown on stdout)
	scripts/bench-distance.sh
