# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""End-to-end: the KSeF client against the simulator over real HTTP on
loopback -- XAdES (RSA and EC) and KSeF-token authentication, interactive
and batch sessions with MF sample invoices, KSeF numbers and UPOs, and the
faults the simulator injects (lost answers, outages, expired tokens,
sessions closed by KSeF, key rotation, rate limits, timeouts)."""
import io
import logging
import os
import random
import time
import unittest

import httpx
from stdnum.pl import nip as stdnum_nip

from trytond_ksef import crypto, ksef_number, testcerts, xmlutil
from trytond_ksef.client import (
    BatchPackage,
    CertificateCredentials,
    ContextIdentifier,
    KSeFClient,
    PollPolicy,
    RetryPolicy,
    TokenCredentials,
)
from trytond_ksef.errors import (
    DuplicateInvoice,
    NetworkError,
    NoPublicKey,
    OutcomeUnknown,
    ServerError,
    SessionClosed,
)

try:
    from trytond_ksef.simulator import serve_in_thread
except ImportError:  # pragma: no cover - the simulator is part of the core
    serve_in_thread = None

DATA = os.path.join(os.path.dirname(__file__), 'data', 'fa3')
# MF samples without attachments (refused unless enabled) whose
# (type, number) pairs differ: many MF samples share one invoice number,
# which KSeF rejects as a duplicate (440) within the same seller.
SAMPLES = ['FA_3_Przyklad_1.xml', 'FA_3_Przyklad_10.xml',
    'FA_3_Przyklad_11.xml', 'FA_3_Przyklad_12.xml']


def random_nip(rng=random.SystemRandom()):
    "A random NIP with a valid checksum (TEST accepts any such NIP)."
    while True:
        digits = str(rng.randint(1000000000, 9999999999))
        if stdnum_nip.is_valid(digits) and digits[1:3] != '00':
            return digits


def mf_sample(name, nip, suffix=None):
    """The MF sample `name` with the seller NIP replaced by `nip` (and the
    invoice number suffixed, to send one sample several times)."""
    with open(os.path.join(DATA, name), 'rb') as f:
        data = f.read()
    root = xmlutil.parse(data)
    ns = {'fa': xmlutil.NS_FA3}
    seller = root.findtext('fa:Podmiot1/fa:DaneIdentyfikacyjne/fa:NIP',
        namespaces=ns)
    data = data.replace(b'<NIP>%s</NIP>' % seller.encode(),
        b'<NIP>%s</NIP>' % nip.encode(), 1)
    if suffix:
        number = root.findtext('fa:Fa/fa:P_2', namespaces=ns)
        data = data.replace(b'<P_2>%s</P_2>' % number.encode(),
            b'<P_2>%s%s</P_2>' % (number.encode(), suffix.encode()), 1)
    return data


def upo_numbers(upo):
    root = xmlutil.parse(upo.content)
    return [e.text for e in root.iter(
            '{%s}NumerKSeFDokumentu' % xmlutil.NS_UPO)]


@unittest.skipIf(serve_in_thread is None, "simulator not available")
class FlowTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = serve_in_thread(port=0, processing_delay=0.05)
        cls.simulator = cls.server.simulator

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def setUp(self):
        self.simulator.faults.clear()
        self.nip = random_nip()
        self.context = ContextIdentifier.nip(self.nip)
        self.addCleanup(self.simulator.check)

    def client(self, credentials=None, key_type='rsa', **kwargs):
        if credentials is None:
            cert_der, key = testcerts.make_certificate('authentication',
                nip=self.nip, seal=True, key_type=key_type)
            credentials = CertificateCredentials(self.context, cert_der,
                key)
        kwargs.setdefault('poll', PollPolicy(interval=0.05,
            max_interval=0.2, auth_timeout=20, invoice_timeout=20,
            session_timeout=30))
        kwargs.setdefault('retry', RetryPolicy(backoff_initial=0.05,
            backoff_max=0.2))
        kwargs.setdefault('timeout', httpx.Timeout(10.0))
        client = KSeFClient(self.server.base_url,
            status_url=self.server.latarnia_url, credentials=credentials,
            **kwargs)
        self.addCleanup(client.close)
        return client

    def send_online(self, client, names, suffix=None):
        "Open a session, send `names`, wait; return (session, statuses)."
        session = client.open_online_session()
        sent = [client.send_invoice(session,
                mf_sample(name, self.nip, suffix)) for name in names]
        statuses = [client.wait_for_invoice(session, s.reference_number)
            for s in sent]
        return session, sent, statuses


class TestOnlineFlow(FlowTestCase):

    def check_online(self, key_type):
        client = self.client(key_type=key_type)
        tokens = client.authenticate()
        self.assertEqual(tokens.context, self.context)
        session, sent, statuses = self.send_online(client, SAMPLES[:1])
        status = statuses[0]
        self.assertTrue(status.is_success, status.status)
        ksef_number.validate(status.ksef_number)
        self.assertTrue(status.ksef_number.startswith(self.nip + '-'))
        self.assertEqual(status.invoice_hash, sent[0].invoice_hash)

        upo = client.get_invoice_upo(session,
            ksef_number=status.ksef_number)
        self.assertEqual(upo_numbers(upo), [status.ksef_number])
        self.assertEqual(client.get_invoice_upo(session,
            invoice_reference=sent[0].reference_number).content, upo.content)
        self.assertEqual(client.download_upo(
            status.upo_download_url).content, upo.content)

        client.close_online_session(session)
        final = client.wait_for_session(session)
        self.assertTrue(final.is_success, final.status)
        self.assertEqual(final.successful_invoice_count, 1)
        pages = client.get_session_upos(final)
        self.assertEqual(len(pages), 1)
        self.assertIn(status.ksef_number, upo_numbers(pages[0]))
        self.assertEqual(client.download_upo(
            final.upo_pages[0].download_url).content, pages[0].content)
        client.revoke_session()
        self.assertIsNone(client.tokens)

    def test_online_rsa(self):
        self.check_online('rsa')

    def test_online_ec(self):
        self.check_online('ec')

    def test_ksef_token(self):
        _, secret = self.simulator.create_ksef_token(self.nip)
        client = self.client(TokenCredentials(self.context, secret))
        session, _, statuses = self.send_online(client, SAMPLES[1:2])
        self.assertTrue(statuses[0].is_success, statuses[0].status)
        client.close_online_session(session)
        self.assertTrue(client.wait_for_session(session).is_success)

    def test_reuse_persisted_session_and_tokens(self):
        saved = []
        client = self.client(on_tokens=saved.append)
        session = client.open_online_session()
        stored_session = session.to_dict()
        stored_tokens = saved[-1].to_dict()
        client.close()
        from trytond_ksef.client import AuthTokens, OnlineSession
        other = self.client(credentials=None,
            tokens=AuthTokens.from_dict(stored_tokens))
        session = OnlineSession.from_dict(stored_session)
        sent = other.send_invoice(session, mf_sample(SAMPLES[0], self.nip))
        status = other.wait_for_invoice(session, sent.reference_number)
        self.assertTrue(status.is_success, status.status)


class TestBatchFlow(FlowTestCase):

    def check_batch(self, compression):
        client = self.client()
        invoices = [(name, mf_sample(name, self.nip)) for name in SAMPLES]
        with BatchPackage.build(invoices, part_size=1500,
                compression=compression) as package:
            self.assertGreater(len(package.parts), 1)
            session = client.send_batch(package)
        final = client.wait_for_session(session)
        self.assertTrue(final.is_success, final.status)
        self.assertEqual(final.successful_invoice_count, len(SAMPLES))
        statuses = list(client.list_session_invoices(session))
        self.assertEqual(len(statuses), len(SAMPLES))
        by_hash = {s.invoice_hash: s for s in statuses}
        numbers = []
        for entry in package.entries:
            status = by_hash[entry.invoice_hash]
            self.assertTrue(status.is_success, status.status)
            ksef_number.validate(status.ksef_number)
            numbers.append(status.ksef_number)
        upos = client.get_session_upos(final)
        listed = [n for upo in upos for n in upo_numbers(upo)]
        self.assertEqual(sorted(listed), sorted(numbers))
        upo = client.get_invoice_upo(session, ksef_number=numbers[0])
        self.assertEqual(upo_numbers(upo), [numbers[0]])

    def test_batch_zip(self):
        self.check_batch('Zip')

    def test_batch_targz(self):
        self.check_batch('TarGz')


class TestFaultsOverHTTP(FlowTestCase):

    def test_answer_lost_then_duplicate(self):
        "Lost answer: outcome unknown, found by hash; a resend is 440."
        client = self.client()
        session = client.open_online_session()
        invoice = mf_sample(SAMPLES[0], self.nip)
        self.simulator.faults.add('drop_after_accept',
            path=r'/sessions/online/.*/invoices$', method='POST')
        with self.assertRaises(OutcomeUnknown) as cm:
            client.send_invoice(session, invoice)
        self.assertEqual(cm.exception.params['invoice_hash'],
            crypto.sha256_b64(invoice))
        found = client.find_session_invoice(session,
            cm.exception.params['invoice_hash'])
        self.assertIsNotNone(found)
        first = client.wait_for_invoice(session, found.reference_number)
        self.assertTrue(first.is_success, first.status)
        # Sending the same invoice again is refused as a duplicate that
        # names the KSeF number already given.
        again = client.send_invoice(session, invoice)
        status = client.wait_for_invoice(session, again.reference_number)
        error = status.error()
        self.assertIsInstance(error, DuplicateInvoice)
        self.assertEqual(error.params['original_ksef_number'],
            first.ksef_number)

    def test_outage_on_open_is_outcome_unknown(self):
        client = self.client()
        client.authenticate()
        self.simulator.faults.add('outage', path=r'/sessions/online$',
            method='POST')
        with self.assertRaises(OutcomeUnknown) as cm:
            client.open_online_session()
        self.assertEqual(cm.exception.params['reason'], 'HTTP 503')
        self.assertTrue(client.open_online_session().reference_number)

    def test_dropped_connection_on_get_is_retried(self):
        client = self.client()
        session = client.open_online_session()
        self.simulator.faults.add('outage', path=r'/sessions/[^/]+$',
            method='GET', mode='drop', times=2)
        status = client.get_session_status(session)
        self.assertEqual(status.code, 100)

    def test_timeout_on_get_is_retried(self):
        client = self.client(timeout=httpx.Timeout(0.5))
        session = client.open_online_session()
        self.simulator.faults.add('delay', path=r'/sessions/[^/]+$',
            method='GET', delay=1.0)
        status = client.get_session_status(session)
        self.assertEqual(status.code, 100)

    def test_expired_token_refreshed(self):
        saved = []
        client = self.client(on_tokens=saved.append)
        session = client.open_online_session()
        first = client.tokens.access_token
        self.simulator.expire_access_tokens()
        sent = client.send_invoice(session, mf_sample(SAMPLES[0], self.nip))
        self.assertNotEqual(client.tokens.access_token, first)
        self.assertEqual(saved[-1], client.tokens)
        self.assertTrue(client.wait_for_invoice(session,
            sent.reference_number).is_success)

    def test_session_closed_by_ksef(self):
        client = self.client()
        session = client.open_online_session()
        self.simulator.faults.add('session_closed',
            path=r'/sessions/online/.*/invoices$', method='POST')
        with self.assertRaises(SessionClosed) as cm:
            client.send_invoice(session, mf_sample(SAMPLES[0], self.nip))
        self.assertTrue(cm.exception.transient)
        new = client.open_online_session()
        sent = client.send_invoice(new, mf_sample(SAMPLES[0], self.nip))
        self.assertTrue(client.wait_for_invoice(new,
            sent.reference_number).is_success)

    def test_key_rotation(self):
        client = self.client()
        client.authenticate()
        client.fetch_public_keys()
        self.simulator.rotate_key('SymmetricKeyEncryption')
        session = client.open_online_session()
        self.assertEqual(session.public_key_id, self.simulator.public_key(
            'SymmetricKeyEncryption').public_key_id)

    def test_key_rotation_token_encryption(self):
        _, secret = self.simulator.create_ksef_token(self.nip)
        client = self.client(TokenCredentials(self.context, secret))
        client.fetch_public_keys()
        self.simulator.rotate_key('KsefTokenEncryption')
        self.assertTrue(client.authenticate().access_token)

    def test_rate_limit_honoured(self):
        "KSeF's own limit (10 session-status calls a second): 429, wait."
        client = self.client()
        session = client.open_online_session()
        self.simulator.log.clear()
        for _ in range(15):
            self.assertEqual(client.get_session_status(session).code, 100)
        statuses = [e.get('status') for e in self.simulator.log.entries()
            if e.get('operation') == 'GET /sessions/{referenceNumber}']
        self.assertIn(429, statuses)
        self.assertEqual(statuses.count(200), 15)

    def test_status_service(self):
        client = self.client()
        self.assertTrue(client.get_ksef_status().is_available)
        event = self.simulator.latarnia.announce('FAILURE')
        try:
            status = client.get_ksef_status()
            self.assertEqual(status.state, 'FAILURE')
            self.assertFalse(status.is_available)
            self.assertEqual([m.event_id for m in status.messages], [event])
            messages = client.get_ksef_messages()
            mine = [m for m in messages if m.event_id == event]
            self.assertEqual(mine[0].category, 'FAILURE')
            self.assertEqual(mine[0].type, 'FAILURE_START')
            self.assertIsNotNone(mine[0].start)
            self.assertIsNone(mine[0].end)

            self.simulator.latarnia.end(event)
            self.assertTrue(client.get_ksef_status().is_available)
            mine = [m for m in client.get_ksef_messages()
                if m.event_id == event]
            self.assertEqual([m.type for m in mine],
                ['FAILURE_START', 'FAILURE_END'])
            self.assertIsNotNone(mine[-1].end)

            total = self.simulator.latarnia.announce('TOTAL_FAILURE')
            status = client.get_ksef_status()
            self.assertEqual(status.state, 'TOTAL_FAILURE')
            self.assertEqual(status.messages[0].category, 'TOTAL_FAILURE')
            self.assertEqual(status.messages[0].event_id, total)
        finally:
            self.simulator.latarnia.clear()

    def test_status_service_down(self):
        "Latarnia unreachable: a transient error after the retries."
        client = self.client()
        self.simulator.faults.add('outage', path='^/latarnia/',
            persistent=True)
        with self.assertRaises(ServerError) as cm:
            client.get_ksef_status()
        self.assertTrue(cm.exception.transient)
        self.simulator.faults.clear()
        self.simulator.faults.add('outage', path='^/latarnia/',
            mode='drop', persistent=True)
        with self.assertRaises(NetworkError) as cm:
            client.get_ksef_status()
        self.assertTrue(cm.exception.transient)

    def test_connection_refused(self):
        "KSeF's port closed: retried, then a transient NetworkError."
        server = serve_in_thread(port=0, processing_delay=0.05)
        try:
            client = KSeFClient(server.base_url, credentials=(
                    CertificateCredentials(self.context,
                        *testcerts.make_certificate('authentication',
                            nip=self.nip, seal=True))),
                retry=RetryPolicy(backoff_initial=0.01, backoff_max=0.02),
                timeout=httpx.Timeout(5.0), poll=PollPolicy(interval=0.05))
            self.addCleanup(client.close)
            session = client.open_online_session()
        finally:
            server.stop()
        for call in (lambda: client.get_session_status(session),
                lambda: client.send_invoice(session,
                    mf_sample(SAMPLES[0], self.nip))):
            with self.assertRaises(NetworkError) as cm:
                call()
            self.assertTrue(cm.exception.transient)

    def test_timeout_on_send_is_outcome_unknown(self):
        """No answer in time to a send: the invoice may be accepted, so
        the client does not resend it; the status list finds it."""
        client = self.client(timeout=httpx.Timeout(0.3))
        session = client.open_online_session()
        invoice = mf_sample(SAMPLES[0], self.nip)
        self.simulator.faults.add('delay', delay=0.6, method='POST',
            path=r'/sessions/online/.*/invoices$')
        log = len(self.simulator.log.entries())
        with self.assertRaises(OutcomeUnknown) as cm:
            client.send_invoice(session, invoice)
        self.assertEqual(cm.exception.params['reason'], 'ReadTimeout')
        found = None
        for _ in range(50):
            found = client.find_session_invoice(session,
                crypto.sha256_b64(invoice))
            if found is not None:
                break
            time.sleep(0.05)
        self.assertIsNotNone(found)
        self.assertTrue(client.wait_for_invoice(session,
                found.reference_number).is_success)
        sends = [e for e in self.simulator.log.entries()[log:]
            if e.get('operation', '').endswith('/invoices')
            and e['method'] == 'POST']
        self.assertEqual(len(sends), 1)

    def test_outage_drop_on_send_is_outcome_unknown(self):
        "The connection dropped by KSeF mid-request: no blind resend."
        client = self.client()
        session = client.open_online_session()
        self.simulator.faults.add('outage', mode='drop', method='POST',
            path=r'/sessions/online/.*/invoices$')
        with self.assertRaises(OutcomeUnknown) as cm:
            client.send_invoice(session, mf_sample(SAMPLES[0], self.nip))
        self.assertTrue(cm.exception.transient)
        self.assertIsNone(client.find_session_invoice(session,
            cm.exception.params['invoice_hash']))

    def test_every_key_withdrawn(self):
        "21470, and the reloaded list has no usable key: NoPublicKey."
        client = self.client()
        client.authenticate()
        client.fetch_public_keys()
        withdrawn = [k for k in self.simulator.keys
            if k.usage == 'SymmetricKeyEncryption' and not k.withdrawn]
        for key in withdrawn:
            key.withdrawn = True
        try:
            with self.assertRaises(NoPublicKey) as cm:
                client.open_online_session()
        finally:
            for key in withdrawn:
                key.withdrawn = False
        self.assertEqual(cm.exception.params['usage'],
            'SymmetricKeyEncryption')


class TestNoSecretsInLogs(FlowTestCase):

    def test_whole_flow(self):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        root = logging.getLogger()
        old = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        try:
            _, secret = self.simulator.create_ksef_token(self.nip)
            client = self.client(TokenCredentials(self.context, secret))
            self.simulator.faults.add('drop_after_accept',
                path=r'/invoices$', method='POST')
            session = client.open_online_session()
            invoice = mf_sample(SAMPLES[0], self.nip)
            with self.assertRaises(OutcomeUnknown):
                client.send_invoice(session, invoice)
            found = client.find_session_invoice(session,
                crypto.sha256_b64(invoice))
            status = client.wait_for_invoice(session,
                found.reference_number)
            client.download_upo(status.upo_download_url)
            self.simulator.expire_access_tokens()
            client.close_online_session(session)
            with BatchPackage.build([mf_sample(SAMPLES[1], self.nip)]) \
                    as package:
                batch = client.send_batch(package)
            final = client.wait_for_session(batch)
            client.download_upo(final.upo_pages[0].download_url)
            tokens = client.tokens
            client.revoke_session()
        finally:
            root.removeHandler(handler)
            root.setLevel(old)
        output = stream.getvalue()
        self.assertIn(session.reference_number, output)
        secrets = [secret, secret.split('|')[-1], tokens.access_token,
            tokens.refresh_token, crypto.b64(session.key.key),
            crypto.b64(session.key.iv), crypto.b64(batch.key.key),
            httpx.URL(status.upo_download_url).query.decode(),
            httpx.URL(final.upo_pages[0].download_url).query.decode()]
        secrets += [httpx.URL(u.url).query.decode()
            for u in batch.part_uploads]
        for value in secrets:
            self.assertTrue(value)
            self.assertNotIn(value, output)
        self.assertNotIn('<Faktura', output)


if __name__ == '__main__':
    unittest.main()
