# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Facts of the FA(3) schema shared by the builder and the checks.

The tax-rate table below is the one place that says which ``P_12`` code
goes to which ``P_13_x``/``P_14_x``/``P_14_xW`` fields of ``Fa``; it was
checked against the XSD (``schemat_FA(3)_v1-0E.xsd``) and the Ministry's
samples.  Enumerations (currencies, countries, GTU codes, procedures) are
read from the packaged XSD itself, so they cannot drift from it.
"""
import functools
import os
import re
from collections import OrderedDict, namedtuple
from decimal import ROUND_HALF_UP, Decimal

from lxml import etree

from .. import xmlutil

NS = xmlutil.NS_FA3
FORM_CODE = 'FA'
SYSTEM_CODE = 'FA (3)'
SCHEMA_VERSION = '1-0E'
FORM_VARIANT = '3'

KINDS = ('VAT', 'KOR', 'ZAL', 'ROZ', 'UPR', 'KOR_ZAL', 'KOR_ROZ')
CORRECTION_KINDS = ('KOR', 'KOR_ZAL', 'KOR_ROZ')

# A block of Fa: the net field, the tax field, the tax-in-PLN field and the
# rates its tax may be computed with (None: no tax in this block).
Block = namedtuple('Block', ['key', 'net', 'tax', 'tax_pln', 'rates'])

# In schema order.  P_13_x/P_14_x of blocks 1-4 are "stawka podstawowa -
# aktualnie 23% albo 22%", "obniżona pierwsza - 8% albo 7%", "obniżona
# druga - 5%" and "obniżona trzecia - ryczałt dla taksówek osobowych".
BLOCKS = OrderedDict((b.key, b) for b in [
    Block('1', 'P_13_1', 'P_14_1', 'P_14_1W',
        (Decimal('0.23'), Decimal('0.22'))),
    Block('2', 'P_13_2', 'P_14_2', 'P_14_2W',
        (Decimal('0.08'), Decimal('0.07'))),
    Block('3', 'P_13_3', 'P_14_3', 'P_14_3W', (Decimal('0.05'),)),
    Block('4', 'P_13_4', 'P_14_4', 'P_14_4W',
        (Decimal('0.04'), Decimal('0.03'))),
    # OSS (dział XII rozdział 6a): the rate is the member state's, given
    # per line in P_12_XII; P_14_5 is optional and has no PLN twin.
    Block('5', 'P_13_5', 'P_14_5', None, None),
    Block('6_1', 'P_13_6_1', None, None, None),
    Block('6_2', 'P_13_6_2', None, None, None),
    Block('6_3', 'P_13_6_3', None, None, None),
    Block('7', 'P_13_7', None, None, None),
    Block('8', 'P_13_8', None, None, None),
    Block('9', 'P_13_9', None, None, None),
    Block('10', 'P_13_10', None, None, None),
    Block('11', 'P_13_11', None, None, None),
    ])
OSS_BLOCK = '5'
MARGIN_BLOCK = '11'

# P_12 code (exact TStawkaPodatku spelling) -> (block, rate).
# '4' and '3': the XSD lists them without a word and PROTOCOL.md §20.9 has
# them as an open point.  [AMBIGUOUS] They go to block 4: the XSD names
# alternatives for the basic (23/22) and first reduced (8/7) rates but only
# "5%" for the second reduced one, and calls block 4 the third reduced rate
# = the flat rate for passenger taxis, which is 4% (art. 114 ust. 1) and was
# 3% before 2011 - the same history as 23/22 and 8/7.  Nothing else in the
# schema could hold a 4% or 3% sale.
TAX_CODES = OrderedDict([
    ('23', ('1', Decimal('0.23'))),
    ('22', ('1', Decimal('0.22'))),
    ('8', ('2', Decimal('0.08'))),
    ('7', ('2', Decimal('0.07'))),
    ('5', ('3', Decimal('0.05'))),
    ('4', ('4', Decimal('0.04'))),
    ('3', ('4', Decimal('0.03'))),
    # 0% in the country, except intra-Community supply (WDT) and export
    ('0 KR', ('6_1', None)),
    ('0 WDT', ('6_2', None)),
    ('0 EX', ('6_3', None)),
    # exempt (art. 43 ust. 1, art. 113 ust. 1 i 9, art. 82 ust. 3, ...)
    ('zw', ('7', None)),
    # domestic reverse charge: the buyer accounts for the tax (art. 17
    # ust. 1 pkt 7 i 8 and other domestic cases)
    ('oo', ('10', None)),
    # not taxable in Poland: supplies outside the country, except the
    # services of art. 100 ust. 1 pkt 4 and OSS
    ('np I', ('8', None)),
    # not taxable in Poland: services of art. 100 ust. 1 pkt 4 (art. 28b
    # services to a taxable person of another member state, reverse charge
    # there)
    ('np II', ('9', None)),
    ])

CENT = Decimal('0.01')
ZERO = Decimal(0)
# TKwotowy: 16 integer digits and 2 decimals; TKwotowy2: 14 and 8;
# TIlosci: 16 and 6.
AMOUNT_LIMIT = Decimal(10) ** 16
PRICE_LIMIT = Decimal(10) ** 14
QUANTITY_LIMIT = Decimal(10) ** 16


def decimal_places(value):
    "Number of significant fraction digits of Decimal `value`."
    exponent = value.normalize().as_tuple().exponent
    return -exponent if exponent < 0 else 0


def round_tax(value):
    """Round to the grosz as art. 106e ust. 11 requires: half a grosz and
    more up, less than half dropped (symmetric for negative amounts)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def format_amount(value):
    "TKwotowy text: always two decimals, never a negative zero."
    text = str(value)  # fast; the usual amount has 2 decimals already
    integer, dot, fraction = text.partition('.')
    if len(fraction) != 2 or 'E' in text or not value:
        value = value.quantize(CENT)
        if not value:
            value = abs(value)
        text = '{:f}'.format(value)
    return text


