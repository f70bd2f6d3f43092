# Short verbs for the common tasks; see README.md.
VENV   := .venv
PY     := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: venv provision run test test-fast ui bench bench-10m chaos scale-demo lint fmt typecheck clean

venv:
	bash scripts/provision-venv.sh

provision:
	bash scripts/provision.sh

## Run the main job on the embedded default: the bundled sample CSV into SQLite.
run: venv
	$(PY) -m es_mysql_pipeline --source_type csv \
	  --csv_file es_mysql_pipeline/data/sample_events.csv \
	  --sink_type sqlite --db_path out/sample.sqlite --dead-letter-dir out/dead_letter

#: pytest-xdist workers: most slow tests wait on other processes (dagster dev, daemon ticks,
#: Chromium, celery, scrapes), so two workers nearly halve the time even on two cores. Each
#: module runs whole on one worker, modules with slow tests first (conftest.py); JOBS=0 runs
#: in one process.
JOBS   ?= 2
XDIST  := $(if $(filter-out 0,$(JOBS)),-n $(JOBS) --dist loadgroup --no-loadscope-reorder)

## The whole test suite, provisioning MariaDB, Prometheus, Pushgateway and Chromium first;
## ends with the line and branch coverage of the package ([tool.coverage] in pyproject.toml).
## COVERAGE_FILE is absolute: workers started in a test's temporary directory save there too.
test: provision
	COVERAGE_FILE=$(CURDIR)/.coverage $(PY) -m pytest $(XDIST) --cov --cov-report=term

test-fast: venv
	$(PY) -m pytest $(XDIST) -m "not slow and not e2e"

PORT ?= 3000
#: The day after the bundled sample's last (assets/partitions.py: SAMPLE_END_DATE).
SAMPLE_END := 2024-01-06
#: With the bundled sample (no CSV_FILE, no start or end date, not Elasticsearch), the
#: partitions end with the sample: its five days are all there is, loaded in one click.
UI_END := $(if $(CSV_FILE)$(ES_MYSQL_PIPELINE_START_DATE)$(ES_MYSQL_PIPELINE_END_DATE)$(filter elasticsearch,$(ES_MYSQL_PIPELINE_ENV)),,ES_MYSQL_PIPELINE_END_DATE=$(SAMPLE_END))

## The Dagster UI and daemon (schedule + sensor) on 127.0.0.1:$(PORT): make ui PORT=3391
ui: venv
	mkdir -p $(DAGSTER_HOME)
	$(UI_END) $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT)

bench: provision
	$(PY) -m benchmarks.run

## The same at 10M rows, one round (on demand: about 10x the time of `make bench`).
bench-10m: provision
	$(PY) -m benchmarks.run --rows 10000000 --repeats 1 --skip-scrapes --skip-es

## The fault scenarios with 10 kill trials, and their summary table.
chaos: provision
	CHAOS_TRIALS=10 CHAOS_ROWS=200000 $(PY) -m benchmarks.chaos_report

## A 6-partition backfill through the daemon onto 1, then 2 celery workers: rows/s and ratio.
scale-demo: provision
	$(PY) -m benchmarks.scale_demo

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf out staging dead_letter .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
