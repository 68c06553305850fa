#!/usr/bin/env python3
# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Development entry point behind the Makefile (standard library only).

    python3 tools/dev.py test [--series 8.0 8.2] [--backend sqlite postgresql]
                              [-k NAME] [--jobs N]
    python3 tools/dev.py demo [--series 8.0] [--port 8765] [--out demo-out]
    python3 tools/dev.py venv SERIES
    python3 tools/dev.py web [--port 8000] [--no-simulator]
    python3 tools/dev.py screenshots [--port 8000]
    python3 tools/dev.py bench [bench options]

Each Tryton series gets its own virtual environment in .venv/<series>,
created and kept up to date here, so a fresh machine needs only Python 3.11+.
The module is installed with ``pip install .`` (not editable), so the tests
prove the packaging too.
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERIES = ['8.0', '8.2']
TRYTON_PACKAGES = ['trytond', 'trytond-company', 'trytond-party',
    'trytond-account-invoice', 'proteus']
PG_HOST, PG_PORT = '127.0.0.1', 5432
PG_URI = 'postgresql://postgres@%s:%s/' % (PG_HOST, PG_PORT)
# Distribution packages some tests use as independent tools.
SYSTEM_PACKAGES = {'xmlsec1': 'xmlsec1'}


def log(msg):
    print(msg, flush=True)


def run(cmd, **kwargs):
    kwargs.setdefault('cwd', ROOT)
    return subprocess.run(cmd, check=True, **kwargs)


def venv_dir(series):
    return os.path.join(ROOT, '.venv', series)


def venv_python(series):
    return os.path.join(venv_dir(series), 'bin', 'python')


def _stamp_of(series):
    digest = hashlib.sha256()
    for name in ('setup.py', 'tryton.cfg', 'tools/dev.py'):
        with open(os.path.join(ROOT, name), 'rb') as f:
            digest.update(f.read())
    digest.update(series.encode())
    return digest.hexdigest()


def ensure_venv(series, quiet=True):
    """Create or update the venv of `series` and install the module in it.

    Dependencies are (re)installed only when setup.py, tryton.cfg or this
    file change; the module itself is reinstalled every time."""
    path = venv_dir(series)
    python = venv_python(series)
    stamp_file = os.path.join(path, '.ksef-stamp')
    stamp = _stamp_of(series)
    q = ['-q'] if quiet else []
    pip = [python, '-m', 'pip', '--disable-pip-version-check']
    if not os.path.exists(python):
        log("Creating virtual environment %s" % os.path.relpath(path, ROOT))
        run([sys.executable, '-m', 'venv', path])
        run(pip + ['install'] + q + ['-U', 'pip', 'setuptools', 'wheel'])
    current = None
    if os.path.exists(stamp_file):
        with open(stamp_file) as f:
            current = f.read().strip()
    if current != stamp:
        log("Installing Tryton %s and the module's dependencies"
            " in %s" % (series, os.path.relpath(path, ROOT)))
        pins = ['%s==%s.*' % (p, series) for p in TRYTON_PACKAGES]
        run(pip + ['install'] + q + ['.[test,postgresql]'] + pins)
        with open(stamp_file, 'w') as f:
            f.write(stamp)
    # Always reinstall the module itself so the venv has the checkout's code.
    run(pip + ['install'] + q + ['--no-deps', '--no-build-isolation',
            '--force-reinstall', '.'])
    shutil.rmtree(os.path.join(ROOT, 'build'), ignore_errors=True)
    return python


def ensure_system_packages(packages=SYSTEM_PACKAGES,
        without="the tests that use it are skipped"):
    "Install the distribution tools some tests use, when we can."
    missing = [pkg for cmd, pkg in packages.items()
        if not shutil.which(cmd)]
    if not missing:
        return
    if (shutil.which('apt-get') and hasattr(os, 'geteuid')
            and os.geteuid() == 0):
        log("Installing %s from the distribution" % ', '.join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        try:
            run(['apt-get', 'update', '-qq'], env=env,
                stdout=subprocess.DEVNULL)
            run(['apt-get', 'install', '-y', '-qq'] + missing, env=env,
                stdout=subprocess.DEVNULL)
            return
        except subprocess.CalledProcessError:
            pass
    log("NOTE: %s not installed (needs root and apt-get): %s"
        % (', '.join(missing), without))


def postgresql_available():
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=2):
            return True
    except OSError:
        return False


