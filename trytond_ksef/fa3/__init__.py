# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""FA(3) e-invoices: build the XML of an invoice, check a document.

* `build(invoice) -> bytes`: the FA(3) XML of a `model.Invoice`; raises
  `FA3DataError` listing every problem of the data.
* `validate(data) -> [Problem]`: XSD, what KSeF verifies and the semantic
  rules (sums per rate, P_15, tax in PLN, compulsory annotations...).
* `parse_summary(data) -> dict`: seller NIP, P_1, P_2, RodzajFaktury,
  buyer identifiers and totals of a document.
* `trytond-ksef validate-fa3 FILE...` runs `validate` on files.
"""
import sys

from . import model
from .builder import build, build_tree
from .checks import (
    FA3DocumentError,
    parse_summary,
    semantic_problems,
    validate,
)
from .common import BLOCKS, TAX_CODES, DataProblem, FA3DataError, Problem
from .model import (
    Address,
    BankAccount,
    Buyer,
    Contact,
    CorrectedInvoice,
    Correction,
    Exemption,
    Invoice,
    Line,
    NewVehicle,
    Payment,
    Seller,
    TaxTotal,
    ThirdParty,
)

__all__ = [
    'build', 'build_tree', 'validate', 'semantic_problems',
    'parse_summary', 'FA3DataError', 'FA3DocumentError', 'DataProblem',
    'Problem', 'TAX_CODES', 'BLOCKS', 'model',
    'Address', 'BankAccount', 'Buyer', 'Contact', 'CorrectedInvoice',
    'Correction', 'Exemption', 'Invoice', 'Line', 'NewVehicle', 'Payment',
    'Seller', 'TaxTotal', 'ThirdParty',
    'configure_parser', 'run',
    ]


def configure_parser(parser):
    "Arguments of `trytond-ksef validate-fa3`."
    parser.add_argument('files', nargs='+', metavar='FILE',
        help="FA(3) XML file to check")
    parser.add_argument('-q', '--quiet', action='store_true',
        help="print nothing for files without problems")
    parser.add_argument('--strict', action='store_true',
        help="fail on warnings too")


def run(args, out=None):
    """Validate each file; print ``FILE:LINE: PATH: reason`` per problem.
    Exit status 0 when every file passes, 1 when one fails, 2 when one
    cannot be read."""
    from ..xmlutil import MAX_DOCUMENT_SIZE
    out = out or sys.stdout
    status = 0
    for name in args.files:
        try:
            with open(name, 'rb') as f:
                data = f.read(MAX_DOCUMENT_SIZE + 1)
        except OSError as exc:
            print("%s: cannot read: %s" % (name, exc.strerror), file=out)
            status = 2
            continue
        problems = validate(data)
        failed = [p for p in problems if p.is_error or args.strict]
        for problem in problems:
            print('%s:%s' % (name, problem), file=out)
        if failed:
            status = max(status, 1)
            print("%s: FAILED (%d error(s))" % (name, len(failed)),
                file=out)
        elif not args.quiet:
            print("%s: OK" % name, file=out)
    return status
