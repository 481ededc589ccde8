# The two commands a user needs: `make run` (the whole stack) and `make test` (the suite).
# Both create .venv and install what they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TS_STAMP := clients/ts/node_modules/.installed-stamp
PROTOS := $(sort $(wildcard proto/orders/v1/*.proto))
GEN_OUT ?= generated
# The google.api / google.rpc protos the contracts import, copied from the googleapis-common-protos
# wheel, whose own _pb2 modules the stubs import at run time.
THIRD_PARTY := third_party
GOOGLE_PROTOS := google/api/field_behavior.proto google/rpc/status.proto google/rpc/error_details.proto \
	google/rpc/code.proto

.PHONY: install install-ts lock run test test-outage chaos soak test-fast bench bench-query generate generate-all third-party-protos breaking release-image lint clean

# Every runtime and dev dependency comes from requirements.lock, exact versions with hashes; our own
# packages install on top of it without touching a dependency.
$(STAMP): requirements.lock pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e clients/python
	touch $(STAMP)

install: $(STAMP) $(TS_STAMP)

# The TypeScript client's packages, exactly as package-lock.json pins them (npm registry only).
$(TS_STAMP): clients/ts/package.json clients/ts/package-lock.json
	cd clients/ts && npm ci --no-audit --no-fund --loglevel=error
	touch $(TS_STAMP)

install-ts: $(TS_STAMP)

# A dependency changes only here: edit pyproject.toml, run `make lock`, commit the lock on its own.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements.lock

run: $(STAMP)
	$(BIN)/orders up

test: $(STAMP) $(TS_STAMP)
	$(BIN)/python -m pytest

# The benchmarks are not installed: python -m server, run here, finds bench/ beside it.
bench: $(STAMP)
	$(BIN)/python -m server bench --json bench-results/bench.json

# The fault plan's long outages: NATS down for three minutes under load.
test-outage: $(STAMP)
	ORDERS_TEST_NATS_OUTAGE_SECONDS=180 $(BIN)/python -m pytest tests/e2e/test_relay_outages.py

# The chaos suite (docs/chaos.md): a seeded run of every fault under load, judged by the checker.
CHAOS_SEED ?= 1
CHAOS_SECONDS ?= 120
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos --seed $(CHAOS_SEED) --seconds $(CHAOS_SECONDS) --out chaos-results/chaos

# The soak: hours of it (SOAK_SECONDS), a fault every 30 s, with a plot of throughput, lag and faults.
SOAK_SECONDS ?= 7200
soak: $(STAMP)
	$(BIN)/python -m tests.chaos --seed $(CHAOS_SEED) --seconds $(SOAK_SECONDS) --interval 30 --plot --out chaos-results/soak

bench-query: $(STAMP)
	$(BIN)/python -m server bench query --json bench-results/bench-query.json

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit

# Regenerate the committed stubs; GEN_OUT lets the freshness check build a second copy.
generate: $(STAMP)
	rm -rf $(GEN_OUT)/orders && mkdir -p $(GEN_OUT)
	$(BIN)/python -m grpc_tools.protoc -Iproto -I$(THIRD_PARTY) --python_out=$(GEN_OUT) --pyi_out=$(GEN_OUT) \
		--grpc_python_out=$(GEN_OUT) $(PROTOS)
	touch $(GEN_OUT)/orders/__init__.py $(GEN_OUT)/orders/v1/__init__.py

# Refresh third_party/ after googleapis-common-protos changes in the lock (a unit test compares them).
third-party-protos: $(STAMP)
	cd "$$($(BIN)/python -c 'import google.api, os; print(os.path.dirname(os.path.dirname(list(google.api.__path__)[0])))')" && \
		cp --parents $(GOOGLE_PROTOS) $(CURDIR)/$(THIRD_PARTY)/

# The contract gate: no breaking change since the release named in proto/RELEASE (also in make test).
breaking: $(STAMP)
	$(BIN)/python -m tests.contract_gate

# The image of the release named in proto/RELEASE, built from its tag: the gate compares with it.
release-image: $(STAMP)
	mkdir -p proto/releases
	$(BIN)/buf build ".git#tag=$$(cat proto/RELEASE),subdir=proto" -o proto/releases/$$(cat proto/RELEASE).binpb

# Every language's stubs from buf.gen.yaml: Python into build/gen/python, TypeScript into
# clients/ts/src/gen (committed), Go and Java into build/gen/{go,java}. Go and Java need Debian's
# protoc plugins (docs/clients.md); this says which are missing rather than failing half-way.
GEN_ALL_TOOLS := protoc protoc-gen-go protoc-gen-go-grpc grpc_java_plugin
generate-all: $(STAMP) $(TS_STAMP)
	@missing=""; for tool in $(GEN_ALL_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "missing:$$missing (Go and Java generation)"; \
		echo "install them with: apt-get install -y protobuf-compiler protoc-gen-go protoc-gen-go-grpc protobuf-compiler-grpc-java-plugin"; \
		exit 1; \
	fi
	$(BIN)/buf generate

lint: $(STAMP)
	$(BIN)/ruff check server projector clients/python bench tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/buf lint

clean:
	rm -rf $(VENV) .data
