# Two environments, created on first use from the pinned requirement files:
#   .venv      orchestration (SageMaker SDK, boto3, moto, pytest)
#   .venv-job  the job "container" (MXNet 1.9.1, numpy 1.23.5, boto3)
PYTHON ?= python3
ORCH := .venv/.installed
JOB := .venv-job/.installed
PIP_FLAGS ?= -q --disable-pip-version-check
# Python 3.8, the Python of AWS's MXNet 1.9.0 containers (through pyenv where it is installed)
PY38 ?= PYENV_VERSION=3.8.18 python3.8
JOB38 := .venv-job38/.installed

.PHONY: setup run test check lint test-job test-job-py38 test-orchestration bench bench-train bench-pipeline bench-serve bench-definition clean

$(ORCH): requirements/orchestration.txt
	$(PYTHON) -m venv .venv
	.venv/bin/pip install $(PIP_FLAGS) -r requirements/orchestration.txt
	touch $@

$(JOB): requirements/job.txt requirements/job-test.txt
	$(PYTHON) -m venv .venv-job
	.venv-job/bin/pip install $(PIP_FLAGS) -r requirements/job-test.txt
	touch $@

setup: $(ORCH) $(JOB)

# Debian's Chromium for the drawing pad's browser test (Playwright drives it; it never downloads
# a browser of its own). Needs root, as on CI.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

## The main job: the whole pipeline, locally, on the shipped MNIST data.
run: setup
	.venv/bin/python run_pipeline.py --local start --wait

## All tests: lint, job code in the job environment (and again under Python 3.8 with the
## containers' numpy and Pillow, where Python 3.8 is installed), orchestration in its own.
test: setup $(CHROMIUM) lint test-job test-job-py38 test-orchestration

## Lint and types: ruff over everything (ruff.toml), mypy over the orchestration code.
lint: $(ORCH)
	.venv/bin/ruff check .
	.venv/bin/mypy pipeline run_pipeline.py

## The quick loop (about a minute and a half): lint, then the tests that run no training,
## no pipeline and no model server.
QUICK_TESTS := $(addprefix tests/orchestration/,test_orchestrator.py test_registry_versions.py \
	test_job_processes.py test_workflow.py test_definition.py test_review_pages.py \
	test_uvicorn_internals.py test_iam.py test_cli_aws.py test_cli_options.py test_cli_errors.py \
	test_backend_common.py test_body_reading.py)
check: lint $(JOB)
	.venv-job/bin/python -m pytest -q tests/job/test_uvicorn_internals.py
	.venv/bin/python -m pytest -q $(QUICK_TESTS)

test-job: $(JOB)
	.venv-job/bin/python -m pytest tests/job

$(JOB38): requirements/job-py38.txt
	$(PY38) -m venv .venv-job38
	.venv-job38/bin/pip install $(PIP_FLAGS) -r requirements/job-py38.txt
	touch $@

test-job-py38:
	@if $(PY38) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 8))' 2>/dev/null; then \
		$(MAKE) --no-print-directory $(JOB38) && .venv-job38/bin/python -m pytest tests/job; \
	else \
		echo "test-job-py38: skipped: no Python 3.8 here (AWS's MXNet containers run 3.8)"; \
	fi

test-orchestration: $(ORCH) $(CHROMIUM)
	.venv/bin/python -m pytest tests/orchestration

bench: bench-train bench-pipeline bench-serve bench-definition

bench-train: $(JOB)
	.venv-job/bin/python bench/train.py

bench-pipeline: setup
	.venv/bin/python bench/pipeline.py

bench-serve: setup
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	command -v java >/dev/null || apt-get install -y -qq openjdk-17-jre-headless
	.venv/bin/python bench/serve.py

bench-definition: $(ORCH)
	.venv/bin/python bench/definition_check.py

clean:
	rm -rf .venv .venv-job .venv-job38 .pytest_cache
