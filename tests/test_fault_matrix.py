# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Fault matrix: posting, sending and the resend task when things go wrong.

Each test posts a few customer invoices of a company with an
authentication and an offline certificate, injects one fault — in the KSeF
simulator (served over HTTP on loopback), in the database, or by killing a
worker process — and lets the module recover on its own: the queue task
started by posting, then the scheduled tasks *Send Invoices to KSeF* and
*Check KSeF Statuses and UPOs*, run as trytond-cron runs them.  No test
step stands for a person.  Then it prints one line, read by tools/dev.py::

    FAULT <name>: invoices=<n> accepted=<n> lost=<n> duplicated=<n> \
        final=<state>:<n>[,<state>:<n>...]

(on one line).  The counts are per invoice posted by the test, checked
against KSeF's side: the simulator's registry of the documents KSeF
accepted, by the SHA-256 of their bytes.

accepted
    the invoice's KSeF record is *accepted*, KSeF accepted its frozen
    FA(3) document (its SHA-256) exactly once, and the KSeF number on the
    record is the number KSeF gave that document.
duplicated
    KSeF accepted the invoice's frozen document more than once, or the
    invoice's KSeF number is also on another invoice.
lost
    KSeF never accepted the invoice's frozen document and its record does
    not tell the user what to do — it tells when it is *pending*, *offline*
    or *rejected* with the error that stopped it and an advice (the *What
    to Do* field, also in the invoice's *KSeF Message*); or the record
    shows a KSeF number that KSeF did not give its document (an invoice
    carrying a wrong KSeF number is lost as well).
final
    the KSeF states of the invoices once the scheduled tasks have run.

Every test asserts lost=0 and duplicated=0, that KSeF accepted nothing the
records do not show as accepted, that the states are the ones the line
shows (all accepted: every fault here is recoverable without a person) and
that the simulator saw no contract violation.

The database: on PostgreSQL the test database itself.  On SQLite the
in-memory test database is copied to a file first, because the worker
processes (killed worker, two workers at once) must open the same database.
"""
import datetime as dt
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from collections import Counter
from decimal import Decimal
from functools import partial
from unittest import mock

import httpx
import trytond.config as tconfig
from proteus import Model, Wizard
from proteus import config as pconfig
from trytond import backend
from trytond.exceptions import UserWarning
from trytond.modules.account.tests.tools import (
    create_chart,
    create_fiscalyear,
    create_tax,
    get_accounts,
)
from trytond.modules.account_invoice.tests.tools import (
    create_payment_term,
    set_fiscalyear_invoice_sequences,
)
from trytond.modules.company.tests.tools import create_company
from trytond.pool import Pool
from trytond.tests.test_tryton import DB_NAME, drop_db
from trytond.tests.tools import activate_modules, set_user
from trytond.transaction import Transaction

from trytond_ksef import testcerts
from trytond_ksef.deadlines import polish_today
from trytond_ksef.simulator import serve_in_thread

NIP = '5265877635'
SEND = 'account.invoice.ksef|ksef_send'
CHECK = 'account.invoice.ksef|ksef_check'
ANNOUNCEMENTS = 'ksef.announcement|update_from_status_service'
SEND_PATH = r'/sessions/online/[^/]+/invoices$'
STATUS_PATH = r'/sessions/[^/]+/invoices/[^/]+$'
OPEN_PATH = r'/sessions/online$'
UPLOAD_PATH = r'^/storage/batch/'
# The matrix' own settings: short delays, no in-call retry (every fault
# reaches the module), a small batch threshold.
KSEF_OPTIONS = {
    'secret_key': 'fault-matrix-secret-key-0123456789abcdef',
    'timeout': '5',
    'max_attempts': '1',
    'rate_limit_wait': '0',
    'poll_interval': '0.05',
    'status_wait': '10',
    'retry_delay': '0',
    'batch_threshold': '4',
    }
FILE_DB = 'ksef_fault_matrix'


def told(row):
    "Whether the record tells the user what happened and what to do."
    return (row['state'] in {'pending', 'offline', 'rejected'}
        and bool(row['error']) and bool(row['advice']))


def census(rows, in_ksef):
    """Count `rows` (KSeF records as dicts) as the module docstring says;
    `in_ksef(fa3_hash)` gives the KSeF numbers of the documents KSeF
    accepted with that hash.  Return (accepted, lost, duplicated, the rows
    whose document KSeF accepted though they do not say accepted)."""
    numbers = Counter(r['ksef_number'] for r in rows if r['ksef_number'])
    accepted = lost = duplicated = 0
    unreconciled = []
    for row in rows:
        taken = in_ksef(row['hash'])
        if len(taken) > 1 or numbers.get(row['ksef_number'], 0) > 1:
            duplicated += 1
        if row['state'] == 'accepted' and taken == [row['ksef_number']]:
            accepted += 1
        elif row['ksef_number'] and row['ksef_number'] not in taken:
            lost += 1
        elif not taken and not told(row):
            lost += 1
        if taken and row['state'] != 'accepted':
            unreconciled.append(row)
    return accepted, lost, duplicated, unreconciled


class CensusTestCase(unittest.TestCase):
    "The counting of the FAULT lines can fail."

    def row(self, hash_, state='accepted', ksef_number=None, error=None,
            advice=None):
        return {'hash': hash_, 'state': state, 'ksef_number': ksef_number,
            'error': error, 'advice': advice}

    def test_census(self):
        ksef = {'a': ['N-a'], 'b': ['N-b1', 'N-b2'], 'c': []}
        in_ksef = lambda h: ksef.get(h, [])  # noqa: E731
        for rows, expected in [
                ([self.row('a', ksef_number='N-a')], (1, 0, 0, 0)),
                # accepted twice by KSeF
                ([self.row('b', ksef_number='N-b1')], (0, 0, 1, 0)),
                # one KSeF number on two invoices
                ([self.row('a', ksef_number='N-a'),
                        self.row('c', ksef_number='N-a')], (1, 1, 2, 0)),
                # says accepted, KSeF never took it
                ([self.row('c', ksef_number='N-c')], (0, 1, 0, 0)),
                # waiting without a word, or with one
                ([self.row('c', state='pending')], (0, 1, 0, 0)),
                ([self.row('c', state='offline', error="down",
                            advice="wait")], (0, 0, 0, 0)),
                ([self.row('c', state='rejected', error="450",
                            advice="fix")], (0, 0, 0, 0)),
                # KSeF took it, the record does not know yet
                ([self.row('a', state='pending', error="lost",
                            advice="wait")], (0, 0, 0, 1)),
                ]:
            accepted, lost, duplicated, unreconciled = census(rows, in_ksef)
            self.assertEqual(
                (accepted, lost, duplicated, len(unreconciled)), expected,
                rows)


class FaultMatrixTestCase(unittest.TestCase):
    "Nothing lost, nothing sent twice, whatever fails."

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = serve_in_thread(port=0, processing_delay=0.05,
            # Rate-limit windows 20 times shorter (a minute lasts 3 s): the
            # matrix sends far more than 30 invoices a minute.
            time_scale=0.05)
        cls.simulator = cls.server.simulator
        cls.http = httpx.Client(base_url=cls.server.admin_url, timeout=10)
        cls._saved_options = {}
        options = dict(KSEF_OPTIONS,
            test_api_url=cls.server.base_url,
            test_status_url=cls.server.latarnia_url)
        if not tconfig.has_section('ksef'):
            tconfig.add_section('ksef')
        for key, value in options.items():
            cls.set_option('ksef', key, value)
        cls._tmp = None
        cls.workers = []
        cls._uri = os.environ.get('TRYTOND_DATABASE_URI')
        try:
            cls._set_up_database()
            # Worker processes load their pool meanwhile: one to kill, two
            # to run at once.
            cls.workers = [cls.spawn() for _ in range(3)]
            cls._set_up_data()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def set_option(cls, section, key, value):
        """Set a trytond.conf option (None: remove it), restored at the end
        of the class."""
        if (section, key) not in cls._saved_options:
            cls._saved_options[(section, key)] = tconfig.get(section, key)
        if value is None:
            tconfig._config.remove_option(section, key)
            tconfig._cache_clear()
        else:
            tconfig.set(section, key, value)

    @classmethod
    def _set_up_database(cls):
        config = activate_modules(
            'ksef', partial(create_company, currency='PLN'), create_chart)
        if backend.name == 'sqlite':
            # Worker processes need a database they can open: a file copy.
            cls._tmp = tempfile.mkdtemp(prefix='ksef-faults-')
            path = os.path.join(cls._tmp, FILE_DB + '.sqlite')
            memory = backend.Database(DB_NAME).connect()
            connection = memory.get_connection()
            try:
                with sqlite3.connect(path) as target:
                    connection.backup(target)
                target.close()
            finally:
                memory.put_connection(connection)
            cls.set_option('database', 'path', cls._tmp)
            try:
                config = pconfig.set_trytond(FILE_DB)
            finally:
                # proteus writes the name into the variable: keep the
                # other tests on their database.
                if cls._uri is None:
                    os.environ.pop('TRYTOND_DATABASE_URI', None)
                else:
                    os.environ['TRYTOND_DATABASE_URI'] = cls._uri
        cls.config = config
        cls.db = config.database_name

    @classmethod
    def _set_up_data(cls):
        config = cls.config
        Company = Model.get('company.company')
        Country = Model.get('country.country')
        Party = Model.get('party.party')
        Tax = Model.get('account.tax')
        User = Model.get('res.user')
        Group = Model.get('res.group')
        Warning = Model.get('res.user.warning')
        poland = Country(name="Poland", code='PL')
        poland.save()
        company, = Company.find()
        seller = company.party
        seller.name = "Sprzedawca sp. z o.o."
        address, = seller.addresses
        address.street = "ul. Kwiatowa 1"
        address.postal_code = "00-001"
        address.city = "Warszawa"
        address.country = poland
        seller.identifiers.new(type='pl_vat', code=NIP)
        seller.save()

        admin = User(config.user)
        admin.groups.append(
            Group.find([('name', '=', "KSeF Administrator")])[0])
        # Subscribed to the send task's notifications (past deadline).
        admin.notifications = [SEND]
        admin.save()
        cls.admin_user = admin
        Authorization = Model.get('ksef.authorization')
        authorization = Authorization()
        authorization.save()

        def upload(purpose, der, key):
            wizard = Wizard('ksef.certificate.upload', [authorization])
            wizard.form.purpose = purpose
            wizard.form.certificate = testcerts.pem(der)
            wizard.form.private_key_secret = testcerts.private_key_pem(key)
            try:
                wizard.execute('upload')
            except UserWarning as warning:
                Warning.skip(warning.name, False, config.context)
                upload(purpose, der, key)
        upload('authentication', *testcerts.make_certificate(
                'authentication', nip=NIP, seal=True))
        upload('offline', *testcerts.make_certificate(
                'offline', nip=NIP, seal=True))
        authorization.reload()
        assert authorization.offline_available

        accountant = User(name="Accountant", login='accountant')
        accountant.groups.extend(Group.find([('name', 'in', [
                            "Accounting", "Account Administration"])]))
        accountant.companies.append(Company(company.id))
        accountant.company = Company(company.id)
        accountant.save()
        cls.accountant = accountant

        fiscalyear = set_fiscalyear_invoice_sequences(create_fiscalyear())
        fiscalyear.click('create_period')
        accounts = get_accounts()
        payment_term = create_payment_term()
        payment_term.save()
        vat23 = create_tax(Decimal('0.23'))
        vat23.name = vat23.description = "VAT 23%"
        vat23.save()
        customer = Party(name="Nabywca sp. z o.o.")
        customer_address, = customer.addresses
        customer_address.street = "ul. Polna 1"
        customer_address.postal_code = "00-002"
        customer_address.city = "Kraków"
        customer_address.country = poland
        customer.identifiers.new(type='pl_vat', code='1111111111')
        customer.save()
        # Posting a customer invoice queues the rendering of Tryton's
        # invoice report (most of the matrix' time, nothing to do with
        # KSeF): not rendered here.
        Invoice = Pool(cls.db).get('account.invoice')
        cls._no_report = mock.patch.object(Invoice, 'print_invoice',
            classmethod(lambda cls, invoices: None))
        cls._no_report.start()
        # The template of the invoices the tests post (copied, never
        # posted itself).
        set_user(accountant, config)
        Invoice = Model.get('account.invoice')
        template = Invoice(type='out', party=customer,
            payment_term=payment_term, invoice_date=polish_today())
        line = template.lines.new()
        line.description = "Usługa"
        line.account = accounts['revenue']
        line.quantity = 1
        line.unit_price = Decimal('100')
        line.taxes.append(Tax(vat23.id))
        template.save()
        cls.template_id = template.id
        cls.company_id = company.id

    @classmethod
    def tearDownClass(cls):
        for process in cls.workers:
            cls._reap(process)
        cls.workers = []
        if getattr(cls, '_no_report', None):
            cls._no_report.stop()
        for (section, key), value in list(cls._saved_options.items()):
            cls.set_option(section, key, value)
        cls._saved_options = {}
        cls.http.close()
        cls.server.stop()
        if cls._tmp:
            Pool.stop(FILE_DB)
            shutil.rmtree(cls._tmp, ignore_errors=True)
        drop_db()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.simulator.faults.clear()
        set_user(self.accountant, self.config)

    def tearDown(self):
        self.simulator.faults.clear()
        super().tearDown()

    # -- driving ------------------------------------------------------------

    def new_invoices(self, count):
        "`count` draft customer invoices of today (copies of a template)."
        with Transaction().start(self.db, 0, context={
                    'company': self.company_id}) as transaction:
            Invoice = Pool().get('account.invoice')
            ids = [i.id for i in Invoice.copy(
                    [Invoice(self.template_id)] * count,
                    default={'invoice_date': polish_today()})]
            transaction.commit()
        Invoice = Model.get('account.invoice')
        return [Invoice(i) for i in ids]

    def post(self, count, together=True):
        """Post `count` new invoices (in one call, or one by one) and return
        their ids.  Posting queues the send, run after the commit."""
        Invoice = Model.get('account.invoice')
        invoices = self.new_invoices(count)
        if together:
            Invoice.click(invoices, 'post')
        else:
            for invoice in invoices:
                invoice.click('post')
        return [i.id for i in invoices]

    def post_queued(self, count):
        """Post `count` invoices with queue workers on: the send task waits
        in ir.queue for a worker.  Return (invoice ids, task id)."""
        self.set_option('queue', 'worker', 'True')
        try:
            ids = self.post(count)
        finally:
            self.set_option('queue', 'worker', 'False')
        with Transaction().start(self.db, 0, readonly=True):
            Queue = Pool().get('ir.queue')
            task, = Queue.search([
                    ('name', '=', 'ksef'),
                    ('finished_at', '=', None),
                    ], order=[('id', 'DESC')], limit=1)
            return ids, task.id

    def run_cron(self, method):
        "Run a scheduled task as trytond-cron does (user 0, _cron context)."
        with Transaction().start(self.db, 0, context={
                    '_cron': method, '_skip_warnings': True}) as transaction:
            Cron = Pool().get('ir.cron')
            Cron.run_once(Cron.search([('method', '=', method)]))
            transaction.commit()

    def records(self, invoice_ids):
        "The KSeF records of `invoice_ids` as plain dicts, by id."
        with Transaction().start(self.db, 0, readonly=True):
            InvoiceKSeF = Pool().get('account.invoice.ksef')
            records = InvoiceKSeF.search([
                    ('invoice', 'in', list(invoice_ids)),
                    ], order=[('id', 'ASC')])
            return [{
                    'id': r.id,
                    'number': r.invoice_number,
                    'state': r.state,
                    'mode': r.mode,
                    'hash': r.fa3_hash,
                    'ksef_number': r.ksef_number,
                    'session': r.session_reference,
                    'error_code': r.error_code,
                    'error': r.error_description,
                    'advice': r.advice,
                    'next_attempt': r.next_attempt,
                    'deadline': r.deadline,
                    'upo': bool(r.upo),
                    } for r in records]

    def wait_due(self, rows, limit=15):
        "Sleep until the next attempt of every waiting record is due."
        waiting = [r['next_attempt'] for r in rows
            if r['state'] in {'pending', 'offline'} and r['next_attempt']]
        if waiting:
            now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
            delay = (max(waiting) - now).total_seconds() + 0.05
            self.assertLessEqual(delay, limit)
            if delay > 0:
                time.sleep(delay)

    def recover(self, invoice_ids, rounds=6):
        """Run the send and status tasks, as their schedule would, until
        every record is accepted or rejected (at most `rounds` runs)."""
        for _ in range(rounds):
            rows = self.records(invoice_ids)
            if all(r['state'] in {'accepted', 'rejected'} and (
                        r['state'] != 'accepted' or r['upo'])
                    for r in rows):
                break
            self.wait_due(rows)
            self.run_cron(SEND)
            self.run_cron(CHECK)
        return self.records(invoice_ids)

    # -- KSeF's side ---------------------------------------------------------

    def ksef_accepted(self, fa3_hash):
        "KSeF numbers of the documents KSeF accepted with this hash."
        return [i.ksef_number
            for i in list(self.simulator.registry.by_number.values())
            if i.invoice_hash == fa3_hash]

    def ksef_received(self, fa3_hash):
        "Status codes of every copy of the document KSeF processed."
        return [(i.status or {}).get('code')
            for i in list(self.simulator.registry.by_hash.get(fa3_hash, []))]

    def sim_admin(self, path, **body):
        "Call the simulator's test administration (/_sim)."
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def log(self, **match):
        "Exchange log entries having the given values."
        return [e for e in self.simulator.log.entries()
            if all(e.get(k) == v for k, v in match.items())]

    def when_hit(self, fault, action, limit=60):
        "Run `action` in a thread as soon as `fault` has been hit."
        def watch():
            end = time.monotonic() + limit
            while fault.hits < 1 and time.monotonic() < end:
                time.sleep(0.01)
            if fault.hits:
                action()
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        return thread

    def wait_until(self, condition, limit=10, message=None):
        end = time.monotonic() + limit
        while not condition():
            if time.monotonic() > end:
                self.fail(message or "condition not met in %s s" % limit)
            time.sleep(0.02)

    # -- worker processes ----------------------------------------------------

    @classmethod
    def spawn(cls):
        "Start tests/fault_worker.py in its own process (see its doc)."
        env = dict(os.environ)
        if backend.name == 'sqlite':
            env['TRYTOND_DATABASE__PATH'] = tconfig.get('database', 'path')
        for option in tconfig.options('ksef'):
            env['TRYTOND_KSEF__' + option.upper()] = tconfig.get(
                'ksef', option)
        stderr = tempfile.TemporaryFile(mode='w+')
        process = subprocess.Popen([sys.executable, '-m',
                'trytond.modules.ksef.tests.fault_worker', cls.db],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=stderr, text=True)
        process.stderr_file = stderr
        return process

    def worker(self):
        "A started worker process, once its pool is loaded."
        process = self.workers.pop()
        self.addCleanup(self._reap, process)
        line = process.stdout.readline()
        self.assertEqual(line.strip(), 'READY', self._stderr(process))
        return process

    def command(self, process, *words):
        process.stdin.write(' '.join(words) + '\n')
        process.stdin.flush()

    @staticmethod
    def _stderr(process):
        process.stderr_file.seek(0)
        return process.stderr_file.read()[-5000:]

    @staticmethod
    def _reap(process):
        if process.poll() is None:
            # An idle worker ends on the end of its input.
            process.stdin.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait(timeout=30)
        process.stdout.close()
        process.stdin.close()
        process.stderr_file.close()

    def finish(self, process, limit=120):
        """Wait for a worker's end; return (sent ids, (start, end)).  On
        PostgreSQL one of two workers may meet a serialization failure
        (both replacing the stored session KSeF closed): it runs the task
        again, as trytond-cron does (the worker prints RETRIES)."""
        try:
            out, _ = process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            process.kill()
            self.fail("worker still running after %s s" % limit)
        self.assertEqual(process.returncode, 0, self._stderr(process))
        sent, window = [], None
        for line in out.splitlines():
            if line.startswith('SENT '):
                sent = [int(i) for i in line[5:].split(',') if i]
            elif line.startswith('WINDOW '):
                window = tuple(float(x) for x in line[7:].split())
        return sent, window

    # -- the line ------------------------------------------------------------

    def report(self, name, invoice_ids, expected=None):
        """Count against KSeF's registry, print the FAULT line and assert
        nothing was lost or duplicated and the final states."""
        rows = self.records(invoice_ids)
        accepted, lost, duplicated, unreconciled = census(rows,
            self.ksef_accepted)
        states = Counter(r['state'] for r in rows)
        line = ('FAULT %s: invoices=%d accepted=%d lost=%d duplicated=%d '
            'final=%s' % (name, len(rows), accepted, lost, duplicated,
                ','.join('%s:%d' % (s, states[s]) for s in sorted(states))))
        print(line, flush=True)
        self.assertEqual(len(rows), len(invoice_ids), line)
        self.assertEqual((lost, duplicated), (0, 0), line)
        self.assertEqual(unreconciled, [], line)
        self.assertEqual(dict(states), expected or {'accepted': len(rows)},
            line)
        self.assertTrue(all(r['upo'] for r in rows
                if r['state'] == 'accepted'), line)
        self.simulator.check()
        return rows

    def faulted(self, rows):
        "The records a failure left a message on."
        return [r for r in rows if r['error']]

    # -- the faults ----------------------------------------------------------

    def test_fault_01_connection_reset(self):
        "The connection is reset before KSeF reads the invoice."
        self.simulator.faults.add('outage', path=SEND_PATH, method='POST',
            mode='drop')
        ids = self.post(3)
        rows = self.records(ids)
        first, = self.faulted(rows)
        # The client cannot know whether KSeF read it: outcome unknown,
        # session noted for the reconciliation; KSeF unreachable, so the
        # invoice is issued offline (the company has an offline
        # certificate).
        self.assertEqual((first['state'], first['mode'], first['error_code']),
            ('offline', 'offline', 'ksef_outcome_unknown'))
        self.assertTrue(first['session'] and told(first))
        self.assertEqual(self.ksef_received(first['hash']), [])
        rows = self.recover(ids)
        # Not in the session: sent again, accepted once.
        self.assertEqual(self.ksef_received(first['hash']), [200])
        self.report('connection_reset_before_send', ids)

    def test_fault_02_response_lost(self):
        "KSeF accepts the invoice, its answer is lost."
        self.simulator.faults.add('drop_after_accept', path=SEND_PATH,
            method='POST')
        ids = self.post(3)
        first, = self.faulted(self.records(ids))
        self.assertEqual((first['state'], first['error_code']),
            ('offline', 'ksef_outcome_unknown'))
        self.assertTrue(told(first))
        self.assertEqual(len(self.ksef_accepted(first['hash'])), 1)
        self.recover(ids)
        # Found by its hash in the session: never sent again.
        self.assertEqual(self.ksef_received(first['hash']), [200])
        self.report('response_lost_after_accept', ids)

    def test_fault_03_timeout(self):
        """KSeF answers after the client gave up: once having taken the
        invoice, once not (the connection dropped)."""
        self.set_option('ksef', 'timeout', '1.5')
        try:
            late = self.simulator.faults.add('delay', path=SEND_PATH,
                method='POST', delay=2.5)
            self.simulator.faults.add('delay', path=SEND_PATH,
                method='POST', delay=2.5, mode='drop')
            ids = self.post(3)
            first, = self.faulted(self.records(ids))
            self.assertEqual((first['state'], first['error_code']),
                ('offline', 'ksef_outcome_unknown'))
            self.assertTrue(told(first))
            # KSeF handles it once the delay is over, the client is gone.
            self.wait_until(lambda: self.ksef_accepted(first['hash']),
                message="the late request was not handled")
            self.assertEqual(late.hits, 1)
            rows = self.recover(ids)
        finally:
            self.set_option('ksef', 'timeout', KSEF_OPTIONS['timeout'])
        # Each invoice reached KSeF once: the late one was found in its
        # session, the dropped one sent again.
        self.assertEqual([self.ksef_received(r['hash']) for r in rows],
            [[200]] * 3)
        self.report('timeout', ids)

    def test_fault_04_server_error(self):
        """5xx: before KSeF handles the send (503), after it (502), and on
        a status request (500)."""
        faults = self.simulator.faults
        faults.add('outage', path=SEND_PATH, method='POST', status=503)
        faults.add('drop_after_accept', path=SEND_PATH, method='POST',
            mode='status', status=502)
        status_error = faults.add('outage', path=STATUS_PATH, method='GET',
            status=500)
        ids = self.post(3)
        first, = self.faulted(self.records(ids))
        self.assertEqual(first['error_code'], 'ksef_outcome_unknown')
        self.assertTrue(told(first))
        self.assertEqual(self.ksef_received(first['hash']), [])
        rows = self.recover(ids)
        self.assertEqual(status_error.hits, 1)
        self.assertEqual([self.ksef_received(r['hash']) for r in rows],
            [[200]] * 3)
        self.report('server_error_5xx', ids)

    def test_fault_05_rate_limited(self):
        """429 with Retry-After: while the first invoice is on its way,
        another client of the company at the same address uses up the
        minute's invoice sends."""
        from trytond_ksef.simulator import openapi
        template = '/sessions/online/{referenceNumber}/invoices'
        key = (openapi.rate_limit_group('POST', template) or (
                'POST', template), ('Nip', NIP), '127.0.0.1')
        limits = openapi.rate_limits('POST', template)

        limiter = self.simulator.limiter
        # The earlier tests' requests are forgotten: the quota is used up
        # by the other client alone, from the moment the invoice is on its
        # way.
        limiter.reset()
        self.addCleanup(limiter.reset)

        def use_up_quota():
            while True:
                wait = limiter.hit(key, limits)
                if wait is not None and wait >= 1.5:
                    return
                time.sleep(wait or 0)
        arriving = self.simulator.faults.add('delay', path=SEND_PATH,
            method='POST', delay=1)
        watcher = self.when_hit(arriving, use_up_quota)
        ids = self.post(3)
        watcher.join(10)
        rows = self.records(ids)
        first, = self.faulted(rows)
        self.assertEqual(len(self.log(status=429)), 1)
        # Not issued offline: KSeF is there, it asks to wait.
        self.assertEqual((first['state'], first['mode'], first['error_code']),
            ('pending', 'online', 'ksef_rate_limited'))
        self.assertTrue(told(first))
        # Retry-After (2 s or more: a minute lasts 3 s here) wins over
        # retry_delay (0 s): due a second or more after KSeF's answer.
        refused, = self.log(status=429)
        answered = (dt.datetime.fromisoformat(refused['time']).astimezone(
                dt.timezone.utc).replace(tzinfo=None)
            + dt.timedelta(milliseconds=refused['durationMs']))
        self.assertGreaterEqual(
            (first['next_attempt'] - answered).total_seconds(), 0.9)
        # The send task does not try it before that time.
        self.run_cron(SEND)
        self.assertEqual(self.ksef_received(first['hash']), [])
        self.recover(ids)
        self.report('rate_limited_429_retry_after', ids)

    def test_fault_06_database_rollback(self):
        """KSeF accepted the invoice but the transaction recording it fails
        (a database error: rolled back); Tryton runs the queue task
        again."""
        self._rollback_after_accept('database_rollback_after_accept', 3)

    def test_fault_07_database_rollback_batch(self):
        "The same for a batch session (above batch_threshold)."
        self._rollback_after_accept(
            'database_rollback_after_batch_accept', 5)

    def _rollback_after_accept(self, name, count):
        InvoiceKSeF = Pool(self.db).get('account.invoice.ksef')
        write = InvoiceKSeF.write
        fired = []

        def failing_write(*args):
            write(*args)
            if not fired and any(values.get('state') == 'sent'
                    for values in args[1::2]):
                fired.append(True)
                Transaction().rollback()
                raise backend.DatabaseOperationalError(
                    "simulated failure of the transaction recording "
                    "KSeF's answer")

        with mock.patch.object(InvoiceKSeF, 'write', failing_write):
            ids = self.post(count)
        self.assertTrue(fired)
        rows = self.recover(ids)
        # KSeF received every document twice: accepted, then refused as a
        # duplicate of itself (440), and the record took the original's
        # KSeF number.
        received = [self.ksef_received(r['hash']) for r in rows]
        self.assertIn([200, 440], received)
        self.assertTrue(all(r[0] == 200 and set(r[1:]) <= {440}
                for r in received), received)
        self.report(name, ids)

    def test_fault_08_worker_killed(self):
        """A worker process is killed (SIGKILL) while it uploads a batch;
        the send task recovers without a person."""
        ids, task = self.post_queued(6)
        upload = self.simulator.faults.add('delay', path=UPLOAD_PATH,
            method='PUT', delay=15, mode='drop')
        worker = self.worker()
        self.command(worker, 'task', str(task))
        self.wait_until(lambda: upload.hits or worker.poll() is not None,
            limit=60, message="the worker never uploaded")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        self.assertEqual(worker.returncode, -signal.SIGKILL)
        self.simulator.faults.clear()
        rows = self.records(ids)
        # The batch session was opened and noted on every record, then the
        # worker died: nothing sent, nothing accepted.
        killed_session = rows[0]['session']
        self.assertIn('-SB-', killed_session or '')
        self.assertEqual({(r['state'], r['session']) for r in rows},
            {('pending', killed_session)})
        self.assertFalse(any(self.ksef_received(r['hash']) for r in rows))
        rows = self.recover(ids)
        self.assertNotIn(killed_session, {r['session'] for r in rows})
        self.report('worker_killed_mid_batch', ids)

    def test_fault_09_two_workers(self):
        """Two processes run the send task at the same moment while KSeF
        is slow."""
        ids, _ = self.post_queued(6)
        # KSeF closed the stored session: both workers find it closed and
        # open a new one at the same time.
        for reference, session in list(self.simulator.sessions.items()):
            if session.kind == 'Online' and session.is_open:
                self.sim_admin('/sessions/%s/close' % reference)
        self.simulator.faults.add('delay', path=SEND_PATH, method='POST',
            delay=0.25, persistent=True)
        workers = [self.worker(), self.worker()]
        for worker in workers:
            # One by one (interactive), so that the two workers interleave.
            self.command(worker, 'cron', SEND, 'batch_threshold=10')
        results = [self.finish(worker) for worker in workers]
        self.simulator.faults.clear()
        (sent_a, window_a), (sent_b, window_b) = results
        # They ran at the same time, and never sent the same invoice.
        self.assertLess(max(window_a[0], window_b[0]),
            min(window_a[1], window_b[1]))
        self.assertFalse(set(sent_a) & set(sent_b))
        records = {r['id'] for r in self.records(ids)}
        self.assertEqual(set(sent_a) | set(sent_b), records)
        if backend.name == 'postgresql':
            # Rows locked FOR UPDATE SKIP LOCKED: both workers sent some.
            self.assertTrue(sent_a and sent_b, (sent_a, sent_b))
            name = 'two_resend_workers'
        else:
            # SQLite has one writer: each worker's row lock is the database
            # write lock, so the two processes run at once but take turns
            # for each invoice.
            name = 'two_resend_workers_sqlite_serialized'
        self.recover(ids)
        self.report(name, ids)

    def test_fault_10_token_expired(self):
        """The access token expires while the interactive session stays
        open (all tokens at once, then a 401 on a status request)."""
        ids = self.post(1)
        self.recover(ids)
        refreshes = len(self.log(operation='POST /auth/token/refresh'))
        self.sim_admin('/tokens/expire')
        ids += self.post(2)
        self.simulator.faults.add('expired_token', path=STATUS_PATH,
            method='GET')
        ids += self.post(1)
        self.assertFalse(self.simulator.faults.list())
        self.assertGreater(
            len(self.log(operation='POST /auth/token/refresh')), refreshes)
        rows = self.recover(ids)
        self.assertEqual(len({r['session'] for r in rows}), 1)
        self.report('access_token_expired_mid_session', ids)

    def test_fault_11_key_rotated(self):
        """The Ministry's public key is withdrawn (emergency rotation)
        between the client reading it and opening a session: 21470."""
        ids = self.post(1)
        self.recover(ids)
        session, = {r['session'] for r in self.records(ids)}
        # KSeF closed the session: the next send opens a new one.
        self.sim_admin('/sessions/%s/close' % session)
        slow_open = self.simulator.faults.add('delay', path=OPEN_PATH,
            method='POST', delay=2)
        rotated = []
        watcher = self.when_hit(slow_open,
            lambda: rotated.append(self.sim_admin('/keys/rotate')))
        ids += self.post(3)
        watcher.join(10)
        self.assertTrue(rotated)
        self.assertTrue(self.log(operation='POST /sessions/online',
                errorCode=21470))
        rows = self.recover(ids)
        self.assertEqual(len({r['session'] for r in rows[1:]}), 1)
        self.assertNotEqual(rows[1]['session'], session)
        self.report('mf_public_key_rotated_21470', ids)

    def test_fault_12_session_closed(self):
        """KSeF closes the interactive session: between two runs, just
        before a send, and twice in a row."""
        ids = self.post(1)
        self.recover(ids)
        first, = {r['session'] for r in self.records(ids)}
        self.sim_admin('/sessions/%s/close' % first)
        ids += self.post(2)
        self.simulator.faults.add('session_closed', path=SEND_PATH,
            method='POST')
        ids += self.post(1)
        self.simulator.faults.add('session_closed', path=SEND_PATH,
            method='POST', times=2)
        ids += self.post(1)
        twice = self.records(ids)[-1]
        # Closed again at once: left for a later run, with the reason.
        self.assertIn(twice['state'], {'pending', 'offline'})
        self.assertTrue(told(twice))
        rows = self.recover(ids)
        self.assertGreaterEqual(len({r['session'] for r in rows}), 4)
        self.report('session_closed_by_ksef', ids)

    def test_fault_13_outage(self):
        """KSeF is down (503) across several postings; a failure is
        announced meanwhile, then ends."""
        outage = self.simulator.faults.add('outage', path='^/v2/',
            persistent=True)
        try:
            ids = self.post(2, together=False)
            rows = self.records(ids)
            self.assertEqual({(r['state'], r['mode']) for r in rows},
                {('offline', 'offline')})
            self.assertTrue(all(told(r) for r in rows))
            event = self.sim_admin('/latarnia', category='FAILURE')['eventId']
            self.run_cron(ANNOUNCEMENTS)
            ids += self.post(2)
            rows = self.records(ids)
            # Issued during an announced failure: failure mode at posting.
            self.assertEqual([r['mode'] for r in rows],
                ['offline', 'offline', 'failure', 'failure'])
            self.assertEqual({r['state'] for r in rows}, {'offline'})
            # The send task keeps failing: still waiting, and each invoice
            # it tried says why.
            self.wait_due(rows)
            self.run_cron(SEND)
            rows = self.records(ids)
            self.assertEqual({r['state'] for r in rows}, {'offline'})
            self.assertTrue(all(told(r) for r in rows if r['error']))
            self.assertFalse(any(self.ksef_received(r['hash'])
                    for r in rows))
            self.sim_admin('/latarnia/%d/end' % event)
            self.simulator.faults.remove(outage.id)
            self.run_cron(ANNOUNCEMENTS)
            rows = self.recover(ids)
            # Sent as offline invoices.
            self.assertTrue(all(
                    self.simulator.registry.by_number[
                        r['ksef_number']].offline_declared
                    for r in rows if r['ksef_number']))
            self.report('outage_503_spanning_posting', ids)
        finally:
            self.simulator.faults.clear()
            self.http.delete('/latarnia')
            with Transaction().start(self.db, 0) as transaction:
                Announcement = Pool().get('ksef.announcement')
                Announcement.delete(Announcement.search([]))
                transaction.commit()

    # -- past the deadline ---------------------------------------------------

    def test_deadline_notification(self):
        """An offline invoice still waiting after its deadline is notified
        to the users subscribed to the send task."""
        outage = self.simulator.faults.add('outage', path='^/v2/',
            persistent=True)
        self.set_option('ksef', 'retry_delay', '3600')
        try:
            ids = self.post(1)
            row, = self.records(ids)
            self.assertEqual(row['state'], 'offline')
            later = row['deadline'] + dt.timedelta(days=1)
            with Transaction().start(self.db, 0, readonly=True):
                Notification = Pool().get('res.notification')
                before = Notification.search_count([])
            # Days pass; the next attempt is not due yet.
            with mock.patch('trytond.modules.ksef.offline.polish_today',
                    return_value=later):
                self.run_cron(SEND)
            with Transaction().start(self.db, 0, readonly=True):
                Notification = Pool().get('res.notification')
                notifications = Notification.search([],
                    order=[('id', 'ASC')])[before:]
                self.assertEqual(
                    [(n.user.id, row['number'] in n.description)
                        for n in notifications],
                    [(self.admin_user.id, True)])
                self.assertIn(row['deadline'].isoformat(),
                    notifications[0].description)
            # Before the deadline nothing is notified.
            self.run_cron(SEND)
            with Transaction().start(self.db, 0, readonly=True):
                Notification = Pool().get('res.notification')
                self.assertEqual(Notification.search_count([]),
                    before + 1)
        finally:
            self.set_option('ksef', 'retry_delay',
                KSEF_OPTIONS['retry_delay'])
            self.simulator.faults.remove(outage.id)
        # The accountant sends it now.
        Invoice = Model.get('account.invoice')
        Invoice.click([Invoice(ids[0])], 'ksef_send')
        row, = self.records(ids)
        self.assertEqual(row['state'], 'accepted')

    def test_deadline_moves_while_unavailable(self):
        """KSeF still unavailable days later: a send attempt moves the
        deadline of every invoice waiting offline for it, also of those
        not tried in that run, so none is notified past its deadline."""
        outage = self.simulator.faults.add('outage', path='^/v2/',
            persistent=True)
        self.set_option('ksef', 'retry_delay', '3600')
        try:
            ids = self.post(2, together=False)
            rows = self.records(ids)
            self.assertEqual([r['state'] for r in rows], ['offline'] * 2)
            first = rows[0]['deadline']
            self.assertEqual(rows[1]['deadline'], first)
            later = first + dt.timedelta(days=3)
            second_attempt = rows[1]['next_attempt']
            with Transaction().start(self.db, 0) as transaction:
                InvoiceKSeF = Pool().get('account.invoice.ksef')
                # Only the first one is due for another attempt.
                InvoiceKSeF.write(InvoiceKSeF.browse([rows[0]['id']]),
                    {'next_attempt': None})
                transaction.commit()
            with mock.patch('trytond.modules.ksef.offline.polish_today',
                    return_value=later):
                self.run_cron(SEND)
            rows = self.records(ids)
            self.assertEqual([r['state'] for r in rows], ['offline'] * 2)
            self.assertGreater(rows[0]['deadline'], later)
            self.assertEqual(rows[1]['deadline'], rows[0]['deadline'])
            # The second was not tried again.
            self.assertEqual(rows[1]['next_attempt'], second_attempt)
        finally:
            self.set_option('ksef', 'retry_delay',
                KSEF_OPTIONS['retry_delay'])
            self.simulator.faults.remove(outage.id)
        Invoice = Model.get('account.invoice')
        Invoice.click([Invoice(i) for i in ids], 'ksef_send')
        self.assertEqual([r['state'] for r in self.records(ids)],
            ['accepted'] * 2)

