# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The demo behind `make demo`: the module on an embedded SQLite database.

Run by tools/dev.py with the demo venv's Python.  It writes everything under
demo-out/ (the database, trytond.conf, the outputs) and reports each step.
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DB_NAME = 'ksef_demo'


def step(msg):
    print("==> " + msg, flush=True)


def write_config(out, db_dir):
    path = os.path.join(out, 'trytond.conf')
    with open(path, 'w') as f:
        f.write("[database]\nuri = sqlite://\npath = %s\n\n" % db_dir)
        f.write("[web]\nlisten = 127.0.0.1:8000\n\n")
    return path


def create_database(config_path, db_dir):
    db_file = os.path.join(db_dir, DB_NAME + '.sqlite')
    if os.path.exists(db_file):
        os.remove(db_file)
    open(db_file, 'w').close()
    env = dict(os.environ, TRYTONPASSFILE=os.path.join(
            os.path.dirname(config_path), 'admin-password'))
    with open(env['TRYTONPASSFILE'], 'w') as f:
        f.write('admin\n')
    bindir = os.path.dirname(sys.executable)
    try:
        subprocess.run([os.path.join(bindir, 'trytond-admin'),
                '-c', config_path, '-d', DB_NAME, '--all',
                '--activate-dependencies', '-u', 'ksef',
                '--email', 'admin@example.com', '-v'],
            check=True, env=env, stdout=subprocess.DEVNULL)
    finally:
        os.remove(env['TRYTONPASSFILE'])
    return db_file


def report(config_path):
    from proteus import Model
    from proteus import config as pconfig
    pconfig.set_trytond(DB_NAME, config_file=config_path)
    Module = Model.get('ir.module')
    activated = Module.find([('state', '=', 'activated')])
    names = sorted(m.name for m in activated)
    import trytond
    print("    Tryton %s, %d modules activated: %s"
        % (trytond.__version__, len(names), ', '.join(names)))
    assert 'ksef' in names, "module ksef is not activated"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out', default=os.path.join(ROOT, 'demo-out'))
    args = parser.parse_args(argv)
    start = time.monotonic()
    out = os.path.abspath(args.out)
    db_dir = os.path.join(out, 'db')
    os.makedirs(db_dir, exist_ok=True)
    step("Writing %s" % os.path.relpath(write_config(out, db_dir), ROOT))
    config_path = os.path.join(out, 'trytond.conf')
    step("Creating the SQLite database %r and activating ksef" % DB_NAME)
    db_file = create_database(config_path, db_dir)
    step("Database file %s" % os.path.relpath(db_file, ROOT))
    report(config_path)
    step("Demo done in %.0f s (admin login: admin / admin)"
        % (time.monotonic() - start))
    return 0


if __name__ == '__main__':
    sys.exit(main())
