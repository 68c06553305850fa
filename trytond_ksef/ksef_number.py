# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The KSeF number (numer KSeF) of an accepted invoice (PROTOCOL.md §10).

Format, always 35 characters::

    NNNNNNNNNN-YYYYMMDD-XXXXXXXXXXXX-CC

the seller's NIP, the date KSeF accepted the invoice for processing, 12
uppercase hexadecimal technical characters and a CRC-8 of the first 32
characters (ASCII, hyphens included) as 2 uppercase hexadecimal characters.
The CRC-8 uses polynomial 0x07, initial value 0x00, no reflection and no
final XOR (CRC-8/SMBUS).

The API schema also accepts 36-character KSeF 1.0 numbers (a hyphen
between the two halves of the technical part), but KSeF 2.0 issues only
the 35-character form and the documentation defines the check sum for that
form only, so only that form is valid here.
"""
import datetime as _datetime
import re
import secrets
from collections import namedtuple

LENGTH = 35
DATA_LENGTH = 32
POLYNOMIAL = 0x07
INITIAL = 0x00

# The first group is the API schema's `Nip` pattern (first digit 1-9, the
# next two not both 0); the date groups are those of `KsefNumber`.
_PATTERN = re.compile(
    r'(?P<nip>[1-9](?:\d[1-9]|[1-9]\d)\d{7})'
    r'-(?P<date>(?:20[2-9]\d|2[1-9]\d{2}|[3-9]\d{3})'
    r'(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]))'
    r'-(?P<technical>[0-9A-F]{12})'
    r'-(?P<crc>[0-9A-F]{2})', re.ASCII)
_NIP = re.compile(r'[1-9](?:\d[1-9]|[1-9]\d)\d{7}', re.ASCII)
_TECHNICAL = re.compile(r'[0-9A-F]{12}', re.ASCII)

KsefNumber = namedtuple('KsefNumber', ['nip', 'date', 'technical', 'crc'])
KsefNumber.__doc__ = (
    "Parts of a KSeF number: seller NIP (str), acceptance date "
    "(datetime.date), technical part (str) and CRC-8 (str, 2 hex).")


class KsefNumberError(ValueError):
    "A malformed KSeF number, or bad parts to build one."

    def __init__(self, code, message, **params):
        super().__init__(message)
        self.code = code
        self.params = params


def _make_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ POLYNOMIAL) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc8(data):
    """CRC-8 of `data` (bytes, or str encoded as ASCII): polynomial 0x07,
    initial value 0x00, not reflected, no final XOR."""
    if isinstance(data, str):
        data = data.encode('ascii')
    crc = INITIAL
    for byte in data:
        crc = _TABLE[crc ^ byte]
    return crc


def checksum(data):
    "The 2 uppercase hexadecimal characters of the CRC-8 of `data`."
    return '%02X' % crc8(data)


def generate(nip, on_date, random_part=None):
    """Build a KSeF number for seller `nip` accepted on `on_date`.

    `random_part` is the 12-character technical part (hexadecimal, case
    ignored); a random one is drawn when it is None.  KSeF assigns the
    real numbers: this is for the simulator and for tests.
    """
    nip = str(nip)
    if not _NIP.fullmatch(nip):
        raise KsefNumberError(
            'ksef_number_invalid_nip',
            "the seller NIP must be 10 digits, not starting with 0",
            nip=nip)
    if not isinstance(on_date, _datetime.date):
        raise TypeError("on_date must be a date")
    if not 2020 <= on_date.year <= 9999:
        raise KsefNumberError(
            'ksef_number_invalid_date',
            "a KSeF number date must be in year 2020 or later",
            date=on_date.isoformat())
    if random_part is None:
        technical = secrets.token_hex(6).upper()
    else:
        technical = str(random_part).upper()
        if not _TECHNICAL.fullmatch(technical):
            raise KsefNumberError(
                'ksef_number_invalid_technical_part',
                "the technical part must be 12 hexadecimal characters",
                technical=str(random_part))
    data = '%s-%s-%s' % (nip, on_date.strftime('%Y%m%d'), technical)
    return '%s-%s' % (data, checksum(data))


def parse(number):
    """Split a KSeF number into a `KsefNumber` after checking its length,
    format, date and check sum; raise `KsefNumberError` otherwise.

    The codes are 'ksef_number_length', 'ksef_number_format',
    'ksef_number_date' and 'ksef_number_checksum'.
    """
    if not isinstance(number, str):
        raise KsefNumberError(
            'ksef_number_format', "a KSeF number must be text",
            number=repr(number))
    if len(number) != LENGTH:
        raise KsefNumberError(
            'ksef_number_length',
            "a KSeF number has %d characters, not %d"
            % (LENGTH, len(number)),
            number=number, length=len(number))
    match = _PATTERN.fullmatch(number)
    if not match:
        raise KsefNumberError(
            'ksef_number_format',
            "%s is not of the form NIP-YYYYMMDD-XXXXXXXXXXXX-CC "
            "(uppercase hexadecimal)" % number,
            number=number)
    try:
        date = _datetime.datetime.strptime(
            match.group('date'), '%Y%m%d').date()
    except ValueError:
        raise KsefNumberError(
            'ksef_number_date',
            "%s does not contain a real date" % number,
            number=number) from None
    expected = checksum(number[:DATA_LENGTH])
    if match.group('crc') != expected:
        raise KsefNumberError(
            'ksef_number_checksum',
            "the check sum of %s is wrong" % number,
            number=number)
    return KsefNumber(
        match.group('nip'), date, match.group('technical'),
        match.group('crc'))


def validate(number):
    "Tell whether `number` is a well-formed KSeF number with a right CRC."
    try:
        parse(number)
    except KsefNumberError:
        return False
    return True
