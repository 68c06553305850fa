# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Printed invoices: the KSeF number and the QR codes (PROTOCOL.md §14).

A printed or e-mailed invoice issued through KSeF carries CODE I, the link
that lets anyone check the invoice in KSeF, labelled with its KSeF number
(or ``OFFLINE`` while it has none), and, for an invoice issued offline,
CODE II labelled ``CERTYFIKAT``.  The links point to the frozen FA(3)
bytes of the invoice's KSeF record; nothing is rebuilt here.

`KSeFPrint` gathers what a template needs; it is the ``ksef`` value of the
context of the KSeF Invoice report (template ``ksef_invoice.fodt``) and of
Tryton's own invoice report, so that a site with its own template can print
the same.
"""
import datetime
import struct
from decimal import Decimal
from types import SimpleNamespace

from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.report import Report
from trytond.transaction import Transaction, without_check_access

from trytond_ksef import qr

# Modes in which an invoice is issued without KSeF (it gets CODE II)
OFFLINE_MODES = frozenset(['offline24', 'offline', 'failure', 'total_failure'])
# Printed height of a QR image, label included: the natural size of the
# core's PNG (qr.DPI) kept between these bounds, in centimetres.  The
# height, unlike the width, hardly depends on the label: the symbol itself
# gets about 3 to 4 cm whatever the length of the label.
QR_MIN_HEIGHT = 3.5
QR_MAX_HEIGHT = 4.5
CM_PER_INCH = 2.54


class KSeFReportError(UserError):
    pass


class InvoiceKSeF(metaclass=PoolMeta):
    __name__ = 'account.invoice.ksef'

    code1_link = fields.Function(fields.Char(
            "CODE I Link",
            help="The link of the QR code printed on the invoice (CODE I): "
            "it shows the invoice in KSeF."),
        'get_code1_link')
    qr_label = fields.Function(fields.Char(
            "QR Label",
            help="The text printed under CODE I: the KSeF number, or "
            "OFFLINE while the invoice has none."),
        'get_qr_label')

    code1_image = fields.Function(fields.Binary(
            "CODE I",
            help="The QR code CODE I exactly as printed on the invoice."),
        'get_qr_image')
    code2_image = fields.Function(fields.Binary(
            "CODE II",
            help="The QR code CODE II exactly as printed on an invoice "
            "issued offline."),
        'get_qr_image')

    def get_code1_link(self, name=None):
        """CODE I of the frozen FA(3) document, or None without one.

        Built from the hash of the frozen bytes, the seller NIP and the
        date P_1 of that document, with the QR address of the environment
        of the authorization (trytond.conf overrides included)."""
        if not (self.fa3_hash and self.fa3_size and self.seller_nip
                and self.issue_date and self.authorization):
            return None
        urls = self.authorization.environment_urls()
        return qr.code1_link(
            urls.qr_url, self.seller_nip, self.issue_date, self.fa3_hash)

    def get_qr_label(self, name=None):
        return self.ksef_number or qr.LABEL_OFFLINE

    def get_qr_image(self, name):
        "The PNG of CODE I or CODE II that the printed invoice shows."
        codes = self.qr_codes()
        index = {'code1_image': 0, 'code2_image': 1}[name]
        if index < len(codes):
            return qr.png(*codes[index])

    def qr_codes(self):
        """The (link, label) of each QR code to print on the invoice.

        CODE I with the KSeF number or OFFLINE, then CODE II with
        CERTYFIKAT when the invoice was issued offline.  None in total
        failure mode, where invoices carry no QR code."""
        if self.mode == 'total_failure':
            return []
        link = self.get_code1_link()
        if not link:
            return []
        codes = [(link, self.get_qr_label())]
        if self.code2_link:
            codes.append((self.code2_link, qr.LABEL_CERTIFICATE))
        return codes


class QRImage:
    """One QR code of a printed invoice; its PNG is drawn once, when first
    used."""
    __slots__ = ('code', 'link', 'label', '_png')

    def __init__(self, code, link, label):
        self.code = code  # 'I' or 'II'
        self.link = link
        self.label = label
        self._png = None

    @property
    def png(self):
        if self._png is None:
            self._png = qr.png(self.link, self.label)
        return self._png

    @property
    def image(self):
        "The value of a relatorio ``image:`` frame."
        return (self.png, 'image/png') + printed_size(self.png)


def printed_size(png):
    "('4.05cm', '3.50cm'): the printed width and height of `png`."
    width, height = struct.unpack('>II', png[16:24])  # IHDR
    natural = height / qr.DPI * CM_PER_INCH
    printed = min(max(natural, QR_MIN_HEIGHT), QR_MAX_HEIGHT)
    return ('%.2fcm' % (printed * width / height), '%.2fcm' % printed)


class KSeFPrint:
    """What a printed invoice shows of KSeF: the ``ksef`` value of the
    invoice reports' context.

    - ``record``: the ``account.invoice.ksef`` of the invoice, or None
      (draft invoice, supplier invoice, company not using KSeF);
    - ``number``: the KSeF number, None until KSeF assigns it;
    - ``state``, ``mode``: of the record, or None;
    - ``offline``: True when the invoice was issued in an offline mode;
    - ``label``: the label of CODE I (the KSeF number or 'OFFLINE');
    - ``codes``: the `QRImage` to print, in order (CODE I, then CODE II);
      ``code1`` and ``code2`` are each of them or None;
    - ``images``: the relatorio ``image:`` values of ``codes``;
    - ``seller_nip``: the seller NIP of the KSeF document;
    - ``corrective``: True for a correction (credit note).
    """

    def __init__(self, invoice):
        record = None
        if invoice.type == 'out' and invoice.ksef_records:
            record = invoice.ksef_records[0]
        self.record = record
        self.number = record.ksef_number if record else None
        self.state = record.state if record else None
        self.mode = record.mode if record else None
        self.offline = bool(record and record.mode in OFFLINE_MODES)
        self.label = record.get_qr_label() if record else None
        self.seller_nip = record.seller_nip if record else None
        if record:
            self.corrective = record.kind == 'KOR'
        else:
            self.corrective = invoice.type == 'out' and (
                invoice.total_amount < 0 or any(
                    i.type == 'out' for i in invoice.origin_invoices))
        self.codes = []
        if record:
            for code, (link, label) in zip(
                    ['I', 'II'], record.qr_codes()):
                self.codes.append(QRImage(code, link, label))
        self.code1 = self.codes[0] if self.codes else None
        self.code2 = self.codes[1] if len(self.codes) > 1 else None

    @property
    def images(self):
        return [c.image for c in self.codes]

    def __bool__(self):
        return self.record is not None

    @classmethod
    def get(cls, invoice):
        """The `KSeFPrint` of `invoice` (record or id), read without access
        checks: whoever may print the invoice may print its KSeF data."""
        pool = Pool()
        Invoice = pool.get('account.invoice')
        with without_check_access():
            return cls(Invoice(int(invoice.id)))


def polish_lang():
    "The ir.lang that formats the numbers and dates of a Polish invoice."
    pool = Pool()
    Lang = pool.get('ir.lang')
    langs = Lang.search([('code', '=', 'pl')], limit=1)
    if langs:
        return langs[0]
    return Lang.get()


class InvoiceReport(metaclass=PoolMeta):
    __name__ = 'account.invoice'

    @classmethod
    def get_context(cls, records, header, data):
        context = super().get_context(records, header, data)
        record = context.get('record')
        context['ksef'] = KSeFPrint.get(record) if record else None
        return context


class InvoiceKSeFReport(Report):
    """KSeF Invoice

    A Polish invoice with bilingual (Polish / English) labels, its KSeF
    number and its QR codes (template ksef_invoice.fodt)."""
    __name__ = 'account.invoice.ksef_print'

    @classmethod
    def get_context(cls, records, header, data):
        pool = Pool()
        Date = pool.get('ir.date')
        context = super().get_context(records, header, data)
        invoice = context['record']
        if invoice.type != 'out':
            raise KSeFReportError(gettext(
                    'ksef.msg_report_customer_only',
                    invoice=invoice.rec_name))
        lang = polish_lang()
        currency_digits = invoice.currency.digits
        context['invoice'] = invoice
        context['ksef'] = KSeFPrint.get(invoice)
        context['lang'] = lang
        context['seller_address'] = invoice.company.party.address_get(
            type='invoice')
        # Set on the invoice when it is posted
        context['seller_tax_identifier'] = (invoice.tax_identifier
            or invoice.company.party.tax_identifier)
        context['due_dates'] = sorted({line.maturity_date
                for line in invoice.lines_to_pay if line.maturity_date})
        context['corrected_invoices'] = corrected_invoices(invoice)
        context['format_amount'] = lambda value: lang.format_number(
            value, digits=currency_digits)
        context['format_price'] = lambda value: lang.format_number(
            value, digits=max(currency_digits, decimals(value)))
        context['format_quantity'] = lambda value: lang.format_number(
            value, digits=decimals(value))
        context['tax_name'] = tax_name
        context['tax_identifier_label'] = tax_identifier_label
        context['tax_identifier_code'] = tax_identifier_code
        context['line_description'] = line_description
        with Transaction().set_context(company=invoice.company.id):
            context['today'] = Date.today()
        return context


def decimals(value):
    "The number of significant decimals of `value` (2.50 -> 1, 3.0 -> 0)."
    if value is None:
        return 0
    if not isinstance(value, Decimal):
        value = Decimal(repr(value))
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def tax_name(tax):
    return tax.description or tax.name


def tax_identifier_label(identifier):
    if identifier.type == 'pl_vat':
        return 'NIP'
    if identifier.type == 'eu_vat':
        return 'VAT UE / EU VAT'
    return identifier.type_string or identifier.type


def tax_identifier_code(identifier):
    if identifier.type == 'pl_vat':
        return identifier.code_compact or identifier.code
    return identifier.code


def line_description(line):
    if line.description:
        return line.description
    if line.product:
        return line.product.rec_name
    return ''


def corrected_invoices(invoice):
    """The customer invoices `invoice` corrects, with their KSeF number
    (read without access checks, as `KSeFPrint`)."""
    pool = Pool()
    Invoice = pool.get('account.invoice')
    with without_check_access():
        invoice = Invoice(int(invoice.id))
        originals = sorted(
            (i for i in invoice.origin_invoices
                if i.type == 'out' and i.company == invoice.company),
            key=lambda i: (i.invoice_date or datetime.date.min,
                i.number or '', i.id))
        return [SimpleNamespace(
                number=i.number or '',
                invoice_date=i.invoice_date,
                ksef_number=(i.ksef_records[0].ksef_number
                    if i.ksef_records else None))
            for i in originals]
