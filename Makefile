# Two commands on a fresh machine: `make run` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint install install-dev test-deps clean bench

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt requirements.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Web (gunicorn) and worker (qcluster) together; Ctrl-C stops both.
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	@echo "PowerAutomation on http://$(HOST):$(PORT)/admin/ (Ctrl-C stops web and worker)"
	@trap 'kill -TERM $$web $$worker 2>/dev/null; wait' INT TERM EXIT; \
	$(VENV)/bin/gunicorn -c powerautomation/gunicorn.conf.py powerautomation.wsgi --bind $(HOST):$(PORT) --workers 2 --threads 4 --access-logfile - & web=$$!; \
	$(PY) manage.py qcluster & worker=$$!; \
	wait -n $$web $$worker

# System packages the tests start for real: OpenSSH server, PostgreSQL, Redis, Chromium (Debian
# packages; installed when missing, with sudo when not root).
test-deps:
	@missing=""; \
	{ command -v sshd >/dev/null || test -x /usr/sbin/sshd; } || missing="$$missing openssh-server openssh-client"; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v busybox >/dev/null || missing="$$missing busybox"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing for the tests"; \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) manage.py makemigrations --check --dry-run

# The SQLite suite (the embedded default), then the same suite on PostgreSQL + Redis
# (throwaway servers on free loopback ports, removed afterwards).
test: install-dev test-deps lint
	$(VENV)/bin/pytest
	$(PY) -m tests.scaleout --ignore=tests/agent --ignore=tests/admin/test_browser.py \
		--ignore=tests/environments/test_ssh_connector.py --ignore=tests/environments/test_http_connectors.py \
		--ignore=tests/environments/test_tls.py --ignore=tests/environments/test_http_answers.py \
		--ignore=tests/environments/test_ssh_runs.py --ignore=tests/environments/test_ssh_detached.py \
		--ignore=tests/client/test_hostile_server.py

# Fan-out speed against the raw-SSH limit, trigger latency, API cost, memory (issue 7). Not
# part of `make test`: prints each figure against its target and writes docs/benchmarks.md.
# Installs sshd (test-deps), PostgreSQL and Redis (Debian packages) when missing; runs them
# all as throwaway servers on 127.0.0.1. BENCH_ARGS passes options (python -m bench.run -h).
$(VENV)/.installed-bench: requirements-bench.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $@

bench: install test-deps $(VENV)/.installed-bench
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