class Job:
    def __init__(self, label, python, targets, env=None, names=()):
        self.label = label
        self.python = python
        self.targets = targets
        self.env = env or {}
        self.names = names
        self.summary = None
        self.log_path = None
        self.returncode = None
        self.faults = []

    def __call__(self, log_dir):
        self.log_path = os.path.join(log_dir,
            self.label.replace(' ', '_').replace('/', '_') + '.log')
        cmd = [self.python, os.path.join(ROOT, 'tools', 'runtests.py'),
            '--label', self.label]
        for name in self.names:
            cmd += ['-k', name]
        cmd += self.targets
        env = dict(os.environ, **self.env)
        env.setdefault('PYTHONHASHSEED', '0')
        start = time.monotonic()
        with open(self.log_path, 'w') as out:
            # Run outside the checkout so the installed package is tested.
            proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                stderr=out, env=env, cwd=log_dir, text=True)
        self.returncode = proc.returncode
        for line in proc.stdout.splitlines():
            if line.startswith('RESULT '):
                self.summary = json.loads(line[len('RESULT '):])
            else:
                if line.startswith('FAULT '):
                    # The fault matrix' lines (tests/test_fault_matrix.py)
                    self.faults.append(line)
                with open(self.log_path, 'a') as out:
                    out.write(line + '\n')
        if self.summary is None:
            self.summary = {'label': self.label, 'passed': 0, 'failed': 1,
                'skipped': 0, 'run': 0, 'skips': [],
                'seconds': round(time.monotonic() - start, 1),
                'crashed': True}
        return self


