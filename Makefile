# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
#
# Quick start (a fresh machine needs only Python 3.11+):
#   make demo   - the module on an embedded SQLite database against the simulator
#   make test   - lint and the whole test suite (Tryton 8.0 and 8.2, SQLite and
#                 PostgreSQL when 127.0.0.1:5432 answers)
#   make web    - the demo database in Tryton's web client on 127.0.0.1:8000
#   make bench  - the benchmark figures (see BENCHMARKS.md)
PYTHON ?= python3

.PHONY: demo test web screenshots bench venv clean

demo:
	$(PYTHON) tools/dev.py demo

test:
	$(PYTHON) tools/dev.py test

web:
	$(PYTHON) tools/dev.py web

screenshots:
	$(PYTHON) tools/dev.py screenshots

bench:
	$(PYTHON) tools/dev.py bench

venv:
	$(PYTHON) tools/dev.py venv 8.0
	$(PYTHON) tools/dev.py venv 8.2

clean:
	rm -rf .venv build dist *.egg-info demo-out .cache
