# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The demo behind `make demo`: the module end to end against the simulator.

Run by tools/dev.py with the demo venv's Python (Tryton 8.0).  It creates
an SQLite Tryton database in demo-out/db, starts the KSeF simulator on
loopback and drives the module through proteus, as a user would through
the client:

* two companies with checksum-valid test NIPs, Polish taxes with their
  FA(3) rate codes, customers (Polish business, EU business, foreign
  business, consumer), KSeF-shaped self-signed certificates uploaded with
  the upload wizard; both companies use KSeF's TEST environment, whose API
  and status-service addresses trytond.conf points at the simulator;
* invoices accepted online (domestic 23/8/5 %, exempt, EU reverse charge,
  foreign currency, a credit note), then a KSeF outage announced on the
  status service: invoices issued offline with QR CODE II, one of a
  company without offline certificate left pending; the outage ends, the
  send cron runs, everything is accepted.

Every expectation is checked: the demo exits with status 1 at the first
one that fails.  It writes to demo-out/: trytond.conf and db/ (served by
`trytond -c demo-out/trytond.conf -d ksef_demo`), fa3/, upo/, qr/,
reports/, auth/, certs/, simulator-log.jsonl and summary.json.
"""
import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from decimal import Decimal
from io import BytesIO
from zoneinfo import ZoneInfo

import httpx
from proteus import Model, Report, Wizard
from proteus import config as pconfig

from trytond_ksef import fa3, ksef_number, qr, testcerts, xmlutil
from trytond_ksef.certificates import load_certificate
from trytond_ksef.crypto import sha256_b64
from trytond_ksef.simulator import serve_in_thread

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DB_NAME = 'ksef_demo'
DEFAULT_PORT = 8765
WARSAW = ZoneInfo('Europe/Warsaw')
# What the demo writes in its output folder (removed first)
OUTPUTS = ['trytond.conf', 'db', 'fa3', 'upo', 'qr', 'reports', 'auth',
    'certs', 'simulator-log.jsonl', 'summary.json']
ADMIN_PASSWORD = 'admin'
KEY_PASSWORD = 'demo-haslo'
TEST_QR_URL = 'https://qr-test.ksef.mf.gov.pl/'

SELLER = {
    'slug': 'ksef-demo', 'name': "KSeF Demo sp. z o.o.",
    'nip': '5251111113', 'street': "ul. Prosta 20",
    'postal_code': "00-850", 'city': "Warszawa",
    'prefix': 'FV/${year}/', 'credit_prefix': 'KOR/${year}/',
    }
SECOND = {
    'slug': 'druga-firma', 'name': "Druga Firma S.A.",
    'nip': '7770001111', 'street': "ul. Piotrkowska 100",
    'postal_code': "90-006", 'city': "Łódź",
    'prefix': 'DF/${year}/', 'credit_prefix': 'DFK/${year}/',
    }


class DemoError(Exception):
    "An expectation of the demo that was not met."


def check(condition, message, *args):
    if not condition:
        raise DemoError(message % args if args else message)


_START = time.monotonic()


def step(msg):
    print("==> [%5.1f s] %s" % (time.monotonic() - _START, msg), flush=True)


def note(msg):
    print("    " + msg, flush=True)


def safe_name(number):
    "A file name for an invoice number (they contain '/')."
    return ''.join(c if c.isalnum() or c in '-_.' else '-' for c in number)


# --- output folder, trytond.conf, database ---------------------------------

def prepare_output(out):
    os.makedirs(out, exist_ok=True)
    for name in OUTPUTS:
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    for name in ['db', 'fa3', 'upo', 'qr', 'reports', 'auth', 'certs']:
        os.makedirs(os.path.join(out, name))


def write_config(out, port):
    """trytond.conf of the demo database: also what `trytond -c` serves
    it with, so its [ksef] section points KSeF TEST at the simulator."""
    root = 'http://127.0.0.1:%d' % port
    path = os.path.join(out, 'trytond.conf')
    with open(path, 'w') as f:
        f.write("""\
# Written by `make demo` (tools/demo.py) for the database in db/.
[database]
uri = sqlite://
path = {db}

[web]
listen = 127.0.0.1:8000