def format_decimal(value):
    "Text of a quantity or price without exponent or trailing zeros."
    text = str(value)
    if 'E' in text:
        text = '{:f}'.format(value)
    if '.' in text:
        text = text.rstrip('0').rstrip('.')
    if text == '-0':
        text = '0'
    return text


def format_rate(value):
    "Text of an exchange rate, as given (NBP writes 4 decimals)."
    if not value:
        return '0'
    return '{:f}'.format(value)


def parse_decimal(text):
    "Decimal of an element's text (None when empty or not a number)."
    if text is None:
        return None
    try:
        return Decimal(text.strip())
    except ArithmeticError:
        return None


# Characters XML 1.0 forbids and the ranges KSeF refuses (PROTOCOL §11:
# #x7F-#x84, #x86-#x9F, #xFDD0-#xFDEF and #xnFFFE-#xnFFFF of every plane).
BAD_CHARACTERS = re.compile(
    '[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff'
    '\ufdd0-\ufdef\ufffe\uffff'
    + ''.join('%s%s' % (chr(p * 0x10000 + 0xfffe), chr(p * 0x10000 + 0xffff))
        for p in range(1, 17))
    + ']')
# xsd:token whitespace: space, tab, line feed, carriage return (not the
# other Unicode spaces, which are content)
_SPACES = re.compile('[ \t\n\r]+')


def bad_character(text):
    "Return the first character of `text` KSeF refuses, or None."
    match = BAD_CHARACTERS.search(text)
    return match.group() if match else None


def collapse(text):
    "Whitespace as xsd:token sees it: runs collapsed, ends trimmed."
    return _SPACES.sub(' ', text).strip()


NIP_PATTERN = re.compile(r'[1-9]((\d[1-9])|([1-9]\d))\d{7}')
# TNumerKSeF (the XSD also accepts the KSeF 1.0 form with a 4th hyphen)
KSEF_NUMBER_PATTERN = re.compile(
    r'([1-9]((\d[1-9])|([1-9]\d))\d{7}|M\d{9}|[A-Z]{3}\d{7})'
    r'-(20[2-9][0-9]|2[1-9][0-9]{2}|[3-9][0-9]{3})(0[1-9]|1[0-2])'
    r'(0[1-9]|[1-2][0-9]|3[0-1])-([0-9A-F]{6})-?([0-9A-F]{6})-([0-9A-F]{2})')
EU_VAT_PATTERN = re.compile(r'(\d|[A-Z]|\+|\*){1,12}')
SWIFT_PATTERN = re.compile(r'[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?')
EMAIL_PATTERN = re.compile(r'.+@.+')
IDWEW_PATTERN = re.compile(r'[1-9]((\d[1-9])|([1-9]\d))\d{7}-\d{5}')


def nip_checksum_valid(nip):
    "Whether the Polish NIP `nip` (10 digits) has a right check digit."
    from stdnum.pl import nip as stdnum_nip
    return stdnum_nip.is_valid(nip)


