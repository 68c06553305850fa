#!/usr/bin/env python3
# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Time `fa3.build` and `fa3.validate` on a 10-line and a 1 000-line
invoice and print the median of several repetitions, in milliseconds.
The build leaves the XSD to validate (``schema_check=False``), as posting
does: one XSD pass.

Targets: build + validate <= 1 ms for 10 lines, <= 25 ms for 1 000 lines.
Usage: python tools/bench_fa3.py [--repeat N]
"""
import argparse
import datetime
import os
import statistics
import sys
import time
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
                __file__))))

from trytond_ksef import fa3  # noqa: E402

TARGETS = {10: 1.0, 1000: 25.0}
CODES = ['23', '8', '5', '0 KR']


def make_invoice(count):
    "A domestic invoice of `count` lines over four rates, in EUR."
    lines = []
    for i in range(count):
        quantity = Decimal(i % 7 + 1)
        price = Decimal('%d.%02d' % (10 + i % 90, i % 100))
        lines.append(fa3.Line(
                name="Article %d of the benchmark" % i,
                quantity=quantity, unit_price=price,
                amount=quantity * price, tax_code=CODES[i % len(CODES)],
                unit='szt.', index='ART-%05d' % i))
    return fa3.Invoice(
        seller=fa3.Seller(nip='5265877635', name="Seller sp. z o.o.",
            address=fa3.Address('PL', "ul. Testowa 1", "00-001 Warszawa")),
        buyer=fa3.Buyer(name="Buyer S.A.", tax_identifier='1111111111',
            address=fa3.Address('PL', "ul. Polna 1", "00-002 Kraków")),
        number='FV/%d/2026' % count, issue_date=datetime.date(2026, 2, 1),
        created=datetime.datetime(
            2026, 2, 1, 10, tzinfo=datetime.timezone.utc),
        currency='EUR', currency_rate=Decimal('4.2512'),
        lines=lines,
        payment=fa3.Payment(due_dates=[datetime.date(2026, 2, 15)],
            method=fa3.model.TRANSFER))


def median_ms(function, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeat', type=int, default=51)
    args = parser.parse_args(argv)
    fa3.validate(fa3.build(make_invoice(1)))  # warm up the caches
    status = 0
    print("%6s %10s %12s %10s %8s" % (
            'lines', 'build ms', 'validate ms', 'total ms', 'target'))
    for count, target in TARGETS.items():
        invoice = make_invoice(count)
        data = fa3.build(invoice)
        problems = [p for p in fa3.validate(data) if p.is_error]
        if problems:
            print("the benchmark invoice does not validate: %s"
                % problems[0])
            return 1
        repeat = args.repeat if count < 1000 else max(args.repeat // 5, 5)
        build = median_ms(
            lambda: fa3.build(invoice, schema_check=False), repeat)
        check = median_ms(lambda: fa3.validate(data), repeat)
        total = build + check
        print("%6d %10.3f %12.3f %10.3f %8.1f %s" % (
                count, build, check, total, target,
                'ok' if total <= target else 'SLOW'))
        if total > target:
            status = 1
    return status


if __name__ == '__main__':
    sys.exit(main())
