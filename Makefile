# Tessera: `make demo` and `make test` work on a fresh machine; both run `setup` first.
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.tessera-setup
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: all setup test lint bench demo proto isolation clean

all: test

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	@touch $@

isolation: setup
	$(MAKE) -C isolation

## test: every test (unit, C under sanitizers, webhook, driver, chart, e2e on the local harness)
test: setup isolation
	$(MAKE) -C isolation test
	$(PY) -m pytest -q

## lint: ruff and mypy --strict on our packages
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## bench: every benchmark; figures go to .bench/ and are quoted in docs/benchmarks.md
## (RUNS=3: every module three times, ranges in .bench/ranges/)
RUNS ?= 1
bench: setup isolation
	$(PY) -m bench --runs $(RUNS)

## demo: the narrated end-to-end run on the local cluster harness (real webhook, driver and libvgpu;
## fake CUDA driver): gpu-pod12 limited to 10 GiB, two pods sharing a card, a pod that cannot fit
demo: setup isolation
	$(PY) -m e2e.cluster

## proto: regenerate the gRPC stubs in dra_driver/proto from the .proto files
proto: setup
	$(PY) -m dra_driver.proto.generate

clean:
	rm -rf $(VENV) .tools .bench .demo
	$(MAKE) -C isolation clean
