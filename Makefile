# The two quickstart commands:  `make demo` (the main job, on the embedded sandbox) and `make test`.
# Both set up their own virtual environment (.venv) on first use; only Python >= 3.11 is needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# Every supported interpreter: the whole suite runs on $(PYTHON) (3.11); the byte paths run again on each other one
# (found on PATH as python3.12 etc., or under pyenv): upload, mirror and the sandbox's checksums on all, the short
# soak on the first, and the body-integrity tests once more on uvloop. Kept so that .ci/run stays well under 30 min.
OTHER_PYTHONS ?= 3.12 3.13
SOAK_PYTHON ?= 3.12
UVLOOP_PYTHON ?= 3.13
BYTE_PATH_TESTS := tests/upload tests/mirror tests/sandbox/test_sandbox_checksums.py
UVLOOP_TESTS := tests/upload/test_body_integrity.py tests/upload/test_single_put.py tests/upload/test_stream.py \
	tests/upload/test_pipeline.py tests/sandbox/test_sandbox_checksums.py tests/core/test_eventloop.py

# The lowest version of every dependency pyproject.toml allows (constraints/lowest.txt), on $(PYTHON): the tests
# that exercise each one (S3 uploads and resume, the mirror, the API client and proxies, retries, the watcher,
# the metrics, the sandbox's checksums and TLS, a real daemon). Kept under ~3 minutes.
LOWEST_TESTS ?= tests/upload/test_single_put.py tests/upload/test_body_integrity.py tests/upload/test_stream.py \
	tests/upload/test_pipeline.py::test_expired_token_from_s3_forces_a_refresh_and_the_part_is_retried \
	tests/mirror/test_mirror_cycle.py tests/core/test_network.py tests/core/test_retry.py \
	tests/discovery/test_discovery_watcher.py tests/service/test_metrics_contract.py \
	tests/sandbox/test_sandbox_checksums.py tests/sandbox/test_sandbox_tls.py tests/core/test_dependencies.py

.PHONY: demo test test-pythons test-lowest lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "transferd needs Python >= 3.11, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

demo: $(STAMP)
	$(BIN)/transferd demo

lint: $(STAMP)
	$(BIN)/ruff check transferd tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# python3.12 on PATH, else pyenv's newest 3.12.x (its shims refuse a version that is not `pyenv global`).
.venv-%/.installed-stamp: pyproject.toml
	@py=$$(for c in python$* $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$*.*/bin/python$*; do \
		$$c -c "" 2>/dev/null && { echo $$c; break; }; done); \
	[ -n "$$py" ] || { echo "Python $* not found (python$* on PATH, or pyenv's $*.x), needed by make test-pythons"; exit 1; }; \
	echo "$$py -m venv .venv-$*"; $$py -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-$*/bin/python -m pip install --quiet -e '.[test]'
	@touch $@

test-pythons: $(foreach v,$(OTHER_PYTHONS),.venv-$(v)/.installed-stamp)
	@set -e; for v in $(OTHER_PYTHONS); do \
		tests="$(BYTE_PATH_TESTS)"; [ "$$v" = "$(SOAK_PYTHON)" ] && tests="$$tests tests/soak/test_soak_short.py"; \
		echo "== Python $$v: $$tests"; \
		.venv-$$v/bin/python -m pytest -q -p no:cacheprovider $$tests; \
	done
	@echo "== Python $(UVLOOP_PYTHON) on uvloop: $(UVLOOP_TESTS)"
	TRANSFERD_EVENT_LOOP=uvloop .venv-$(UVLOOP_PYTHON)/bin/python -m pytest -q -p no:cacheprovider $(UVLOOP_TESTS)

.venv-lowest/.installed-stamp: pyproject.toml constraints/lowest.txt
	$(PYTHON) -m venv .venv-lowest
	.venv-lowest/bin/python -m pip install --quiet --upgrade pip
	.venv-lowest/bin/python -m pip install --quiet -c constraints/lowest.txt -e '.[test]'
	.venv-lowest/bin/python -m pip check
	@touch $@

test-lowest: .venv-lowest/.installed-stamp
	@echo "== lowest dependencies (constraints/lowest.txt): $(LOWEST_TESTS)"
	.venv-lowest/bin/python -m pytest -q -p no:cacheprovider $(LOWEST_TESTS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .venv-* .cache .pytest_cache .ruff_cache build *.egg-info
