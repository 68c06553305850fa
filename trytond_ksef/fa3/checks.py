# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Check an FA(3) document: what KSeF verifies (PROTOCOL.md §11: encoding,
processing instructions, refused characters, the XSD) and the arithmetic
and consistency rules the XSD cannot express.

The semantic rules were checked against the Ministry's 26 samples, which
KSeF accepts; where a sample shows a legitimate practice the rule allows it
(see the tolerances in `common`).  Rules that only KSeF PRD enforces, or
whose breach KSeF accepts, are warnings.
"""
import datetime
import re
from collections import OrderedDict

from lxml import etree

from .. import xmlutil
from .common import (
    BLOCKS,
    CORRECTION_KINDS,
    KSEF_NUMBER_PATTERN,
    MARGIN_BLOCK,
    NS,
    OSS_BLOCK,
    TAX_CODES,
    ZERO,
    Problem,
    bad_character,
    element_path,
    expected_pln_tax,
    format_amount,
    ksef_number_valid,
    local,
    nip_checksum_valid,
    parse_decimal,
    pln_tax_tolerance,
    tax_tolerance,
    total_tolerance,
)

__all__ = ['validate', 'semantic_problems', 'parse_summary',
    'FA3DocumentError']

_DECLARATION = re.compile(
    br'^<\?xml[^>]*?encoding\s*=\s*["\']([A-Za-z0-9._-]+)["\']')
# The UTF-8 encodings of the characters KSeF refuses (BAD_CHARACTERS), or
# a character reference to look at.  _CANDIDATE finds their first bytes
# quickly; a scan with _REFUSED alone is several times slower.
_CANDIDATE = re.compile(rb'[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\xc2\xef\xf0-\xf4&]')
_REFUSED = re.compile(
    rb'[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\xc2[\x80-\x84\x86-\x9f]'
    rb'|\xef\xb7[\x90-\xaf]|\xef\xbf[\xbe\xbf]'
    rb'|[\xf0-\xf4][\x8f\x9f\xaf\xbf]\xbf[\xbe\xbf]'
    rb'|&#[xX]?[0-9a-fA-F]+;')
# Kinds whose lines carry the values the rate blocks add up (for ZAL and
# ROZ the lines describe the whole order, not the amounts of Fa).
LINE_SUM_KINDS = ('VAT', 'KOR', 'UPR')
# P_12 codes of the blocks with a tax, and of the reverse charges
_NET_FIELDS = {b.net: b for b in BLOCKS.values()}
_TAX_FIELDS = {b.tax: b for b in BLOCKS.values() if b.tax}
_PLN_FIELDS = {b.tax_pln: b for b in BLOCKS.values() if b.tax_pln}


def _q(tag):
    return '{%s}%s' % (NS, tag)


Q_FA = _q('Fa')
Q_LINE = _q('FaWiersz')
_NAMESPACES = {'f': NS}
_AMOUNT_FIELDS = ([b.net for b in BLOCKS.values()]
    + [b.tax for b in BLOCKS.values() if b.tax]
    + [b.tax_pln for b in BLOCKS.values() if b.tax_pln] + ['P_15'])
# The amounts of Fa, as elements (Fa may have 10 000 FaWiersz children:
# XPath walks them in C).
_AMOUNTS = etree.XPath('|'.join('f:' + f for f in _AMOUNT_FIELDS),
    namespaces=_NAMESPACES)
# The values of the lines that the checks need, one text line per FaWiersz
# with the fields separated by "|": much faster than an lxml element per
# child for 10 000 lines.
_LINE_FIELDS = ('P_11', 'P_11A', 'P_12', 'P_12_XII', 'StanPrzed',
    'KursWaluty')
_LINE_VALUES = etree.XSLT(etree.XML(
        '<xsl:stylesheet version="1.0" '
        'xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xmlns:f="%s">'
        '<xsl:output method="text" encoding="UTF-8"/>'
        '<xsl:template match="/">'
        '<xsl:for-each select="*/f:Fa/f:FaWiersz">%s'
        '<xsl:text>&#10;</xsl:text></xsl:for-each>'
        '</xsl:template></xsl:stylesheet>' % (NS, '<xsl:text>|</xsl:text>'
            .join('<xsl:value-of select="normalize-space(f:%s)"/>' % f
                for f in _LINE_FIELDS))))


# Compiled once: an XPath string is compiled at every call.
_PARTY_NIPS = etree.XPath(
    '(f:Podmiot1|f:Podmiot2|f:Podmiot3|f:PodmiotUpowazniony)'
    '/f:DaneIdentyfikacyjne/*[self::f:NIP or self::f:IDWew]',
    namespaces=_NAMESPACES)
_KSEF_NUMBERS = [etree.XPath('f:' + path, namespaces=_NAMESPACES)
    for path in ('DaneFaKorygowanej/f:NrKSeFFaKorygowanej',
        'FakturaZaliczkowa/f:NrKSeFFaZaliczkowej')]


class FA3DocumentError(xmlutil.XMLError):
    "The document is not an FA(3) invoice at all."

    def __init__(self, code, message, **params):
        super().__init__(message)
        self.code = code
        self.params = params


def _problem(problems, element, reason, code, severity='error', path=None,
        **params):
    if path is None and element is not None:
        path = element_path(element)
    line = element.sourceline if element is not None else None
    problems.append(Problem(path, line, reason, code, severity, params))


def _line_values(root):
    """[(P_11, P_11A, P_12, P_12_XII, StanPrzed, KursWaluty)] of the lines,
    as texts with normalized spaces ('' when missing)."""
    text = str(_LINE_VALUES(root))
    count = len(_LINE_FIELDS)
    result = [row.split('|') for row in text.split('\n')[:-1]]
    if any(len(values) != count for values in result):
        # a "|" in an (invalid) P_12: read that document slowly
        return None
    return result


def _line_values_slowly(fa):
    result = []
    for line in fa.iterfind(Q_LINE):
        result.append([(line.findtext(_q(f)) or '').strip()
                for f in _LINE_FIELDS])
    return result


class _LineData:
    """What the checks need of a FaWiersz: net (P_11) or gross (P_11A)
    value, P_12 code and its block, sign (-1 for a StanPrzed row), exchange
    rate, and the unrounded tax of the line (signed) when it has a value."""
    __slots__ = ('net', 'gross', 'code', 'sign', 'currency_rate', 'block',
        'valued', 'tax')

    def __init__(self, values, margin):
        net, gross, code, oss, before, rate = values
        self.net = net = parse_decimal(net) if net else None
        self.gross = gross = parse_decimal(gross) if gross else None
        self.code = code = code or None
        self.sign = sign = -1 if before == '1' else 1
        self.currency_rate = parse_decimal(rate) if rate else None
        tax_rate = ZERO
        if code in TAX_CODES:
            self.block, tax_rate = TAX_CODES[code]
            tax_rate = tax_rate or ZERO
        elif code is None and oss:
            self.block = OSS_BLOCK
            tax_rate = (parse_decimal(oss) or ZERO) / 100
        elif code is None and margin:
            self.block = MARGIN_BLOCK
        else:
            self.block = None
        self.valued = net is not None or gross is not None
        if net is not None:
            self.tax = sign * net * tax_rate
        elif gross is not None:
            self.tax = sign * gross * tax_rate / (1 + tax_rate)
        else:
            self.tax = None


def _text(element, tag):
    child = element.find(_q(tag)) if element is not None else None
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _money(value):
    return format_amount(value) if value is not None else '?'


def semantic_problems(root):
    """Return the `Problem` list of the rules the XSD cannot express, for
    the FA(3) tree `root` (an lxml element; sourcelines are used when the
    tree was parsed)."""
    problems = []
    if root.tag != _q('Faktura'):
        _problem(problems, root, "the root element is not an FA(3) Faktura",
            'fa3_not_fa3')
        return problems
    fa = root.find(Q_FA)
    if fa is None:
        return problems
    kind = _text(fa, 'RodzajFaktury')
    currency = _text(fa, 'KodWaluty')
    amounts = OrderedDict()
    for element in _AMOUNTS(fa):
        amounts[local(element.tag)] = (parse_decimal(element.text), element)
    annotations = fa.find(_q('Adnotacje'))
    margin = _text(annotations.find(_q('PMarzy'))
        if annotations is not None else None, 'P_PMarzy') == '1'
    values = _line_values(root)
    if values is None:
        values = _line_values_slowly(fa)
    lines = [_LineData(v, margin) for v in values]
    # the lines with a value, by block
    members = {}
    valued = [ln for ln in lines if ln.valued]
    for line in valued:
        if line.block is not None:
            members.setdefault(line.block, []).append(line)
    line_sums = (kind in LINE_SUM_KINDS and valued
        and all(ln.block is not None for ln in valued))
    if line_sums:
        _check_line_sums(problems, fa, amounts, members)
    _check_rates(problems, fa, amounts, members if line_sums else {})
    _check_total(problems, fa, kind, amounts)
    _check_pln(problems, fa, currency, amounts, members)
    _check_annotations(problems, fa, annotations, amounts, lines)
    _check_parties(problems, root, fa, kind, amounts, lines)
    return problems


def _check_line_sums(problems, fa, amounts, members):
    "P_13_x (and P_13_x + P_14_x for gross lines) against the lines."
    for block in BLOCKS.values():
        value, element = amounts.get(block.net, (None, None))
        group = members.get(block.key, [])
        if not group:
            if value:
                _problem(problems, element,
                    "%s is %s but no line has its rate"
                    % (block.net, _money(value)), 'fa3_rate_total_mismatch',
                    field=block.net)
            continue
        if all(ln.net is not None for ln in group) or (
                block.key == MARGIN_BLOCK):
            lines_sum = sum((ln.sign * (ln.net if ln.net is not None
                        else ln.gross) for ln in group), ZERO)
            if value is None or value != lines_sum:
                _problem(problems, element if element is not None else fa,
                    "%s is %s but the values (P_11%s) of its lines add up "
                    "to %s" % (block.net,
                        _money(value) if value is not None else "missing",
                        '/P_11A' if block.key == MARGIN_BLOCK else '',
                        _money(lines_sum)),
                    'fa3_rate_total_mismatch', field=block.net)
        elif all(ln.net is None for ln in group):
            # Gross lines (art. 106e ust. 7 i 8): net + tax of the block
            # against their gross values.
            lines_sum = sum((ln.sign * ln.gross for ln in group), ZERO)
            tax = amounts.get(block.tax, (ZERO, None))[0] \
                if block.tax else ZERO
            both = (value or ZERO) + (tax or ZERO)
            if value is None or abs(both - lines_sum) > tax_tolerance(0):
                _problem(problems, element if element is not None else fa,
                    "%s + %s is %s but the gross values (P_11A) of its lines "
                    "add up to %s" % (block.net, block.tax or '0',
                        _money(both), _money(lines_sum)),
                    'fa3_rate_total_mismatch', field=block.net)


def _check_rates(problems, fa, amounts, members):
    "P_14_x against P_13_x times the rate(s) of block x."
    for block in BLOCKS.values():
        if not block.rates or block.tax not in amounts:
            continue
        tax, element = amounts[block.tax]
        net = amounts.get(block.net, (None, None))[0]
        if tax is None or net is None:
            continue
        group = members.get(block.key, [])
        if group:
            expected = sum((ln.tax for ln in group), ZERO)
            tolerance = tax_tolerance(len(group))
        else:
            expected = min((net * r for r in block.rates),
                key=lambda e: abs(tax - e))
            tolerance = tax_tolerance(0)
        if abs(tax - expected) > tolerance:
            _problem(problems, element,
                "%s is %s but %s at the rate of its lines gives %s"
                % (block.tax, _money(tax), block.net, _money(expected)),
                'fa3_rate_tax_mismatch', field=block.tax)


def _check_total(problems, fa, kind, amounts):
    "P_15 against the sum of the blocks."
    total, element = amounts.get('P_15', (None, None))
    if total is None:
        return
    nets = [amounts[b.net][0] for b in BLOCKS.values() if b.net in amounts]
    if kind == 'UPR' and not nets:
        # art. 106e ust. 5 pkt 3: a simplified invoice may give only P_15
        return
    taxes = [amounts[b.tax][0] for b in BLOCKS.values()
        if b.tax and b.tax in amounts]
    expected = sum((v for v in nets + taxes if v is not None), ZERO)
    if abs(total - expected) > total_tolerance(len(nets)):
        _problem(problems, element,
            "P_15 is %s but the sum of P_13_x and P_14_x is %s"
            % (_money(total), _money(expected)), 'fa3_total_mismatch',
            field='P_15')


def _check_pln(problems, fa, currency, amounts, members):
    "P_14_xW: present exactly for invoices in another currency, right."
    rate_z = parse_decimal(_text(fa, 'KursWalutyZ'))
    for block in BLOCKS.values():
        if not block.tax_pln or block.tax not in amounts:
            continue
        tax = amounts[block.tax][0]
        pln, element = amounts.get(block.tax_pln, (None, None))
        if currency == 'PLN':
            if element is not None:
                _problem(problems, element,
                    "%s is only for an invoice in another currency than PLN"
                    % block.tax_pln, 'fa3_pln_tax_unexpected',
                    field=block.tax_pln)
            continue
        if element is None:
            if tax:
                _problem(problems, amounts[block.tax][1],
                    "an invoice in %s needs the tax in PLN (%s) beside %s"
                    % (currency, block.tax_pln, block.tax),
                    'fa3_pln_tax_missing', field=block.tax_pln)
            continue
        if pln is None:
            continue
        if not re.fullmatch(r'-?\d+\.\d\d', element.text.strip()):
            _problem(problems, element,
                "%s should be written with exactly two decimals"
                % block.tax_pln, 'fa3_pln_tax_format', severity='warning',
                field=block.tax_pln)
        group = members.get(block.key, [])
        if group and all(ln.currency_rate for ln in group):
            items = [(ln.tax, ln.currency_rate) for ln in group]
        elif rate_z:
            items = [(tax, rate_z)]
        else:
            continue
        expected = expected_pln_tax(tax, items)
        if abs(pln - expected) > pln_tax_tolerance(items):
            _problem(problems, element,
                "%s is %s but %s at the exchange rates of its lines gives %s"
                % (block.tax_pln, _money(pln), block.tax, _money(expected)),
                'fa3_pln_tax_mismatch', field=block.tax_pln)


def _check_annotations(problems, fa, annotations, amounts, lines):
    "Adnotacje that the rates of the invoice make compulsory."
    if annotations is None:
        return
    codes = {ln.code for ln in lines}
    exemption = annotations.find(_q('Zwolnienie'))
    if ('zw' in codes or 'P_13_7' in amounts) and _text(
            exemption, 'P_19') != '1':
        _problem(problems, exemption if exemption is not None
            else annotations,
            "exempt sales (zw, P_13_7) need P_19 = 1 and the legal basis of "
            "the exemption", 'fa3_exemption_missing')
    reverse = codes.intersection(('oo', 'np II'))
    if (reverse or 'P_13_10' in amounts or 'P_13_9' in amounts) and _text(
            annotations, 'P_18') != '1':
        _problem(problems, annotations.find(_q('P_18')),
            "a reverse charge (oo, np II, P_13_9, P_13_10) needs P_18 = 1 "
            "(\"odwrotne obciążenie\")", 'fa3_reverse_charge_missing')
    margin = annotations.find(_q('PMarzy'))
    if 'P_13_11' in amounts and _text(margin, 'P_PMarzy') != '1':
        _problem(problems, margin if margin is not None else annotations,
            "P_13_11 (margin scheme) needs P_PMarzy = 1 and the scheme",
            'fa3_margin_missing')


def _check_parties(problems, root, fa, kind, amounts, lines):
    "Correction data, JST/GV third parties, periods, NIPs, KSeF numbers."
    corrected = fa.find(_q('DaneFaKorygowanej'))
    kind_element = fa.find(_q('RodzajFaktury'))
    if kind in CORRECTION_KINDS and corrected is None:
        _problem(problems, kind_element,
            "a corrective invoice (%s) needs DaneFaKorygowanej" % kind,
            'fa3_correction_missing')
    elif kind not in CORRECTION_KINDS and corrected is not None:
        _problem(problems, corrected,
            "only a corrective invoice (KOR, KOR_ZAL, KOR_ROZ) has "
            "DaneFaKorygowanej", 'fa3_correction_unexpected')
    buyer = root.find(_q('Podmiot2'))
    roles = {_text(p, 'Rola') for p in root.iterfind(_q('Podmiot3'))}
    for tag, role in [('JST', '8'), ('GV', '10')]:
        if _text(buyer, tag) == '1' and role not in roles:
            _problem(problems, buyer.find(_q(tag)),
                "%s = 1 needs a Podmiot3 with Rola %s" % (tag, role),
                'fa3_third_party_missing', role=int(role))
    period = fa.find(_q('OkresFa'))
    if period is not None:
        start, end = _text(period, 'P_6_Od'), _text(period, 'P_6_Do')
        if start and end and start > end:
            _problem(problems, period, "P_6_Od is after P_6_Do",
                'fa3_period_order')
    codes = {ln.code for ln in lines}
    if ('0 WDT' in codes or 'P_13_6_2' in amounts) and (
            buyer is not None and buyer.find(
                './/' + _q('NrVatUE')) is None):
        _problem(problems, buyer,
            "an intra-Community supply (0 WDT) is 0% only for a buyer "
            "identified by an EU VAT number", 'fa3_wdt_buyer',
            severity='warning')
    # NIP check digits: verified by KSeF PRD only (PROTOCOL §11), so TEST
    # documents with random NIPs stay acceptable.
    for element in _PARTY_NIPS(root):
        value = (element.text or '').strip()
        if element.tag == _q('IDWew'):
            value = value.partition('-')[0]
        if len(value) == 10 and value.isdigit() and not (
                nip_checksum_valid(value)):
            _problem(problems, element,
                "the NIP has a wrong check digit (KSeF PRD refuses it)",
                'fa3_nip_checksum', severity='warning')
    for xpath in _KSEF_NUMBERS:
        for element in xpath(fa):
            value = (element.text or '').strip()
            if len(value) == 35 and KSEF_NUMBER_PATTERN.fullmatch(value) \
                    and not ksef_number_valid(value):
                _problem(problems, element,
                    "the KSeF number has a wrong check sum",
                    'fa3_ksef_number_checksum', severity='warning')


def _encoding_problems(data):
    "UTF-8 without BOM, and a prolog that declares no other encoding."
    problems = []
    if data.startswith((b'\xef\xbb\xbf', b'\xff\xfe', b'\xfe\xff')):
        problems.append(Problem(None, 1,
                "the document starts with a byte order mark (KSeF wants "
                "UTF-8 without BOM)", 'fa3_bom', 'error', {}))
    match = _DECLARATION.match(data.lstrip(b'\xef\xbb\xbf')[:200])
    if match and match.group(1).decode('ascii').upper() not in (
            'UTF-8', 'UTF8'):
        problems.append(Problem(None, 1,
                "the XML declaration names the encoding %s (KSeF wants "
                "UTF-8)" % match.group(1).decode('ascii'), 'fa3_encoding',
                'error', {}))
    return problems


def _character_problems(data):
    """Characters KSeF refuses (PROTOCOL §11), searched in the text of the
    well-formed UTF-8 document `data` (also those written as character
    references)."""
    problems = []
    position = 0
    while True:
        candidate = _CANDIDATE.search(data, position)
        if candidate is None:
            break
        match = _REFUSED.match(data, candidate.start())
        if match is None:
            position = candidate.start() + 1
            continue
        position = match.end()
        found = match.group()
        try:
            if found.startswith(b'&#'):
                char = chr(int(found[3:-1], 16) if found[2:3] in b'xX'
                    else int(found[2:-1]))
            else:
                char = found.decode('utf-8')
        except (ValueError, OverflowError):
            continue
        if bad_character(char) is None:
            continue
        problems.append(Problem(None, data.count(b'\n', 0, match.start()) + 1,
                "contains the character U+%04X, which KSeF refuses"
                % ord(char), 'fa3_refused_character', 'error', {}))
    return problems


def validate(data):
    """Check the FA(3) document `data` (bytes) as KSeF would, plus the
    semantic rules; return the list of `Problem` (empty when the document
    is fine).  Problems of severity 'warning' do not make KSeF refuse the
    document."""
    if not isinstance(data, bytes):
        raise TypeError("validate() needs the document as bytes")
    problems = _encoding_problems(data)
    try:
        root = xmlutil.parse(data)
    except xmlutil.XMLError as exc:
        problems.append(Problem(None, None, str(exc), 'fa3_malformed',
                'error', {}))
        return problems
    tree = root.getroottree()
    pis = [n for n in tree.getroot().itersiblings(preceding=True)
        if isinstance(n, etree._ProcessingInstruction)]
    pis += [n for n in tree.getroot().itersiblings()
        if isinstance(n, etree._ProcessingInstruction)]
    pis += list(root.iter(etree.ProcessingInstruction))
    for pi in pis:
        problems.append(Problem(None, pi.sourceline,
                "processing instructions are not allowed in KSeF documents",
                'fa3_processing_instruction', 'error', {}))
    problems += _character_problems(data)
    xsd = xmlutil.schema('fa3')
    if not xsd.validate(root):
        for error in xsd.error_log:
            path = error.path
            found = tree.xpath(path) if path else None
            if found:
                path = element_path(found[0])
            problems.append(Problem(path, error.line, error.message,
                    'fa3_schema', 'error', {}))
    problems += semantic_problems(root)
    return problems


def _date(text):
    try:
        return datetime.date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _datetime(text):
    if not text:
        return None
    if text.endswith('Z'):
        text = text[:-1] + '+00:00'
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def parse_summary(data):
    """Return the key facts of the FA(3) document `data` (bytes), without
    validating it: a dict with

    ``seller_nip``, ``issue_date`` (P_1, date), ``number`` (P_2), ``kind``
    (RodzajFaktury), ``currency``, ``created`` (DataWytworzeniaFa, aware
    datetime), ``buyer`` (dict: ``nip``, ``eu_code``, ``eu_vat``,
    ``country``, ``id``, ``no_id``), ``buyer_name``, ``net`` (sum of
    P_13_x), ``vat`` (sum of P_14_x), ``vat_pln`` (sum of P_14_xW or None),
    ``gross`` (P_15), ``amounts`` (every P_13/P_14/P_15 field present),
    ``corrected`` (list of dicts ``issue_date``, ``number``,
    ``ksef_number``) and ``duplicate_key`` = (seller NIP, RodzajFaktury,
    P_2), the key KSeF refuses duplicates by (code 440).

    Missing values are None.  Raise `xmlutil.XMLError` when the data is not
    well-formed and `FA3DocumentError` when it is not an FA(3) invoice.
    """
    root = xmlutil.parse(data)
    if root.tag != _q('Faktura'):
        raise FA3DocumentError('fa3_not_fa3',
            "the document is not an FA(3) invoice")
    fa = root.find(Q_FA)
    seller = root.find('%s/%s' % (_q('Podmiot1'), _q('DaneIdentyfikacyjne')))
    buyer = root.find('%s/%s' % (_q('Podmiot2'), _q('DaneIdentyfikacyjne')))
    amounts = OrderedDict()
    if fa is not None:
        for child in fa:
            name = local(child.tag)
            if name and (name in _NET_FIELDS or name in _TAX_FIELDS
                    or name in _PLN_FIELDS or name == 'P_15'):
                amounts[name] = parse_decimal(child.text)

    def total(fields):
        values = [amounts[f] for f in fields
            if f in amounts and amounts[f] is not None]
        return sum(values, ZERO) if values else None
    corrected = []
    if fa is not None:
        for element in fa.iterfind(_q('DaneFaKorygowanej')):
            corrected.append({
                    'issue_date': _date(
                        _text(element, 'DataWystFaKorygowanej')),
                    'number': _text(element, 'NrFaKorygowanej'),
                    'ksef_number': _text(element, 'NrKSeFFaKorygowanej'),
                    })
    summary = {
        'seller_nip': _text(seller, 'NIP'),
        'issue_date': _date(_text(fa, 'P_1')),
        'number': _text(fa, 'P_2'),
        'kind': _text(fa, 'RodzajFaktury'),
        'currency': _text(fa, 'KodWaluty'),
        'created': _datetime(_text(root.find(_q('Naglowek')),
                'DataWytworzeniaFa')),
        'buyer': {
            'nip': _text(buyer, 'NIP'),
            'eu_code': _text(buyer, 'KodUE'),
            'eu_vat': _text(buyer, 'NrVatUE'),
            'country': _text(buyer, 'KodKraju'),
            'id': _text(buyer, 'NrID'),
            'no_id': _text(buyer, 'BrakID') == '1',
            },
        'buyer_name': _text(buyer, 'Nazwa'),
        'net': total(_NET_FIELDS),
        'vat': total(_TAX_FIELDS),
        'vat_pln': total(_PLN_FIELDS),
        'gross': amounts.get('P_15'),
        'amounts': dict(amounts),
        'corrected': corrected,
        }
    summary['duplicate_key'] = (summary['seller_nip'], summary['kind'],
        summary['number'])
    return summary
