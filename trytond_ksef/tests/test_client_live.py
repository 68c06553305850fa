# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Opt-in test against the real KSeF TEST environment.

Skipped unless these are set:

* ``KSEF_TEST_NIP``: the NIP (context and seller) to test with -- on TEST a
  random valid NIP and a self-signed certificate for it are enough;
* ``KSEF_TEST_CERT``: path of the authentication certificate (PEM or DER);
* ``KSEF_TEST_KEY``: path of its private key (PEM or DER);
* ``KSEF_TEST_KEY_PASSWORD``: the key's password, if it is encrypted;
* ``KSEF_TEST_API_URL`` (optional): another API base URL than TEST's.

It authenticates with XAdES, sends one invoice interactively and two in a
batch, fetches KSeF numbers and UPOs, and revokes the authentication.
Never point it at production: it sends invoices.
"""
import datetime as dt
import os
import unittest
import uuid

from trytond_ksef import ksef_number, xmlutil
from trytond_ksef.client import (
    BatchPackage,
    CertificateCredentials,
    ContextIdentifier,
    KSeFClient,
    PollPolicy,
)

REQUIRED = ('KSEF_TEST_NIP', 'KSEF_TEST_CERT', 'KSEF_TEST_KEY')
MISSING = [name for name in REQUIRED if not os.environ.get(name)]
SAMPLE = os.path.join(os.path.dirname(__file__), 'data', 'fa3',
    'minimal-fa3-vat.xml')


def invoice(nip, number, issue_date):
    "The minimal MF-style FA(3) invoice for seller `nip`, dated today."
    with open(SAMPLE, 'rb') as f:
        data = f.read()
    root = xmlutil.parse(data)
    ns = {'fa': xmlutil.NS_FA3}
    seller = root.findtext('fa:Podmiot1/fa:DaneIdentyfikacyjne/fa:NIP',
        namespaces=ns)
    old_number = root.findtext('fa:Fa/fa:P_2', namespaces=ns)
    old_date = root.findtext('fa:Fa/fa:P_1', namespaces=ns)
    data = data.replace(b'<NIP>%s</NIP>' % seller.encode(),
        b'<NIP>%s</NIP>' % nip.encode(), 1)
    data = data.replace(b'<P_2>%s</P_2>' % old_number.encode(),
        b'<P_2>%s</P_2>' % number.encode(), 1)
    data = data.replace(b'<P_1>%s</P_1>' % old_date.encode(),
        b'<P_1>%s</P_1>' % issue_date.isoformat().encode(), 1)
    return data


@unittest.skipIf(MISSING, "live KSeF TEST check skipped: set %s (and "
    "KSEF_TEST_KEY_PASSWORD for an encrypted key) to run it"
    % ', '.join(MISSING))
class TestLiveKSeF(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        from trytond_ksef.certificates import (
            load_certificate,
            load_private_key,
        )
        with open(os.environ['KSEF_TEST_CERT'], 'rb') as f:
            cls.certificate = load_certificate(f.read())
        with open(os.environ['KSEF_TEST_KEY'], 'rb') as f:
            cls.key = load_private_key(f.read(),
                os.environ.get('KSEF_TEST_KEY_PASSWORD') or None)
        cls.nip = os.environ['KSEF_TEST_NIP']

    def setUp(self):
        overrides = {}
        if os.environ.get('KSEF_TEST_API_URL'):
            overrides['api_url'] = os.environ['KSEF_TEST_API_URL']
        context = ContextIdentifier.nip(self.nip)
        self.client = KSeFClient.for_environment('test', overrides,
            credentials=CertificateCredentials(context,
                self.certificate.der, self.key),
            poll=PollPolicy(auth_timeout=180, invoice_timeout=180,
                session_timeout=600))
        self.addCleanup(self.client.close)

    def today(self):
        # The UTC date is never later than the Polish one: P_1 cannot be
        # after the day KSeF accepts the invoice.
        return dt.datetime.now(dt.timezone.utc).date()

    def test_status_service(self):
        status = self.client.get_ksef_status()
        self.assertTrue(status.state)

    def test_online_and_batch(self):
        client = self.client
        tokens = client.authenticate()
        self.addCleanup(client.revoke_session)
        self.assertTrue(tokens.access_token)

        session = client.open_online_session()
        data = invoice(self.nip, 'TRYTOND-%s' % uuid.uuid4().hex[:12],
            self.today())
        sent = client.send_invoice(session, data)
        status = client.wait_for_invoice(session, sent.reference_number)
        self.assertTrue(status.is_success, status.status)
        ksef_number.validate(status.ksef_number)
        upo = client.get_invoice_upo(session, ksef_number=status.ksef_number)
        self.assertIn(status.ksef_number.encode(), upo.content)
        client.close_online_session(session)
        final = client.wait_for_session(session)
        self.assertTrue(final.is_success, final.status)
        self.assertTrue(client.get_session_upos(final))

        invoices = [invoice(self.nip, 'TRYTOND-%s' % uuid.uuid4().hex[:12],
                self.today()) for _ in range(2)]
        with BatchPackage.build(invoices) as package:
            batch = client.send_batch(package)
        final = client.wait_for_session(batch)
        self.assertTrue(final.is_success, final.status)
        numbers = [s.ksef_number
            for s in client.list_session_invoices(batch)]
        self.assertEqual(len(numbers), 2)
        for number in numbers:
            ksef_number.validate(number)


if __name__ == '__main__':
    unittest.main()
