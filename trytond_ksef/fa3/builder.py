# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Build the FA(3) XML of an `Invoice`.

One pass over the input checks every value and builds the lxml tree at the
same time; every problem is collected, with the input field and the XML
path, and raised together as `FA3DataError`.  The totals are computed and
checked with the same functions and tolerances as `checks` uses, and the
finished tree is validated against the XSD as a safety net, so a document
that leaves `build` passes `validate`.
"""
import datetime
import re
from collections import OrderedDict, namedtuple
from decimal import Decimal

from lxml import etree

from .. import xmlutil
from . import model
from .common import (
    AMOUNT_LIMIT,
    BLOCKS,
    EMAIL_PATTERN,
    EU_VAT_PATTERN,
    FORM_CODE,
    FORM_VARIANT,
    HALF_CENT,
    IDWEW_PATTERN,
    MARGIN_BLOCK,
    NIP_PATTERN,
    NS,
    PRICE_LIMIT,
    QUANTITY_LIMIT,
    SCHEMA_VERSION,
    SWIFT_PATTERN,
    SYSTEM_CODE,
    TAX_CODES,
    ZERO,
    DataProblem,
    FA3DataError,
    bad_character,
    collapse,
    countries,
    currencies,
    decimal_places,
    element_path,
    enumeration,
    eu_countries,
    expected_pln_tax,
    format_amount,
    format_decimal,
    format_rate,
    ksef_number_valid,
    nip_checksum_valid,
    pln_tax_tolerance,
    round_tax,
    tax_tolerance,
)

DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
MIN_DATE = datetime.date(2006, 1, 1)  # TDataT
MIN_PAYMENT_DATE = datetime.date(2016, 7, 1)  # TData
MAX_DATE = datetime.date(2050, 1, 1)
MIN_CREATED = datetime.datetime(2025, 9, 1, tzinfo=datetime.timezone.utc)
MAX_CREATED = datetime.datetime(
    2050, 1, 1, 23, 59, 59, tzinfo=datetime.timezone.utc)
_COMPACT = re.compile(r'[\s.\-/]')


def _clean(value, size):
    """Whether `value` is a text that needs no more than this check: at most
    `size` characters, printable (so without the characters KSeF refuses,
    tabs or line breaks) and without leading, trailing or doubled spaces
    (xsd:token collapses them).  Other texts take the slow path."""
    return (type(value) is str and 0 < len(value) <= size
        and value.isprintable() and value[0] != ' ' and value[-1] != ' '
        and '  ' not in value)
_KRS = re.compile(r'\d{10}')
_REGON = re.compile(r'\d{9}|\d{14}')
MARGIN_FIELDS = {
    model.MARGIN_TRAVEL: 'P_PMarzy_2',
    model.MARGIN_SECOND_HAND: 'P_PMarzy_3_1',
    model.MARGIN_ART: 'P_PMarzy_3_2',
    model.MARGIN_ANTIQUES: 'P_PMarzy_3_3',
    }
EXEMPTION_FIELDS = {
    model.EXEMPTION_LAW: 'P_19A',
    model.EXEMPTION_DIRECTIVE: 'P_19B',
    model.EXEMPTION_OTHER: 'P_19C',
    }
VEHICLE_FIELDS = {
    # kind: (usage, serial)
    'land': ('P_22B', 'P_22B1'),
    'water': ('P_22C', 'P_22C1'),
    'air': ('P_22D', 'P_22D1'),
    }
# Tax codes whose buyer must be identified in another member state
EU_BUYER_CODES = ('0 WDT', 'np II')
# Tax codes that are a reverse charge: "odwrotne obciążenie" (P_18)
REVERSE_CHARGE_CODES = ('oo', 'np II')
SUPPORTED_KINDS = ('VAT', 'KOR')
# Optional texts of a line: (attribute, element, maximum length), in schema
# order (between P_7 and P_8B).
_LINE_TEXTS = [
    ('index', 'Indeks', 50), ('gtin', 'GTIN', 20), ('pkwiu', 'PKWiU', 50),
    ('cn', 'CN', 50), ('pkob', 'PKOB', 50), ('unit', 'P_8A', 256)]


class _Clark(dict):
    "Clark names of the FA(3) namespace, made once."

    def __missing__(self, tag):
        name = self[tag] = '{%s}%s' % (NS, tag)
        return name


_Q = _Clark()
_q = _Q.__getitem__
_SubElement = etree.SubElement
_Q_LINE = _q('FaWiersz')
_Q_NUMBER = _q('NrWierszaFa')
_Q_NAME = _q('P_7')
_Q_QUANTITY = _q('P_8B')
_Q_PRICE = _q('P_9A')
_Q_GROSS_PRICE = _q('P_9B')
_Q_NET = _q('P_11')
_Q_GROSS = _q('P_11A')
_Q_CODE = _q('P_12')
_Q_RATE = _q('KursWaluty')


_FA_OPEN = '<Fa xmlns="%s">' % NS
# Parses only what the builder writes (see _Builder.lines).
_LINES_PARSER = etree.XMLParser(resolve_entities=False, no_network=True,
    load_dtd=False)


def _esc(text):
    "`text` escaped for XML element content."
    if '&' in text or '<' in text or '>' in text:
        text = text.replace('&', '&amp;').replace('<', '&lt;').replace(
            '>', '&gt;')
    return text


def _element(tag, text):
    "An element `tag` with `text` as XML text (empty when None)."
    if text is None:
        return '<%s/>' % tag
    return '<%s>%s</%s>' % (tag, _esc(text), tag)


def _sub(parent, tag, text=None):
    element = _SubElement(parent, _Q[tag])
    if text is not None:
        element.text = text
    return element


def _quick(value, places, digits):
    """Whether `value` is a Decimal that needs no further check: at most
    `places` decimals (trailing zeros aside) and `digits` integer digits.
    Read from its text, which is much faster than as_tuple()."""
    if type(value) is not Decimal:
        return False
    integer, _, fraction = str(value).partition('.')
    if integer[:1] == '-':
        integer = integer[1:]
    return (integer.isdigit() and len(integer) <= digits
        and (not fraction or fraction.isdigit())
        and (len(fraction) <= places or len(fraction.rstrip('0')) <= places))


def _join(value):
    """Field names and paths of the lines are tuples formatted on demand:
    ('field', index, name) and ('path', index, tag)."""
    if isinstance(value, tuple):
        kind, index, name = value
        if kind == 'field':
            return 'lines[%d].%s' % (index, name)
        return '/Faktura/Fa/FaWiersz[%d]/%s' % (index + 1, name)
    return value


# A checked line: its element and the values to add up.
_Line = namedtuple('_Line', ['number', 'code', 'block', 'sign', 'amount',
        'rate', 'margin', 'index', 'currency_rate', 'exemption'])


class _Builder:

    def __init__(self, invoice, check_nip, schema_check=True):
        self.invoice = invoice
        self.check_nip = check_nip
        self.schema_check = schema_check
        self.problems = []
        self.buyer_identifier = None  # (kind, country) once checked
        self.invoice_rate_text = None

    # -- problem collection and scalar checks --------------------------

    def problem(self, code, field, path, **params):
        self.problems.append(
            DataProblem(code, _join(field), _join(path), params))

    def text(self, value, field, path, max_len=256, required=False,
            token=True):
        "Checked text (collapsed like xsd:token) or None."
        if _clean(value, max_len):
            return value
        if value is None:
            if required:
                self.problem('fa3_required', field, path)
            return None
        if not isinstance(value, str):
            self.problem('fa3_invalid_type', field, path, expected='text')
            return None
        bad = bad_character(value)
        if bad is not None:
            self.problem('fa3_invalid_characters', field, path,
                codepoint='%04X' % ord(bad))
            return None
        value = collapse(value) if token else value.strip()
        if not value:
            if required:
                self.problem('fa3_required', field, path)
            return None
        if len(value) > max_len:
            self.problem('fa3_too_long', field, path, max=max_len)
            return None
        return value

    def decimal(self, value, field, path, places, limit=AMOUNT_LIMIT,
            required=True, positive=False):
        "Checked Decimal or None."
        if type(value) is Decimal:
            exponent = value.as_tuple().exponent
            if (type(exponent) is int and exponent >= -places
                    and -limit < value < limit
                    and (not positive or value > 0)):
                return value
        if value is None:
            if required:
                self.problem('fa3_required', field, path)
            return None
        if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
            self.problem('fa3_invalid_type', field, path,
                expected='a Decimal')
            return None
        value = Decimal(value)
        if not value.is_finite():
            self.problem('fa3_invalid_type', field, path,
                expected='a finite Decimal')
            return None
        if decimal_places(value) > places:
            self.problem('fa3_too_many_decimals', field, path, max=places)
            return None
        if abs(value) >= limit or (positive and value <= 0):
            self.problem('fa3_out_of_range', field, path)
            return None
        return value

    def date(self, value, field, path, required=True, minimum=MIN_DATE):
        "Checked ISO text of a date or None."
        if value is None:
            if required:
                self.problem('fa3_required', field, path)
            return None
        if (not isinstance(value, datetime.date)
                or isinstance(value, datetime.datetime)):
            self.problem('fa3_invalid_type', field, path, expected='a date')
            return None
        if not minimum <= value <= MAX_DATE:
            self.problem('fa3_date_out_of_range', field, path,
                min=minimum.isoformat(), max=MAX_DATE.isoformat())
            return None
        return value.isoformat()

    def choice(self, value, allowed, field, path, required=False):
        if value is None:
            if required:
                self.problem('fa3_required', field, path)
            return None
        try:
            valid = not isinstance(value, bool) and value in allowed
        except TypeError:  # unhashable
            valid = False
        if not valid:
            self.problem('fa3_invalid_value', field, path)
            return None
        return value

    def limit(self, items, max_count, field, path):
        items = list(items or [])
        if len(items) > max_count:
            self.problem('fa3_too_many', field, path, max=max_count)
            return items[:max_count]
        return items

    # -- document -------------------------------------------------------

    def build(self):
        invoice = self.invoice
        root = etree.Element(_q('Faktura'), nsmap={None: NS})
        if not isinstance(invoice, model.Invoice):
            raise TypeError("build() needs a trytond_ksef.fa3.Invoice")
        self.kind = self.choice(invoice.kind, SUPPORTED_KINDS, 'kind',
            '/Faktura/Fa/RodzajFaktury', required=True)
        if invoice.kind is not None and self.kind is None:
            self.problems[-1] = DataProblem('fa3_unsupported_kind', 'kind',
                '/Faktura/Fa/RodzajFaktury', {'kind': str(invoice.kind)})
        self.header(root)
        # Fa is made apart and its lines first (their totals come before
        # them); lines() makes self.fa_element.
        lines = self.lines()
        codes = {ln.code for ln in lines if ln.code}
        if invoice.taxes:
            codes.update(t.code for t in invoice.taxes
                if getattr(t, 'code', None) in TAX_CODES)
        self.seller(root, codes)
        self.buyer(root, codes)
        self.third_parties(root)
        self.fa(root, lines, codes)
        self.footer(root)
        if self.problems:
            raise FA3DataError.from_problems(self.problems)
        if self.schema_check:
            self.check_result(root)
        return root

    def header(self, root):
        invoice = self.invoice
        header = _sub(root, 'Naglowek')
        code = _sub(header, 'KodFormularza', FORM_CODE)
        code.set('kodSystemowy', SYSTEM_CODE)
        code.set('wersjaSchemy', SCHEMA_VERSION)
        _sub(header, 'WariantFormularza', FORM_VARIANT)
        path = '/Faktura/Naglowek/DataWytworzeniaFa'
        created = invoice.created
        if created is None:
            self.problem('fa3_required', 'created', path)
        elif not isinstance(created, datetime.datetime):
            self.problem('fa3_invalid_type', 'created', path,
                expected='a datetime')
        elif created.utcoffset() is None:
            self.problem('fa3_naive_datetime', 'created', path)
        elif not MIN_CREATED <= created <= MAX_CREATED:
            self.problem('fa3_date_out_of_range', 'created', path,
                min=MIN_CREATED.isoformat(), max=MAX_CREATED.isoformat())
        else:
            text = created.replace(microsecond=0).isoformat()
            if text.endswith('+00:00'):
                text = text[:-6] + 'Z'
            _sub(header, 'DataWytworzeniaFa', text)
        info = self.text(invoice.system_info, 'system_info',
            '/Faktura/Naglowek/SystemInfo')
        if info:
            _sub(header, 'SystemInfo', info)

    def address(self, parent, tag, address, field, path, required=False):
        path = '%s/%s' % (path, tag)
        if address is None:
            if required:
                self.problem('fa3_required', field, path)
            return
        if not isinstance(address, model.Address):
            self.problem('fa3_invalid_type', field, path,
                expected='an Address')
            return
        element = _sub(parent, tag)
        country = self.choice(address.country, countries(),
            field + '.country', path + '/KodKraju', required=True)
        _sub(element, 'KodKraju', country)
        _sub(element, 'AdresL1', self.text(address.line1,
                field + '.line1', path + '/AdresL1', 512, required=True))
        line2 = self.text(address.line2, field + '.line2',
            path + '/AdresL2', 512)
        if line2:
            _sub(element, 'AdresL2', line2)
        gln = self.text(address.gln, field + '.gln', path + '/GLN', 13)
        if gln:
            _sub(element, 'GLN', gln)

    def contacts(self, parent, contacts, field, path, email_tag='Email',
            phone_tag='Telefon'):
        contacts = self.limit(contacts, 3, field, path + '/DaneKontaktowe')
        for i, contact in enumerate(contacts):
            f = '%s[%d]' % (field, i)
            p = '%s/DaneKontaktowe[%d]' % (path, i + 1)
            email = self.text(contact.email, f + '.email',
                p + '/' + email_tag, 255)
            if email and (len(email) < 3
                    or not EMAIL_PATTERN.fullmatch(email)):
                self.problem('fa3_invalid_format', f + '.email',
                    p + '/' + email_tag, format='an e-mail address')
                email = None
            phone = self.text(contact.phone, f + '.phone',
                p + '/' + phone_tag, 16)
            if email or phone:
                element = _sub(parent, 'DaneKontaktowe')
                if email:
                    _sub(element, email_tag, email)
                if phone:
                    _sub(element, phone_tag, phone)

    def nip(self, value, field, path):
        "Checked 10-digit NIP (spaces, hyphens and a PL prefix removed)."
        value = self.text(value, field, path, required=True)
        if value is None:
            return None
        value = _COMPACT.sub('', value).upper()
        if value.startswith('PL'):
            value = value[2:]
        if not NIP_PATTERN.fullmatch(value) or (
                self.check_nip and not nip_checksum_valid(value)):
            self.problem('fa3_invalid_nip', field, path)
            return None
        return value

    # -- parties ----------------------------------------------------------

    def seller(self, root, codes):
        seller = self.invoice.seller
        path = '/Faktura/Podmiot1'
        if not isinstance(seller, model.Seller):
            self.problem('fa3_required', 'seller', path)
            return
        element = _sub(root, 'Podmiot1')
        if seller.eu_vat or codes.intersection(EU_BUYER_CODES):
            _sub(element, 'PrefiksPodatnika', 'PL')
        eori = self.text(seller.eori, 'seller.eori', path + '/NrEORI')
        if eori:
            _sub(element, 'NrEORI', eori)
        ident = _sub(element, 'DaneIdentyfikacyjne')
        _sub(ident, 'NIP', self.nip(seller.nip, 'seller.nip',
                path + '/DaneIdentyfikacyjne/NIP'))
        _sub(ident, 'Nazwa', self.text(seller.name, 'seller.name',
                path + '/DaneIdentyfikacyjne/Nazwa', 512, required=True))
        self.address(element, 'Adres', seller.address, 'seller.address',
            path, required=True)
        self.address(element, 'AdresKoresp', seller.correspondence_address,
            'seller.correspondence_address', path)
        self.contacts(element, seller.contacts, 'seller.contacts', path)
        status = self.choice(seller.status, (1, 2, 3, 4), 'seller.status',
            path + '/StatusInfoPodatnika')
        if status:
            _sub(element, 'StatusInfoPodatnika', str(status))

    def identification(self, parent, party, field, path, third=False):
        """Write the identifier choice of DaneIdentyfikacyjne; return the
        kind written ('nip', 'eu_vat', 'other', 'internal' or None)."""
        f = field + '.tax_identifier'
        raw = party.tax_identifier
        if isinstance(raw, str) and not collapse(raw):
            raw = None
        if raw is None:
            if not third and not party.consumer:
                self.problem('fa3_buyer_identifier_required', f,
                    path + '/NIP')
            _sub(parent, 'BrakID', '1')
            return None, None
        kind = party.tax_identifier_kind
        allowed = model.IDENTIFIER_KINDS if third else (
            model.NIP, model.EU_VAT, model.OTHER)
        if self.choice(kind, allowed, field + '.tax_identifier_kind',
                path) is None:
            return None, None
        country = party.tax_identifier_country
        if kind == model.EU_VAT:
            value = self.text(raw, f, path + '/NrVatUE', 50, required=True)
            if value is None:
                return None, None
            value = _COMPACT.sub('', value).upper()
            prefix = value[:2]
            if country is None and prefix.isalpha():
                country = prefix
            if country == 'GR':  # VAT numbers of Greece use EL
                country = 'EL'
            if prefix == country or (country, prefix) == ('EL', 'GR'):
                value = value[2:]
            if country == 'PL':
                # A Polish buyer is identified by NIP: that is what gives
                # him access to the invoice in KSeF.
                kind, raw = model.NIP, value
            else:
                if self.choice(country, eu_countries(),
                        field + '.tax_identifier_country',
                        path + '/KodUE', required=True) is None:
                    return None, None
                if not EU_VAT_PATTERN.fullmatch(value):
                    self.problem('fa3_invalid_format', f, path + '/NrVatUE',
                        format='an EU VAT number')
                    return None, None
                _sub(parent, 'KodUE', country)
                _sub(parent, 'NrVatUE', value)
                return model.EU_VAT, country
        if kind == model.NIP:
            value = self.nip(raw, f, path + '/NIP')
            if value:
                _sub(parent, 'NIP', value)
            return model.NIP, 'PL'
        if kind == model.INTERNAL:
            value = self.text(raw, f, path + '/IDWew', 20, required=True)
            if value and not IDWEW_PATTERN.fullmatch(value):
                self.problem('fa3_invalid_format', f, path + '/IDWew',
                    format='an internal identifier (NIP-00000)')
                value = None
            if value:
                _sub(parent, 'IDWew', value)
            return model.INTERNAL, 'PL'
        value = self.text(raw, f, path + '/NrID', 50, required=True)
        if country is not None:
            country = self.choice(country, countries(),
                field + '.tax_identifier_country', path + '/KodKraju')
            if country:
                _sub(parent, 'KodKraju', country)
        if value:
            _sub(parent, 'NrID', value)
        return model.OTHER, country

    def buyer(self, root, codes):
        buyer = self.invoice.buyer
        path = '/Faktura/Podmiot2'
        if not isinstance(buyer, model.Buyer):
            self.problem('fa3_required', 'buyer', path)
            return
        element = _sub(root, 'Podmiot2')
        eori = self.text(buyer.eori, 'buyer.eori', path + '/NrEORI')
        if eori:
            _sub(element, 'NrEORI', eori)
        ident = _sub(element, 'DaneIdentyfikacyjne')
        ipath = path + '/DaneIdentyfikacyjne'
        kind, country = self.identification(ident, buyer, 'buyer', ipath)
        self.buyer_identifier = (kind, country)
        business = not buyer.consumer or kind is not None
        name = self.text(buyer.name, 'buyer.name', ipath + '/Nazwa', 512,
            required=business)
        if name:
            _sub(ident, 'Nazwa', name)
        self.address(element, 'Adres', buyer.address, 'buyer.address', path,
            required=business)
        self.address(element, 'AdresKoresp', buyer.correspondence_address,
            'buyer.correspondence_address', path)
        self.contacts(element, buyer.contacts, 'buyer.contacts', path)
        number = self.text(buyer.customer_number, 'buyer.customer_number',
            path + '/NrKlienta')
        if number:
            _sub(element, 'NrKlienta', number)
        key = self.text(buyer.buyer_key, 'buyer.buyer_key',
            path + '/IDNabywcy', 32)
        if key:
            _sub(element, 'IDNabywcy', key)
        _sub(element, 'JST', '1' if buyer.jst else '2')
        _sub(element, 'GV', '1' if buyer.vat_group else '2')
        f = 'buyer.tax_identifier'
        failed = kind is None and buyer.tax_identifier is not None
        for code in sorted(codes) if not failed else ():
            if code in EU_BUYER_CODES and kind != model.EU_VAT:
                self.problem('fa3_buyer_eu_vat_required', f,
                    ipath + '/NrVatUE', tax_code=code)
            elif code == 'oo' and kind != model.NIP:
                self.problem('fa3_buyer_nip_required', f, ipath + '/NIP',
                    tax_code=code)
        roles = {getattr(t, 'role', None)
            for t in self.invoice.third_parties or []}
        for flag, role, tag in [
                (buyer.jst, model.ROLE_JST_RECIPIENT, 'JST'),
                (buyer.vat_group, model.ROLE_VAT_GROUP_MEMBER_RECIPIENT,
                    'GV')]:
            if flag and role not in roles:
                self.problem('fa3_third_party_role_required',
                    'buyer.jst' if tag == 'JST' else 'buyer.vat_group',
                    path + '/' + tag, role=role)

    def third_parties(self, root):
        parties = self.limit(self.invoice.third_parties, 100,
            'third_parties', '/Faktura/Podmiot3')
        for i, party in enumerate(parties):
            field = 'third_parties[%d]' % i
            path = '/Faktura/Podmiot3[%d]' % (i + 1)
            if not isinstance(party, model.ThirdParty):
                self.problem('fa3_invalid_type', field, path,
                    expected='a ThirdParty')
                continue
            element = _sub(root, 'Podmiot3')
            ident = _sub(element, 'DaneIdentyfikacyjne')
            ipath = path + '/DaneIdentyfikacyjne'
            self.identification(ident, party, field, ipath, third=True)
            name = self.text(party.name, field + '.name', ipath + '/Nazwa',
                512)
            if name:
                _sub(ident, 'Nazwa', name)
            self.address(element, 'Adres', party.address,
                field + '.address', path)
            self.contacts(element, party.contacts, field + '.contacts', path)
            role = self.choice(party.role, range(1, 12), field + '.role',
                path + '/Rola', required=True)
            _sub(element, 'Rola', str(role))
            share = self.decimal(party.share, field + '.share',
                path + '/Udzial', 2, Decimal(101), required=False)
            if share is not None:
                if share < 0 or share > 100:
                    self.problem('fa3_out_of_range', field + '.share',
                        path + '/Udzial')
                else:
                    _sub(element, 'Udzial', format_decimal(share))
            number = self.text(party.customer_number,
                field + '.customer_number', path + '/NrKlienta')
            if number:
                _sub(element, 'NrKlienta', number)

    # -- lines ------------------------------------------------------------

    def lines(self):
        invoice = self.invoice
        lines = self.limit(invoice.lines, 10000, 'lines',
            '/Faktura/Fa/FaWiersz')
        if not lines and self.kind == 'VAT':
            self.problem('fa3_no_lines', 'lines', '/Faktura/Fa/FaWiersz',
                kind='VAT')
        self.foreign = invoice.currency != 'PLN'
        gtus = enumeration('TGTU')
        procedures = enumeration('TOznaczenieProcedury')
        result = []
        texts = [_FA_OPEN]
        for i, line in enumerate(lines):
            if type(line) is not model.Line and not isinstance(
                    line, model.Line):
                self.problem('fa3_invalid_type', 'lines[%d]' % i,
                    '/Faktura/Fa/FaWiersz[%d]' % (i + 1), expected='a Line')
                continue
            result.append(self.line(line, i, gtus, procedures, texts))
        texts.append('</Fa>')
        # The lines are written as XML text and parsed once: lxml makes
        # the elements of a 1 000-line invoice several times faster so
        # than one SubElement at a time.  Every text in them is checked
        # (printable, no character XML refuses) and escaped.
        self.fa_element = etree.fromstring(''.join(texts).encode('utf-8'),
            _LINES_PARSER)
        return result

    def line(self, line, i, gtus, procedures, out):
        # This runs for every line (up to 10 000): field names and paths
        # are tuples formatted only when a problem is reported (see _join),
        # and the usual values take a fast path.  The line is appended to
        # `out` as XML text.
        def F(name):
            return ('field', i, name)

        def P(tag):
            return ('path', i, tag)
        number = line.number if line.number is not None else i + 1
        if type(number) is not int or number < 1:
            self.problem('fa3_invalid_value', F('number'),
                P('NrWierszaFa'))
        number = str(number)
        out.append('<FaWiersz><NrWierszaFa>%s</NrWierszaFa>' % _esc(number))
        if line.uu_id is not None:
            value = self.text(line.uu_id, F('uu_id'), P('UU_ID'), 50)
            if value:
                out.append(_element('UU_ID', value))
        if line.delivery_date is not None:
            date = self.date(line.delivery_date, F('delivery_date'),
                P('P_6A'))
            if date:
                out.append(_element('P_6A', date))
        name = line.name
        if not _clean(name, 512):
            name = self.text(name, F('name'), P('P_7'), 512,
                required=True)
        out.append(_element('P_7', name))
        for attr, tag, size in _LINE_TEXTS:
            value = getattr(line, attr)
            if value is not None:
                if not _clean(value, size):
                    value = self.text(value, F(attr), P(tag), size)
                if value:
                    out.append(_element(tag, value))
        code = line.tax_code
        margin = False
        checked_code = block = tax_rate = None
        if type(code) is str and code in TAX_CODES:
            checked_code = code
            block, rate = TAX_CODES[code]
            if rate is not None and BLOCKS[block].tax_pln:
                tax_rate = rate
        elif code is None:
            if self.invoice.margin:
                margin = True
                block = MARGIN_BLOCK
            else:
                self.problem('fa3_margin_required', F('tax_code'),
                    P('P_12'))
        else:
            self.problem('fa3_invalid_value', F('tax_code'), P('P_12'))
        quantity = line.quantity
        if not _quick(quantity, 6, 16):
            quantity = self.decimal(quantity, F('quantity'), P('P_8B'),
                6, QUANTITY_LIMIT)
        price = line.unit_price
        if not _quick(price, 8, 14):
            price = self.decimal(price, F('unit_price'),
                P('P_9B' if margin else 'P_9A'), 8, PRICE_LIMIT)
        discount = line.discount
        if discount is not None:
            discount = self.decimal(discount, F('discount'), P('P_10'),
                8, PRICE_LIMIT)
        amount = line.amount
        if not _quick(amount, 2, 16):
            amount = self.decimal(amount, F('amount'),
                P('P_11A' if margin else 'P_11'), 2)
        if quantity is not None and price is not None and (
                amount is not None):
            net_price = price - discount if discount else price
            # amount = quantity x price rounded to the grosz
            if abs(quantity * net_price - amount) > HALF_CENT:
                self.problem('fa3_line_amount_mismatch', F('amount'),
                    P('P_11A' if margin else 'P_11'))
            if quantity < 0:
                quantity, price = -quantity, -price
                if discount is not None:
                    discount = -discount
            # numbers need no escaping
            out.append('<P_8B>%s</P_8B>' % format_decimal(quantity))
            out.append(('<P_9B>%s</P_9B>' if margin
                    else '<P_9A>%s</P_9A>') % format_decimal(price))
            if discount:
                out.append('<P_10>%s</P_10>' % format_decimal(discount))
            out.append(('<P_11A>%s</P_11A>' if margin
                    else '<P_11>%s</P_11>') % format_amount(amount))
        if checked_code:
            out.append('<P_12>%s</P_12>' % _esc(code))
        if line.annex_15:
            out.append('<P_12_Zal_15>1</P_12_Zal_15>')
        if line.gtu is not None:
            gtu = self.choice(line.gtu, gtus, F('gtu'), P('GTU'))
            if gtu:
                out.append(_element('GTU', gtu))
        if line.procedure is not None:
            procedure = self.choice(line.procedure, procedures,
                F('procedure'), P('Procedura'))
            if procedure:
                out.append(_element('Procedura', procedure))
        rate = line.currency_rate
        if rate is not None:
            rate = self.decimal(rate, F('currency_rate'),
                P('KursWaluty'), 6, QUANTITY_LIMIT, positive=True)
        currency_rate = None
        if rate is not None and not self.foreign:
            self.problem('fa3_currency_rate_unexpected',
                F('currency_rate'), P('KursWaluty'))
        elif self.foreign and tax_rate is not None:
            # Only taxed lines need the rate (MF sample 22: no KursWaluty
            # on a 0 WDT line in EUR).
            if rate is None:
                rate = self.invoice_rate()
                text = self.invoice_rate_text
            else:
                text = format_rate(rate)
            if rate is not None:
                currency_rate = rate
                out.append('<KursWaluty>%s</KursWaluty>' % text)
        if line.before_correction:
            sign = -1
            out.append('<StanPrzed>1</StanPrzed>')
        else:
            sign = 1
        out.append('</FaWiersz>')
        exemption = line.exemption
        if exemption is not None and not isinstance(
                exemption, model.Exemption):
            self.problem('fa3_invalid_type', F('exemption'),
                '/Faktura/Fa/FaWiersz[%d]' % (i + 1),
                expected='an Exemption')
        return _Line(number, checked_code, block, sign, amount, tax_rate,
            margin, i, currency_rate, exemption)

    def invoice_rate(self):
        "The invoice's exchange rate, checked once; None when missing."
        if not hasattr(self, '_invoice_rate'):
            self._invoice_rate = self.decimal(self.invoice.currency_rate,
                'currency_rate', '/Faktura/Fa/FaWiersz/KursWaluty', 6,
                QUANTITY_LIMIT, required=False, positive=True)
            if self._invoice_rate is not None:
                self.invoice_rate_text = format_rate(self._invoice_rate)
            if self._invoice_rate is None and not any(
                    p.field == 'currency_rate' for p in self.problems):
                self.problem('fa3_currency_rate_required', 'currency_rate',
                    '/Faktura/Fa/FaWiersz/KursWaluty',
                    currency=self.invoice.currency)
        return self._invoice_rate

    # -- Fa ---------------------------------------------------------------

    def fa(self, root, lines, codes):
        invoice = self.invoice
        path = '/Faktura/Fa'
        fa = etree.Element(_q('Fa'), nsmap={None: NS})
        currency = self.choice(invoice.currency, currencies(), 'currency',
            path + '/KodWaluty', required=True)
        _sub(fa, 'KodWaluty', currency)
        if (currency == 'PLN' and invoice.currency_rate is not None
                and invoice.currency_rate != 1):
            self.problem('fa3_currency_rate_unexpected', 'currency_rate',
                path + '/KodWaluty')
        issue = self.date(invoice.issue_date, 'issue_date', path + '/P_1')
        _sub(fa, 'P_1', issue)
        place = self.text(invoice.place, 'place', path + '/P_1M')
        if place:
            _sub(fa, 'P_1M', place)
        _sub(fa, 'P_2', self.text(invoice.number, 'number', path + '/P_2',
                required=True))
        notes = self.limit(invoice.delivery_notes, 1000, 'delivery_notes',
            path + '/WZ')
        for i, note in enumerate(notes):
            note = self.text(note, 'delivery_notes[%d]' % i,
                '%s/WZ[%d]' % (path, i + 1))
            if note:
                _sub(fa, 'WZ', note)
        self.delivery(fa, path)
        totals = self.totals(lines)
        total = ZERO
        for block in BLOCKS.values():
            if block.key not in totals:
                continue
            net, tax, tax_pln = totals[block.key]
            _sub(fa, block.net, format_amount(net))
            total += net
            if block.tax:
                _sub(fa, block.tax, format_amount(tax))
                total += tax
            if tax_pln is not None:
                _sub(fa, block.tax_pln, format_amount(tax_pln))
        _sub(fa, 'P_15', format_amount(total))
        if invoice.total is not None:
            given = self.decimal(invoice.total, 'total', path + '/P_15', 2)
            if given is not None and given != total:
                self.problem('fa3_total_mismatch', 'total', path + '/P_15')
        self.annotations(fa, lines, codes)
        _sub(fa, 'RodzajFaktury', self.kind)
        self.correction(fa)
        self.additional_info(fa)
        # the elements above go before the lines
        self.fa_element[0:0] = list(fa)
        fa = self.fa_element
        self.payment(fa)
        root.append(fa)

    def delivery(self, fa, path):
        invoice = self.invoice
        date = self.date(invoice.delivery_date, 'delivery_date',
            path + '/P_6', required=False)
        start = self.date(invoice.period_start, 'period_start',
            path + '/OkresFa/P_6_Od', required=False)
        end = self.date(invoice.period_end, 'period_end',
            path + '/OkresFa/P_6_Do', required=False)
        if start or end:
            if date:
                self.problem('fa3_exclusive', 'delivery_date', path + '/P_6',
                    other='period_start/period_end')
            elif not (start and end):
                self.problem('fa3_required',
                    'period_end' if start else 'period_start',
                    path + '/OkresFa')
            elif start > end:
                self.problem('fa3_period_order', 'period_end',
                    path + '/OkresFa/P_6_Do')
            else:
                period = _sub(fa, 'OkresFa')
                _sub(period, 'P_6_Od', start)
                _sub(period, 'P_6_Do', end)
        elif date and invoice.delivery_date != invoice.issue_date:
            _sub(fa, 'P_6', date)

    def totals(self, lines):
        """Net, tax and tax in PLN of each block, from the lines and the
        given tax totals, checking they agree."""
        invoice = self.invoice
        path = '/Faktura/Fa'
        bases = OrderedDict()  # code -> (base, [lines])
        margin = ZERO
        margin_lines = False
        for line in lines:
            if line.amount is None:
                continue
            if line.margin:
                margin += line.sign * line.amount
                margin_lines = True
            elif line.code:
                base, members = bases.setdefault(line.code, [ZERO, []])
                bases[line.code][0] = base + line.sign * line.amount
                members.append(line)
        given = None
        if invoice.taxes is not None:
            given = OrderedDict()
            for i, tax in enumerate(invoice.taxes):
                field = 'taxes[%d]' % i
                if not isinstance(tax, model.TaxTotal):
                    self.problem('fa3_invalid_type', field, path,
                        expected='a TaxTotal')
                    continue
                if self.choice(tax.code, TAX_CODES, field + '.code',
                        path) is None:
                    continue
                block = BLOCKS[TAX_CODES[tax.code][0]]
                base = self.decimal(tax.base, field + '.base',
                    '%s/%s' % (path, block.net), 2)
                amount = self.decimal(tax.amount, field + '.amount',
                    '%s/%s' % (path, block.tax or block.net), 2)
                pln = self.decimal(tax.amount_pln, field + '.amount_pln',
                    '%s/%s' % (path, block.tax_pln or block.net), 2,
                    required=False)
                if None in (base, amount):
                    continue
                if amount and not block.tax:
                    self.problem('fa3_tax_unexpected', field + '.amount',
                        '%s/%s' % (path, block.net), tax_code=tax.code)
                if pln is not None and not (self.foreign and block.tax_pln):
                    self.problem('fa3_tax_unexpected', field + '.amount_pln',
                        '%s/%s' % (path, block.net), tax_code=tax.code)
                    pln = None
                entry = given.setdefault(tax.code, [ZERO, ZERO, ZERO, i])
                entry[0] += base
                entry[1] += amount
                if pln is None or entry[2] is None:
                    entry[2] = None
                else:
                    entry[2] += pln
            for code, (base, amount, pln, i) in given.items():
                if code in bases and bases[code][0] != base:
                    self.problem('fa3_tax_base_mismatch',
                        'taxes[%d].base' % i, path,
                        block_field=BLOCKS[TAX_CODES[code][0]].net)
                elif code not in bases and lines and base:
                    self.problem('fa3_tax_without_lines',
                        'taxes[%d].code' % i, path, tax_code=code)
            for code in bases:
                if code not in given and bases[code][0]:
                    self.problem('fa3_tax_base_mismatch', 'taxes',
                        path, block_field=BLOCKS[TAX_CODES[code][0]].net)
        codes = list(bases)
        if given:
            codes += [c for c in given if c not in bases]
        totals = OrderedDict()
        for block in BLOCKS.values():
            block_codes = [c for c in codes if TAX_CODES[c][0] == block.key]
            if block.key == MARGIN_BLOCK and margin_lines:
                totals[block.key] = (margin, ZERO, None)
                continue
            if not block_codes:
                continue
            net = tax = exact = ZERO
            members = []
            pln_given = ZERO
            for code in block_codes:
                rate = TAX_CODES[code][1] or ZERO
                if given is not None and code in given:
                    base, amount, pln, _ = given[code]
                    if pln is None or pln_given is None:
                        pln_given = None
                    else:
                        pln_given += pln
                else:
                    base = bases[code][0]
                    amount = round_tax(base * rate)
                    pln_given = None
                net += base
                tax += amount
                exact += base * rate
                if code in bases:
                    members.extend(bases[code][1])
            if block.tax and abs(tax - exact) > tax_tolerance(len(members)):
                self.problem('fa3_tax_amount_mismatch', 'taxes',
                    '%s/%s' % (path, block.tax), block_field=block.tax)
            tax_pln = None
            if self.foreign and block.tax_pln:
                tax_pln = self.pln_tax(block, tax, members, pln_given)
            totals[block.key] = (net, tax, tax_pln)
        return totals

    def pln_tax(self, block, tax, members, given):
        "P_14_xW of `block`: given or computed, checked either way."
        if members and all(m.currency_rate for m in members):
            items = [(m.sign * m.amount * m.rate, m.currency_rate)
                for m in members]
        else:
            rate = self.invoice_rate()
            if rate is None:
                return given
            items = [(tax, rate)]
        expected = expected_pln_tax(tax, items)
        if given is None:
            return round_tax(expected)
        if abs(given - expected) > pln_tax_tolerance(items):
            self.problem('fa3_tax_pln_mismatch', 'taxes',
                '/Faktura/Fa/%s' % block.tax_pln, block_field=block.tax_pln)
        return given

    def annotations(self, fa, lines, codes):
        invoice = self.invoice
        path = '/Faktura/Fa/Adnotacje'
        element = _sub(fa, 'Adnotacje')

        def flag(value):
            return '1' if value else '2'
        _sub(element, 'P_16', flag(invoice.cash_accounting))
        _sub(element, 'P_17', flag(invoice.self_billing))
        _sub(element, 'P_18', flag(invoice.reverse_charge
                or codes.intersection(REVERSE_CHARGE_CODES)))
        _sub(element, 'P_18A', flag(invoice.split_payment))
        exemption = _sub(element, 'Zwolnienie')
        basis = self.exemption(lines, codes)
        if basis:
            _sub(exemption, 'P_19', '1')
            _sub(exemption, EXEMPTION_FIELDS[basis[0]], basis[1])
        else:
            _sub(exemption, 'P_19N', '1')
        self.vehicles(element, lines, path)
        _sub(element, 'P_23', flag(invoice.triangular))
        margin = _sub(element, 'PMarzy')
        scheme = self.choice(invoice.margin, MARGIN_FIELDS, 'margin',
            path + '/PMarzy')
        if scheme:
            _sub(margin, 'P_PMarzy', '1')
            _sub(margin, MARGIN_FIELDS[scheme], '1')
        else:
            _sub(margin, 'P_PMarzyN', '1')

    def exemption(self, lines, codes):
        "(kind, text) of the exemption basis, or None without exempt sale."
        if 'zw' not in codes:
            return None
        path = '/Faktura/Fa/Adnotacje/Zwolnienie'
        invoice = self.invoice
        if invoice.exemption is not None:
            bases = [('exemption', invoice.exemption)]
        else:
            bases = []
            for line in lines:
                if line.code != 'zw':
                    continue
                if line.exemption is None:
                    self.problem('fa3_exemption_basis_required',
                        'lines[%d].exemption' % line.index, path)
                else:
                    bases.append(
                        ('lines[%d].exemption' % line.index, line.exemption))
            if not bases and not any(ln.code == 'zw' for ln in lines):
                self.problem('fa3_exemption_basis_required', 'exemption',
                    path)
        kinds = set()
        texts = []
        for field, basis in bases:
            if not isinstance(basis, model.Exemption):
                self.problem('fa3_invalid_type', field, path,
                    expected='an Exemption')
                continue
            kind = self.choice(basis.kind, EXEMPTION_FIELDS, field + '.kind',
                path)
            text = self.text(basis.basis, field + '.basis', path,
                required=True)
            if kind and text:
                kinds.add(kind)
                if text not in texts:
                    texts.append(text)
        if len(kinds) > 1:
            self.problem('fa3_exemption_basis_conflict', 'exemption', path)
            return None
        if not kinds:
            return None
        text = '; '.join(texts)
        if len(text) > 256:
            self.problem('fa3_too_long', 'exemption', path, max=256)
            return None
        return kinds.pop(), text

    def vehicles(self, element, lines, path):
        invoice = self.invoice
        path += '/NoweSrodkiTransportu'
        parent = _sub(element, 'NoweSrodkiTransportu')
        vehicles = self.limit(invoice.new_vehicles, 10000, 'new_vehicles',
            path)
        if not vehicles:
            _sub(parent, 'P_22N', '1')
            return
        _sub(parent, 'P_22', '1')
        _sub(parent, 'P_42_5', '1' if invoice.new_vehicle_art_42_5 else '2')
        numbers = {ln.number for ln in lines}
        for i, vehicle in enumerate(vehicles):
            field = 'new_vehicles[%d]' % i
            p = '%s/NowySrodekTransportu[%d]' % (path, i + 1)
            if not isinstance(vehicle, model.NewVehicle):
                self.problem('fa3_invalid_type', field, p,
                    expected='a NewVehicle')
                continue
            item = _sub(parent, 'NowySrodekTransportu')
            _sub(item, 'P_22A', self.date(vehicle.first_use_date,
                    field + '.first_use_date', p + '/P_22A'))
            number = vehicle.line_number
            if str(number) not in numbers or isinstance(number, bool):
                self.problem('fa3_invalid_value', field + '.line_number',
                    p + '/P_NrWierszaNST')
            _sub(item, 'P_NrWierszaNST', str(number))
            for attr, tag in [('make', 'P_22BMK'), ('model', 'P_22BMD'),
                    ('colour', 'P_22BK'), ('registration', 'P_22BNR'),
                    ('production_year', 'P_22BRP')]:
                value = self.text(getattr(vehicle, attr),
                    '%s.%s' % (field, attr), '%s/%s' % (p, tag))
                if value:
                    _sub(item, tag, value)
            kind = self.choice(vehicle.kind, VEHICLE_FIELDS, field + '.kind',
                p, required=True)
            if not kind:
                continue
            usage_tag, serial_tag = VEHICLE_FIELDS[kind]
            _sub(item, usage_tag, self.text(vehicle.usage, field + '.usage',
                    '%s/%s' % (p, usage_tag), required=True))
            serial = self.text(vehicle.serial, field + '.serial',
                '%s/%s' % (p, serial_tag))
            if serial:
                _sub(item, serial_tag, serial)
            if vehicle.vehicle_type is not None and kind == 'land':
                value = self.text(vehicle.vehicle_type,
                    field + '.vehicle_type', p + '/P_22BT')
                if value:
                    _sub(item, 'P_22BT', value)

    def correction(self, fa):
        invoice = self.invoice
        correction = invoice.correction
        path = '/Faktura/Fa'
        if self.kind != 'KOR':
            if correction is not None and self.kind:
                self.problem('fa3_correction_unexpected', 'correction',
                    path + '/DaneFaKorygowanej')
            return
        if not isinstance(correction, model.Correction) or not (
                correction.invoices):
            self.problem('fa3_correction_required', 'correction',
                path + '/DaneFaKorygowanej')
            return
        reason = self.text(correction.reason, 'correction.reason',
            path + '/PrzyczynaKorekty')
        if reason:
            _sub(fa, 'PrzyczynaKorekty', reason)
        type_ = self.choice(correction.type, (1, 2, 3), 'correction.type',
            path + '/TypKorekty')
        if type_:
            _sub(fa, 'TypKorekty', str(type_))
        corrected = self.limit(correction.invoices, 50000,
            'correction.invoices', path + '/DaneFaKorygowanej')
        for i, original in enumerate(corrected):
            field = 'correction.invoices[%d]' % i
            p = '%s/DaneFaKorygowanej[%d]' % (path, i + 1)
            if not isinstance(original, model.CorrectedInvoice):
                self.problem('fa3_invalid_type', field, p,
                    expected='a CorrectedInvoice')
                continue
            element = _sub(fa, 'DaneFaKorygowanej')
            _sub(element, 'DataWystFaKorygowanej', self.date(
                    original.issue_date, field + '.issue_date',
                    p + '/DataWystFaKorygowanej'))
            _sub(element, 'NrFaKorygowanej', self.text(original.number,
                    field + '.number', p + '/NrFaKorygowanej',
                    required=True))
            number = self.text(original.ksef_number, field + '.ksef_number',
                p + '/NrKSeFFaKorygowanej', 36)
            if number is not None and not ksef_number_valid(number):
                self.problem('fa3_invalid_ksef_number',
                    field + '.ksef_number', p + '/NrKSeFFaKorygowanej')
            elif number is not None:
                _sub(element, 'NrKSeF', '1')
                _sub(element, 'NrKSeFFaKorygowanej', number)
            else:
                _sub(element, 'NrKSeFN', '1')
        period = self.text(correction.period, 'correction.period',
            path + '/OkresFaKorygowanej')
        if period:
            _sub(fa, 'OkresFaKorygowanej', period)
        number = self.text(correction.corrected_number,
            'correction.corrected_number', path + '/NrFaKorygowany')
        if number:
            _sub(fa, 'NrFaKorygowany', number)

    def additional_info(self, fa):
        infos = self.limit(self.invoice.additional_info, 10000,
            'additional_info', '/Faktura/Fa/DodatkowyOpis')
        for i, info in enumerate(infos):
            field = 'additional_info[%d]' % i
            path = '/Faktura/Fa/DodatkowyOpis[%d]' % (i + 1)
            info = tuple(info) if isinstance(info, (tuple, list)) else ()
            if len(info) not in (2, 3):
                self.problem('fa3_invalid_type', field, path,
                    expected='(key, value) or (key, value, line number)')
                continue
            element = _sub(fa, 'DodatkowyOpis')
            if len(info) == 3:
                number = info[2]
                if (isinstance(number, bool) or not isinstance(number, int)
                        or number < 1):
                    self.problem('fa3_invalid_value', field,
                        path + '/NrWiersza')
                _sub(element, 'NrWiersza', str(number))
            _sub(element, 'Klucz', self.text(info[0], field, path + '/Klucz',
                    required=True))
            _sub(element, 'Wartosc', self.text(info[1], field,
                    path + '/Wartosc', required=True))

    def payment(self, fa):
        payment = self.invoice.payment
        path = '/Faktura/Fa/Platnosc'
        if payment is None:
            return
        if not isinstance(payment, model.Payment):
            self.problem('fa3_invalid_type', 'payment', path,
                expected='a Payment')
            return
        element = etree.Element(_q('Platnosc'))
        paid = self.date(payment.paid_date, 'payment.paid_date',
            path + '/DataZaplaty', required=False,
            minimum=MIN_PAYMENT_DATE)
        if paid:
            _sub(element, 'Zaplacono', '1')
            _sub(element, 'DataZaplaty', paid)
        due_dates = self.limit(payment.due_dates, 100, 'payment.due_dates',
            path + '/TerminPlatnosci')
        for i, due in enumerate(due_dates):
            due = self.date(due, 'payment.due_dates[%d]' % i,
                '%s/TerminPlatnosci[%d]/Termin' % (path, i + 1),
                minimum=MIN_PAYMENT_DATE)
            if due:
                _sub(_sub(element, 'TerminPlatnosci'), 'Termin', due)
        method = self.choice(payment.method, range(1, 8), 'payment.method',
            path + '/FormaPlatnosci')
        other = self.text(payment.other_method, 'payment.other_method',
            path + '/OpisPlatnosci')
        if method and other:
            self.problem('fa3_exclusive', 'payment.other_method',
                path + '/OpisPlatnosci', other='payment.method')
        elif method:
            _sub(element, 'FormaPlatnosci', str(method))
        elif other:
            _sub(element, 'PlatnoscInna', '1')
            _sub(element, 'OpisPlatnosci', other)
        accounts = self.limit(payment.bank_accounts, 100,
            'payment.bank_accounts', path + '/RachunekBankowy')
        for i, account in enumerate(accounts):
            field = 'payment.bank_accounts[%d]' % i
            p = '%s/RachunekBankowy[%d]' % (path, i + 1)
            if not isinstance(account, model.BankAccount):
                self.problem('fa3_invalid_type', field, p,
                    expected='a BankAccount')
                continue
            number = self.text(account.number, field + '.number',
                p + '/NrRB', 64, required=True)
            if number is not None:
                number = re.sub(r'\s', '', number)
                if not 10 <= len(number) <= 34:
                    self.problem('fa3_invalid_format', field + '.number',
                        p + '/NrRB', format='a bank account number')
            swift = self.text(account.swift, field + '.swift', p + '/SWIFT')
            if swift and not SWIFT_PATTERN.fullmatch(swift):
                self.problem('fa3_invalid_format', field + '.swift',
                    p + '/SWIFT', format='a SWIFT code')
            bank = self.text(account.bank_name, field + '.bank_name',
                p + '/NazwaBanku')
            description = self.text(account.description,
                field + '.description', p + '/OpisRachunku')
            item = _sub(element, 'RachunekBankowy')
            _sub(item, 'NrRB', number)
            if swift:
                _sub(item, 'SWIFT', swift)
            if bank:
                _sub(item, 'NazwaBanku', bank)
            if description:
                _sub(item, 'OpisRachunku', description)
        if len(element):
            fa.append(element)

    def footer(self, root):
        invoice = self.invoice
        seller = invoice.seller
        path = '/Faktura/Stopka'
        element = etree.Element(_q('Stopka'))
        texts = self.limit(invoice.footer, 3, 'footer', path + '/Informacje')
        for i, text in enumerate(texts):
            text = self.text(text, 'footer[%d]' % i,
                '%s/Informacje[%d]/StopkaFaktury' % (path, i + 1), 3500,
                token=False)
            if text:
                _sub(_sub(element, 'Informacje'), 'StopkaFaktury', text)
        if isinstance(seller, model.Seller):
            registers = []
            for attr, tag, pattern, size in [
                    ('krs', 'KRS', _KRS, 10), ('regon', 'REGON', _REGON, 14),
                    ('bdo', 'BDO', None, 9)]:
                field = 'seller.' + attr
                p = '%s/Rejestry/%s' % (path, tag)
                value = self.text(getattr(seller, attr), field, p, size)
                if value and pattern and not pattern.fullmatch(value):
                    self.problem('fa3_invalid_format', field, p,
                        format=tag)
                elif value:
                    registers.append((tag, value))
            if registers:
                item = _sub(element, 'Rejestry')
                for tag, value in registers:
                    _sub(item, tag, value)
        if len(element):
            root.append(element)

    # -- final checks -------------------------------------------------------

    def check_result(self, root):
        """Safety net: the XSD on the result; the checks above should have
        caught everything already.  The semantic rules of `checks` are not
        run again: the totals above are computed with the same functions
        and tolerances (the tests validate every document they build)."""
        problems = []
        xsd = xmlutil.schema('fa3')
        if not xsd.validate(root):
            tree = root.getroottree()
            for error in xsd.error_log:
                # lxml's message quotes the value: keep only its type.
                path = error.path
                found = tree.xpath(path) if path else None
                if found:
                    path = element_path(found[0])
                problems.append(DataProblem('fa3_schema_violation', '',
                        path, {'detail': error.type_name}))
        if problems:
            raise FA3DataError.from_problems(problems)


def build_tree(invoice, check_nip=True, schema_check=True):
    """Return the lxml root element of `invoice`'s FA(3) document; raise
    `FA3DataError` with every problem of the data.  See `build`."""
    return _Builder(invoice, check_nip, schema_check).build()


def build(invoice, check_nip=True, schema_check=True):
    """Return the FA(3) XML of `invoice` (a `model.Invoice`) as UTF-8 bytes
    with an XML declaration; the same data always gives the same bytes.

    Raise `FA3DataError` listing every problem of the data.  `check_nip`
    False skips the NIP check digit (KSeF TEST accepts any NIP).
    `schema_check` False leaves out the XSD check of the result (the
    safety net of `check_result`) for a caller that runs `validate` on
    the bytes anyway, which checks the XSD and more: one XSD pass instead
    of two.
    """
    root = build_tree(invoice, check_nip, schema_check)
    # Not pretty-printed: a quarter smaller (KSeF's limit is 1 MB) and
    # faster to parse.
    return DECLARATION + etree.tostring(
        root, encoding='UTF-8', xml_declaration=False)
