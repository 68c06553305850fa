# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""FA(3) rate codes (P_12) and exemption bases on taxes and tax templates.

The FA(3) invoice groups its amounts by rate code, not by rate: '23', '8',
'0 KR' (0 % domestic), '0 WDT' (0 % intra-Community supply), '0 EX' (0 %
export), 'zw' (exempt), 'oo' (domestic reverse charge), 'np I' / 'np II'
(not taxable in Poland).  A percentage tax of a standard Polish rate gets
its code from the rate; every other tax (0 %, exempt, reverse charge...)
needs its code set by the accountant.
"""
from decimal import Decimal

from trytond.model import fields
from trytond.pool import PoolMeta
from trytond.pyson import Bool, Eval

from trytond_ksef.fa3 import TAX_CODES

RATE_CODE_LABELS = {
    '23': "23%",
    '22': "22%",
    '8': "8%",
    '7': "7%",
    '5': "5%",
    '4': "4% (passenger taxis)",
    '3': "3% (passenger taxis, before 2011)",
    '0 KR': "0% domestic (0 KR)",
    '0 WDT': "0% intra-Community supply (0 WDT)",
    '0 EX': "0% export (0 EX)",
    'zw': "Exempt (zw)",
    'oo': "Domestic reverse charge (oo)",
    'np I': "Not taxable in Poland (np I)",
    'np II': "Not taxable in Poland, art. 100(1)(4) services (np II)",
    }
# In the order of the core's table, which follows the XSD.
RATE_CODES = [(None, "")] + [
    (code, RATE_CODE_LABELS[code]) for code in TAX_CODES]
# rate -> code for the codes that have a rate ('23': 0.23, ...)
CODE_OF_RATE = {rate: code for code, (_, rate) in TAX_CODES.items()
    if rate is not None}

EXEMPTION_KINDS = [
    ('law', "Polish VAT act (P_19A)"),
    ('directive', "Directive 2006/112/EC (P_19B)"),
    ('other', "Other legal basis (P_19C)"),
    ]
KSEF_TAX_FIELDS = [
    'ksef_rate_code', 'ksef_exemption_kind', 'ksef_exemption_basis']


def code_of_rate(type_, rate):
    """The FA(3) code of a percentage tax of `rate`, or None when the rate
    does not tell (0 % is 0 KR, 0 WDT, 0 EX, zw, oo or np)."""
    if type_ != 'percentage' or rate is None:
        return None
    return CODE_OF_RATE.get(Decimal(rate))


class TaxKSeFMixin:
    __slots__ = ()
    ksef_rate_code = fields.Selection(RATE_CODES, "KSeF Rate Code",
        sort=False,
        help="The rate code (P_12) of the sales with this tax on a KSeF "
        "(FA(3)) invoice.\n"
        "Left empty, a percentage tax of a Polish rate (23, 8, 5...) uses "
        "its rate; 0% and exempt taxes need it set.")
    ksef_exemption_kind = fields.Selection(EXEMPTION_KINDS,
        "KSeF Exemption Basis Type",
        states={
            'invisible': Eval('ksef_rate_code') != 'zw',
            },
        help="What the legal basis of the exemption refers to.")
    ksef_exemption_basis = fields.Char("KSeF Exemption Basis",
        states={
            'invisible': Eval('ksef_rate_code') != 'zw',
            },
        help="The legal basis of the exemption written on KSeF invoices, "
        "e.g. \"art. 43 ust. 1 pkt 37 ustawy o VAT\".  Required to post "
        "an invoice with an exempt (zw) sale.")

    @classmethod
    def default_ksef_exemption_kind(cls):
        return 'law'

    @fields.depends('type', 'rate', 'ksef_rate_code')
    def on_change_rate(self):
        code = code_of_rate(self.type, self.rate)
        if code:
            self.ksef_rate_code = code

    @fields.depends(methods=['on_change_rate'])
    def on_change_type(self):
        self.on_change_rate()

    @property
    def ksef_code(self):
        "The FA(3) code of the tax: the one set, or the one of its rate."
        return self.ksef_rate_code or code_of_rate(self.type, self.rate)


class TaxTemplate(TaxKSeFMixin, metaclass=PoolMeta):
    __name__ = 'account.tax.template'

    def _get_tax_value(self, tax=None):
        values = super()._get_tax_value(tax=tax)
        for name in KSEF_TAX_FIELDS:
            if not tax or getattr(tax, name) != getattr(self, name):
                values[name] = getattr(self, name)
        return values


class Tax(TaxKSeFMixin, metaclass=PoolMeta):
    __name__ = 'account.tax'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        # Like the template-driven fields of account.tax, but with
        # 'readonly' as 8.0 has no 'editable' state.
        readonly = (Bool(Eval('template', -1))
            & ~Eval('template_override', False))
        for name in KSEF_TAX_FIELDS:
            field = getattr(cls, name)
            field.states = dict(field.states or {}, readonly=readonly)

    @property
    def ksef_code(self):
        """The FA(3) code of the tax: the one set, the one of its rate, the
        one of a parent, or the single code of its children."""
        code = super().ksef_code
        parent = self.parent
        while not code and parent:
            code = parent.ksef_rate_code
            parent = parent.parent
        if not code and self.childs:
            codes = {c.ksef_code for c in self.childs} - {None}
            if len(codes) == 1:
                code, = codes
        return code

    @property
    def ksef_exemption_tax(self):
        "The tax carrying the exemption basis: itself or its parent."
        tax = self
        while tax and not tax.ksef_exemption_basis and tax.parent:
            tax = tax.parent
        return tax