def ksef_number_valid(number):
    "Whether `number` is a KSeF 2.0 number with a right CRC-8."
    from .. import ksef_number
    return ksef_number.validate(number)


@functools.lru_cache(maxsize=None)
def enumeration(type_name):
    """Values of the enumerated simple type `type_name` of the packaged FA(3)
    schema or of its country-code schema, as a frozenset of str."""
    xs = 'http://www.w3.org/2001/XMLSchema'
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False)
    values = set()
    for filename in ('schemat_FA(3)_v1-0E.xsd', 'KodyKrajow_v10-0E.xsd'):
        path = os.path.join(xmlutil.SCHEMA_DIR, 'fa3', filename)
        tree = etree.parse(path, parser)
        for simple in tree.iterfind('{%s}simpleType' % xs):
            if simple.get('name') == type_name:
                values.update(e.get('value') for e in simple.iter(
                        '{%s}enumeration' % xs))
    if not values:
        raise LookupError(type_name)
    return frozenset(values)


def currencies():
    return enumeration('TKodWaluty')


def countries():
    return enumeration('TKodKraju')


def eu_countries():
    return enumeration('TKodyKrajowUE')


def local(tag):
    "Local name of an lxml tag."
    if not isinstance(tag, str):
        return None
    return tag.rpartition('}')[2]


def element_path(element):
    """Readable path of `element`: ``/Faktura/Fa/FaWiersz[2]/P_12``; the
    1-based index is written where an element has same-named siblings."""
    parts = []
    while element is not None:
        name = local(element.tag)
        parent = element.getparent()
        if parent is not None:
            same = [c for c in parent if c.tag == element.tag]
            if len(same) > 1:
                name = '%s[%d]' % (name, same.index(element) + 1)
        parts.append(name)
        element = parent
    return '/' + '/'.join(reversed(parts))


class _Params(dict):
    def __missing__(self, key):
        return '{%s}' % key


# English texts of the data problems, filled with the field name and the
# params.  They never contain invoice content, only names, codes and limits.
DATA_MESSAGES = {
    'fa3_required': "{field} is required",
    'fa3_too_long': "{field} is longer than {max} characters",
    'fa3_too_many': "{field} has more than {max} entries",
    'fa3_invalid_characters': (
        "{field} contains a character KSeF refuses (U+{codepoint})"),
    'fa3_invalid_type': "{field} must be {expected}",
    'fa3_invalid_value': "{field} is not one of the allowed values",
    'fa3_invalid_format': "{field} does not have the format of {format}",
    'fa3_invalid_nip': "{field} is not a valid Polish NIP",
    'fa3_invalid_ksef_number': "{field} is not a valid KSeF number",
    'fa3_too_many_decimals': "{field} has more than {max} decimals",
    'fa3_out_of_range': "{field} is out of the range FA(3) allows",
    'fa3_date_out_of_range': (
        "{field} must be between {min} and {max}"),
    'fa3_naive_datetime': "{field} must carry a UTC offset",
    'fa3_buyer_identifier_required': (
        "{field}: a business buyer needs a tax identifier (set consumer "
        "for a buyer without one)"),
    'fa3_buyer_eu_vat_required': (
        "{field}: tax code {tax_code} needs a buyer identified by an EU "
        "VAT number of another member state"),
    'fa3_buyer_nip_required': (
        "{field}: tax code {tax_code} needs a buyer identified by a "
        "Polish NIP"),
    'fa3_exemption_basis_required': (
        "{field}: an exempt sale (zw) needs the legal basis of the "
        "exemption"),
    'fa3_exemption_basis_conflict': (
        "{field}: exempt lines give legal bases of different kinds; FA(3) "
        "holds one"),
    'fa3_currency_rate_required': (
        "{field}: an invoice in {currency} needs the exchange rate to PLN"),
    'fa3_currency_rate_unexpected': (
        "{field}: an invoice in PLN has no exchange rate"),
    'fa3_line_amount_mismatch': (
        "{field} does not equal quantity x (unit price - discount)"),
    'fa3_tax_base_mismatch': (
        "{field}: the base of {block_field} does not equal the sum of the "
        "lines"),
    'fa3_tax_amount_mismatch': (
        "{field}: the tax of {block_field} does not match its base and "
        "rate"),
    'fa3_tax_pln_mismatch': (
        "{field}: the tax in PLN of {block_field} does not match the tax "
        "and the exchange rates"),
    'fa3_tax_unexpected': "{field}: tax code {tax_code} has no tax amount",
    'fa3_tax_without_lines': (
        "{field}: tax code {tax_code} has no line"),
    'fa3_total_mismatch': (
        "{field} does not equal the sum of the bases and taxes"),
    'fa3_no_lines': "{field}: an invoice of kind {kind} needs lines",
    'fa3_correction_required': (
        "{field}: a corrective invoice needs the corrected invoice(s)"),
    'fa3_correction_unexpected': (
        "{field}: only a corrective invoice refers to corrected invoices"),
    'fa3_unsupported_kind': (
        "{field}: kind {kind} cannot be built (VAT or KOR only)"),
    'fa3_exclusive': "{field}: give either this or {other}, not both",
    'fa3_period_order': "{field}: the period ends before it starts",
    'fa3_third_party_role_required': (
        "{field}: the flag needs a third party (Podmiot3) with role "
        "{role}"),
    'fa3_margin_required': (
        "{field}: a line without tax code is a margin-scheme line and "
        "needs the invoice's margin scheme"),
    'fa3_schema_violation': (
        "{field}: the generated XML breaks the FA(3) schema ({detail})"),
    }


