# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import unittest

import trytond.config as config
from trytond.exceptions import UserError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction


class AuthorizationTestCase(unittest.TestCase):
    "KSeF authorization settings"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        activate_module('ksef')

    def setUp(self):
        super().setUp()
        if not config.has_section('ksef'):
            config.add_section('ksef')
        self.addCleanup(self._clear_options)

    def _clear_options(self):
        for option in list(config.options('ksef')):
            config.set('ksef', option, '')

    def _authorization(self, nip='5265877635', environment='test'):
        pool = Pool()
        Authorization = pool.get('ksef.authorization')
        Identifier = pool.get('party.identifier')
        company = create_company()
        if nip:
            Identifier.create([{
                        'party': company.party.id,
                        'type': 'pl_vat',
                        'code': nip,
                        }])
        authorization, = Authorization.create([{
                    'company': company.id,
                    'environment': environment,
                    }])
        return company, authorization

    @with_transaction()
    def test_environment_urls_default_and_override(self):
        "Official URLs by default, trytond.conf overrides per environment"
        company, authorization = self._authorization()
        with set_company(company):
            urls = authorization.environment_urls()
            self.assertEqual(urls.api_url, 'https://api-test.ksef.mf.gov.pl/v2')
            self.assertEqual(urls.qr_url, 'https://qr-test.ksef.mf.gov.pl')
            config.set('ksef', 'test_api_url', 'http://127.0.0.1:8765/v2')
            config.set('ksef', 'prod_api_url', 'https://proxy.example/v2')
            urls = authorization.environment_urls()
            self.assertEqual(urls.api_url, 'http://127.0.0.1:8765/v2')
            # The QR address stays the environment's own.
            self.assertEqual(urls.qr_url, 'https://qr-test.ksef.mf.gov.pl')

    @with_transaction()
    def test_environment_override_invalid(self):
        "A malformed override is a clear configuration error"
        company, authorization = self._authorization()
        config.set('ksef', 'test_api_url', 'ftp://nowhere')
        with set_company(company):
            with self.assertRaises(UserError) as cm:
                authorization.environment_urls()
        self.assertIn('test', cm.exception.message)

    @with_transaction()
    def test_nip_compact_from_pl_vat(self):
        "The context NIP is the compact form of the pl_vat identifier"
        company, authorization = self._authorization(nip='526-587-76-35')
        self.assertEqual(authorization.nip, '5265877635')

    @with_transaction()
    def test_nip_missing_is_clear(self):
        "Without a Polish NIP, the status and check_ready say what to do"
        company, authorization = self._authorization(nip=None)
        self.assertIsNone(authorization.nip)
        self.assertIn('Polish VAT Number', authorization.status)
        with self.assertRaises(UserError) as cm:
            authorization.check_ready()
        self.assertIn(company.rec_name, cm.exception.message)

    @with_transaction()
    def test_secret_store_round_trip_and_binding(self):
        "Secrets are encrypted at rest and bound to their owner"
        pool = Pool()
        Secret = pool.get('ksef.secret')
        company, authorization = self._authorization()
        config.set(
            'ksef', 'secret_key', 'unit-test-secret-key-0123456789-abcdef')
        Secret.store(company, authorization, 'ksef_token', b'TOKEN-VALUE')
        secret, = Secret.search([])
        self.assertNotIn(b'TOKEN-VALUE', bytes(secret.blob))
        self.assertEqual(
            Secret.fetch(authorization, 'ksef_token'), b'TOKEN-VALUE')
        # A blob moved to another owner does not decrypt.
        Secret.write([secret], {'owner': 'ksef.authorization,999999'})
        with self.assertRaises(UserError):
            Secret.fetch('ksef.authorization,999999', 'ksef_token')
        # Another secret key cannot read it either.
        Secret.write([secret], {'owner': str(authorization)})
        config.set(
            'ksef', 'secret_key', 'another-secret-key-0123456789-abcdefgh')
        with self.assertRaises(UserError):
            Secret.fetch(authorization, 'ksef_token')

    @with_transaction()
    def test_secret_store_has_no_rpc(self):
        "The secret store exposes no RPC method at all"
        Secret = Pool().get('ksef.secret')
        self.assertEqual(Secret.__rpc__, {})
