# The developer's commands are CI's commands: .ci/run calls these targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install system-deps build wheel test test-pure bench bench-quick bench-flood bench-heap bench-engine bench-storage bench-instructions lint run clean

# A venv with tickflow installed editable (which compiles fastpath) plus the dev tools.
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Rebuild the extension in place and refuse to go on without it.
build: $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace
	@$(BIN)/python -c "import engine, fastpath, fastpath.coro as co, fastpath.jsonw as j, sys; impls = (fastpath.IMPLEMENTATION, fastpath.LATENCY_IMPLEMENTATION, co.CORO_IMPLEMENTATION, j.JSONW_IMPLEMENTATION, engine.IMPLEMENTATION); print('fastpath: heap %s, latency %s, coro %s, jsonw %s; engine core+records %s' % impls); sys.exit(set(impls) != {'cython'})" \
		|| { echo "ERROR: the fastpath Cython extensions did not build" >&2; exit 1; }

# The sdist and the wheel built from it, as a user's `pip install` would (dist/).
wheel: $(STAMP)
	$(BIN)/python -m build --outdir dist .

# System packages the tests need: Prometheus and promtool (the monitoring integration test runs
# a real Prometheus against the daemon and checks the shipped config with promtool), systemd
# (systemd-analyze verifies the shipped unit; tests/integration/test_systemd_live.py boots
# systemd itself in namespaces made with util-linux's unshare/nsenter), and Debian's python3
# with venv: the live test installs the wheel into a venv under /opt made from it, since the
# sandboxed service cannot run a Python under /root (ProtectHome=) or /tmp (PrivateTmp=).
system-deps:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
		echo "installing Debian's prometheus package (prometheus, promtool)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	}
	@command -v nats-server >/dev/null 2>&1 || { \
		echo "installing Debian's nats-server (the cluster tests run real JetStream servers)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends nats-server >/dev/null; \
	}
	@command -v tmux >/dev/null 2>&1 || { \
		echo "installing Debian's tmux (tests/integration/test_terminal.py runs tickflow in it)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends tmux >/dev/null; \
	}
	@command -v systemd-analyze >/dev/null 2>&1 || { \
		echo "installing Debian's systemd package (systemd-analyze)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd >/dev/null; \
	}
	@command -v unshare >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 \
		&& command -v mount >/dev/null 2>&1 && command -v umount >/dev/null 2>&1 || { \
		echo "installing Debian's util-linux (unshare, nsenter)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends util-linux mount >/dev/null; \
	}
	@/usr/bin/python3 -c "import ensurepip, venv" >/dev/null 2>&1 || { \
		echo "installing Debian's python3-venv (the live systemd test's service Python)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null; \
	}

# The whole suite on the compiled build, then the pure-Python build's share of it.
test: build system-deps
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory test-pure

# The unit suite and the hardening tests (#18, logs included) again on the pure-Python sources
# (TICKFLOW_NO_EXTENSIONS=1: the fastpath choosers and engine/__init__.py must pick them).
test-pure: build
	TICKFLOW_NO_EXTENSIONS=1 $(BIN)/python -m pytest tests/unit \
		tests/integration/test_hardening_intake.py tests/integration/test_hardening_http.py \
		tests/integration/test_hardening_reload.py tests/integration/test_hardening_storage.py \
		tests/integration/test_log_json.py

bench-heap: build
	@mkdir -p .benchmarks
	$(BIN)/python -m pytest benchmarks/test_bench_heap.py -q --benchmark-disable-gc \
		--benchmark-json=.benchmarks/heap.json
	$(BIN)/python -m benchmarks.report .benchmarks/heap.json
	$(BIN)/python -m benchmarks.heap_ratio --rounds 5

# tickflow against an asyncio.PriorityQueue + 5 workers, same workloads, one run (~80 s).
bench-engine: build
	@mkdir -p .benchmarks
	$(BIN)/python -m pytest benchmarks/test_bench_engine.py -q --benchmark-json=.benchmarks/engine-drain.json
	$(BIN)/python -m benchmarks.engine_load

# Storage on vs off: writer throughput, drain and steady runs/s, one run (~50 s).
bench-storage: build
	$(BIN)/python -m benchmarks.bench_storage --rounds 9 --duration 2

# The event loop's instructions per run, storage off and on (callgrind: needs valgrind, ~2 min).
bench-instructions: build
	$(BIN)/python -m benchmarks.loop_instructions

# Every benchmark in one run, written up as .benchmarks/report/index.html with PNG charts and
# report.json (~6 min; bench-quick: under 3). The single suites stay as their own targets above.
bench: build
	$(BIN)/tickflow bench --report .benchmarks/report

bench-quick: build
	$(BIN)/tickflow bench --quick --report .benchmarks/report

# The market-data flood alone: 2,000 symbols at 5x saturation, 20 s per design.
bench-flood: build
	$(BIN)/python -m benchmarks.market_flood

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

run: build
	$(BIN)/tickflow run

clean:
	rm -rf build dist *.egg-info .benchmarks
	find fastpath engine -name '*.c' -o -name '*.so' | xargs rm -f