[ksef]
# Encrypts the private keys stored in this demo database (made for it).
secret_key = {secret}
# KSeF TEST goes to the simulator:  trytond-ksef simulator --port {port}
test_api_url = {root}/v2
test_status_url = {root}/latarnia
timeout = 10
# Quick retries for the demo (defaults: 3 attempts, a retry after 300 s).
max_attempts = 1
retry_delay = 2
poll_interval = 0.05
""".format(db=os.path.join(out, 'db'), secret=secrets.token_urlsafe(32),
                port=port, root=root))
    return path


def create_database(config_path):
    db_file = os.path.join(os.path.dirname(config_path), 'db',
        DB_NAME + '.sqlite')
    open(db_file, 'w').close()
    with tempfile.NamedTemporaryFile('w', suffix='.pass') as passfile:
        passfile.write(ADMIN_PASSWORD + '\n')
        passfile.flush()
        env = dict(os.environ, TRYTONPASSFILE=passfile.name)
        bindir = os.path.dirname(sys.executable)
        try:
            subprocess.run([os.path.join(bindir, 'trytond-admin'),
                    '-c', config_path, '-d', DB_NAME,
                    '--activate-dependencies', '-u', 'ksef',
                    '--email', 'admin@example.com'],
                check=True, env=env, stdout=subprocess.DEVNULL)
        except subprocess.CalledProcessError as error:
            raise DemoError("trytond-admin failed (exit status %s)"
                % error.returncode) from None
    return db_file


# --- the simulator ---------------------------------------------------------

class SimulatorAdmin:
    "The simulator's administration API over HTTP (/_sim), as a script."

    def __init__(self, root_url):
        self.http = httpx.Client(base_url=root_url + '/_sim', timeout=10)

    def call(self, method, path, **kwargs):
        response = self.http.request(method, path, **kwargs)
        check(response.status_code < 300, "simulator admin %s %s: %s %s",
            method, path, response.status_code, response.text)
        return response

    def outage(self):
        "KSeF's API answers 503 to everything; the status service stays up."
        return self.call('POST', '/faults', json={'kind': 'outage',
                'path': '^/v2/', 'persistent': True,
                'status': 503}).json()['id']

    def end_outage(self, fault_id):
        self.call('DELETE', '/faults/%d' % fault_id)

    def announce_failure(self):
        return self.call('POST', '/latarnia', json={'category': 'FAILURE',
                'title': "Awaria KSeF", 'text': "Trwa awaria systemu KSeF "
                "(symulacja make demo)."}).json()['eventId']

    def end_failure(self, event_id):
        self.call('POST', '/latarnia/%d/end' % event_id, json={})

    def auth_document(self, nip):
        "The first signed AuthTokenRequest of the NIP context, as received."
        for operation in self.call('GET', '/auth').json():
            if (operation['category'] == 'XadesSignature'
                    and operation['contextIdentifier']['value'] == nip
                    and operation['status']['code'] == 200):
                data = self.call('GET', '/auth/%s/document'
                    % operation['referenceNumber']).content
                return data, operation['documentHash']
        raise DemoError("the simulator saw no XAdES authentication of %s"
            % nip)


def check_port(port):
    "Refuse a taken port before touching the output of a previous run."
    import socket
    with socket.socket() as sock:
        # as the server does: connections of a previous run in TIME_WAIT
        # do not hold the port, a listening socket does
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(('127.0.0.1', port))
        except OSError as error:
            raise DemoError("cannot start the simulator on 127.0.0.1:%s (%s):"
                " stop what uses the port (a simulator started by hand?) or"
                " pass --port" % (port, error.strerror or error)) from None


def start_simulator(port, log_path):
    check_port(port)
    return serve_in_thread(port=port, log_path=log_path,
        processing_delay=0.05)


# --- the demo proper, through proteus --------------------------------------

class Demo:

    def __init__(self, out, config_path, server):
        self.out = out
        self.server = server
        self.simulator = server.simulator
        self.admin_api = SimulatorAdmin(server.root_url)
        self.config = pconfig.set_trytond(DB_NAME,
            config_file=config_path)
        self.today = dt.datetime.now(WARSAW).date()
        self.invoices = []      # (company settings, invoice), in order
        self.certificates = {}  # (slug, purpose) -> DER
        self.table = []         # the rows of the printed table

    def get(self, name):
        return Model.get(name)

    # -- setup ---------------------------------------------------------------

    def setup_common(self):
        User = self.get('res.user')
        Group = self.get('res.group')
        Item = self.get('ir.module.config_wizard.item')
        Country = self.get('country.country')
        Currency = self.get('currency.currency')
        Uom = self.get('product.uom')
        UomCategory = self.get('product.uom.category')
        PaymentTerm = self.get('account.invoice.payment_term')

        # The database opens the menu, not the configuration wizard.
        for item in Item.find([('state', '!=', 'done')]):
            item.state = 'done'
            item.save()
        # On Tryton 8.0 the administrator joins the KSeF group by hand.
        admin = User(self.config.user)
        group, = Group.find([('name', '=', "KSeF Administrator")])
        if group not in admin.groups:
            admin.groups.append(group)
            admin.save()

        self.countries = {}
        for code, name in [('PL', "Polska"), ('DE', "Niemcy"),
                ('US', "Stany Zjednoczone")]:
            country = Country(name=name, code=code)
            country.save()
            self.countries[code] = country
        self.currencies = {}
        for code, name, symbol in [('PLN', "Złoty", 'zł'),
                ('EUR', "Euro", '€'), ('USD', "Dolar amerykański", '$')]:
            currency = Currency(name=name, code=code, symbol=symbol,
                rounding=Decimal('0.01'))
            currency.save()
            self.currencies[code] = currency
        # Rates relative to the euro: 1 EUR = 4.25 PLN, 1 USD = 3.40 PLN,
        # dated the day before (the NBP rate of the previous business day).
        rate_date = self.today - dt.timedelta(days=1)
        for code, rate in [('PLN', '4.25'), ('EUR', '1'), ('USD', '1.25')]:
            self.currencies[code].rates.new(date=rate_date,
                rate=Decimal(rate))
            self.currencies[code].save()
        unit = Uom(name="sztuka", symbol='szt.',
            category=UomCategory.find([('name', '=', 'Units')])[0],
            rate=1, factor=1, rounding=Decimal('1'), digits=0)
        unit.save()
        self.unit = unit
        term = PaymentTerm(name="14 dni")
        line = term.lines.new(type='remainder')
        line.relativedeltas.new(days=14)
        term.save()
        self.payment_term = term

    def customers(self):
        Party = self.get('party.party')

        def party(name, street, postal_code, city, country, identifier=None):
            record = Party(name=name)
            address, = record.addresses
            address.street = street
            address.postal_code = postal_code
            address.city = city
            address.country = self.countries[country]
            if identifier:
                record.identifiers.new(type=identifier[0],
                    code=identifier[1])
            record.save()
            return record
        self.polish = party("Nabywca sp. z o.o.", "ul. Floriańska 3",
            "31-019", "Kraków", 'PL', ('pl_vat', '6760001238'))
        # The German VAT number type: Tryton 8.2 would ask VIES (network)
        # to check an eu_vat identifier.
        self.eu = party("EFG GmbH", "Blümchenstraße 1", "10999", "Berlin",
            'DE', ('de_vat', '136695976'))
        self.foreign = party("Acme Corporation", "1 Market Street",
            "94105", "San Francisco, CA", 'US', ('us_ein', '043210987'))
        self.consumer = party("Jan Nowak", "ul. Lipowa 3", "00-003",
            "Warszawa", 'PL')

    def create_company(self, settings):
        "The company, its chart of accounts, taxes and fiscal year."
        Party = self.get('party.party')
        Account = self.get('account.account')
        AccountTemplate = self.get('account.account.template')
        ModelData = self.get('ir.model.data')
        Company = self.get('company.company')

        party = Party(name=settings['name'])
        address, = party.addresses
        address.street = settings['street']
        address.postal_code = settings['postal_code']
        address.city = settings['city']
        address.country = self.countries['PL']
        party.identifiers.new(type='pl_vat', code=settings['nip'])
        party.save()
        wizard = Wizard('company.company.config')
        wizard.execute('company')
        wizard.form.party = party
        wizard.form.currency = self.currencies['PLN']
        wizard.form.timezone = 'Europe/Warsaw'
        wizard.execute('add')
        company, = Company.find([('party', '=', party.id)])
        self.use_company(company)
        settings['company'] = company

        chart = Wizard('account.create_chart')
        chart.execute('account')
        chart.form.account_template = AccountTemplate(
            ModelData.get_id('account', 'account_template_root_en',
                self.config.context))
        chart.form.company = company
        chart.execute('create_account')

        def account(domain):
            found = Account.find([('company', '=', company.id),
                    ('closed', '!=', True)] + domain, limit=1)
            check(found, "no account %s in the chart", domain)
            return found[0]
        accounts = {
            'receivable': account([('type.receivable', '=', True)]),
            'payable': account([('type.payable', '=', True)]),
            'revenue': account([('type.revenue', '=', True)]),
            'expense': account([('type.expense', '=', True)]),
            'tax': account([('code', '=', '6.3.6')]),
            }
        chart.form.account_receivable = accounts['receivable']
        chart.form.account_payable = accounts['payable']
        if hasattr(chart.form, 'category_account_revenue'):
            chart.form.category_account_revenue = accounts['revenue']
            chart.form.category_account_expense = accounts['expense']
        chart.execute('create_properties')
        settings['accounts'] = accounts
        settings['taxes'] = self.create_taxes(company, accounts['tax'])
        self.create_fiscalyear(company, settings)
        return company

    def use_company(self, company):
        "Work in `company` (the user's current company)."
        User = self.get('res.user')
        admin = User(self.config.user)
        if company not in admin.companies:
            admin.companies.append(company)
        admin.company = company
        admin.save()
        self.config._context = User.get_preferences(True, {})

    def create_taxes(self, company, account):
        """Polish VAT: 23, 8 and 5 % get their FA(3) rate code from the
        rate; exempt, reverse-charge and export taxes have theirs set."""
        Tax = self.get('account.tax')
        taxes = {}
        for key, name, rate, code, basis in [
                ('23', "VAT 23%", '0.23', None, None),
                ('8', "VAT 8%", '0.08', None, None),
                ('5', "VAT 5%", '0.05', None, None),
                ('zw', "VAT zw (zwolnione)", '0', 'zw',
                    "art. 43 ust. 1 pkt 29 lit. a ustawy o VAT"),
                ('np II', "VAT np (usługi UE, odwrotne obciążenie)", '0',
                    'np II', None),
                ('0 EX', "VAT 0% eksport towarów", '0', '0 EX', None)]:
            tax = Tax(name=name, description=name, type='percentage',
                rate=Decimal(rate), company=company,
                invoice_account=account, credit_note_account=account)
            if code:
                tax.ksef_rate_code = code
            if basis:
                tax.ksef_exemption_kind = 'law'
                tax.ksef_exemption_basis = basis
            tax.save()
            check(tax.ksef_rate_code == key,
                "tax %s has KSeF rate code %r", name, tax.ksef_rate_code)
            taxes[key] = tax
        return taxes

    def create_fiscalyear(self, company, settings):
        FiscalYear = self.get('account.fiscalyear')
        Sequence = self.get('ir.sequence.strict')
        SequenceType = self.get('ir.sequence.type')
        year = self.today.year

        def sequence(type_name, name, prefix):
            type_, = SequenceType.find([('name', '=', type_name)], limit=1)
            record = Sequence(name=name, sequence_type=type_,
                company=company, prefix=prefix, padding=4)
            record.save()
            return record
        fiscalyear = FiscalYear(name=str(year), company=company,
            start_date=dt.date(year, 1, 1), end_date=dt.date(year, 12, 31))
        fiscalyear.move_sequence = sequence("Account Move",
            "Dzienniki %s" % year, '')
        invoices = sequence("Invoice", "Faktury %s" % year,
            settings['prefix'])
        credits = sequence("Invoice", "Korekty %s" % year,
            settings['credit_prefix'])
        sequences, = fiscalyear.invoice_sequences
        sequences.out_invoice_sequence = invoices
        sequences.in_invoice_sequence = invoices
        sequences.out_credit_note_sequence = credits
        sequences.in_credit_note_sequence = credits
        fiscalyear.save()
        fiscalyear.click('create_period')

    def configure_ksef(self, settings, offline):
        """The KSeF authorization of the company (TEST environment) and
        its certificates, uploaded with the wizard: the authentication
        certificate as .crt/.key files with a password, the offline one as
        a PKCS#12 bundle; `offline` False skips offline certificates."""
        Authorization = self.get('ksef.authorization')
        company = settings['company']
        self.use_company(company)
        authorization = Authorization(company=company, environment='test',
            skip_offline=not offline)
        authorization.save()
        check(authorization.nip == settings['nip'],
            "the authorization's NIP is %r", authorization.nip)
        name = settings['name']
        der, key = testcerts.make_certificate('authentication',
            nip=settings['nip'], seal=True, common_name=name,
            key=testcerts.new_key('rsa'))
        wizard = Wizard('ksef.certificate.upload', [authorization])
        wizard.form.purpose = 'authentication'
        wizard.form.file_format = 'separate'
        wizard.form.certificate = testcerts.pem(der)
        wizard.form.private_key_secret = testcerts.private_key_pem(key,
            password=KEY_PASSWORD)
        wizard.form.password = KEY_PASSWORD
        wizard.execute('upload')
        self.certificates[settings['slug'], 'authentication'] = der
        if offline:
            der, key = testcerts.make_certificate('offline',
                nip=settings['nip'], seal=True, common_name=name,
                key=testcerts.new_key('ec'))
            wizard = Wizard('ksef.certificate.upload', [authorization])
            wizard.form.purpose = 'offline'
            wizard.form.file_format = 'pkcs12'
            wizard.form.pkcs12_secret = testcerts.pkcs12(der, key,
                password=KEY_PASSWORD)
            wizard.form.password = KEY_PASSWORD
            wizard.execute('upload')
            self.certificates[settings['slug'], 'offline'] = der
        authorization.reload()
        check(authorization.offline_available == offline,
            "%s: offline issuing available is %s", name,
            authorization.offline_available)
        purposes = sorted(c.purpose for c in authorization.certificates
            if c.active)
        check(purposes == (['authentication', 'offline'] if offline
                else ['authentication']),
            "%s: active certificates %s", name, purposes)
        settings['authorization'] = authorization

    # -- invoices -----------------------------------------------------------

    def invoice(self, settings, party, lines, currency='PLN'):
        Invoice = self.get('account.invoice')
        Tax = self.get('account.tax')
        record = Invoice(type='out', party=party,
            payment_term=self.payment_term, invoice_date=self.today)
        record.currency = self.currencies[currency]
        for description, quantity, price, tax in lines:
            line = record.lines.new()
            line.account = settings['accounts']['revenue']
            line.description = description
            line.quantity = quantity
            line.unit = self.unit
            line.unit_price = Decimal(price)
            line.taxes.append(Tax(settings['taxes'][tax].id))
        record.save()
        return record

    def post(self, settings, record):
        "Post as the user would, accepting warnings; returns its KSeF record."
        from trytond.exceptions import UserWarning
        Warning = self.get('res.user.warning')
        for _ in range(5):
            try:
                record.click('post')
                break
            except UserWarning as warning:
                note("warning accepted: %s" % warning.message)
                Warning.skip(warning.name, False, self.config.context)
        record.reload()
        check(record.state == 'posted', "invoice %s is %s", record.id,
            record.state)
        self.invoices.append((settings, record))
        ksef, = record.ksef_records
        return ksef

    def expect(self, record, state, mode):
        ksef, = record.ksef_records
        check((ksef.state, ksef.mode) == (state, mode),
            "%s: KSeF state %s, mode %s (expected %s, %s): %s",
            record.number, ksef.state, ksef.mode, state, mode,
            record.ksef_message)
        if state == 'accepted':
            self.check_accepted(record, ksef)
        if mode == 'online':
            check(not ksef.code2_link, "%s: online with CODE II",
                record.number)
        else:
            self.check_code2(record, ksef)
        note("%-14s %-9s %-9s %s" % (record.number, ksef.mode, ksef.state,
                ksef.ksef_number or ''))
        return ksef

    def check_accepted(self, record, ksef):
        check(ksef_number.validate(ksef.ksef_number or ''),
            "%s: invalid KSeF number %r", record.number, ksef.ksef_number)
        check(ksef.ksef_number.startswith(ksef.seller_nip + '-'),
            "%s: KSeF number of another NIP", record.number)
        received = self.simulator.registry.by_number.get(ksef.ksef_number)
        check(received is not None and received.content == ksef.fa3,
            "%s: KSeF did not receive the frozen bytes", record.number)
        check(received.offline_declared == (ksef.mode != 'online'),
            "%s: sent with offlineMode=%s in mode %s", record.number,
            received.offline_declared, ksef.mode)
        check(ksef.upo, "%s: no UPO", record.number)
        upo = xmlutil.parse(ksef.upo)
        ns = {'u': xmlutil.NS_UPO}
        check(upo.findtext('.//u:NumerKSeFDokumentu', namespaces=ns)
            == ksef.ksef_number and upo.findtext(
                './/u:SkrotDokumentu', namespaces=ns) == ksef.fa3_hash,
            "%s: the UPO is not the receipt of this document",
            record.number)
        check(ksef.qr_label == ksef.ksef_number,
            "%s: CODE I labelled %r", record.number, ksef.qr_label)

    def check_code2(self, record, ksef):
        settings, = [s for s, r in self.invoices if r == record]
        der = self.certificates.get((settings['slug'], 'offline'))
        check(der, "%s: issued offline by %s, which has no offline "
            "certificate", record.number, settings['name'])
        check(ksef.code2_link and ksef.code2_link.startswith(
                TEST_QR_URL + 'certificate/'),
            "%s: issued offline without CODE II", record.number)
        check(qr.verify_code2_link(ksef.code2_link,
                load_certificate(der).public_key),
            "%s: CODE II is not signed by the offline certificate",
            record.number)

    def online(self):
        "Invoices sent at posting and accepted by KSeF."
        seller = SELLER
        self.use_company(seller['company'])
        step("Online: invoices posted and accepted by KSeF")
        domestic = self.invoice(seller, self.polish, [
                ("Monitor 27\"", 2, '899.00', '23'),
                ("Usługa remontowa", 1, '1500.00', '8'),
                ("Książka \"Ustawa o VAT\"", 3, '49.90', '5')])
        self.post(seller, domestic)
        self.expect(domestic, 'accepted', 'online')
        exempt = self.invoice(seller, self.consumer, [
                ("Szkolenie zawodowe", 1, '1200.00', 'zw')])
        self.post(seller, exempt)
        self.expect(exempt, 'accepted', 'online')
        eu = self.invoice(seller, self.eu, [
                ("Doradztwo informatyczne", 10, '120.00', 'np II')],
            currency='EUR')
        self.post(seller, eu)
        self.expect(eu, 'accepted', 'online')
        foreign = self.invoice(seller, self.foreign, [
                ("Zestaw narzędzi", 5, '240.00', '0 EX')], currency='USD')
        self.post(seller, foreign)
        self.expect(foreign, 'accepted', 'online')

        # A credit note of the accepted domestic invoice: one monitor back.
        Invoice = self.get('account.invoice')
        credit = Wizard('account.invoice.credit', [domestic])
        credit.form.with_refund = False
        credit.execute('credit')
        note_, = Invoice.find([('state', '=', 'draft'),
                ('company', '=', seller['company'].id)])
        for line in note_.lines[1:]:
            note_.lines.remove(line)
        note_.lines[0].quantity = -1
        note_.ksef_correction_reason = "Zwrot jednego monitora"
        note_.save()
        self.post(seller, note_)
        self.expect(note_, 'accepted', 'online')
        ksef, = note_.ksef_records
        check(ksef.kind == 'KOR', "the credit note is %s", ksef.kind)
        corrected = xmlutil.parse(ksef.fa3).findtext(
            './/f:DaneFaKorygowanej/f:NrKSeFFaKorygowanej',
            namespaces={'f': xmlutil.NS_FA3})
        check(corrected == domestic.ksef_number,
            "the credit note corrects %r", corrected)

    def outage(self):
        """KSeF down, announced on its status service: offline invoices
        with CODE II, a company without offline certificate waits."""
        Cron = self.get('ir.cron')
        Announcement = self.get('ksef.announcement')
        step("Outage: KSeF stops answering and announces a failure")
        fault = self.admin_api.outage()
        event = self.admin_api.announce_failure()
        note("simulator: API answers 503, status service announces "
            "failure %s" % event)
        announcements_cron, = Cron.find([
                ('method', '=', 'ksef.announcement|update_from_status_service'
                    )])
        send_cron, = Cron.find([
                ('method', '=', 'account.invoice.ksef|ksef_send')])

        seller = SELLER
        self.use_company(seller['company'])
        first = self.invoice(seller, self.polish, [
                ("Monitor 24\"", 1, '649.00', '23')])
        self.post(seller, first)
        self.expect(first, 'offline', 'offline')
        note("KSeF unreachable at sending: issued offline with CODE II")

        announcements_cron.click('run_once')
        failure, = Announcement.find([('category', '=', 'failure'),
                ('environment', '=', 'test')])
        check(failure.source == 'status_service' and failure.end is None,
            "announcement %s from %s ending %s", failure.title,
            failure.source, failure.end)
        note("status service read: failure since %s (UTC) recorded"
            % failure.start)
        announced = self.invoice(seller, self.consumer, [
                ("Kurs online", 1, '300.00', '23'),
                ("E-book", 1, '39.00', '5')])
        ksef = self.post(seller, announced)
        self.expect(announced, 'offline', 'failure')
        check(ksef.deadline is None, "deadline during the failure")
        note("failure announced: issued offline (failure mode) at posting")

        second = SECOND
        self.use_company(second['company'])
        waiting = self.invoice(second, self.polish, [
                ("Transport", 1, '800.00', '23')])
        ksef = self.post(second, waiting)
        self.expect(waiting, 'pending', 'online')
        note("no offline certificate: %s" % ksef.advice.splitlines()[0])

        step("KSeF is back: the status service ends the failure")
        self.admin_api.end_failure(event)
        self.admin_api.end_outage(fault)
        self.use_company(seller['company'])
        announcements_cron.click('run_once')
        failure.reload()
        check(failure.end is not None, "the failure has no end")
        for record in [first, announced]:
            record.reload()
            ksef, = record.ksef_records
            check(ksef.deadline and ksef.deadline >= self.today,
                "%s: deadline %s", record.number, ksef.deadline)
            note("%s must reach KSeF by %s" % (record.number, ksef.deadline))

        # Each failed attempt is retried retry_delay after it.
        attempts = []
        for settings, record in [(seller, first), (seller, announced),
                (second, waiting)]:
            self.use_company(settings['company'])
            record.reload()
            ksef, = record.ksef_records
            check(ksef.state in {'pending', 'offline'}, "%s is %s",
                record.number, ksef.state)
            attempts.append(ksef.next_attempt)
        check(all(attempts), "a waiting invoice has no next attempt")
        delay = (max(attempts) - dt.datetime.now(dt.timezone.utc).replace(
                tzinfo=None)).total_seconds()
        check(delay < 30, "next attempt in %d s", delay)
        if delay > 0:
            time.sleep(delay + 0.1)
        self.use_company(seller['company'])
        step("The send cron runs")
        send_cron.click('run_once')
        for record in [first, announced]:
            record.reload()
            self.expect(record, 'accepted', record.ksef_records[0].mode)
        self.use_company(second['company'])
        waiting.reload()
        self.expect(waiting, 'accepted', 'online')
        self.use_company(seller['company'])

    # -- outputs -------------------------------------------------------------

    def qr_images(self, record):
        """The QR images of the KSeF Invoice report, made by the report's
        own code (report.KSeFPrint) on the server side."""
        from trytond.modules.ksef.report import KSeFPrint
        from trytond.transaction import Transaction
        with Transaction().start(DB_NAME, 0, readonly=True):
            printed = KSeFPrint.get(record)
            return [(c.code, c.link, c.png) for c in printed.codes]

    def write_outputs(self):
        step("Writing %s" % os.path.relpath(self.out, os.getcwd()))
        report = Report('account.invoice.ksef_print')
        summary = []
        names = set()
        for settings, record in self.invoices:
            self.use_company(settings['company'])
            record.reload()
            ksef, = record.ksef_records
            name = safe_name(record.number)
            check(name not in names, "two invoices named %s", name)
            names.add(name)
            entry = {
                'number': record.number,
                'company_nip': ksef.seller_nip,
                'issue_date': ksef.issue_date.isoformat(),
                'mode': ksef.mode,
                'state': ksef.state,
                'ksef_number': ksef.ksef_number,
                'sha256': ksef.fa3_hash,
                }
            data = ksef.fa3
            check(sha256_b64(data) == ksef.fa3_hash, "%s: hash", name)
            check(not [p for p in fa3.validate(data) if p.is_error],
                "%s: the FA(3) document does not validate", name)
            entry['fa3'] = self.write('fa3', name + '.xml', data)
            entry['upo'] = (self.write('upo', name + '.xml', ksef.upo)
                if ksef.upo else None)
            images = self.qr_images(record)
            links = {code: link for code, link, _ in images}
            check(links.get('I') == ksef.code1_link
                and ksef.code1_link.startswith(TEST_QR_URL + 'invoice/'),
                "%s: CODE I %s", name, ksef.code1_link)
            check(links.get('II') == ksef.code2_link,
                "%s: the report's CODE II differs", name)
            entry['qr_code1'] = entry['qr_code2'] = None
            for code, link, png in images:
                if hasattr(qr, 'decode_png'):
                    try:
                        decoded = qr.decode_png(png)
                    except ImportError:
                        decoded = link
                    check(decoded == link, "%s: QR %s reads %r", name, code,
                        decoded)
                key = 'qr_code1' if code == 'I' else 'qr_code2'
                entry[key] = self.write('qr', '%s-code%d.png'
                    % (name, len(code)), png)
            entry['code1_link'] = ksef.code1_link
            entry['code2_link'] = ksef.code2_link
            entry['deadline'] = (ksef.deadline.isoformat()
                if ksef.deadline else None)
            ext, content, _, _ = report.execute([record])
            check(ext == 'odt', "the KSeF Invoice report gave %s", ext)
            with zipfile.ZipFile(BytesIO(content)) as odt:
                pictures = [odt.read(n) for n in odt.namelist()
                    if n.startswith('Pictures/')]
            for code, _, png in images:
                check(png in pictures,
                    "%s: the printed invoice lacks QR CODE %s", name, code)
            self.write('reports', name + '.odt', content)
            summary.append(entry)
            self.table.append([record.number, record.party.rec_name[:22],
                    '{:,.2f} {}'.format(record.total_amount,
                        record.currency.code).replace(',', ' '),
                    ksef.mode, ksef.state, ksef.ksef_number or '',
                    entry['deadline'] or ''])
        self.write_pdfs()
        for settings, purpose in sorted(self.certificates):
            self.write_certificate(settings, purpose)
        self.write_auth()
        path = os.path.join(self.out, 'summary.json')
        with open(path, 'w') as f:
            json.dump(summary, f, indent=2, ensure_ascii=False)
            f.write('\n')
        return summary

    def write(self, folder, name, data):
        path = os.path.join(self.out, folder, name)
        with open(path, 'wb') as f:
            f.write(data)
        return os.path.join(folder, name)

    def write_pdfs(self):
        "PDF copies of the printed invoices when LibreOffice is installed."
        office = shutil.which('soffice') or shutil.which('libreoffice')
        if not office:
            note("LibreOffice (soffice) not found: reports in ODT only")
            return
        folder = os.path.join(self.out, 'reports')
        odts = sorted(os.path.join(folder, n) for n in os.listdir(folder)
            if n.endswith('.odt'))
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([office, '--headless', '--norestore',
                    '-env:UserInstallation=file://' + profile,
                    '--convert-to', 'pdf', '--outdir', folder] + odts,
                check=True, timeout=300, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        for odt in odts:
            check(os.path.exists(odt[:-len('odt')] + 'pdf'),
                "LibreOffice did not convert %s", odt)

    def write_certificate(self, slug, purpose):
        """The certificate as the database keeps it (never the key)."""
        Certificate = self.get('ksef.certificate')
        settings = SELLER if slug == SELLER['slug'] else SECOND
        self.use_company(settings['company'])
        record, = Certificate.find([
                ('company', '=', settings['company'].id),
                ('purpose', '=', purpose), ('active', '=', True)])
        check(record.certificate == self.certificates[slug, purpose],
            "%s %s: the stored certificate differs", slug, purpose)
        data = testcerts.pem(record.certificate)
        check(b'PRIVATE' not in data, "a key in a certificate file")
        self.write('certs', '%s-%s.pem' % (slug, purpose), data)

    def write_auth(self):
        """The signed AuthTokenRequest the module sent, as the simulator
        received it; the UPOs name its hash."""
        data, document_hash = self.admin_api.auth_document(SELLER['nip'])
        check(sha256_b64(data) == document_hash,
            "the authentication document's hash")
        upo = xmlutil.parse(self.invoices[0][1].ksef_records[0].upo)
        check(upo.findtext('.//u:SkrotDokumentuUwierzytelniajacego',
                namespaces={'u': xmlutil.NS_UPO}) == document_hash,
            "the first UPO names another authentication document")
        check(b'<ds:Signature' in data or b':Signature' in data
            or b'<Signature' in data, "the AuthTokenRequest is not signed")
        self.write('auth', 'AuthTokenRequest-signed.xml', data)


# --- report ----------------------------------------------------------------

def print_table(rows):
    header = ["Invoice", "Customer", "Amount", "Mode", "State",
        "KSeF number", "Deadline"]
    widths = [max(len(str(r[i])) for r in rows + [header])
        for i in range(len(header))]
    right = {2}

    def line(row):
        return '  '.join(str(v).rjust(w) if i in right else str(v).ljust(w)
            for i, (v, w) in enumerate(zip(row, widths))).rstrip()
    print()
    print(line(header))
    print(line(['-' * w for w in widths]))
    for row in rows:
        print(line(row))
    print(flush=True)


def expected_files(summary):
    files = {'trytond.conf', 'simulator-log.jsonl', 'summary.json',
        'auth/AuthTokenRequest-signed.xml'}
    for entry in summary:
        for key in ['fa3', 'upo', 'qr_code1', 'qr_code2']:
            if entry[key]:
                files.add(entry[key])
    return files


def check_output(out, summary, certificates):
    "demo-out/ holds what the demo promises."
    files = set()
    for folder, _, names in os.walk(out):
        for name in names:
            files.add(os.path.relpath(os.path.join(folder, name), out))
    expected = expected_files(summary)
    expected |= {'certs/%s-%s.pem' % key for key in certificates}
    expected.add(os.path.join('db', DB_NAME + '.sqlite'))
    pdf = any(f.endswith('.pdf') for f in files)
    for entry in summary:
        base = 'reports/' + safe_name(entry['number'])
        expected.add(base + '.odt')
        if pdf:
            expected.add(base + '.pdf')
    missing = sorted(expected - files)
    check(not missing, "missing outputs: %s", ', '.join(missing))
    for entry in summary:
        check(entry['state'] == 'accepted', "%s is %s", entry['number'],
            entry['state'])
        check(entry['upo'], "%s has no UPO", entry['number'])
        check((entry['mode'] != 'online') == bool(entry['qr_code2']),
            "%s: CODE II in mode %s", entry['number'], entry['mode'])
    with open(os.path.join(out, 'simulator-log.jsonl')) as f:
        log = [json.loads(line) for line in f]
    check(any(e.get('fault') == 'outage' for e in log)
        and any(e.get('status') == 202 for e in log),
        "the simulator log lacks the outage or the accepted sends")
    check(sorted(summary[0]) == sorted([
                'number', 'company_nip', 'issue_date', 'mode', 'state',
                'ksef_number', 'sha256', 'fa3', 'upo', 'qr_code1',
                'qr_code2', 'code1_link', 'code2_link', 'deadline']),
        "summary.json keys")
    return sorted(files)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default=os.path.join(ROOT, 'demo-out'),
        help="output folder (default demo-out/)")
    parser.add_argument('--port', type=int, default=DEFAULT_PORT,
        help="port of the KSeF simulator on 127.0.0.1 (default %(default)s)"
        "; written in trytond.conf")
    args = parser.parse_args(argv)
    start = time.monotonic()
    out = os.path.abspath(args.out)
    server = None
    try:
        check_port(args.port)
        prepare_output(out)
        config_path = write_config(out, args.port)
        step("Starting the KSeF simulator on 127.0.0.1:%d" % args.port)
        server = start_simulator(args.port,
            os.path.join(out, 'simulator-log.jsonl'))
        step("Creating the SQLite database %r (trytond-admin, module ksef)"
            % DB_NAME)
        create_database(config_path)
        demo = Demo(out, config_path, server)
        step("Companies, taxes with FA(3) codes, customers, certificates")
        demo.setup_common()
        demo.customers()
        for settings in [SELLER, SECOND]:
            demo.create_company(settings)
            note("%s, NIP %s" % (settings['name'], settings['nip']))
        demo.configure_ksef(SELLER, offline=True)
        demo.configure_ksef(SECOND, offline=False)
        note("certificates uploaded: %s with authentication and offline, "
            "%s with authentication only" % (SELLER['name'],
                SECOND['name']))
        demo.online()
        demo.outage()
        summary = demo.write_outputs()
        server.simulator.check()
        files = check_output(out, summary, demo.certificates)
        print_table(demo.table)
        note("%d files in %s; `make web` serves this database in Tryton's"
            " web client at http://127.0.0.1:8000 (admin / %s)" % (
                len(files), os.path.relpath(out, os.getcwd()),
                ADMIN_PASSWORD))
    except DemoError as error:
        print("DEMO FAILED: %s" % error, file=sys.stderr, flush=True)
        return 1
    finally:
        if server is not None:
            server.stop()
    step("Demo done in %.0f s" % (time.monotonic() - start))
    return 0


if __name__ == '__main__':
    sys.exit(main())