class DataProblem(namedtuple('DataProblem',
            ['code', 'field', 'path', 'params'])):
    """One problem of the input data: stable ``code``, the input ``field``
    (``'lines[2].tax_code'``), the XML ``path`` the value goes to and the
    message ``params``."""
    __slots__ = ()

    @property
    def message(self):
        params = _Params(self.params)
        params['field'] = self.field
        return DATA_MESSAGES.get(self.code, self.code).format_map(params)

    def __str__(self):
        return self.message


class FA3DataError(ValueError):
    """The invoice data cannot make a valid FA(3) document.

    ``problems`` lists every problem found (`DataProblem`); ``code``,
    ``path``, ``field`` and ``params`` are those of the first one, so a
    caller that shows one message can use the error itself.
    """

    def __init__(self, code, path, field, problems=None, **params):
        self.code = code
        self.path = path
        self.field = field
        self.params = dict(params)
        if problems is None:
            problems = [DataProblem(code, field, path, self.params)]
        self.problems = list(problems)
        super().__init__(code)

    @classmethod
    def from_problems(cls, problems):
        first = problems[0]
        return cls(first.code, first.path, first.field,
            problems=problems, **first.params)

    def __str__(self):
        if len(self.problems) == 1:
            return self.problems[0].message
        return "%d problems in the invoice data:\n%s" % (
            len(self.problems),
            '\n'.join('- %s' % p.message for p in self.problems))


class Problem(namedtuple('Problem',
            ['path', 'line', 'reason', 'code', 'severity', 'params'])):
    """A problem found by `validate`: the element ``path``, the source
    ``line`` (None when unknown), an English ``reason``, a stable ``code``,
    ``severity`` ('error' or 'warning') and the ``params`` of the
    reason."""
    __slots__ = ()

    @property
    def is_error(self):
        return self.severity == 'error'

    def __str__(self):
        where = self.path or '/'
        if self.line:
            where = '%d: %s' % (self.line, where)
        prefix = '' if self.is_error else 'warning: '
        return '%s: %s%s' % (where, prefix, self.reason)


HALF_CENT = Decimal('0.005')


def tax_tolerance(count):
    """Largest acceptable gap between the tax of a block and its base times
    the rate: the block's own rounding plus half a grosz for each of the
    `count` lines, in case the tax was rounded line by line."""
    return CENT + HALF_CENT * count


def total_tolerance(blocks):
    """Largest acceptable gap between P_15 and the sum of the `blocks`
    present: P_15 may be the exact gross sum while each block's net and
    tax were rounded once, half a grosz each (MF sample 1: 2051 for
    2050.99)."""
    return CENT * blocks


def expected_pln_tax(tax, items):
    """Tax in PLN of a block whose lines give `items`, a list of
    (tax of the line before rounding, exchange rate of the line): the
    block's `tax` spread over the lines in proportion and converted at each
    line's rate (MF samples 20 and 21)."""
    share = sum((t for t, _ in items), ZERO)
    converted = sum((t * k for t, k in items), ZERO)
    if tax is None or not share:
        return converted
    return tax * converted / share


def pln_tax_tolerance(items):
    "Largest acceptable gap for `expected_pln_tax` (rounding per line)."
    return CENT + HALF_CENT * sum(
        (max(abs(k), Decimal(1)) for _, k in items), ZERO)