def lint():
    ruff = os.path.join(venv_dir(SERIES[-1]), 'bin', 'ruff')
    proc = subprocess.run([ruff, 'check', '.'], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ok = proc.returncode == 0
    if not ok:
        log(proc.stdout)
    return {'label': 'lint (ruff)', 'passed': int(ok), 'failed': int(not ok),
        'skipped': 0, 'run': 1, 'skips': [], 'seconds': 0}


def cmd_test(args):
    series_list = args.series or SERIES
    backends = args.backend or ['sqlite', 'postgresql']
    ensure_system_packages()
    pythons = {s: ensure_venv(s) for s in series_list}
    summaries = [lint()]

    jobs = []
    if not args.no_unit:
        # The framework-free core needs no database and no Tryton series.
        jobs.append(Job('core unit tests', pythons[series_list[-1]],
                ['trytond_ksef.tests'], names=args.names))
    pg = 'postgresql' in backends and postgresql_available()
    notes = []
    if 'postgresql' in backends and not pg:
        notes.append("PostgreSQL at %s:%s does not answer: the PostgreSQL"
            " runs were SKIPPED" % (PG_HOST, PG_PORT))
    tmp = tempfile.mkdtemp(prefix='ksef-test-')
    for series in series_list:
        if 'sqlite' in backends:
            jobs.append(Job('Tryton %s sqlite' % series, pythons[series],
                    ['trytond.modules.ksef.tests'], names=args.names,
                    env={
                        'TRYTOND_DATABASE_URI': 'sqlite://',
                        'DB_NAME': ':memory:',
                        'DB_CACHE': os.path.join(tmp, 'cache-sqlite-'
                            + series),
                        }))
        if pg:
            jobs.append(Job('Tryton %s postgresql' % series, pythons[series],
                    ['trytond.modules.ksef.tests'], names=args.names,
                    env={
                        'TRYTOND_DATABASE_URI': PG_URI,
                        # Unique per run: two runs at once must not share
                        # (and drop) each other's database.
                        'DB_NAME': 'test_ksef_%s_%s' % (
                            series.replace('.', ''), os.getpid()),
                        'DB_CACHE': os.path.join(tmp, 'cache-pg-' + series),
                        }))
    log_dir = os.path.join(tmp, 'logs')
    os.makedirs(log_dir)
    log("Running %d test runs, %d at a time (logs in %s)"
        % (len(jobs), args.jobs, log_dir))
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(job, log_dir) for job in jobs]
        for future in concurrent.futures.as_completed(futures):
            job = future.result()
            s = job.summary
            log("  %-24s %4d passed, %d failed, %d skipped  (%.0f s)"
                % (s['label'], s['passed'], s['failed'], s['skipped'],
                    s['seconds']))
            if s['failed'] or job.returncode:
                with open(job.log_path) as f:
                    text = f.read()
                log("---- output of %s ----\n%s\n---- end of %s ----"
                    % (s['label'], text[-60000:], s['label']))
            summaries.append(s)
    if any(job.faults for job in jobs):
        log("Fault matrix:")
        for job in jobs:
            if job.faults:
                log("  %s" % job.label)
                for line in job.faults:
                    log(line)
    skips = sorted({r for s in summaries for r in s.get('skips', [])})
    if skips:
        log("Skipped tests and why:")
        for reason in skips:
            log("  - %s" % reason)
    for note in notes:
        log("NOTE: " + note)
    passed = sum(s['passed'] for s in summaries)
    failed = sum(s['failed'] for s in summaries)
    skipped = sum(s['skipped'] for s in summaries)
    shutil.rmtree(tmp, ignore_errors=True)
    log("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


def cmd_venv(args):
    ensure_venv(args.series, quiet=False)
    return 0


def cmd_demo(args):
    start = time.monotonic()
    python = ensure_venv(args.series)
    log("==> .venv/%s ready, module installed (%.0f s)"
        % (args.series, time.monotonic() - start))
    cmd = [python, os.path.join(ROOT, 'tools', 'demo.py')]
    if args.port is not None:
        cmd += ['--port', str(args.port)]
    if args.out is not None:
        cmd += ['--out', os.path.abspath(args.out)]
    code = subprocess.call(cmd, cwd=ROOT)
    log("==> make demo: %.0f s in all, exit status %d"
        % (time.monotonic() - start, code))
    return code


def cmd_web(args):
    "The demo database in Tryton's web client (tools/web.py)."
    import web
    python = ensure_venv(web.SERIES)
    return web.serve(os.path.dirname(python), port=args.port,
        simulator=not args.no_simulator)


def cmd_screenshots(args):
    "The README's screenshots of the web client (tools/screenshots.py)."
    import web
    python = ensure_venv(web.SERIES)
    ensure_system_packages({'chromium': 'chromium',
            'chromedriver': 'chromium-driver'},
        "no screenshots without Debian's chromium and chromium-driver")
    cmd = [python, os.path.join(ROOT, 'tools', 'screenshots.py')]
    return subprocess.call(cmd + args.rest, cwd=ROOT)


def cmd_bench(args):
    python = ensure_venv(args.series)
    rest = args.rest[1:] if args.rest[:1] == ['--'] else args.rest
    cmd = [python, os.path.join(ROOT, 'tools', 'bench.py')] + rest
    return subprocess.call(cmd, cwd=ROOT)


def main():
    parser = argparse.ArgumentParser(prog='tools/dev.py')
    sub = parser.add_subparsers(dest='command', required=True)
    test = sub.add_parser('test', help="lint and run every test suite")
    test.add_argument('--series', nargs='+', choices=SERIES)
    test.add_argument('--backend', nargs='+',
        choices=['sqlite', 'postgresql'])
    test.add_argument('-k', dest='names', action='append', default=[],
        help="only tests whose id contains this text (repeatable)")
    test.add_argument('--no-unit', action='store_true',
        help="skip the framework-free core unit tests")
    test.add_argument('--jobs', type=int, default=2)
    test.set_defaults(func=cmd_test)
    venv = sub.add_parser('venv', help="create or update a series' venv")
    venv.add_argument('series', choices=SERIES)
    venv.set_defaults(func=cmd_venv)
    demo = sub.add_parser('demo', help="run the demo")
    demo.add_argument('--series', default='8.0', choices=SERIES)
    demo.add_argument('--port', type=int,
        help="port of the KSeF simulator on 127.0.0.1 (default 8765)")
    demo.add_argument('--out', help="output folder (default demo-out)")
    demo.set_defaults(func=cmd_demo)
    web = sub.add_parser('web',
        help="serve the demo database in Tryton's web client")
    web.add_argument('--port', type=int, default=8000)
    web.add_argument('--no-simulator', action='store_true',
        help="do not start the KSeF simulator of the demo configuration")
    web.set_defaults(func=cmd_web)
    shots = sub.add_parser('screenshots',
        help="take the README's screenshots of the web client")
    shots.add_argument('rest', nargs=argparse.REMAINDER)
    shots.set_defaults(func=cmd_screenshots)
    bench = sub.add_parser('bench', help="print the benchmark figures")
    bench.add_argument('--series', default=SERIES[-1], choices=SERIES)
    bench.add_argument('rest', nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    args = parser.parse_args()
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
