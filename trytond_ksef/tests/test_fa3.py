# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Tests of trytond_ksef.fa3: building FA(3) invoices, validating them.

Where the Ministry of Finance published a sample of a situation, the input
is written from the sample's data and the built document must equal the
sample on every element the input determines.
"""
import argparse
import datetime
import glob
import io
import os
import re
import tempfile
import unittest
from decimal import Decimal as D
from unittest import mock

from lxml import etree

from trytond_ksef import fa3, ksef_number, xmlutil
from trytond_ksef.fa3 import (
    Address,
    BankAccount,
    Buyer,
    Contact,
    CorrectedInvoice,
    Correction,
    Exemption,
    FA3DataError,
    Invoice,
    Line,
    NewVehicle,
    Payment,
    Seller,
    TaxTotal,
    ThirdParty,
    model,
)

DATA = os.path.join(os.path.dirname(__file__), 'data', 'fa3')
NS = {'f': xmlutil.NS_FA3}
UTC = datetime.timezone.utc
SAMPLE_CREATED = datetime.datetime(2026, 2, 1, tzinfo=UTC)
date = datetime.date

# Paths compared with the samples
SELLER = ['f:Podmiot1']
BUYER = ['f:Podmiot2']
HEAD = ['f:Naglowek/f:KodFormularza', 'f:Naglowek/f:WariantFormularza',
    'f:Naglowek/f:DataWytworzeniaFa']
FA_HEAD = ['f:Fa/f:KodWaluty', 'f:Fa/f:P_1', 'f:Fa/f:P_1M', 'f:Fa/f:P_2',
    'f:Fa/f:WZ', 'f:Fa/f:P_6', 'f:Fa/f:OkresFa']
AMOUNTS = ['f:Fa/*[starts-with(local-name(), "P_13") '
    'or starts-with(local-name(), "P_14")]', 'f:Fa/f:P_15']
ANNOTATIONS = ['f:Fa/f:Adnotacje', 'f:Fa/f:RodzajFaktury']
CORRECTION = ['f:Fa/f:PrzyczynaKorekty', 'f:Fa/f:TypKorekty',
    'f:Fa/f:OkresFaKorygowanej']


def sample(name):
    with open(os.path.join(DATA, name), 'rb') as f:
        return f.read()


def sample_number(n):
    return sample('FA_3_Przyklad_%d.xml' % n)


def _normal(text):
    text = (text or '').strip()
    try:
        return D(text).normalize() if re.fullmatch(
            r'-?\d+(\.\d+)?', text) else text
    except ArithmeticError:
        return text


def flatten(root, xpath):
    """(path, value) of every leaf under the elements `xpath` selects;
    numbers compare as numbers ("2000" = "2000.00")."""
    result = []
    for element in root.xpath(xpath, namespaces=NS):
        for leaf in element.iter():
            if len(leaf) or not isinstance(leaf.tag, str):
                continue
            path = '/'.join(etree.QName(e).localname
                for e in reversed([leaf] + list(leaf.iterancestors()))
                if e is not root)
            attrs = sorted(leaf.attrib.items())
            result.append((path, _normal(leaf.text), attrs))
    return result


def ksef(nip, day, technical):
    "A KSeF number with a right check sum (the samples' are made up)."
    return ksef_number.generate(nip, day, technical)


def abc_agd(**kwargs):
    "The seller of most samples."
    values = dict(nip='9999999999', name='ABC AGD sp. z o. o.',
        address=Address('PL', 'ul. Kwiatowa 1 m. 2', '00-001 Warszawa'),
        contacts=[Contact('abc@abc.pl', '667444555')])
    values.update(kwargs)
    return Seller(**values)


def kowalski(**kwargs):
    values = dict(name='F.H.U. Jan Kowalski', tax_identifier='1111111111',
        address=Address('PL', 'ul. Polna 1', '00-001 Warszawa'),
        contacts=[Contact('jan@kowalski.pl', '555777999')],
        customer_number='fdfd778343')
    values.update(kwargs)
    return Buyer(**values)


def cde(**kwargs):
    values = dict(name='CDE sp. j.', tax_identifier='1111111111',
        address=Address('PL', 'ul. Sadowa 1 lok. 3', '00-002 Kraków'),
        contacts=[Contact('cde@cde.pl', '555777999')],
        customer_number='fdfd778343')
    values.update(kwargs)
    return Buyer(**values)


def invoice(**kwargs):
    "A small valid domestic invoice; keyword arguments replace fields."
    values = dict(
        seller=Seller(nip='5265877635', name='Seller sp. z o.o.',
            address=Address('PL', 'ul. Testowa 1', '00-001 Warszawa')),
        buyer=Buyer(name='Buyer S.A.', tax_identifier='1111111111',
            address=Address('PL', 'ul. Polna 1', '00-002 Kraków')),
        number='FV/1/2026', issue_date=date(2026, 2, 2),
        created=datetime.datetime(2026, 2, 2, 9, 30, tzinfo=UTC),
        lines=[Line('Service', D(1), D('100.00'), D('100.00'), '23',
                unit='szt.')])
    values.update(kwargs)
    return Invoice(**values)


class FA3TestCase(unittest.TestCase):

    def build(self, inv, **kwargs):
        "Build `inv`, check the result validates and is deterministic."
        data = fa3.build(inv, **kwargs)
        self.assertTrue(data.startswith(
                b'<?xml version="1.0" encoding="UTF-8"?>'))
        self.assertEqual(xmlutil.schema_errors('fa3', xmlutil.parse(data)),
            [])
        errors = [p for p in fa3.validate(data) if p.is_error]
        self.assertEqual(errors, [])
        self.assertEqual(fa3.build(inv, **kwargs), data)
        return data

    def root(self, data):
        return xmlutil.parse(data)

    def values(self, data, xpath):
        return [t.strip() for t in self.root(data).xpath(
                xpath + '/text()', namespaces=NS)]

    def assertSameAs(self, data, reference, paths):
        "`data` equals the sample `reference` on every path of `paths`."
        built, expected = self.root(data), self.root(reference)
        for path in paths:
            self.assertEqual(flatten(built, path), flatten(expected, path),
                path)

    def assertProblems(self, inv, expected, **kwargs):
        """Building `inv` fails with exactly the `expected` (code, field)
        problems; return the error."""
        with self.assertRaises(FA3DataError) as cm:
            fa3.build(inv, **kwargs)
        error = cm.exception
        self.assertEqual(
            sorted((p.code, p.field) for p in error.problems),
            sorted(expected))
        self.assertEqual((error.code, error.field),
            (error.problems[0].code, error.problems[0].field))
        for problem in error.problems:
            self.assertTrue(problem.path.startswith('/Faktura'),
                problem.path)
            self.assertNotIn('{', problem.message)
        return error


class BuildSamplesTestCase(FA3TestCase):
    "The situations of the Ministry's samples, built from their data."

    def test_sample_1_domestic_two_rates(self):
        "Sample 1: 23% and 5% lines, paid, with footer and registers."
        inv = Invoice(
            seller=abc_agd(krs='0000099999', regon='999999999',
                bdo='000099999'),
            buyer=kowalski(),
            number='FV2026/02/150', issue_date=date(2026, 2, 15),
            place='Warszawa', delivery_date=date(2026, 1, 27),
            created=SAMPLE_CREATED, system_info='SamploFaktur',
            lines=[
                Line('lodówka Zimnotech mk1', D(1), D('1626.01'),
                    D('1626.01'), '23', unit='szt.',
                    uu_id='aaaa111133339990'),
                Line('wniesienie sprzętu', D(1), D('40.65'), D('40.65'),
                    '23', unit='szt.', uu_id='aaaa111133339991'),
                Line('promocja lodówka pełna mleka', D(1), D('0.95'),
                    D('0.95'), '5', unit='szt.', uu_id='aaaa111133339992'),
                ],
            additional_info=[
                ('preferowane godziny dowozu', 'dni robocze 17:00 - 20:00')],
            payment=Payment(paid_date=date(2026, 1, 27),
                method=model.TRANSFER),
            footer=['Kapiał zakładowy 5 000 000'])
        data = self.build(inv)
        reference = sample_number(1)
        self.assertSameAs(data, reference, HEAD + SELLER + BUYER + FA_HEAD
            + ANNOTATIONS + ['f:Fa/f:P_13_1', 'f:Fa/f:P_14_1',
                'f:Fa/f:P_13_3', 'f:Fa/f:P_14_3', 'f:Fa/f:DodatkowyOpis',
                'f:Fa/f:FaWiersz', 'f:Fa/f:Platnosc', 'f:Stopka'])
        # The sample's P_15 (2051) is the gross of prices 2000 + 50 + 1;
        # the sum of its P_13/P_14 is 2050.99, which is what we write, and
        # validate() accepts the sample's rounding (see test_sample_1_p15).
        self.assertEqual(self.values(data, 'f:Fa/f:P_15'), ['2050.99'])
        self.assertEqual(self.values(reference, 'f:Fa/f:P_15'), ['2051'])

    def test_sample_2_correction_before_after(self):
        "Sample 2: KOR with the line before (StanPrzed) and after."
        number = ksef('9999999999', date(2023, 9, 8), '8BEF280C8D35')
        inv = Invoice(
            seller=abc_agd(), buyer=kowalski(), kind='KOR',
            number='FK2026/03/200', issue_date=date(2026, 3, 15),
            place='Warszawa', delivery_date=date(2026, 1, 27),
            created=SAMPLE_CREATED, system_info='SamploFaktur',
            lines=[
                Line('lodówka Zimnotech mk1', D(1), D('1626.01'),
                    D('1626.01'), '23', unit='szt.',
                    uu_id='aaaa111133339990', number=1,
                    before_correction=True),
                Line('lodówka Zimnotech mk1', D(1), D('1463.41'),
                    D('1463.41'), '23', unit='szt.',
                    uu_id='aaaa111133339990', number=1),
                ],
            correction=Correction(
                reason='obniżka ceny o 200 zł z uwagi na uszkodzenia '
                'estetyczne',
                type=model.CORRECTION_AT_OTHER_DATE,
                invoices=[CorrectedInvoice(date(2026, 2, 15),
                        'FV2026/02/150', number)]))
        data = self.build(inv)
        self.assertSameAs(data, sample_number(2), HEAD + SELLER + BUYER
            + FA_HEAD + AMOUNTS + ANNOTATIONS + CORRECTION
            + ['f:Fa/f:FaWiersz',
                'f:Fa/f:DaneFaKorygowanej/f:DataWystFaKorygowanej',
                'f:Fa/f:DaneFaKorygowanej/f:NrFaKorygowanej',
                'f:Fa/f:DaneFaKorygowanej/f:NrKSeF'])
        self.assertEqual(self.values(data,
                'f:Fa/f:DaneFaKorygowanej/f:NrKSeFFaKorygowanej'), [number])

    def test_sample_3_credit_note_by_difference(self):
        """Sample 3: KOR of an invoice with a KSeF number, by difference.

        The line comes as Tryton's credit note has it (negative quantity,
        positive price) and is written as the sample: quantity 1, negative
        price and value."""
        number = ksef('9999999999', date(2023, 9, 8), '8BEF280C8D35')
        inv = Invoice(
            seller=abc_agd(), buyer=kowalski(), kind='KOR',
            number='FK2026/03/200', issue_date=date(2026, 3, 15),
            place='Warszawa', delivery_date=date(2026, 1, 27),
            created=SAMPLE_CREATED, system_info='SamploFaktur',
            lines=[Line('lodówka Zimnotech mk1', D(-1), D('162.60'),
                    D('-162.60'), '23', unit='szt.',
                    uu_id='aaaa111133339990')],
            total=D('-200.00'),
            correction=Correction(
                reason='obniżka ceny o 200 zł z uwagi na uszkodzenia '
                'estetyczne', type=3,
                invoices=[CorrectedInvoice(date(2026, 2, 15),
                        'FV2026/02/150', number)]))
        data = self.build(inv)
        self.assertSameAs(data, sample_number(3), HEAD + SELLER + BUYER
            + FA_HEAD + AMOUNTS + ANNOTATIONS + CORRECTION
            + ['f:Fa/f:FaWiersz',
                'f:Fa/f:DaneFaKorygowanej/f:DataWystFaKorygowanej',
                'f:Fa/f:DaneFaKorygowanej/f:NrFaKorygowanej',
                'f:Fa/f:DaneFaKorygowanej/f:NrKSeF'])
        summary = fa3.parse_summary(data)
        self.assertEqual(summary['corrected'], [{
                    'issue_date': date(2026, 2, 15),
                    'number': 'FV2026/02/150', 'ksef_number': number}])

    def test_sample_4_factor_discount_delivery_notes(self):
        "Sample 4: per-unit discount (P_10), factor, WZ, line dates, CN."
        inv = Invoice(
            seller=abc_agd(), buyer=cde(),
            number='FV2026/02/150', issue_date=date(2026, 2, 15),
            place='Warszawa', created=SAMPLE_CREATED,
            system_info='SamploFaktur', delivery_notes=['44343434/2026'],
            third_parties=[ThirdParty(
                    role=model.ROLE_FACTOR, tax_identifier='2222222222',
                    name='Bank Bankowości Bankowej S. A. BBB Faktoring',
                    address=Address('PL', 'ul. Bankowa 1', '00-003 Łódź'),
                    contacts=[Contact('bbb@efaktoring.pl', '666888999')])],
            lines=[
                Line('lodówka Zimnotech mk1', D(10), D('1626.01'),
                    D('16260.10'), '23', unit='szt.', cn='8418 21 91',
                    delivery_date=date(2026, 1, 3),
                    uu_id='aaaa111133339990'),
                Line('zamrażarka Zimnotech mk2', D(20), D(1000),
                    D(18000), '23', unit='szt.', cn='8418 40 20',
                    discount=D(100), delivery_date=date(2026, 1, 10),
                    uu_id='aaaa111133339991'),
                Line('zmywarka Bryza 100', D(15), D(1200), D(18000), '23',
                    unit='szt.', cn='8422 11 00',
                    delivery_date=date(2026, 1, 15),
                    uu_id='aaaa111133339992'),
                ],
            payment=Payment(due_dates=[date(2026, 3, 15)],
                method=model.TRANSFER))
        data = self.build(inv)
        self.assertSameAs(data, sample_number(4), HEAD + SELLER + BUYER
            + ['f:Podmiot3'] + FA_HEAD + AMOUNTS + ANNOTATIONS
            + ['f:Fa/f:FaWiersz', 'f:Fa/f:Platnosc/f:TerminPlatnosci',
                'f:Fa/f:Platnosc/f:FormaPlatnosci'])

    def test_sample_6_correction_without_lines(self):
        "Sample 6: a rebate on six invoices, KOR with totals only."
        corrected = [
            (date(2026, 1, 15), 'FV2026/01/134', '8BEF280C8D35'),
            (date(2026, 2, 15), 'FV2026/02/150', '76B2B580D4DC'),
            (date(2026, 3, 15), 'FV2026/03/143', '4191312C0E57'),
            (date(2026, 4, 15), 'FV2026/04/23', '2B9266CEF3C4'),
            (date(2026, 5, 15), 'FV2026/05/54', '16B99491C78B'),
            (date(2026, 6, 15), 'FV2026/06/15', 'D08FB95950BE'),
            ]
        inv = Invoice(
            seller=abc_agd(), buyer=cde(name='CeDeE s.c.'), kind='KOR',
            number='FK2026/07/243', issue_date=date(2026, 7, 15),
            place='Warszawa', created=SAMPLE_CREATED, lines=[],
            taxes=[TaxTotal('23', D('-40650.41'), D('-9349.59'))],
            total=D(-50000),
            correction=Correction(
                reason='rabat 50000 z uwagi na poziom zakupów pierwszym '
                'półroczu 2026', type=2, period='pierwsze półrocze 2026',
                invoices=[CorrectedInvoice(d, n, ksef(
                                '9999999999', date(2023, 9, 8), t))
                    for d, n, t in corrected]))
        data = self.build(inv)
        self.assertSameAs(data, sample_number(6), SELLER + BUYER + FA_HEAD
            + AMOUNTS + ANNOTATIONS + CORRECTION
            + ['f:Fa/f:DaneFaKorygowanej/f:DataWystFaKorygowanej',
                'f:Fa/f:DaneFaKorygowanej/f:NrFaKorygowanej'])
        self.assertEqual(len(self.values(data,
                    'f:Fa/f:DaneFaKorygowanej/f:NrKSeF')), 6)

    def test_sample_8_margin_second_hand(self):
        "Sample 8: margin scheme for second-hand goods, gross values."
        inv = Invoice(
            seller=abc_agd(name='Komis ABC AGD sp. z o. o.'),
            buyer=kowalski(), number='FM2026/02/150',
            issue_date=date(2026, 2, 27), place='Warszawa',
            delivery_date=date(2026, 1, 27),
            created=SAMPLE_CREATED, margin=model.MARGIN_SECOND_HAND,
            lines=[Line('samochód używany marki Autex rocznik 2010', D(1),
                    D(15000), D(15000), None, unit='szt.', gtu='GTU_07')])
        data = self.build(inv)
        self.assertSameAs(data, sample_number(8), SELLER + BUYER + FA_HEAD
            + AMOUNTS + ANNOTATIONS + ['f:Fa/f:FaWiersz'])

    def test_sample_9_exempt_with_basis_jst_period(self):
        "Sample 9: 23% and exempt lines, JST buyer unit, billing period."
        inv = Invoice(
            seller=abc_agd(name='ABC Leasing S.A.', krs='0000099999',
                regon='999999999', bdo='000099999'),
            buyer=Buyer(name='Gmina Bzdziszewo', tax_identifier='1111111111',
                address=Address('PL', 'Bzdziszewo 1', '00-007 Bzdziszewo'),
                contacts=[Contact('gmina@bzdziszewo.pl', '555777999')],
                jst=True),
            third_parties=[ThirdParty(role=model.ROLE_JST_RECIPIENT,
                    tax_identifier='2222222222',
                    name='Szkoła Podstawowa w Bzdziszewie',
                    address=Address('PL', 'ul. Akacjowa 200',
                        '00-007 Bzdziszewo'),
                    contacts=[Contact('sp@bzdziszewo.pl', '555777999')])],
            number='FV2026/02/150', issue_date=date(2026, 2, 15),
            place='Warszawa', created=SAMPLE_CREATED,
            period_start=date(2026, 1, 1), period_end=date(2026, 1, 1),
            lines=[
                Line('rata leasingowa za 01/2026', D(1), D(2000), D(2000),
                    '23', unit='szt.', uu_id='aaaa111133339990'),
                Line('pakiet ubezpieczeń za 01/2026', D(1), D(300), D(300),
                    'zw', unit='szt.', uu_id='aaaa111133339991',
                    exemption=Exemption('art. 43 ust. 1 pkt 37 ustawy VAT')),
                ],
            additional_info=[('część odsetkowa raty', 'netto 200, vat 46')],
            payment=Payment(due_dates=[date(2026, 3, 15)],
                method=model.TRANSFER,
                bank_accounts=[BankAccount('73111111111111111111111111',
                        bank_name='Bank Bankowości Bankowej S. A.',
                        description='PLN')]),
            footer=['Kapiał zakładowy 5 000 000'])
        data = self.build(inv)
        reference = sample_number(9)
        self.assertSameAs(data, reference, SELLER + FA_HEAD + AMOUNTS
            + ANNOTATIONS + ['f:Podmiot2/f:DaneIdentyfikacyjne',
                'f:Podmiot2/f:Adres', 'f:Podmiot2/f:JST', 'f:Podmiot2/f:GV',
                'f:Podmiot3/f:DaneIdentyfikacyjne', 'f:Podmiot3/f:Adres',
                'f:Podmiot3/f:Rola', 'f:Fa/f:DodatkowyOpis',
                'f:Fa/f:FaWiersz', 'f:Fa/f:Platnosc', 'f:Stopka'])

    def test_sample_20_foreign_currency(self):
        "Sample 20: EUR, one exchange rate, VAT in PLN (P_14_1W)."
        data = self.build(self.sample_20_21(
                [D('4.5005'), D('4.5005'), D('4.5005')],
                [date(2026, 2, 20), date(2026, 2, 25), date(2026, 2, 26)]))
        self.assertSameAs(data, sample_number(20), SELLER + BUYER + FA_HEAD
            + AMOUNTS + ANNOTATIONS + ['f:Fa/f:FaWiersz',
                'f:Fa/f:Platnosc/f:TerminPlatnosci',
                'f:Fa/f:Platnosc/f:FormaPlatnosci'])
        self.assertEqual(self.values(data, 'f:Fa/f:P_14_1W'), ['14036.16'])

    def test_sample_21_foreign_currency_rate_per_line(self):
        "Sample 21: EUR, a different exchange rate on each line."
        data = self.build(self.sample_20_21(
                [D('4.4080'), D('4.5005'), D('4.3250')],
                [date(2026, 2, 5), date(2026, 2, 10), date(2026, 2, 20)]))
        self.assertSameAs(data, sample_number(21), SELLER + BUYER + FA_HEAD
            + AMOUNTS + ANNOTATIONS + ['f:Fa/f:FaWiersz'])
        self.assertEqual(self.values(data, 'f:Fa/f:P_14_1W'), ['13768.14'])
        # KursWaluty keeps the NBP's four decimals
        self.assertEqual(self.values(data, 'f:Fa/f:FaWiersz/f:KursWaluty'),
            ['4.4080', '4.5005', '4.3250'])

    def sample_20_21(self, rates, dates):
        items = [
            ('lodówka Zimnotech mk1', '8418 21 91', D(10), D(406), D(4060)),
            ('zamrażarka Zimnotech mk2', '8418 40 20', D(20), D(250),
                D(5000)),
            ('zmywarka Bryza 100', '8422 11 00', D(15), D(300), D(4500)),
            ]
        return Invoice(
            seller=abc_agd(),
            buyer=cde(address=Address('PL', 'ul. Sadowa 1 lok. 3',
                    '00-002 Kraków', gln='a')),
            number='FV2026/02/150', issue_date=date(2026, 2, 15),
            place='Warszawa', created=SAMPLE_CREATED, currency='EUR',
            lines=[Line(name, quantity, price, amount, '23', unit='szt.',
                    cn=cn, currency_rate=rate, delivery_date=day,
                    uu_id='aaaa11113333999%d' % i)
                for i, ((name, cn, quantity, price, amount), rate, day)
                in enumerate(zip(items, rates, dates))],
            payment=Payment(due_dates=[date(2026, 3, 15)],
                method=model.TRANSFER))

    def test_sample_22_intra_community_supply(self):
        "Sample 22: WDT to a German buyer, EUR, seller prefix PL."
        inv = Invoice(
            seller=abc_agd(),
            buyer=Buyer(name='EFG GmbH', tax_identifier='DE999999999',
                tax_identifier_kind=model.EU_VAT,
                address=Address('DE', 'Blümchenstraße 1', '10999 Berlin'),
                contacts=[Contact('johan@shmidt.de', '555777999')]),
            number='FV2026/02/150', issue_date=date(2026, 2, 15),
            place='Warszawa', created=SAMPLE_CREATED, currency='EUR',
            # no tax, so no rate is needed
            lines=[Line('lodówka Zimnotech mk1', D(10), D(400), D(4000),
                    '0 WDT', unit='szt.', delivery_date=date(2026, 1, 3),
                    uu_id='aaaa111133339990')])
        data = self.build(inv)
        self.assertSameAs(data, sample_number(22), SELLER + BUYER + FA_HEAD
            + AMOUNTS + ANNOTATIONS + ['f:Fa/f:FaWiersz'])
        summary = fa3.parse_summary(data)
        self.assertEqual(summary['buyer']['eu_code'], 'DE')
        self.assertEqual(summary['buyer']['eu_vat'], '999999999')

    def test_sample_23_export(self):
        "Sample 23: export to the USA (0 EX), buyer with a foreign id."
        inv = Invoice(
            seller=abc_agd(),
            buyer=Buyer(name='EFG Ltd.', tax_identifier='999999999',
                tax_identifier_kind=model.OTHER, tax_identifier_country='US',
                address=Address('US', 'Flower (St) 1', 'Seattle, WA 99999'),
                contacts=[Contact('john@smith.us', '555777999')]),
            number='FV2026/02/150', issue_date=date(2026, 6, 15),
            place='Warszawa', created=SAMPLE_CREATED, currency='USD',
            lines=[Line('lodówka Zimnotech mk1', D(20), D(400), D(8000),
                    '0 EX', unit='szt.', delivery_date=date(2026, 1, 3),
                    uu_id='aaaa111133339990')])
        data = self.build(inv)
        self.assertSameAs(data, sample_number(23), SELLER + BUYER + FA_HEAD
            + AMOUNTS + ANNOTATIONS + ['f:Fa/f:FaWiersz'])

    def test_sample_26_one_line_same_day(self):
        "Sample 26: one 5% line; P_6 equal to P_1 is not repeated."
        inv = Invoice(
            seller=Seller(nip='9999999999', name='ABC sp. z o. o.',
                address=Address('PL', 'ul. Kwiatowa 1, 00-001 Warszawa')),
            buyer=Buyer(name='Jan Kowalski', tax_identifier='2222222222',
                address=Address('PL', 'Akacjowa 1, 00-001 Warszawa')),
            number='FA/2026/02/999', issue_date=date(2026, 2, 1),
            delivery_date=date(2026, 2, 1), place='Warszawa',
            created=SAMPLE_CREATED, system_info='SamploFaktur',
            lines=[Line('Napój Owocowy 1.5l', D(10), D(3), D(30), '5',
                    unit='szt.')])
        data = self.build(inv)
        self.assertSameAs(data, sample_number(26), HEAD + ['f:Naglowek']
            + SELLER + BUYER + AMOUNTS + ANNOTATIONS + ['f:Fa/f:FaWiersz',
                'f:Fa/f:KodWaluty', 'f:Fa/f:P_1', 'f:Fa/f:P_1M',
                'f:Fa/f:P_2'])
        self.assertEqual(self.values(data, 'f:Fa/f:P_6'), [])


class BuildSituationsTestCase(FA3TestCase):
    "Situations without a Ministry sample."

    def test_domestic_rates_23_8_5_0(self):
        inv = invoice(lines=[
                Line('A', D(2), D('10.50'), D('21.00'), '23'),
                Line('B', D(1), D('100'), D('100'), '8'),
                Line('C', D('0.5'), D('7.3333'), D('3.67'), '5'),
                Line('D', D(3), D(5), D(15), '0 KR'),
                Line('E', D(1), D(4), D(4), '23'),
                ])
        data = self.build(inv)
        root = self.root(data)
        self.assertEqual(
            [(etree.QName(e).localname, e.text) for e in root.xpath(
                    'f:Fa/*[starts-with(local-name(), "P_1") and '
                    'string-length(local-name()) > 3]', namespaces=NS)],
            [('P_13_1', '25.00'), ('P_14_1', '5.75'), ('P_13_2', '100.00'),
                ('P_14_2', '8.00'), ('P_13_3', '3.67'), ('P_14_3', '0.18'),
                ('P_13_6_1', '15.00'), ('P_15', '157.60')])
        self.assertEqual(self.values(data, 'f:Fa/f:FaWiersz/f:P_12'),
            ['23', '8', '5', '0 KR', '23'])
        self.assertEqual(self.values(data, 'f:Fa/f:FaWiersz/f:P_8B'),
            ['2', '1', '0.5', '3', '1'])
        self.assertEqual(self.values(data, 'f:Fa/f:FaWiersz/f:P_9A'),
            ['10.5', '100', '7.3333', '5', '4'])

    def test_every_tax_code_goes_to_its_block(self):
        "The rate table against the XSD's P_13_x of each code."
        expected = {
            '23': 'P_13_1', '22': 'P_13_1', '8': 'P_13_2', '7': 'P_13_2',
            '5': 'P_13_3', '4': 'P_13_4', '3': 'P_13_4',
            '0 KR': 'P_13_6_1', '0 WDT': 'P_13_6_2', '0 EX': 'P_13_6_3',
            'zw': 'P_13_7', 'np I': 'P_13_8', 'np II': 'P_13_9',
            'oo': 'P_13_10'}
        self.assertEqual(set(fa3.TAX_CODES), set(expected))
        self.assertEqual(set(fa3.TAX_CODES),
            fa3.common.enumeration('TStawkaPodatku'))
        for code, field in expected.items():
            self.assertEqual(fa3.BLOCKS[fa3.TAX_CODES[code][0]].net, field)
        # every P_13/P_14 field of the XSD is known
        with open(os.path.join(xmlutil.SCHEMA_DIR, 'fa3',
                    'schemat_FA(3)_v1-0E.xsd'), encoding='utf-8') as f:
            xsd = f.read()
        fields = set(re.findall(r'name="(P_1[34]_[0-9_]+W?)"', xsd))
        known = set()
        for block in fa3.BLOCKS.values():
            known.update(f for f in block[1:4] if f)
        self.assertEqual(fields, known)

    def test_taxi_flat_rate(self):
        inv = invoice(lines=[Line('Kurs', D(1), D(50), D(50), '4')])
        data = self.build(inv)
        self.assertEqual(self.values(data, 'f:Fa/f:P_13_4'), ['50.00'])
        self.assertEqual(self.values(data, 'f:Fa/f:P_14_4'), ['2.00'])

    def test_exempt_basis_from_invoice(self):
        inv = invoice(lines=[Line('Kurs', D(1), D(50), D(50), 'zw')],
            exemption=Exemption('art. 132 ust. 1 lit. i dyrektywy',
                model.EXEMPTION_DIRECTIVE))
        data = self.build(inv)
        self.assertEqual(self.values(data,
                'f:Fa/f:Adnotacje/f:Zwolnienie/f:P_19B'),
            ['art. 132 ust. 1 lit. i dyrektywy'])
        self.assertEqual(self.values(data, 'f:Fa/f:P_13_7'), ['50.00'])

    def test_exempt_bases_of_lines_are_joined(self):
        inv = invoice(lines=[
                Line('A', D(1), D(50), D(50), 'zw',
                    exemption=Exemption('art. 43 ust. 1 pkt 37')),
                Line('B', D(1), D(50), D(50), 'zw',
                    exemption=Exemption('art. 43 ust. 1 pkt 38')),
                Line('C', D(1), D(50), D(50), 'zw',
                    exemption=Exemption('art. 43 ust. 1 pkt 37'))])
        data = self.build(inv)
        self.assertEqual(self.values(data,
                'f:Fa/f:Adnotacje/f:Zwolnienie/f:P_19A'),
            ['art. 43 ust. 1 pkt 37; art. 43 ust. 1 pkt 38'])

    def test_eu_services_reverse_charge(self):
        "np II to a taxable person in another member state."
        inv = invoice(
            buyer=Buyer(name='Kunde GmbH', tax_identifier='DE 123456789',
                tax_identifier_kind=model.EU_VAT,
                address=Address('DE', 'Hauptstraße 1', '10115 Berlin')),
            lines=[Line('Consulting', D(10), D(100), D(1000), 'np II')],
            currency='EUR')
        data = self.build(inv)
        self.assertEqual(self.values(data, 'f:Fa/f:P_13_9'), ['1000.00'])
        self.assertEqual(self.values(data, 'f:Fa/f:P_15'), ['1000.00'])
        self.assertEqual(self.values(data, 'f:Fa/f:Adnotacje/f:P_18'), ['1'])
        self.assertEqual(self.values(data, 'f:Podmiot1/f:PrefiksPodatnika'),
            ['PL'])
        self.assertEqual(self.values(data,
                'f:Podmiot2/f:DaneIdentyfikacyjne/*'),
            ['DE', '123456789', 'Kunde GmbH'])
        self.assertEqual(self.values(data, 'f:Fa/f:FaWiersz/f:KursWaluty'),
            [])

    def test_greek_vat_number(self):
        for number, country in [('094259216', 'GR'), ('EL094259216', None),
                ('GR 094 259 216', None), ('EL094259216', 'GR')]:
            inv = invoice(buyer=Buyer(name='Eteria', tax_identifier=number,
                    tax_identifier_kind=model.EU_VAT,
                    tax_identifier_country=country,
                    address=Address('GR', 'Odos 1', 'Athina')),
                lines=[Line('Consulting', D(1), D(100), D(100), 'np II')])
            data = self.build(inv)
            self.assertEqual(self.values(data,
                    'f:Podmiot2/f:DaneIdentyfikacyjne/*'),
                ['EL', '094259216', 'Eteria'])

    def test_polish_eu_vat_number_is_a_nip(self):
        "A PL VAT-EU number identifies the buyer by NIP (KSeF access)."
        inv = invoice(buyer=Buyer(name='Buyer', tax_identifier='PL1111111111',
                tax_identifier_kind=model.EU_VAT,
                address=Address('PL', 'ul. Polna 1')))
        data = self.build(inv)
        self.assertEqual(self.values(data,
                'f:Podmiot2/f:DaneIdentyfikacyjne/f:NIP'), ['1111111111'])

    def test_domestic_reverse_charge(self):
        inv = invoice(lines=[Line('Złom', D(100), D('1.20'), D(120), 'oo')])
        data = self.build(inv)
        self.assertEqual(self.values(data, 'f:Fa/f:P_13_10'), ['120.00'])
        self.assertEqual(self.values(data, 'f:Fa/f:P_15'), ['120.00'])
        self.assertEqual(self.values(data, 'f:Fa/f:Adnotacje/f:P_18'), ['1'])
        self.assertEqual(self.values(data, 'f:Podmiot1/f:PrefiksPodatnika'),
            [])

    def test_foreign_currency_invoice_rate(self):
        "The invoice's rate goes on every taxed line; P_14_xW in PLN."
        inv = invoice(currency='EUR', currency_rate=D('4.2512'),
            lines=[Line('A', D(3), D('33.33'), D('99.99'), '23'),
                Line('B', D(1), D('10'), D('10'), '8'),
                Line('C', D(1), D('10'), D('10'), 'np I')])
        data = self.build(inv)
        self.assertEqual(self.values(data, 'f:Fa/f:P_14_1'), ['23.00'])
        # 23.00 x 4.2512 = 97.7776
        self.assertEqual(self.values(data, 'f:Fa/f:P_14_1W'), ['97.78'])
        # 0.80 x 4.2512 = 3.40096
        self.assertEqual(self.values(data, 'f:Fa/f:P_14_2W'), ['3.40'])
        self.assertEqual(self.values(data, 'f:Fa/f:FaWiersz/f:KursWaluty'),
            ['4.2512', '4.2512'])

    def test_given_taxes_and_pln_amounts(self):
        "Accounting totals are written as given when they agree."
        inv = invoice(currency='EUR', currency_rate=D('4.2512'),
            lines=[Line('A', D(1), D('0.10'), D('0.10'), '23'),
                Line('B', D(1), D('0.10'), D('0.10'), '23')],
            # rounded per line: 0.02 + 0.02 (per document it is 0.05)
            taxes=[TaxTotal('23', D('0.10'), D('0.02'), D('0.09')),
                TaxTotal('23', D('0.10'), D('0.02'), D('0.09'))],
            total=D('0.24'))
        data = self.build(inv)
        self.assertEqual(self.values(data, 'f:Fa/f:P_14_1'), ['0.04'])
        self.assertEqual(self.values(data, 'f:Fa/f:P_14_1W'), ['0.18'])
        self.assertEqual(self.values(data, 'f:Fa/f:P_15'), ['0.24'])

    def test_split_payment(self):
        inv = invoice(split_payment=True, lines=[
                Line('Stal', D(100), D(200), D(20000), '23',
                    annex_15=True, gtu='GTU_12')])
        data = self.build(inv)
        self.assertEqual(self.values(data, 'f:Fa/f:Adnotacje/f:P_18A'),
            ['1'])
        self.assertEqual(self.values(data, 'f:Fa/f:FaWiersz/f:P_12_Zal_15'),
            ['1'])

    def test_consumer_without_identifier(self):
        inv = invoice(buyer=Buyer(consumer=True))
        data = self.build(inv)
        self.assertEqual(
            [etree.QName(e).localname for e in self.root(data).xpath(
                    'f:Podmiot2/*', namespaces=NS)],
            ['DaneIdentyfikacyjne', 'JST', 'GV'])
        self.assertEqual(self.values(data,
                'f:Podmiot2/f:DaneIdentyfikacyjne/f:BrakID'), ['1'])
        self.assertTrue(fa3.parse_summary(data)['buyer']['no_id'])

    def test_consumer_with_name(self):
        inv = invoice(buyer=Buyer(consumer=True, name='Jan Nowak',
                address=Address('PL', 'ul. Długa 5', '00-100 Warszawa')))
        data = self.build(inv)
        self.assertEqual(self.values(data,
                'f:Podmiot2/f:DaneIdentyfikacyjne/*'), ['1', 'Jan Nowak'])

    def test_correction_of_invoice_outside_ksef(self):
        inv = invoice(kind='KOR', lines=[
                Line('Service', D(1), D('-10.00'), D('-10.00'), '23')],
            correction=Correction(invoices=[
                    CorrectedInvoice(date(2025, 12, 1), 'FV/99/2025')]))
        data = self.build(inv)
        self.assertEqual(self.values(data,
                'f:Fa/f:DaneFaKorygowanej/f:NrKSeFN'), ['1'])
        self.assertEqual(self.values(data, 'f:Fa/f:P_15'), ['-12.30'])

    def test_mixed_rates_with_period_and_third_party(self):
        inv = invoice(
            period_start=date(2026, 1, 1), period_end=date(2026, 1, 31),
            lines=[Line('A', D(1), D(100), D(100), '23'),
                Line('B', D(1), D(100), D(100), '8'),
                Line('C', D(1), D(100), D(100), 'zw',
                    exemption=Exemption('art. 43 ust. 1 pkt 10'))],
            buyer=Buyer(name='Grupa VAT', tax_identifier='1111111111',
                address=Address('PL', 'ul. Polna 1'), vat_group=True),
            third_parties=[ThirdParty(
                    role=model.ROLE_VAT_GROUP_MEMBER_RECIPIENT,
                    tax_identifier='2222222222', name='Member')])
        data = self.build(inv)
        self.assertEqual(self.values(data, 'f:Fa/f:P_15'), ['331.00'])
        self.assertEqual(self.values(data, 'f:Fa/f:OkresFa/*'),
            ['2026-01-01', '2026-01-31'])
        self.assertEqual(self.values(data, 'f:Podmiot2/f:GV'), ['1'])

    def test_new_means_of_transport(self):
        inv = invoice(
            buyer=Buyer(name='Käufer', tax_identifier='DE123456789',
                tax_identifier_kind=model.EU_VAT,
                address=Address('DE', 'Weg 1')),
            lines=[Line('Samochód', D(1), D(100000), D(100000), '0 WDT')],
            new_vehicles=[NewVehicle(line_number=1, kind='land',
                    first_use_date=date(2026, 1, 10), usage='1200 km',
                    make='Autex', serial='VF1AAAAA555555555')])
        data = self.build(inv)
        self.assertEqual(self.values(data,
                'f:Fa/f:Adnotacje/f:NoweSrodkiTransportu//*[not(*)]'),
            ['1', '2', '2026-01-10', '1', 'Autex', '1200 km',
                'VF1AAAAA555555555'])

    def test_optional_party_data(self):
        "Every optional element of the parties, in schema order."
        inv = invoice(
            seller=Seller(nip='PL 526-587-76-35', name='Seller',
                address=Address('PL', 'ul. Testowa 1', '00-001 Warszawa',
                    gln='5901234123457'),
                correspondence_address=Address('PL', 'skr. poczt. 5'),
                contacts=[Contact(email='a@b.pl'), Contact(phone='+48 1')],
                eu_vat=True, eori='PL526587763500000', status=1),
            buyer=Buyer(name='Buyer', tax_identifier='11-11-11-11-11',
                address=Address('PL', 'ul. Polna 1'),
                correspondence_address=Address('PL', 'ul. Krzywa 2'),
                eori='PL111111111100000', buyer_key='K-1',
                customer_number='C-7'),
            third_parties=[
                ThirdParty(role=model.ROLE_RECIPIENT,
                    tax_identifier='1111111111-00001',
                    tax_identifier_kind=model.INTERNAL, name='Oddział'),
                ThirdParty(role=model.ROLE_PAYER, tax_identifier='X-1',
                    tax_identifier_kind=model.OTHER, share=D('12.5'),
                    customer_number='P-1'),
                ThirdParty(role=model.ROLE_ADDITIONAL_BUYER)])
        data = self.build(inv)
        self.assertEqual(self.values(data, 'f:Podmiot1/*[not(*)]'),
            ['PL', 'PL526587763500000', '1'])
        self.assertEqual(self.values(data,
                'f:Podmiot1/f:DaneIdentyfikacyjne/f:NIP'), ['5265877635'])
        self.assertEqual(self.values(data, 'f:Podmiot2/*[not(*)]'),
            ['PL111111111100000', 'C-7', 'K-1', '2', '2'])
        self.assertEqual(self.values(data,
                'f:Podmiot3/f:DaneIdentyfikacyjne/*'),
            ['1111111111-00001', 'Oddział', 'X-1', '1'])
        self.assertEqual(self.values(data, 'f:Podmiot3/f:Udzial'), ['12.5'])

    def test_text_is_collapsed_like_a_token(self):
        inv = invoice(lines=[Line('  Usługa\n  serwisowa \t ', D(1),
                    D(100), D(100), '23', unit='godz.\u00a0x')])
        data = self.build(inv)
        self.assertEqual(self.values(data, 'f:Fa/f:FaWiersz/f:P_7'),
            ['Usługa serwisowa'])
        # a non-breaking space is content, not markup whitespace
        self.assertEqual(self.values(data, 'f:Fa/f:FaWiersz/f:P_8A'),
            ['godz.\u00a0x'])

    def test_created_offset(self):
        tz = datetime.timezone(datetime.timedelta(hours=1))
        data = self.build(invoice(
                created=datetime.datetime(2026, 2, 2, 10, 0, 5, 123, tz)))
        self.assertEqual(self.values(data, 'f:Naglowek/f:DataWytworzeniaFa'),
            ['2026-02-02T10:00:05+01:00'])
        data = self.build(invoice())
        self.assertEqual(self.values(data, 'f:Naglowek/f:DataWytworzeniaFa'),
            ['2026-02-02T09:30:00Z'])
        self.assertEqual(self.values(data, 'f:Naglowek/f:SystemInfo'),
            ['Tryton ksef'])

    def test_nip_check_digit_may_be_skipped(self):
        "KSeF TEST takes NIPs with a wrong check digit."
        inv = invoice(buyer=Buyer(name='B', tax_identifier='1234567890',
                address=Address('PL', 'x')))
        self.build(inv, check_nip=False)
        problems = fa3.validate(fa3.build(inv, check_nip=False))
        self.assertEqual([(p.code, p.severity) for p in problems],
            [('fa3_nip_checksum', 'warning')])

    def test_big_invoice(self):
        lines = [Line('Article %d' % i, D(i % 5 + 1), D('1.99'),
                D('1.99') * (i % 5 + 1), ['23', '8', '5', 'zw'][i % 4],
                exemption=Exemption('art. 43 ust. 1 pkt 1'))
            for i in range(1000)]
        data = self.build(invoice(lines=lines))
        self.assertEqual(len(self.values(data, 'f:Fa/f:FaWiersz/f:P_7')),
            1000)


class BuildErrorsTestCase(FA3TestCase):
    "Every FA3DataError case names the input field and the rule."

    def test_business_buyer_without_identifier(self):
        error = self.assertProblems(invoice(buyer=Buyer(name='B',
                    address=Address('PL', 'x'))),
            [('fa3_buyer_identifier_required', 'buyer.tax_identifier')])
        self.assertEqual(error.path,
            '/Faktura/Podmiot2/DaneIdentyfikacyjne/NIP')
        self.assertIn('buyer.tax_identifier', str(error))

    def test_business_buyer_without_name_and_address(self):
        self.assertProblems(invoice(buyer=Buyer(tax_identifier='1111111111')),
            [('fa3_required', 'buyer.name'),
                ('fa3_required', 'buyer.address')])

    def test_exempt_line_without_basis(self):
        self.assertProblems(invoice(lines=[
                    Line('A', D(1), D(1), D(1), '23'),
                    Line('B', D(1), D(1), D(1), 'zw')]),
            [('fa3_exemption_basis_required', 'lines[1].exemption')])

    def test_exempt_tax_without_basis(self):
        self.assertProblems(invoice(kind='KOR', lines=[],
                taxes=[TaxTotal('zw', D(-10), D(0))],
                correction=Correction(invoices=[
                        CorrectedInvoice(date(2026, 1, 2), 'FV/1')])),
            [('fa3_exemption_basis_required', 'exemption')])

    def test_exemption_bases_of_different_kinds(self):
        self.assertProblems(invoice(lines=[
                    Line('A', D(1), D(1), D(1), 'zw',
                        exemption=Exemption('art. 43')),
                    Line('B', D(1), D(1), D(1), 'zw',
                        exemption=Exemption('art. 135', 'directive'))]),
            [('fa3_exemption_basis_conflict', 'exemption')])

    def test_foreign_currency_without_rate(self):
        error = self.assertProblems(invoice(currency='EUR', lines=[
                    Line('A', D(1), D(1), D(1), '23'),
                    Line('B', D(1), D(1), D(1), '8')]),
            [('fa3_currency_rate_required', 'currency_rate')])
        self.assertEqual(error.params, {'currency': 'EUR'})
        self.assertEqual(str(error),
            "currency_rate: an invoice in EUR needs the exchange rate to PLN")

    def test_rate_on_pln_invoice(self):
        self.assertProblems(invoice(lines=[Line('A', D(1), D(1), D(1), '23',
                        currency_rate=D('4.1'))]),
            [('fa3_currency_rate_unexpected', 'lines[0].currency_rate')])

    def test_all_problems_are_reported(self):
        inv = invoice(
            seller=Seller(nip='123', name='', address=None),
            buyer=Buyer(name='B', address=Address('XX', 'x')),
            number=None, issue_date=date(2051, 1, 1),
            created=datetime.datetime(2026, 2, 2),
            lines=[Line('A', 1.5, D(1), D(1), '24'),
                Line('x' * 513, D(1), D('1.123456789'), D('1.001'), '23',
                    gtu='GTU_99')])
        error = self.assertProblems(inv, [
                ('fa3_naive_datetime', 'created'),
                ('fa3_invalid_type', 'lines[0].quantity'),
                ('fa3_invalid_value', 'lines[0].tax_code'),
                ('fa3_too_long', 'lines[1].name'),
                ('fa3_too_many_decimals', 'lines[1].unit_price'),
                ('fa3_too_many_decimals', 'lines[1].amount'),
                ('fa3_invalid_value', 'lines[1].gtu'),
                ('fa3_invalid_nip', 'seller.nip'),
                ('fa3_required', 'seller.name'),
                ('fa3_required', 'seller.address'),
                ('fa3_buyer_identifier_required', 'buyer.tax_identifier'),
                ('fa3_invalid_value', 'buyer.address.country'),
                ('fa3_date_out_of_range', 'issue_date'),
                ('fa3_required', 'number'),
                ])
        text = str(error)
        self.assertTrue(text.startswith("14 problems in the invoice data"))
        self.assertIn("- lines[1].name is longer than 512 characters", text)
        paths = {p.field: p.path for p in error.problems}
        self.assertEqual(paths['lines[1].name'],
            '/Faktura/Fa/FaWiersz[2]/P_7')
        self.assertEqual(paths['seller.nip'],
            '/Faktura/Podmiot1/DaneIdentyfikacyjne/NIP')

    def test_messages_hold_no_invoice_content(self):
        error = self.assertProblems(invoice(buyer=Buyer(name='Secret Name',
                    tax_identifier='9876543211',
                    address=Address('PL', 'Hidden street'))),
            [('fa3_invalid_nip', 'buyer.tax_identifier')])
        for text in (str(error), repr(error.params)):
            self.assertNotIn('9876543211', text)
            self.assertNotIn('Secret', text)

    def test_invalid_characters(self):
        error = self.assertProblems(invoice(lines=[Line('A\x02', D(1), D(1),
                        D(1), '23'), Line('B\x85\x80', D(1), D(1), D(1),
                        '23')]),
            [('fa3_invalid_characters', 'lines[0].name'),
                ('fa3_invalid_characters', 'lines[1].name')])
        self.assertEqual(error.problems[1].params, {'codepoint': '0080'})

    def test_line_amount_mismatch(self):
        self.assertProblems(invoice(lines=[
                    Line('A', D(3), D('3.33'), D('10.00'), '23'),
                    Line('B', D(20), D(1000), D(18000), '23')]),
            [('fa3_line_amount_mismatch', 'lines[0].amount'),
                ('fa3_line_amount_mismatch', 'lines[1].amount')])

    def test_tax_totals_mismatch(self):
        lines = [Line('A', D(1), D(100), D(100), '23'),
            Line('B', D(1), D(100), D(100), '8')]
        self.assertProblems(invoice(lines=lines, taxes=[
                    TaxTotal('23', D(100), D('23.05')),
                    TaxTotal('8', D(90), D('7.20'))]),
            [('fa3_tax_amount_mismatch', 'taxes'),
                ('fa3_tax_base_mismatch', 'taxes[1].base')])
        self.assertProblems(invoice(lines=lines, taxes=[
                    TaxTotal('23', D(100), D(23))]),
            [('fa3_tax_base_mismatch', 'taxes')])
        self.assertProblems(invoice(lines=lines, taxes=[
                    TaxTotal('23', D(100), D(23)), TaxTotal('8', D(100), D(8)),
                    TaxTotal('5', D(10), D('0.5')),
                    TaxTotal('zw', D(0), D(1))]),
            [('fa3_tax_without_lines', 'taxes[2].code'),
                ('fa3_tax_unexpected', 'taxes[3].amount'),
                ('fa3_exemption_basis_required', 'exemption')])

    def test_total_mismatch(self):
        self.assertProblems(invoice(total=D('123.01')),
            [('fa3_total_mismatch', 'total')])

    def test_pln_tax_mismatch(self):
        self.assertProblems(invoice(currency='EUR', currency_rate=D(4),
                taxes=[TaxTotal('23', D(100), D(23), D('93.00'))]),
            [('fa3_tax_pln_mismatch', 'taxes')])
        self.assertProblems(invoice(
                taxes=[TaxTotal('23', D(100), D(23), D('93.00'))]),
            [('fa3_tax_unexpected', 'taxes[0].amount_pln')])

    def test_buyer_identifier_of_the_tax_code(self):
        self.assertProblems(invoice(lines=[
                    Line('A', D(1), D(1), D(1), '0 WDT'),
                    Line('B', D(1), D(1), D(1), 'np II')]),
            [('fa3_buyer_eu_vat_required', 'buyer.tax_identifier'),
                ('fa3_buyer_eu_vat_required', 'buyer.tax_identifier')])
        self.assertProblems(invoice(
                buyer=Buyer(name='B', tax_identifier='DE123456789',
                    tax_identifier_kind=model.EU_VAT,
                    address=Address('DE', 'x')),
                lines=[Line('A', D(1), D(1), D(1), 'oo')]),
            [('fa3_buyer_nip_required', 'buyer.tax_identifier')])

    def test_bad_identifiers(self):
        self.assertProblems(invoice(buyer=Buyer(name='B',
                    tax_identifier='XX12', tax_identifier_kind=model.EU_VAT,
                    address=Address('PL', 'x'))),
            [('fa3_invalid_value', 'buyer.tax_identifier_country')])
        self.assertProblems(invoice(buyer=Buyer(name='B',
                    tax_identifier='DE12-34.5678_9',
                    tax_identifier_kind=model.EU_VAT,
                    address=Address('PL', 'x'))),
            [('fa3_invalid_format', 'buyer.tax_identifier')])
        self.assertProblems(invoice(buyer=Buyer(name='B',
                    tax_identifier='1', tax_identifier_kind='ssn',
                    address=Address('PL', 'x'))),
            [('fa3_invalid_value', 'buyer.tax_identifier_kind')])

    def test_correction_data(self):
        self.assertProblems(invoice(kind='KOR'),
            [('fa3_correction_required', 'correction')])
        self.assertProblems(invoice(correction=Correction(invoices=[
                        CorrectedInvoice(date(2026, 1, 2), 'FV/1')])),
            [('fa3_correction_unexpected', 'correction')])
        self.assertProblems(invoice(kind='KOR', correction=Correction(
                    type=4, invoices=[CorrectedInvoice(date(2026, 1, 2),
                            'FV/1', '9999999999-20230908-8BEF280C8D35-4D')])),
            [('fa3_invalid_value', 'correction.type'),
                ('fa3_invalid_ksef_number',
                    'correction.invoices[0].ksef_number')])

    def test_unsupported_kind(self):
        error = self.assertProblems(invoice(kind='ZAL'),
            [('fa3_unsupported_kind', 'kind')])
        self.assertEqual(error.params, {'kind': 'ZAL'})

    def test_no_lines(self):
        self.assertProblems(invoice(lines=[]), [('fa3_no_lines', 'lines')])

    def test_dates(self):
        self.assertProblems(invoice(delivery_date=date(2026, 1, 1),
                period_start=date(2026, 1, 1), period_end=date(2026, 1, 2)),
            [('fa3_exclusive', 'delivery_date')])
        self.assertProblems(invoice(period_start=date(2026, 1, 3),
                period_end=date(2026, 1, 2)),
            [('fa3_period_order', 'period_end')])
        self.assertProblems(invoice(period_start=date(2026, 1, 3)),
            [('fa3_required', 'period_end')])
        self.assertProblems(invoice(created=datetime.datetime(2025, 8, 31,
                        tzinfo=UTC), issue_date=datetime.datetime(2026, 1, 1)),
            [('fa3_date_out_of_range', 'created'),
                ('fa3_invalid_type', 'issue_date')])

    def test_third_party_for_jst_and_vat_group(self):
        self.assertProblems(invoice(buyer=Buyer(name='Gmina',
                    tax_identifier='1111111111', address=Address('PL', 'x'),
                    jst=True, vat_group=True)),
            [('fa3_third_party_role_required', 'buyer.jst'),
                ('fa3_third_party_role_required', 'buyer.vat_group')])

    def test_margin(self):
        self.assertProblems(invoice(lines=[Line('A', D(1), D(1), D(1),
                        None)]),
            [('fa3_margin_required', 'lines[0].tax_code')])
        self.assertProblems(invoice(margin='cars'),
            [('fa3_invalid_value', 'margin')])

    def test_payment(self):
        self.assertProblems(invoice(payment=Payment(method=9,
                    due_dates=[date(2016, 6, 30)],
                    bank_accounts=[BankAccount('123', swift='bad')])),
            [('fa3_invalid_value', 'payment.method'),
                ('fa3_date_out_of_range', 'payment.due_dates[0]'),
                ('fa3_invalid_format', 'payment.bank_accounts[0].number'),
                ('fa3_invalid_format', 'payment.bank_accounts[0].swift')])
        self.assertProblems(invoice(payment=Payment(method=1,
                    other_method='barter')),
            [('fa3_exclusive', 'payment.other_method')])

    def test_limits(self):
        self.assertProblems(invoice(seller=Seller(nip='5265877635',
                    name='S', address=Address('PL', 'x'),
                    contacts=[Contact('a@b.pl')] * 4), footer=['x'] * 4),
            [('fa3_too_many', 'seller.contacts'), ('fa3_too_many', 'footer')])

    def test_schema_safety_net(self):
        "A value the checks let through is still caught by the XSD."
        inv = invoice()
        inv.buyer.customer_number = 'x' * 256
        self.build(inv)
        builder = fa3.builder._Builder(inv, True)
        root = builder.build()
        root.find('{%s}Fa/{%s}P_2' % (xmlutil.NS_FA3, xmlutil.NS_FA3)
            ).text = ''
        with self.assertRaises(FA3DataError) as cm:
            builder.check_result(root)
        self.assertEqual(cm.exception.code, 'fa3_schema_violation')
        self.assertEqual(cm.exception.path, '/Faktura/Fa/P_2')


    def test_build_without_schema_check(self):
        "schema_check=False: same bytes, the XSD left to validate()."
        inv = invoice()
        with mock.patch.object(fa3.builder._Builder, 'check_result',
                side_effect=AssertionError("XSD checked")):
            data = fa3.build(inv, schema_check=False)
        self.assertEqual(data, fa3.build(inv))
        self.assertEqual([p for p in fa3.validate(data) if p.is_error], [])


class ValidateTestCase(FA3TestCase):

    def errors(self, data):
        return [p for p in fa3.validate(data) if p.is_error]

    def tampered(self, n, pattern, replacement):
        data = sample_number(n)
        new = re.sub(pattern, replacement, data, count=1, flags=re.S)
        self.assertNotEqual(new, data)
        return new

    def assertFails(self, data, code, path=None):
        errors = self.errors(data)
        self.assertIn(code, [p.code for p in errors], errors)
        if path:
            self.assertIn(path, [p.path for p in errors if p.code == code])
        return errors

    def test_all_samples_pass(self):
        files = sorted(glob.glob(os.path.join(DATA, '*.xml')))
        self.assertEqual(len([f for f in files if 'Przyklad' in f]), 26)
        for name in files:
            with self.subTest(name=os.path.basename(name)):
                with open(name, 'rb') as f:
                    self.assertEqual(self.errors(f.read()), [])

    def test_sample_1_p15(self):
        "P_15 may be the exact gross while each block was rounded."
        self.assertEqual(self.errors(sample_number(1)), [])
        data = self.tampered(1, rb'<P_15>2051<', b'<P_15>2051.03<')
        errors = self.assertFails(data, 'fa3_total_mismatch',
            '/Faktura/Fa/P_15')
        self.assertEqual(errors[0].line, 53)
        self.assertEqual(errors[0].reason,
            "P_15 is 2051.03 but the sum of P_13_x and P_14_x is 2050.99")

    def test_tampered_sums(self):
        self.assertFails(self.tampered(1, rb'<P_13_1>1666.66',
                b'<P_13_1>1666.67'), 'fa3_rate_total_mismatch',
            '/Faktura/Fa/P_13_1')
        self.assertFails(self.tampered(1, rb'<P_14_1>383.33',
                b'<P_14_1>383.36'), 'fa3_rate_tax_mismatch')
        self.assertFails(self.tampered(4, rb'<P_11>18000<', b'<P_11>18001<'),
            'fa3_rate_total_mismatch')
        self.assertFails(self.tampered(9, rb'<P_13_7>300', b'<P_13_7>301'),
            'fa3_rate_total_mismatch', '/Faktura/Fa/P_13_7')
        self.assertFails(self.tampered(22, rb'<P_12>0 WDT', b'<P_12>0 EX'),
            'fa3_rate_total_mismatch', '/Faktura/Fa/P_13_6_2')
        # a KOR with before/after rows: the difference is what counts
        self.assertFails(self.tampered(2, rb'<P_11>1463.41',
                b'<P_11>1463.42'), 'fa3_rate_total_mismatch')
        # gross lines (margin scheme sample)
        self.assertFails(self.tampered(19, rb'<P_13_11>2000',
                b'<P_13_11>2001'), 'fa3_rate_total_mismatch')
        self.assertFails(self.tampered(19, rb'<P_11A>1000', b'<P_11A>1010'),
            'fa3_rate_total_mismatch', '/Faktura/Fa/P_13_1')
        # without lines, the rate of the block (23 or 22) still holds
        self.assertFails(self.tampered(6, rb'<P_14_1>-9349.59',
                b'<P_14_1>-9000.00'), 'fa3_rate_tax_mismatch')
        self.assertFails(self.tampered(6, rb'<P_15>-50000',
                b'<P_15>-49000'), 'fa3_total_mismatch')

    def test_tax_in_pln(self):
        self.assertFails(self.tampered(20, rb'<P_14_1W>14036.16',
                b'<P_14_1W>14036.46'), 'fa3_pln_tax_mismatch')
        self.assertFails(self.tampered(21, rb'<KursWaluty>4.3250',
                b'<KursWaluty>4.5250'), 'fa3_pln_tax_mismatch')
        self.assertFails(self.tampered(20, rb'<P_14_1W>[^<]*</P_14_1W>',
                b''), 'fa3_pln_tax_missing')
        self.assertFails(self.tampered(20, rb'<KodWaluty>EUR',
                b'<KodWaluty>PLN'), 'fa3_pln_tax_unexpected')
        problems = fa3.validate(self.tampered(20, rb'<P_14_1W>14036.16',
                b'<P_14_1W>14036.2'))
        self.assertEqual([(p.code, p.severity) for p in problems],
            [('fa3_pln_tax_format', 'warning')])

    def test_annotations(self):
        self.assertFails(self.tampered(9,
                rb'<P_19>1</P_19>\s*<P_19A>[^<]*</P_19A>',
                b'<P_19N>1</P_19N>'), 'fa3_exemption_missing')
        self.assertFails(self.tampered(19,
                rb'<P_PMarzy>1</P_PMarzy>\s*<P_PMarzy_2>1</P_PMarzy_2>',
                b'<P_PMarzyN>1</P_PMarzyN>'), 'fa3_margin_missing')
        data = fa3.build(invoice(lines=[Line('x', D(1), D(1), D(1), 'oo')]))
        self.assertFails(data.replace(b'<P_18>1<', b'<P_18>2<'),
            'fa3_reverse_charge_missing', '/Faktura/Fa/Adnotacje/P_18')

    def test_parties_and_correction(self):
        self.assertFails(self.tampered(9, rb'<Rola>8', b'<Rola>4'),
            'fa3_third_party_missing', '/Faktura/Podmiot2/JST')
        self.assertFails(self.tampered(2, rb'<RodzajFaktury>KOR',
                b'<RodzajFaktury>VAT'), 'fa3_correction_unexpected')
        data = fa3.build(invoice())
        self.assertFails(data.replace(b'>VAT<', b'>KOR<'),
            'fa3_correction_missing')
        self.assertFails(self.tampered(9, rb'<P_6_Do>2026-01-01',
                b'<P_6_Do>2025-12-31'), 'fa3_period_order')

    def test_warnings(self):
        data = self.tampered(1, rb'<NIP>1111111111', b'<NIP>1111111112')
        self.assertEqual(self.errors(data), [])
        self.assertEqual([p.code for p in fa3.validate(data)],
            ['fa3_nip_checksum'])
        # the samples' KSeF numbers are made up: right form, wrong CRC
        self.assertEqual(self.errors(sample_number(3)), [])
        self.assertEqual([p.code for p in fa3.validate(sample_number(3))],
            ['fa3_ksef_number_checksum'])
        data = self.tampered(22, rb'<KodUE>DE</KodUE>\s*<NrVatUE>[^<]*<'
            rb'/NrVatUE>', b'<NIP>1111111111</NIP>')
        self.assertEqual(self.errors(data), [])
        self.assertEqual([p.code for p in fa3.validate(data)],
            ['fa3_wdt_buyer'])

    def test_what_ksef_verifies(self):
        "PROTOCOL §11: encoding, BOM, processing instructions, characters."
        data = sample_number(1)
        self.assertFails(b'\xef\xbb\xbf' + data, 'fa3_bom')
        self.assertFails(data.replace(b'encoding="UTF-8"',
                b'encoding="ISO-8859-2"'), 'fa3_encoding')
        errors = self.assertFails(data.replace(b'<Naglowek>',
                b'<?tryton x?><Naglowek>'), 'fa3_processing_instruction')
        self.assertEqual(errors[0].line, 4)
        errors = self.assertFails(data.replace(b'SamploFaktur',
                b'Samplo\xc2\x80Faktur'), 'fa3_refused_character')
        self.assertEqual(errors[0].line, 8)
        self.assertFails(data.replace(b'SamploFaktur',
                b'Samplo&#xFDD0;Faktur'), 'fa3_refused_character')
        self.assertFails(data.replace(b'SamploFaktur',
                b'Samplo\xf3\xbf\xbf\xbeFaktur'), 'fa3_refused_character')
        # allowed: NEL (U+0085) and ordinary references
        self.assertEqual(self.errors(data.replace(b'SamploFaktur',
                    b'Samplo\xc2\x85&#x41;&amp;\xc2\xa7Faktur')), [])
        self.assertFails(data[:-20], 'fa3_malformed')
        self.assertFails(b'<!DOCTYPE x [<!ENTITY a "b">]>' + data[39:],
            'fa3_malformed')

    def test_schema_errors(self):
        errors = self.assertFails(self.tampered(20, rb'<P_12>23',
                b'<P_12>24'), 'fa3_schema',
            '/Faktura/Fa/FaWiersz[1]/P_12')
        self.assertEqual(errors[0].line, 80)
        self.assertIn("'24'", errors[0].reason)
        self.assertIn('80: /Faktura/Fa/FaWiersz[1]/P_12: ', str(errors[0]))

    def test_not_an_invoice(self):
        self.assertFails(b'<a/>', 'fa3_schema')
        self.assertFails(b'<a/>', 'fa3_not_fa3')
        with self.assertRaises(TypeError):
            fa3.validate('<a/>')


class SummaryTestCase(FA3TestCase):

    def test_summary_of_a_correction(self):
        summary = fa3.parse_summary(sample_number(6))
        self.assertEqual(summary['seller_nip'], '9999999999')
        self.assertEqual(summary['kind'], 'KOR')
        self.assertEqual(summary['number'], 'FK2026/07/243')
        self.assertEqual(summary['issue_date'], date(2026, 7, 15))
        self.assertEqual(summary['created'],
            datetime.datetime(2026, 7, 15, 9, 30, 47, tzinfo=UTC))
        self.assertEqual(summary['currency'], 'PLN')
        self.assertEqual(summary['duplicate_key'],
            ('9999999999', 'KOR', 'FK2026/07/243'))
        self.assertEqual(summary['net'], D('-40650.41'))
        self.assertEqual(summary['vat'], D('-9349.59'))
        self.assertEqual(summary['gross'], D(-50000))
        self.assertIsNone(summary['vat_pln'])
        self.assertEqual(len(summary['corrected']), 6)
        self.assertEqual(summary['corrected'][5]['number'], 'FV2026/06/15')
        self.assertEqual(summary['buyer'], {'nip': '1111111111',
                'eu_code': None, 'eu_vat': None, 'country': None,
                'id': None, 'no_id': False})

    def test_summary_of_an_export(self):
        summary = fa3.parse_summary(sample_number(23))
        self.assertEqual(summary['buyer']['country'], 'US')
        self.assertEqual(summary['buyer']['id'], '999999999')
        self.assertEqual(summary['buyer_name'], 'EFG Ltd.')
        self.assertEqual(summary['amounts'], {'P_13_6_3': D(8000),
                'P_15': D(8000)})
        self.assertEqual(summary['vat'], None)

    def test_summary_foreign_currency(self):
        summary = fa3.parse_summary(sample_number(21))
        self.assertEqual(summary['vat_pln'], D('13768.14'))
        self.assertEqual(summary['kind'], 'VAT')

    def test_summary_errors(self):
        with self.assertRaises(xmlutil.XMLError):
            fa3.parse_summary(b'<a')
        with self.assertRaises(fa3.FA3DocumentError) as cm:
            fa3.parse_summary(b'<a/>')
        self.assertEqual(cm.exception.code, 'fa3_not_fa3')


class CommandTestCase(FA3TestCase):

    def run_command(self, *files, **options):
        parser = argparse.ArgumentParser()
        fa3.configure_parser(parser)
        args = parser.parse_args(list(options.get('flags', [])) + list(files))
        out = io.StringIO()
        return fa3.run(args, out=out), out.getvalue()

    def test_samples(self):
        files = sorted(glob.glob(os.path.join(DATA, '*.xml')))
        status, output = self.run_command(*files, flags=['-q'])
        self.assertEqual(status, 0)
        self.assertNotIn('FAILED', output)
        status, output = self.run_command(files[0])
        self.assertEqual(output.strip(), '%s: OK' % files[0])

    def test_failures(self):
        with tempfile.TemporaryDirectory() as folder:
            bad = os.path.join(folder, 'bad.xml')
            with open(bad, 'wb') as f:
                f.write(sample_number(1).replace(b'<P_15>2051<',
                        b'<P_15>2052<'))
            status, output = self.run_command(bad)
            self.assertEqual(status, 1)
            self.assertIn('%s:53: /Faktura/Fa/P_15: P_15 is 2052.00' % bad,
                output)
            self.assertIn('%s: FAILED (1 error(s))' % bad, output)
            status, output = self.run_command(
                os.path.join(folder, 'missing.xml'), bad)
            self.assertEqual(status, 2)
            self.assertIn('missing.xml: cannot read', output)

    def test_strict(self):
        with tempfile.TemporaryDirectory() as folder:
            name = os.path.join(folder, 'warn.xml')
            with open(name, 'wb') as f:
                f.write(sample_number(3))
            self.assertEqual(self.run_command(name)[0], 0)
            self.assertEqual(self.run_command(name, flags=['--strict'])[0],
                1)

    def test_cli_entry_point(self):
        from trytond_ksef import cli
        parser = cli.build_parser(['validate-fa3', 'x.xml'])
        args = parser.parse_args(['validate-fa3', 'x.xml'])
        self.assertEqual(args._module, 'trytond_ksef.fa3')
        self.assertEqual(args.files, ['x.xml'])


if __name__ == '__main__':
    unittest.main()
