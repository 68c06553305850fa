# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""`make web`: the demo database in Tryton's web client (standard library
only; used by tools/dev.py and tools/screenshots.py).

sao, Tryton's web client, comes from npm (package ``tryton-sao``, pinned in
tools/sao/package-lock.json) into .cache/sao.  npm publishes no sao 8.2 and
sao 8.0 refuses a trytond 8.2 server, so the web client runs with the
Tryton 8.0 venv.  trytond serves sao itself ([web] root) next to its
JSON-RPC, and the KSeF simulator runs beside it when the demo configuration
points KSeF TEST at one on loopback, so the Send and Check buttons work.
"""
import configparser
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAO_SOURCE = os.path.join(ROOT, 'tools', 'sao')
SAO_CACHE = os.path.join(ROOT, '.cache', 'sao')
WEB_CACHE = os.path.join(ROOT, '.cache', 'web')
DEMO_OUT = os.path.join(ROOT, 'demo-out')
DEMO_DB = 'ksef_demo'
HOST, PORT = '127.0.0.1', 8000
# sao is published for 8.0, not 8.2 (see the docstring)
SERIES = '8.0'


def log(msg):
    print(msg, flush=True)


class WebError(Exception):
    "A problem the user can fix; its text says how."


def sao_version():
    with open(os.path.join(SAO_SOURCE, 'package.json')) as f:
        return json.load(f)['dependencies']['tryton-sao']


def ensure_sao():
    """Install the pinned sao into .cache/sao (once) and return the folder
    to serve: the npm package, whose index.html loads its libraries from a
    node_modules folder beside it (a link to the folder npm filled)."""
    version = sao_version()
    package = os.path.join(SAO_CACHE, 'node_modules', 'tryton-sao')
    stamp = os.path.join(SAO_CACHE, '.installed')
    with open(os.path.join(SAO_SOURCE, 'package-lock.json'), 'rb') as f:
        lock = f.read()
    wanted = '%s %s' % (version, hashlib.sha256(lock).hexdigest())
    current = None
    if os.path.exists(stamp):
        with open(stamp) as f:
            current = f.read().strip()
    if current != wanted or not os.path.exists(
            os.path.join(package, 'dist', 'tryton-sao.js')):
        npm = shutil.which('npm')
        if not npm:
            raise WebError("npm is needed to install Tryton's web client:"
                " install Node.js and npm (Debian: apt-get install npm)")
        log("Installing Tryton's web client (sao %s from npm) in %s"
            % (version, os.path.relpath(SAO_CACHE, ROOT)))
        os.makedirs(SAO_CACHE, exist_ok=True)
        for name in ('package.json', 'package-lock.json'):
            shutil.copyfile(os.path.join(SAO_SOURCE, name),
                os.path.join(SAO_CACHE, name))
        subprocess.run([npm, 'ci', '--no-audit', '--no-fund',
                '--loglevel=error'], cwd=SAO_CACHE, check=True)
        with open(stamp, 'w') as f:
            f.write(wanted + '\n')
    link = os.path.join(package, 'node_modules')
    if not os.path.lexists(link):
        os.symlink('..', link)
    return package


def demo_config():
    """The demo's trytond.conf and database, or WebError saying to run
    `make demo` first."""
    config_path = os.path.join(DEMO_OUT, 'trytond.conf')
    if not os.path.exists(config_path):
        raise WebError("No demo database: run `make demo` first"
            " (it writes %s)" % os.path.relpath(config_path, ROOT))
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config_path)
    db_dir = parser.get('database', 'path', fallback=None)
    db_file = db_dir and os.path.join(db_dir, DEMO_DB + '.sqlite')
    if not db_file or not os.path.exists(db_file):
        raise WebError("No demo database %s: run `make demo` first"
            % (db_file or DEMO_DB))
    return config_path, parser


def simulator_address(parser):
    """(host, port) of the simulator the demo configuration points KSeF TEST
    at, or None when it points elsewhere (not on loopback)."""
    url = parser.get('ksef', 'test_api_url', fallback=None)
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    try:
        loopback = ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = parts.hostname == 'localhost'
    if not loopback or not parts.port:
        return None
    return parts.hostname, parts.port


def listening(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def is_simulator(host, port):
    try:
        with urllib.request.urlopen(
                'http://%s:%s/_sim/health' % (host, port), timeout=2) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def wait_for(url, process, timeout=60):
    "Wait until `url` answers, or fail when `process` ends or time is up."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise WebError("%s stopped (exit status %s) before answering"
                % (url, process.returncode))
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.3)
    raise WebError("%s does not answer after %d s" % (url, timeout))


class WebClient:
    """trytond serving sao and the demo database, with the simulator beside
    it when the demo uses one.  A context manager: leaving it stops both."""

    def __init__(self, bindir, host=HOST, port=PORT, simulator=True,
            quiet=False):
        self.bindir = bindir
        self.host = host
        self.port = port
        self.with_simulator = simulator
        self.quiet = quiet
        self.processes = []
        self.url = 'http://%s:%s/' % (host, port)
        self.database = DEMO_DB

    def _spawn(self, cmd, logfile):
        out = open(logfile, 'w') if self.quiet else None
        # Its own process group: Ctrl-C in the terminal reaches only us,
        # and we stop the children in order.
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True)
        if out:
            out.close()
        self.processes.append(process)
        return process

    def start(self):
        config_path, parser = demo_config()
        sao = ensure_sao()
        if listening(self.host, self.port):
            raise WebError("%s:%s is already in use: stop what listens there"
                " or choose another port (--port)" % (self.host, self.port))
        os.makedirs(WEB_CACHE, exist_ok=True)
        web_conf = os.path.join(WEB_CACHE, 'trytond-web.conf')
        with open(web_conf, 'w') as f:
            f.write("# Written by tools/web.py: read after %s\n"
                "[web]\nlisten = %s:%s\nroot = %s\n" % (
                    os.path.relpath(config_path, ROOT),
                    self.host, self.port, sao))
        self.simulator = simulator_address(parser)
        if self.with_simulator and self.simulator:
            host, port = self.simulator
            if is_simulator(host, port):
                log("A KSeF simulator already answers at %s:%s: using it"
                    % (host, port))
            elif listening(host, port):
                log("WARNING: %s:%s, where the demo configuration expects"
                    " the KSeF simulator, is used by another program: the"
                    " Send and Check buttons will fail" % (host, port))
            else:
                process = self._spawn([
                        os.path.join(self.bindir, 'trytond-ksef'),
                        'simulator', '--host', host, '--port', str(port)],
                    os.path.join(WEB_CACHE, 'simulator.log'))
                wait_for('http://%s:%s/_sim/health' % (host, port), process)
                log("KSeF simulator on http://%s:%s/v2" % (host, port))
        process = self._spawn([os.path.join(self.bindir, 'trytond'),
                '-c', config_path, web_conf, '-d', self.database],
            os.path.join(WEB_CACHE, 'trytond.log'))
        wait_for(self.url, process)
        return self

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in reversed(self.processes):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve(bindir, host=HOST, port=PORT, simulator=True):
    "Serve until Ctrl-C (or SIGTERM); the exit status."
    # Also when started in the background, where SIGINT comes ignored
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    client = WebClient(bindir, host, port, simulator)
    try:
        with client:
            log("Tryton's web client: %s  (database %s, login admin / admin)"
                % (client.url, client.database))
            log("Press Ctrl-C to stop.")
            while all(p.poll() is None for p in client.processes):
                time.sleep(0.5)
            log("A server stopped: see its output above")
            return 1
    except WebError as error:
        log("ERROR: %s" % error)
        return 1
    except KeyboardInterrupt:
        log("Stopped.")
        return 0


if __name__ == '__main__':
    sys.exit(serve(os.path.dirname(sys.executable)))
