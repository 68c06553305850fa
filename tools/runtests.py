# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Run one unittest suite and print a machine-readable summary.

Usage (inside a project venv):
    python tools/runtests.py [--label LABEL] [--pattern GLOB] TARGET...

TARGET is an importable package or module ('trytond_ksef.tests',
'trytond.modules.ksef.tests', 'trytond.modules.ksef.tests.test_module').
Tests run with unittest (never pytest: it skips the .rst scenarios).  The
last line is ``RESULT {"passed": n, "failed": n, "skipped": n, ...}`` for
tools/dev.py to sum up.
"""
import argparse
import importlib
import json
import os
import sys
import time
import unittest


class CountingResult(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed = 0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1


def load(loader, target, pattern):
    module = importlib.import_module(target)
    if hasattr(module, '__path__'):
        # A package: discover inside it (this runs load_tests hooks, so the
        # proteus scenarios of tests/test_scenario.py are included).
        start = os.path.dirname(module.__file__)
        top = start
        for _ in target.split('.'):
            top = os.path.dirname(top)
        return loader.discover(start, pattern=pattern, top_level_dir=top)
    return loader.loadTestsFromModule(module)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--label', default='tests')
    parser.add_argument('--pattern', default='test*.py')
    parser.add_argument('-k', dest='names', action='append', default=[],
        help="only tests whose id contains this text")
    parser.add_argument('targets', nargs='+')
    args = parser.parse_args()

    loader = unittest.TestLoader()
    if args.names:
        loader.testNamePatterns = ['*%s*' % n for n in args.names]
    suite = unittest.TestSuite()
    for target in args.targets:
        suite.addTests(load(loader, target, args.pattern))

    runner = unittest.TextTestRunner(
        verbosity=int(os.environ.get('TEST_VERBOSITY', 1)),
        resultclass=CountingResult, stream=sys.stderr)
    start = time.monotonic()
    result = runner.run(suite)
    summary = {
        'label': args.label,
        'run': result.testsRun,
        'passed': result.passed,
        'failed': len(result.failures) + len(result.errors)
        + len(result.unexpectedSuccesses),
        'skipped': len(result.skipped),
        'seconds': round(time.monotonic() - start, 1),
        'skips': sorted({reason for _, reason in result.skipped}),
        }
    # A load failure (import error) shows up as an error test: counted.
    sys.stdout.flush()
    print('RESULT ' + json.dumps(summary), flush=True)
    return 0 if result.wasSuccessful() and result.testsRun else 1


if __name__ == '__main__':
    sys.exit(main())
