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
bench: setup isolation
	$(PY) -m bench

## demo: the main job on the embedded default (until the harness demo lands: the webhook converts
## the seed pods against an example inventory; pods of vendors not enabled are refused, exit 3)
demo: setup isolation
	$(PY) -m webhook convert -f examples/seed-pods.yaml --inventory examples/inventory.yaml; \
	  rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 3 ]

## proto: regenerate the gRPC stubs in dra_driver/proto from the .proto files
proto: setup
	$(PY) -m dra_driver.proto.generate

clean:
	rm -rf $(VENV) .tools .bench .demo
	$(MAKE) -C isolation clean
