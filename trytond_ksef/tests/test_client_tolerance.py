# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The client reads KSeF's answers the way KSeF asks clients to: unknown
JSON properties are ignored (changelog 2.1.2) and an optional property may
come as an explicit null instead of being left out.  The whole flow runs
against the simulator in-process, with every JSON answer decorated on the
way back."""
import datetime as dt
import functools
import json
import unittest

import httpx

from trytond_ksef import ksef_number, testcerts
from trytond_ksef.client import (
    BatchPackage,
    CertificateCredentials,
    ContextIdentifier,
    KSeFClient,
    PollPolicy,
    RetryPolicy,
)
from trytond_ksef.errors import APIError
from trytond_ksef.simulator import Simulator, openapi
from trytond_ksef.simulator import testing as T
from trytond_ksef.simulator.state import WARSAW

NIP = '5265877635'


@functools.lru_cache(maxsize=None)
def nullable_names():
    "Names of the properties the spec declares nullable somewhere."
    names = set()

    def walk(node):
        if isinstance(node, dict):
            for name, schema in (node.get('properties') or {}).items():
                if isinstance(schema, dict) and schema.get('nullable'):
                    names.add(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(openapi.spec_dict()['components']['schemas'])
    return frozenset(names)


# Objects that are maps (free keys), not models: left as they are.
MAPS = ('headers', 'extensions')


def decorate(value, nulls, name=None):
    """Add an unknown property (scalar, object and list) to every object
    but maps; with `nulls`, also give every absent nullable property an
    explicit null."""
    if isinstance(value, list):
        return [decorate(v, nulls) for v in value]
    if not isinstance(value, dict) or name in MAPS:
        return value
    result = {k: decorate(v, nulls, k) for k, v in value.items()}
    result['futureProperty'] = "ignored"
    result['futureObject'] = {'nested': [1, 2], 'flag': True}
    result['futureList'] = [{'a': None}]
    if nulls:
        for name in nullable_names():
            result.setdefault(name, None)
    return result


class DecoratingTransport(httpx.BaseTransport):
    "Wraps the simulator's transport and decorates every JSON answer."

    def __init__(self, inner, nulls):
        self.inner = inner
        self.nulls = nulls
        self.decorated = 0

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        content_type = response.headers.get('content-type', '')
        if 'json' not in content_type:
            return response
        response.read()
        body = decorate(json.loads(response.content), self.nulls)
        self.decorated += 1
        headers = [(k, v) for k, v in response.headers.items()
            if k.lower() != 'content-length']
        return httpx.Response(response.status_code, headers=headers,
            content=json.dumps(body).encode('utf-8'), request=request)


class ToleranceMixin:
    nulls = False

    def setUp(self):
        self.sim = Simulator(processing_delay=0.02)
        self.addCleanup(self.sim.check)
        self.transport = DecoratingTransport(self.sim.transport(),
            self.nulls)
        cert_der, key = testcerts.make_certificate('authentication',
            nip=NIP, seal=True, not_before=dt.datetime(2020, 1, 1,
                tzinfo=dt.timezone.utc))
        self.client = KSeFClient('http://ksef.test/v2',
            status_url='http://ksef.test/latarnia',
            transport=self.transport,
            credentials=CertificateCredentials(
                ContextIdentifier.nip(NIP), cert_der, key),
            poll=PollPolicy(interval=0.02, max_interval=0.05,
                auth_timeout=10, invoice_timeout=10, session_timeout=10),
            retry=RetryPolicy(backoff_initial=0.01, backoff_max=0.02))
        self.addCleanup(self.client.close)

    def invoice(self, number):
        return T.sample_invoice(NIP, number,
            self.sim.now().astimezone(WARSAW).date())

    def test_online_flow(self):
        client = self.client
        tokens = client.authenticate()
        self.assertTrue(tokens.access_token)
        session = client.open_online_session()
        sent = client.send_invoice(session, self.invoice('TOL/1'))
        status = client.wait_for_invoice(session, sent.reference_number)
        self.assertTrue(status.is_success, status.status)
        ksef_number.validate(status.ksef_number)
        upo = client.get_invoice_upo(session,
            ksef_number=status.ksef_number)
        self.assertIn(status.ksef_number.encode(), upo.content)
        client.download_upo(status.upo_download_url)
        # a duplicate, with its extensions
        again = client.send_invoice(session, self.invoice('TOL/1'))
        duplicate = client.wait_for_invoice(session, again.reference_number)
        self.assertEqual(duplicate.original_ksef_number, status.ksef_number)
        self.assertEqual(
            [s.reference_number for s in client.list_session_invoices(
                session, failed=True)], [again.reference_number])
        client.close_online_session(session)
        final = client.wait_for_session(session)
        self.assertTrue(final.is_success, final.status)
        self.assertEqual(len(client.get_session_upos(final)), 1)
        client.refresh_access_token()
        client.revoke_session()
        self.assertGreater(self.transport.decorated, 10)

    def test_batch_flow(self):
        client = self.client
        with BatchPackage.build([self.invoice('TOL/B1'),
                    self.invoice('TOL/B2')]) as package:
            session = client.send_batch(package)
        final = client.wait_for_session(session)
        self.assertTrue(final.is_success, final.status)
        numbers = [s.ksef_number
            for s in client.list_session_invoices(session)]
        self.assertEqual(len(numbers), 2)

    def test_errors_and_status_service(self):
        client = self.client
        client.authenticate()
        with self.assertRaises(APIError) as cm:
            client.get_session_status('20250625-SO-2C3E6C8000-B675CF5D68-07')
        self.assertEqual(cm.exception.params['exception_code'], 21173)
        self.sim.latarnia.announce('FAILURE')
        status = client.get_ksef_status()
        self.assertEqual(status.state, 'FAILURE')
        self.assertEqual(len(client.get_ksef_messages()), 1)


class UnknownPropertiesTest(ToleranceMixin, unittest.TestCase):
    "Every JSON object carries properties the client does not know."


class ExplicitNullsTest(ToleranceMixin, unittest.TestCase):
    "Unknown properties, and absent nullable properties sent as null."
    nulls = True


if __name__ == '__main__':
    unittest.main()
