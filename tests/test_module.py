# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime
import re
from decimal import Decimal
from types import SimpleNamespace

from trytond.i18n import gettext
from trytond.modules.company.tests import CompanyTestMixin
from trytond.pool import Pool
from trytond.tests.test_tryton import ModuleTestCase, with_transaction

from trytond_ksef import fa3

UTC = datetime.timezone.utc


class KsefTestCase(CompanyTestMixin, ModuleTestCase):
    "Test KSeF module"
    module = 'ksef'

    @with_transaction()
    def test_list_views_datetime_widgets(self):
        "The date-time columns of list views are shown as a date or a time"
        # Tryton's clients have no date-time column: the web client fails
        # to open a list (or a form embedding it) with one.
        from lxml import etree
        pool = Pool()
        View = pool.get('ir.ui.view')
        checked = 0
        for view in View.search([('module', '=', 'ksef')]):
            Model = pool.get(view.model)
            result = Model.fields_view_get(
                view_id=(view.inherit or view).id)
            if result['type'] != 'tree':
                continue
            for field in etree.fromstring(result['arch']).iter('field'):
                type_ = result['fields'][field.get('name')]['type']
                if type_ in {'datetime', 'timestamp'}:
                    checked += 1
                    with self.subTest(view=view.name, field=field.get('name')):
                        self.assertIn(field.get('widget'), {'date', 'time'})
        self.assertTrue(checked)

    @with_transaction()
    def test_fa3_messages(self):
        "Every data problem of the FA(3) core has a Tryton message"
        from trytond.modules.ksef.invoice import PROBLEM_PARAMS
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        params = dict.fromkeys(PROBLEM_PARAMS, 'x')
        for code, text in fa3.common.DATA_MESSAGES.items():
            with self.subTest(code=code):
                self.assertTrue(ModelData.get_id('ksef', 'msg_' + code))
                # every placeholder of the core is passed to the message
                self.assertLessEqual(
                    set(re.findall(r'{(\w+)}', text)),
                    set(PROBLEM_PARAMS) | {'field'})
                self.assertNotIn('%(', gettext('ksef.msg_' + code, **params))

    def test_fa3_rate_codes(self):
        "The rate codes of taxes are the core's, derived from Polish rates"
        from trytond.modules.ksef.tax import RATE_CODES, code_of_rate
        self.assertEqual([c for c, _ in RATE_CODES if c], list(fa3.TAX_CODES))
        for rate, code in [
                ('0.23', '23'), ('0.2300', '23'), ('0.22', '22'),
                ('0.08', '8'), ('0.07', '7'), ('0.05', '5'), ('0.04', '4'),
                ('0.03', '3'), ('0', None), ('0.19', None)]:
            with self.subTest(rate=rate):
                self.assertEqual(
                    code_of_rate('percentage', Decimal(rate)), code)
        self.assertIsNone(code_of_rate('fixed', Decimal('0.23')))
        self.assertIsNone(code_of_rate('percentage', None))

    @with_transaction()
    def test_fa3_tax_template_values(self):
        "The KSeF fields of a tax template are copied to its taxes"
        pool = Pool()
        TaxTemplate = pool.get('account.tax.template')
        base = dict(name="VAT zw", description="VAT zw", sequence=None,
            amount=None, rate=Decimal(0), type='percentage',
            start_date=None, end_date=None, update_unit_price=False,
            legal_notice=None, active=True, group=None)
        ksef = dict(ksef_rate_code='zw', ksef_exemption_kind='directive',
            ksef_exemption_basis="art. 135 ust. 1 lit. g")
        template = TaxTemplate(**base, **ksef)
        values = template._get_tax_value()
        for name, value in ksef.items():
            self.assertEqual(values[name], value)
        same = SimpleNamespace(**base, **ksef, template=template)
        values = template._get_tax_value(same)
        self.assertFalse(set(ksef) & set(values))
        changed = SimpleNamespace(**base, **dict(ksef, ksef_rate_code='oo'),
            template=template)
        self.assertEqual(template._get_tax_value(changed),
            {'ksef_rate_code': 'zw'})

    def test_fa3_buyer_identifier(self):
        "Tax identifiers of Tryton as FA(3) buyer identifiers"
        from trytond.modules.ksef.invoice import buyer_identifier
        model = fa3.model

        def identifier(type_, code, compact=None):
            return SimpleNamespace(type=type_, code=code,
                code_compact=compact or code)
        for value, expected in [
                (identifier('pl_vat', '526-000-12-46', '5260001246'),
                    (model.NIP, '5260001246', None)),
                (identifier('eu_vat', 'DE136695976'),
                    (model.EU_VAT, 'DE136695976', None)),
                (identifier('eu_vat', 'PL5260001246'),
                    (model.EU_VAT, 'PL5260001246', None)),
                (identifier('de_vat', '136695976'),
                    (model.EU_VAT, '136695976', 'DE')),
                (identifier('gr_vat', '094259216'),
                    (model.EU_VAT, '094259216', 'EL')),
                (identifier('gb_vat', '980780684'),
                    (model.OTHER, '980780684', 'GB')),
                (identifier('us_ein', '04-2103594', '042103594'),
                    (model.OTHER, '042103594', 'US')),
                (identifier('xx_foo', '1'), (model.OTHER, '1', None)),
                (None, (None, None, None)),
                ]:
            with self.subTest(value=value):
                self.assertEqual(buyer_identifier(value), expected)

    def test_fa3_bank_account(self):
        "A bank.account payment instrument (module bank) in FA(3)"
        from trytond.modules.ksef.invoice import bank_account
        iban = SimpleNamespace(type='iban',
            number='PL61 1090 1014 0000 0712 1981 2874',
            number_compact='PL61109010140000071219812874')
        other = SimpleNamespace(type='other', number='123456',
            number_compact='123456')
        instrument = SimpleNamespace(**{'__name__': 'bank.account'},
            numbers=[other, iban], bank=SimpleNamespace(bic='WBKPPLPP',
                party=SimpleNamespace(name="Santander Bank Polska")))
        account = bank_account(instrument)
        self.assertEqual(account, fa3.BankAccount(
                number='PL61109010140000071219812874', swift='WBKPPLPP',
                bank_name="Santander Bank Polska"))
        self.assertIsNone(bank_account(SimpleNamespace(
                    **{'__name__': 'account.invoice.payment.mean'})))
        self.assertIsNone(bank_account(None))
        # The mapped account makes a valid document.
        invoice = fa3.Invoice(
            seller=fa3.Seller(nip='5265877635', name="Seller",
                address=fa3.Address('PL', "ul. Testowa 1", "00-001 Warszawa")),
            buyer=fa3.Buyer(name="Buyer", tax_identifier='1111111111',
                address=fa3.Address('PL', "ul. Polna 1", "00-002 Kraków")),
            number='FV/1', issue_date=datetime.date(2026, 2, 2),
            created=datetime.datetime(2026, 2, 2, tzinfo=UTC),
            lines=[fa3.Line("Service", Decimal(1), Decimal(100),
                    Decimal(100), '23')],
            payment=fa3.Payment(due_dates=[datetime.date(2026, 2, 16)],
                method=fa3.model.TRANSFER, bank_accounts=[account]))
        data = fa3.build(invoice)
        self.assertEqual([p for p in fa3.validate(data) if p.is_error], [])

    @with_transaction()
    def test_wizard_secrets_left_out_of_rpc_log(self):
        """Tryton's RPC log writes every argument in full at DEBUG level,
        except values whose key names a password, token or secret: every
        field of the module's wizard forms that may hold a key, a password
        or a token is named so."""
        from trytond.model import ModelSQL, ModelView
        from trytond.tools.logging import format_args, is_sensitive_key
        pool = Pool()
        # The fields of the module's forms known to be public.
        public = {
            ('ksef.certificate.upload.start', 'certificate'),
            }
        secret = 'S3cret-value-' * 8
        checked = []
        for name, Model_ in pool.iterobject():
            if (not issubclass(Model_, ModelView)
                    or issubclass(Model_, ModelSQL)
                    or not name.startswith('ksef.')):
                continue
            for field_name, field in Model_._fields.items():
                if field._type not in {'binary', 'char', 'text'}:
                    continue
                with self.subTest(model=name, field=field_name):
                    if (name, field_name) in public:
                        continue
                    self.assertTrue(is_sensitive_key(field_name))
                    value = (secret.encode() if field._type == 'binary'
                        else secret)
                    # What the dispatcher logs for a wizard execute call.
                    line = str(format_args(
                            (1, {'start': {field_name: value}}, 'upload'),
                            {}, True))
                    self.assertNotIn('S3cret', line)
                    checked.append((name, field_name))
        self.assertIn(('ksef.certificate.upload.start', 'private_key_secret'),
            checked)
        self.assertIn(('ksef.token.set.start', 'token'), checked)


del ModuleTestCase
