# Two environments, created on first use from the pinned requirement files:
#   .venv      orchestration (SageMaker SDK, boto3, moto, pytest)
#   .venv-job  the job "container" (MXNet 1.9.1, numpy 1.23.5, boto3)
PYTHON ?= python3
ORCH := .venv/.installed
JOB := .venv-job/.installed
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: setup run test test-job test-orchestration bench bench-train bench-pipeline bench-serve clean

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

## All tests: job code in the job environment, orchestration in its own.
test: setup $(CHROMIUM) test-job test-orchestration

test-job: $(JOB)
	.venv-job/bin/python -m pytest tests/job

test-orchestration: $(ORCH) $(CHROMIUM)
	.venv/bin/python -m pytest tests/orchestration

bench: bench-train bench-pipeline bench-serve

bench-train: $(JOB)
	.venv-job/bin/python bench/train.py

bench-pipeline: setup
	.venv/bin/python bench/pipeline.py

bench-serve: setup
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	command -v java >/dev/null || apt-get install -y -qq openjdk-17-jre-headless
	.venv/bin/python bench/serve.py

clean:
	rm -rf .venv .venv-job .pytest_cache
