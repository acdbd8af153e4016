# pgshard — the Makefile is the front door. Each target says what it does.
SHELL      := /bin/bash
GO         ?= go
BIN        := bin
DIR        ?= .pgshard
GOTESTFLAGS ?=
export GOTOOLCHAIN := local

.PHONY: build run test test-race bench bench-move compat fuzz soak fence-stress randdiff lint fmt-check clean down

build: ## build bin/pgshard and bin/shardctl
	@echo "==> building $(BIN)/pgshard and $(BIN)/shardctl"
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/pgshard ./cmd/pgshard
	$(GO) build -o $(BIN)/shardctl ./cmd/shardctl

run: build ## start a local 2-shard cluster and pgshard on 127.0.0.1:6432 with demo data (Ctrl-C stops all)
	@echo "==> starting a local 2-shard cluster in $(DIR) and pgshard on 127.0.0.1:6432"
	@set -euo pipefail; \
	cfg=$$($(BIN)/shardctl cluster up --dir $(DIR) | tail -n1); \
	trap '$(BIN)/shardctl cluster down --dir $(DIR) >/dev/null 2>&1 || true' EXIT; \
	$(BIN)/pgshard --config "$$cfg" & pid=$$!; \
	trap 'set +e; kill $$pid 2>/dev/null; wait $$pid 2>/dev/null; echo "stopping the local cluster"; $(BIN)/shardctl cluster down --dir $(DIR) >/dev/null 2>&1; exit 0' EXIT; \
	trap 'exit 0' INT TERM; \
	for i in $$(seq 1 50); do PGPASSWORD=app psql -h 127.0.0.1 -p 6432 -U app -d app -Atqc 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done; \
	PGPASSWORD=app psql -h 127.0.0.1 -p 6432 -U app -d app -q -v ON_ERROR_STOP=1 -f testdata/demo.sql; \
	echo; \
	echo "pgshard is serving on 127.0.0.1:6432 (config $$cfg). Connect with:"; \
	echo "    PGPASSWORD=app psql -h 127.0.0.1 -p 6432 -U app app"; \
	echo "Press Ctrl-C to stop pgshard and the local cluster."; \
	wait $$pid

down: build ## stop the local cluster started by make run
	$(BIN)/shardctl cluster down --dir $(DIR)

test: build ## unit and integration tests against real local Postgres instances, every benchmark once, pgx's own suite through pgshard
	@echo "==> go test (integration tests start their own Postgres shards)"
	$(GO) test -count=1 -timeout 14m $(GOTESTFLAGS) ./...
	@echo "==> benchmarks run once (-benchtime=1x) so they keep compiling and working"
	@out=$$($(GO) test -run '^$$' -bench . -benchtime=1x ./... 2>&1) || { echo "$$out"; exit 1; }; echo "benchmarks ok"
	@echo "==> pgx's own test suite through pgshard (make compat)"
	@out=$$($(GO) run ./cmd/internal/compat 2>&1) || { echo "$$out"; exit 1; }; echo "$$out" | sed -n '/test suite through pgshard/,$$p'

test-race: ## the same tests with the race detector
	@echo "==> go test -race"
	$(GO) test -race -count=1 -timeout 20m $(GOTESTFLAGS) ./...

bench: build ## pgbench: direct Postgres vs PgBouncer vs pgshard, interleaved; scatter latency on 4 shards; plus Go micro-benchmarks
	@echo "==> benchmarks (numbers, not pass/fail)"
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) run ./cmd/internal/bench $(BENCHFLAGS)
	@echo "==> scatter: 4-shard merges vs one shard's query of the same rows"
	$(GO) run ./cmd/internal/bench -scatter $(SCATTERFLAGS)

compat: build ## pgx's own test suite through pgshard (2 shards, transaction pooling; COMPATFLAGS=-mode=session)
	$(GO) run ./cmd/internal/compat $(COMPATFLAGS)

bench-move: build ## online move of half the buckets of a 1M-row table under pgbench writes vs a plain COPY
	$(GO) run ./cmd/internal/benchmove $(BENCHMOVEFLAGS)

fuzz: ## run every Fuzz* target for FUZZTIME each (default 30s); CI runs their seed corpora in make test
	@echo "==> fuzzing ($${FUZZTIME:-30s} per target)"
	@for pkg in ./wire ./router/sqlparse ./router/plan ./shardmap ./cmd/internal/config; do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep ^Fuzz); do \
			echo "--> $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-30s} $$pkg || exit 1; \
		done; \
	done

DURATION ?= 30m
soak: ## mixed workload through two pgshards while shards are added, drained and killed, every write checked (DURATION=30m; the whole log in bench/results/soak.log)
	@echo "==> soak: mixed workload, moves and kills for $(DURATION) (whole log: bench/results/soak.log)"
	@mkdir -p bench/results
	@set -o pipefail; PGSHARD_SOAK=$(DURATION) $(GO) test ./cmd/internal/e2e -run '^TestSoakMixed$$' -count=1 -v -timeout 24h 2>&1 | tee bench/results/soak.log | grep -E '^(---|ok|FAIL|PASS|panic)|soak_test.go|move_test.go' | grep -vE '(move_test.go:[0-9]+: writer [0-9]|soak_test.go:[0-9]+: worker [0-9])'

FENCEFOR ?= 60s
fence-stress: build ## the fence raised and lowered under concurrent writes on one local Postgres, with each trigger timing (FENCEFOR=60s each)
	@echo "==> fence stress: $(FENCEFOR) with the BEFORE trigger, then with the AFTER one"
	@set -euo pipefail; dir=$$(mktemp -d /tmp/pgshard-fence.XXXXXX); chmod 755 "$$dir"; \
	trap '$(BIN)/shardctl cluster down --dir '"$$dir"' --purge >/dev/null 2>&1 || true' EXIT; \
	$(BIN)/shardctl cluster up --dir "$$dir" --shards 1 --pg-port 26590 --listen 127.0.0.1:26599 >/dev/null; \
	for timing in BEFORE AFTER; do \
		PGSHARD_FENCE_DSN="postgres://postgres@127.0.0.1:26590/app?sslmode=disable" PGSHARD_FENCE_FOR=$(FENCEFOR) PGSHARD_FENCE_TIMING=$$timing \
			$(GO) test ./rebalance -run '^TestFenceStress$$' -count=1 -v | grep -E 'fencestress_test|^(---|ok|FAIL)'; \
	done

TXNS ?= 5000
SEEDS ?= 1 2 3 4 5
randdiff: ## random transactions through pgshard and against one Postgres, answers compared (TXNS=5000 per seed, SEEDS="1 2 3 4 5")
	@for s in $(SEEDS); do echo "==> random differential: seed $$s, $(TXNS) transactions"; \
		PGSHARD_RANDDIFF=$(TXNS) PGSHARD_RANDDIFF_SEED=$$s $(GO) test ./cmd/internal/e2e -run '^TestRandomDifferential$$' -count=1 -timeout 2h || exit 1; done

lint: ## go vet
	@echo "==> go vet"
	$(GO) vet ./...

fmt-check: ## fail if any file is not gofmt'ed
	@echo "==> gofmt -l"
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "$$out"; exit 1; fi

clean:
	rm -rf $(BIN)
