# Two commands on a fresh machine: `make run` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint install install-dev test-deps clean

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
	$(VENV)/bin/gunicorn powerautomation.wsgi --bind $(HOST):$(PORT) --workers 2 --threads 4 --access-logfile - & web=$$!; \
	$(PY) manage.py qcluster & worker=$$!; \
	wait -n $$web $$worker

# System packages the tests start for real (OpenSSH server). Installed when missing.
test-deps:
	@command -v sshd >/dev/null || test -x /usr/sbin/sshd || { \
		echo "installing openssh-server for the tests"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null; fi; }

lint: install-dev
	$(VENV)/bin/ruff check .
	$(PY) manage.py makemigrations --check --dry-run

test: install-dev test-deps lint
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
