# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The KSeF simulator: contract, authentication, online sessions, invoice
checks, duplicates, offline mode, technical corrections, batch, UPO."""
import base64
import datetime as dt
import json
import time
import unittest

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from signxml import SignatureMethod, methods

from trytond_ksef import crypto, ksef_number, testcerts, xmlutil
from trytond_ksef.simulator import Simulator
from trytond_ksef.simulator import testing as T
from trytond_ksef.simulator.state import WARSAW

NIP = '5265877635'
OTHER_NIP = '7980332920'
UTC = dt.timezone.utc


def long_lived(nip=NIP, **kwargs):
    "A certificate valid 2020-2040, for tests that move the clock."
    return testcerts.make_certificate(nip=nip, seal=True,
        not_before=dt.datetime(2020, 1, 1, tzinfo=UTC),
        not_after=dt.datetime(2040, 1, 1, tzinfo=UTC), **kwargs)


def warsaw(year, month, day, hour=12, minute=0, second=0):
    return dt.datetime(year, month, day, hour, minute, second,
        tzinfo=WARSAW)


class SimulatorCase(unittest.TestCase):
    "A fresh in-process simulator per test; no contract violation allowed."

    simulator_options = {}

    def setUp(self):
        options = {'processing_delay': 0.02}
        options.update(self.simulator_options)
        self.sim = Simulator(**options)
        self.client = httpx.Client(transport=self.sim.transport(),
            base_url='http://ksef.test/v2', timeout=5)
        self.addCleanup(self.client.close)

    def tearDown(self):
        self.sim.check()

    def token(self, nip=NIP, **kwargs):
        kwargs.setdefault('cert', long_lived(nip))
        return T.authenticate(self.client, nip, **kwargs)

    def assertKSeFError(self, response, code):
        self.assertEqual(response.status_code, 400, response.text)
        body = response.json()
        codes = [d['exceptionCode']
            for d in body['exception']['exceptionDetailList']]
        self.assertEqual(codes, [code], response.text)
        return body['exception']['exceptionDetailList'][0]

    def online_invoice(self, xml, token=None, **kwargs):
        "Open a session, send `xml`, return (token, session, final status)."
        token = token or self.token()
        session, key = T.open_online(self.client, token)
        response = T.send(self.client, token, session, key, xml, **kwargs)
        self.assertEqual(response.status_code, 202, response.text)
        status = T.wait_invoice(self.client, token, session,
            response.json()['referenceNumber'])
        return token, session, status


class ContractTest(SimulatorCase):

    def test_challenge(self):
        response = self.client.post('/auth/challenge')
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertRegex(body['challenge'],
            r'^\d{8}-CR-[0-9A-F]{10}-[0-9A-F]{10}-[0-9A-F]{2}$')
        timestamp = dt.datetime.fromisoformat(body['timestamp'])
        self.assertEqual(body['timestampMs'],
            int(timestamp.timestamp() * 1000))
        self.assertEqual(body['clientIp'], '127.0.0.1')

    def test_public_key_certificates(self):
        response = self.client.get('/security/public-key-certificates')
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual(sorted(u for c in body for u in c['usage']),
            ['KsefTokenEncryption', 'SymmetricKeyEncryption'])
        for item in body:
            der = base64.b64decode(item['certificate'])
            self.assertEqual(item['certificateId'], crypto.sha256_b64(der))
            public = x509.load_der_x509_certificate(der).public_key()
            self.assertEqual(public.key_size, 2048)
            spki = public.public_bytes(serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo)
            self.assertEqual(item['publicKeyId'], crypto.sha256_b64(spki))
        # two different keys, as at MF
        self.assertNotEqual(body[0]['publicKeyId'], body[1]['publicKeyId'])

    def test_missing_bearer_is_401_problem(self):
        response = self.client.post('/sessions/online', json={})
        self.assertEqual(response.status_code, 401)
        self.assertEqual(response.headers['content-type'],
            'application/problem+json')
        self.assertEqual(response.json()['status'], 401)

    def test_forged_bearer_is_401(self):
        token = self.token()
        header, payload, signature = token.split('.')
        forged = '%s.%s.%s' % (header, payload, signature[::-1])
        response = self.client.get('/sessions?sessionType=Online',
            headers=T.bearer(forged))
        self.assertEqual(response.status_code, 401)

    def test_schema_violation_is_21405(self):
        token = self.token()
        response = self.client.post('/sessions/online',
            headers=T.bearer(token),
            json={'formCode': {'systemCode': 'FA (3)',
                    'schemaVersion': '1-0E'},
                'encryption': {'encryptedSymmetricKey': 'AAAA',
                    'initializationVector': 'AAAA'}})
        detail = self.assertKSeFError(response, 21405)
        self.assertIn('formCode: required', detail['details'])
        entry = self.sim.log.entries()[-1]
        self.assertEqual(entry['validation'], 'request-invalid')

    def test_schema_violation_problem_details(self):
        response = self.client.post('/auth/ksef-token',
            headers={'X-Error-Format': 'problem-details'},
            json={'challenge': 'short'})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.headers['content-type'],
            'application/problem+json')
        self.assertEqual(response.json()['errors'][0]['code'], 21405)

    def test_bad_path_parameter_is_21405(self):
        token = self.token()
        response = self.client.get('/sessions/not-a-reference',
            headers=T.bearer(token))
        self.assertKSeFError(response, 21405)

    def test_unknown_session_is_21173(self):
        token = self.token()
        response = self.client.get(
            '/sessions/20250625-SO-2C3E6C8000-B675CF5D68-07',
            headers=T.bearer(token))
        self.assertKSeFError(response, 21173)

    def test_unknown_path_is_404(self):
        self.assertEqual(self.client.get('/no/such/thing').status_code, 404)

    def test_operation_not_simulated_is_501(self):
        "A KSeF operation the simulator does not serve says so."
        response = self.client.get('/certificates/limits')
        self.assertEqual(response.status_code, 501)
        self.assertIn('/certificates/limits', response.json()['detail'])
        entry = self.sim.log.entries()[-1]
        self.assertEqual(entry['validation'], 'not-simulated')
        self.assertEqual(entry['operation'], 'GET /certificates/limits')

    def test_response_violation_is_reported(self):
        "A simulator answer breaking the spec is a 500 and is recorded."
        original = self.sim._challenge

        def broken(request, ctx):
            response = original(request, ctx)
            response.set_data(b'{"challenge": "x"}')
            return response

        self.sim._challenge = broken
        response = self.client.post('/auth/challenge')
        self.assertEqual(response.status_code, 500)
        self.assertEqual(len(self.sim.contract_violations), 1)
        with self.assertRaises(AssertionError):
            self.sim.check()
        self.sim.contract_violations.clear()

    def test_every_route_is_a_spec_operation(self):
        "Each /v2 route is an operation of open-api.json (so validated)."
        from trytond_ksef.simulator import app, openapi
        for method, template, _, _ in app.ROUTES:
            with self.subTest(method=method, template=template):
                self.assertIsNotNone(openapi.operation(method, template))

    def test_null_for_nullable_fields(self):
        """KSeF accepts null where the spec says nullable, also for the
        properties written as a nullable allOf reference (the docs' own
        example sends "hashOfCorrectedInvoice": null)."""
        token = self.token()
        key, info = T.encryption(self.client)
        response = self.client.post('/sessions/online',
            headers=T.bearer(token), json={'formCode': T.FA3,
                'encryption': dict(info, publicKeyId=None)})
        self.assertEqual(response.status_code, 201, response.text)
        session = response.json()['referenceNumber']
        xml = T.sample_invoice(NIP, 'NULL/1',
            self.sim.now().astimezone(WARSAW).date())
        body = T.send_body(key, xml)
        body['hashOfCorrectedInvoice'] = None
        response = self.client.post(
            '/sessions/online/%s/invoices' % session,
            headers=T.bearer(token), json=body)
        self.assertEqual(response.status_code, 202, response.text)
        status = T.wait_invoice(self.client, token, session,
            response.json()['referenceNumber'])
        self.assertEqual(status['status']['code'], 200, status)

        archive = T.zip_package({'a.xml': T.sample_invoice(NIP, 'NULL/2',
                    self.sim.now().astimezone(WARSAW).date())})
        key, info = T.encryption(self.client)
        body = T.open_batch_body(info, archive,
            T.batch_parts(key, archive, len(archive)))
        body['batchFile']['compressionType'] = None
        response = self.client.post('/sessions/batch',
            headers=T.bearer(token), json=body)
        self.assertEqual(response.status_code, 201, response.text)

        _, secret = self.sim.create_ksef_token(NIP)
        challenge = self.client.post('/auth/challenge').json()
        key_id, public = T.public_key(self.client, 'KsefTokenEncryption')
        plain = '%s|%d' % (secret, challenge['timestampMs'])
        response = self.client.post('/auth/ksef-token', json={
                'challenge': challenge['challenge'],
                'contextIdentifier': {'type': 'Nip', 'value': NIP},
                'encryptedToken': crypto.b64(
                    crypto.rsa_oaep_encrypt(public, plain.encode())),
                'publicKeyId': None, 'authorizationPolicy': None})
        self.assertEqual(response.status_code, 202, response.text)

    def test_nullable_reference_still_checked(self):
        "A non-null value of a nullable reference is checked as before."
        token = self.token()
        session, key = T.open_online(self.client, token)
        body = T.send_body(key, T.sample_invoice(NIP, 'NULL/3'))
        body['hashOfCorrectedInvoice'] = 'not a hash'
        response = self.client.post(
            '/sessions/online/%s/invoices' % session,
            headers=T.bearer(token), json=body)
        detail = self.assertKSeFError(response, 21405)
        self.assertTrue(any('hashOfCorrectedInvoice' in d
                for d in detail['details']), detail)

    def test_lenient_where_ksef_is(self):
        """Unknown JSON properties are ignored, a charset parameter on the
        content type is fine and the Bearer scheme is case-insensitive."""
        token = self.token()
        key, info = T.encryption(self.client)
        body = {'formCode': T.FA3, 'encryption': info, 'futureField': 1}
        response = self.client.post('/sessions/online', headers={
                'Authorization': 'bearer ' + token,
                'Content-Type': 'application/json; charset=utf-8'},
            content=json.dumps(body).encode('utf-8'))
        self.assertEqual(response.status_code, 201, response.text)
        response = self.client.post('/sessions/online', headers={
                'Authorization': 'Basic ' + token}, json=body)
        self.assertEqual(response.status_code, 401)

    def test_simulator_error_is_loud(self):
        "An exception in a handler: 500, a violation and a log entry."
        def broken(request, ctx):
            raise RuntimeError("bug")

        self.sim._challenge = broken
        with self.assertLogs('trytond_ksef.simulator', 'ERROR'):
            response = self.client.post('/auth/challenge')
        self.assertEqual(response.status_code, 500)
        self.assertIn('RuntimeError', response.json()['detail'])
        self.assertEqual(self.sim.log.entries()[-1]['status'], 500)
        with self.assertRaises(AssertionError):
            self.sim.check()
        self.sim.contract_violations.clear()

    def test_system_warning_on_request(self):
        response = self.client.post('/auth/challenge',
            headers={'X-Test-System-Warning': '1'})
        self.assertIn('X-System-Warning', response.headers)


class AuthenticationTest(SimulatorCase):

    def xades(self, nip=NIP, cert=None, context_nip=None, mutate=None,
            **cert_options):
        if cert is None:
            cert = testcerts.make_certificate(nip=nip, seal=True,
                **cert_options)
        challenge = self.client.post('/auth/challenge').json()['challenge']
        signed = T.signed_auth_request(challenge, context_nip or nip, *cert)
        if mutate:
            signed = mutate(signed)
        return self.client.post('/auth/xades-signature', content=signed,
            headers={'Content-Type': 'application/xml'})

    def test_admin_auth_document(self):
        "The admin API gives back the signed request byte for byte."
        cert = testcerts.make_certificate(nip=NIP, seal=True)
        challenge = self.client.post('/auth/challenge').json()['challenge']
        signed = T.signed_auth_request(challenge, NIP, *cert)
        response = self.client.post('/auth/xades-signature', content=signed,
            headers={'Content-Type': 'application/xml'})
        self.assertEqual(response.status_code, 202, response.text)
        reference = response.json()['referenceNumber']
        listing = self.client.get('http://ksef.test/_sim/auth')
        self.assertEqual(listing.status_code, 200)
        operation, = listing.json()
        self.assertEqual(operation['referenceNumber'], reference)
        self.assertEqual(operation['contextIdentifier'],
            {'type': 'Nip', 'value': NIP})
        self.assertEqual(operation['documentHash'], crypto.sha256_b64(signed))
        self.assertNotIn('token', json.dumps(operation).lower())
        document = self.client.get(
            'http://ksef.test/_sim/auth/%s/document' % reference)
        self.assertEqual(document.status_code, 200)
        self.assertTrue(document.headers['content-type'].startswith(
            'application/xml'))
        self.assertEqual(document.content, signed)
        missing = self.client.get(
            'http://ksef.test/_sim/auth/%s/document' % 'AU-X')
        self.assertEqual(missing.status_code, 404)

    def check_happy_path(self, key_type):
        response = self.xades(key_type=key_type)
        self.assertEqual(response.status_code, 202, response.text)
        body = response.json()
        token = body['authenticationToken']['token']
        status = T.wait_auth(self.client, body['referenceNumber'], token)
        self.assertEqual(status['status']['code'], 200)
        self.assertEqual(status['authenticationMethodInfo']['category'],
            'XadesSignature')
        self.assertEqual(status['authenticationMethod'], 'QualifiedSeal')
        redeemed = self.client.post('/auth/token/redeem',
            headers=T.bearer(token))
        self.assertEqual(redeemed.status_code, 200)
        tokens = redeemed.json()
        # the access token works
        listing = self.client.get('/sessions?sessionType=Online',
            headers=T.bearer(tokens['accessToken']['token']))
        self.assertEqual(listing.status_code, 200)
        # redeem is single use
        again = self.client.post('/auth/token/redeem',
            headers=T.bearer(token))
        self.assertKSeFError(again, 21301)
        # refresh gives a new access token
        refreshed = self.client.post('/auth/token/refresh',
            headers=T.bearer(tokens['refreshToken']['token']))
        self.assertEqual(refreshed.status_code, 200)
        self.assertIn('accessToken', refreshed.json())
        # the access token is not a refresh token
        wrong = self.client.post('/auth/token/refresh',
            headers=T.bearer(tokens['accessToken']['token']))
        self.assertEqual(wrong.status_code, 401)
        return tokens

    def test_rsa(self):
        self.check_happy_path('rsa')

    def test_ec(self):
        self.check_happy_path('ec')

    def test_status_in_progress_first(self):
        self.sim.processing_delay = 0.3
        response = self.xades()
        body = response.json()
        status = self.client.get('/auth/%s' % body['referenceNumber'],
            headers=T.bearer(body['authenticationToken']['token'])).json()
        self.assertEqual(status['status']['code'], 100)
        early = self.client.post('/auth/token/redeem',
            headers=T.bearer(body['authenticationToken']['token']))
        self.assertKSeFError(early, 21301)

    def test_personal_certificate_with_nip(self):
        cert = testcerts.make_certificate(nip=NIP, seal=False)
        response = self.xades(cert=cert)
        body = response.json()
        status = T.wait_auth(self.client, body['referenceNumber'],
            body['authenticationToken']['token'])
        self.assertEqual(status['status']['code'], 200)
        self.assertEqual(status['authenticationMethod'],
            'QualifiedSignature')

    def test_nip_vat_ue_context(self):
        """A NipVatUe context as KSeF documents it is accepted (MF's XSD
        pattern ends with a '$' that xmlutil reads as an anchor); a value
        the pattern refuses is still 21401."""
        cert = testcerts.make_certificate(nip=NIP, seal=True)
        value = NIP + '-ATU12345678'
        challenge = self.client.post('/auth/challenge').json()['challenge']
        signed = T.signed_auth_request(challenge, value, *cert,
            context_type='nipVatUe')
        response = self.client.post('/auth/xades-signature', content=signed,
            headers={'Content-Type': 'application/xml'})
        self.assertEqual(response.status_code, 202, response.text)
        body = response.json()
        status = T.wait_auth(self.client, body['referenceNumber'],
            body['authenticationToken']['token'])
        self.assertEqual(status['status']['code'], 200, status)

        challenge = self.client.post('/auth/challenge').json()['challenge']
        unsigned = T.xades.build_auth_token_request(challenge,
            ('nipVatUe', value)).replace(b'ATU12345678', b'ATU1234567')
        signed = T.xades.sign(unsigned, *cert)
        response = self.client.post('/auth/xades-signature', content=signed,
            headers={'Content-Type': 'application/xml'})
        self.assertKSeFError(response, 21401)

    def test_enveloping_signature(self):
        "KSeF accepts enveloping XAdES signatures; so does the simulator."
        cert_der, key = testcerts.make_certificate(nip=NIP, seal=True)
        challenge = self.client.post('/auth/challenge').json()['challenge']
        unsigned = T.xades.build_auth_token_request(challenge, ('nip', NIP))
        signer = T.xades._KSeFXAdESSigner(cert_der,
            x509.load_der_x509_certificate(cert_der),
            dt.datetime.now(UTC) - dt.timedelta(minutes=1),
            signature_algorithm=SignatureMethod.RSA_SHA256,
            method=methods.enveloping)
        signed = etree.tostring(signer.sign(xmlutil.parse(unsigned),
                key=key, always_add_key_value=False))
        self.assertTrue(signed.startswith(b'<ds:Signature'))
        response = self.client.post('/auth/xades-signature', content=signed,
            headers={'Content-Type': 'application/xml'})
        self.assertEqual(response.status_code, 202, response.text)
        body = response.json()
        status = T.wait_auth(self.client, body['referenceNumber'],
            body['authenticationToken']['token'])
        self.assertEqual(status['status']['code'], 200, status)

    def test_peppol_id_context_passes_the_schema(self):
        """PeppolId 'PPL123456' passes the XSD (then needs a Peppol
        provider's certificate: 21117, not 21401)."""
        cert = testcerts.make_certificate(nip=NIP, seal=True)
        challenge = self.client.post('/auth/challenge').json()['challenge']
        signed = T.signed_auth_request(challenge, 'PPL123456', *cert,
            context_type='peppolId')
        response = self.client.post('/auth/xades-signature', content=signed,
            headers={'Content-Type': 'application/xml'})
        self.assertKSeFError(response, 21117)

    def test_tampered_signature(self):
        response = self.xades(mutate=lambda s: s.replace(
                b'certificateSubject</', b'certificateFingerprint</'))
        self.assertKSeFError(response, 9105)

    def test_unsigned_document(self):
        challenge = self.client.post('/auth/challenge').json()['challenge']
        xml = T.xades.build_auth_token_request(challenge, ('nip', NIP))
        response = self.client.post('/auth/xades-signature', content=xml,
            headers={'Content-Type': 'application/xml'})
        self.assertKSeFError(response, 9102)

    def test_unreadable_document(self):
        response = self.client.post('/auth/xades-signature',
            content=b'<AuthTokenRequest', headers={
                'Content-Type': 'application/xml'})
        self.assertKSeFError(response, 21001)

    def test_wrong_encoding(self):
        response = self.client.post('/auth/xades-signature',
            content=b'<?xml version="1.0" encoding="ISO-8859-2"?><a>\xb1</a>',
            headers={'Content-Type': 'application/xml'})
        self.assertKSeFError(response, 21217)

    def test_offline_certificate_refused(self):
        cert = testcerts.make_certificate(nip=NIP, seal=True,
            purpose='offline')
        response = self.xades(cert=cert)
        self.assertKSeFError(response, 21115)

    def test_expired_certificate_refused(self):
        now = dt.datetime.now(dt.timezone.utc)
        cert = testcerts.make_certificate(nip=NIP, seal=True,
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1))
        self.assertKSeFError(self.xades(cert=cert), 21115)

    def test_challenge_single_use(self):
        cert = testcerts.make_certificate(nip=NIP, seal=True)
        challenge = self.client.post('/auth/challenge').json()['challenge']
        signed = T.signed_auth_request(challenge, NIP, *cert)
        first = self.client.post('/auth/xades-signature', content=signed,
            headers={'Content-Type': 'application/xml'})
        self.assertEqual(first.status_code, 202)
        second = self.client.post('/auth/xades-signature', content=signed,
            headers={'Content-Type': 'application/xml'})
        self.assertKSeFError(second, 21111)

    def test_challenge_expires_after_10_minutes(self):
        cert = testcerts.make_certificate(nip=NIP, seal=True)
        challenge = self.client.post('/auth/challenge').json()['challenge']
        signed = T.signed_auth_request(challenge, NIP, *cert)
        self.sim.clock.advance(601)
        response = self.client.post('/auth/xades-signature', content=signed,
            headers={'Content-Type': 'application/xml'})
        self.assertKSeFError(response, 21111)

    def test_unknown_challenge(self):
        cert = testcerts.make_certificate(nip=NIP, seal=True)
        signed = T.signed_auth_request(
            '20250514-CR-226FB7B000-3ACF9BE4C0-10', NIP, *cert)
        response = self.client.post('/auth/xades-signature', content=signed,
            headers={'Content-Type': 'application/xml'})
        self.assertKSeFError(response, 21111)

    def test_no_permission_in_context(self):
        "A seal of another NIP has no permission: status 415."
        cert = testcerts.make_certificate(nip=OTHER_NIP, seal=True)
        response = self.xades(cert=cert, context_nip=NIP)
        body = response.json()
        status = T.wait_auth(self.client, body['referenceNumber'],
            body['authenticationToken']['token'])
        self.assertEqual(status['status']['code'], 415)
        redeem = self.client.post('/auth/token/redeem',
            headers=T.bearer(body['authenticationToken']['token']))
        self.assertKSeFError(redeem, 21301)

    def test_granted_permission_via_testdata(self):
        cert = testcerts.make_certificate(nip=OTHER_NIP, seal=True)
        grant = self.client.post('/testdata/permissions', json={
                'contextIdentifier': {'type': 'Nip', 'value': NIP},
                'authorizedIdentifier': {'type': 'Nip', 'value': OTHER_NIP},
                'permissions': [{'permissionType': 'InvoiceWrite',
                        'description': "Wystawianie faktur"}]})
        self.assertEqual(grant.status_code, 200)
        response = self.xades(cert=cert, context_nip=NIP)
        body = response.json()
        status = T.wait_auth(self.client, body['referenceNumber'],
            body['authenticationToken']['token'])
        self.assertEqual(status['status']['code'], 200)

    def test_pesel_person_via_testdata(self):
        pesel = '30112206276'
        cert = testcerts.make_certificate(pesel=pesel, seal=False)
        self.assertEqual(self.client.post('/testdata/person', json={
                    'nip': NIP, 'pesel': pesel, 'isBailiff': False,
                    'description': "Jednoosobowa firma"}).status_code, 200)
        response = self.xades(cert=cert, context_nip=NIP)
        body = response.json()
        status = T.wait_auth(self.client, body['referenceNumber'],
            body['authenticationToken']['token'])
        self.assertEqual(status['status']['code'], 200)

    def test_blocked_context(self):
        self.client.post('/testdata/context/block', json={
                'contextIdentifier': {'type': 'Nip', 'value': NIP}})
        body = self.xades().json()
        status = T.wait_auth(self.client, body['referenceNumber'],
            body['authenticationToken']['token'])
        self.assertEqual(status['status']['code'], 480)

    def test_access_token_expires(self):
        token = self.token()
        self.sim.clock.advance(dt.timedelta(minutes=16))
        response = self.client.get('/sessions?sessionType=Online',
            headers=T.bearer(token))
        self.assertEqual(response.status_code, 401)

    def test_revoke_current_session(self):
        response = self.xades()
        body = response.json()
        T.wait_auth(self.client, body['referenceNumber'],
            body['authenticationToken']['token'])
        tokens = self.client.post('/auth/token/redeem', headers=T.bearer(
                body['authenticationToken']['token'])).json()
        access = tokens['accessToken']['token']
        listing = self.client.get('/auth/sessions', headers=T.bearer(access))
        self.assertEqual(listing.status_code, 200)
        self.assertTrue(listing.json()['items'][0]['isCurrent'])
        revoked = self.client.delete('/auth/sessions/current',
            headers=T.bearer(access))
        self.assertEqual(revoked.status_code, 204)
        refresh = self.client.post('/auth/token/refresh',
            headers=T.bearer(tokens['refreshToken']['token']))
        self.assertEqual(refresh.status_code, 401)
        status = self.client.get('/auth/%s' % body['referenceNumber'],
            headers=T.bearer(body['authenticationToken']['token'])).json()
        self.assertEqual(status['status']['code'], 425)


class KsefTokenTest(SimulatorCase):

    def token_auth(self, secret, nip=NIP, timestamp_delta=0):
        challenge = self.client.post('/auth/challenge').json()
        key_id, public = T.public_key(self.client, 'KsefTokenEncryption')
        plain = '%s|%d' % (secret, challenge['timestampMs']
            + timestamp_delta)
        response = self.client.post('/auth/ksef-token', json={
                'challenge': challenge['challenge'],
                'contextIdentifier': {'type': 'Nip', 'value': nip},
                'encryptedToken': crypto.b64(
                    crypto.rsa_oaep_encrypt(public, plain.encode())),
                'publicKeyId': key_id})
        self.assertEqual(response.status_code, 202, response.text)
        body = response.json()
        return body, T.wait_auth(self.client, body['referenceNumber'],
            body['authenticationToken']['token'])

    def test_admin_token(self):
        reference, secret = self.sim.create_ksef_token(NIP)
        body, status = self.token_auth(secret)
        self.assertEqual(status['status']['code'], 200)
        self.assertEqual(status['authenticationMethodInfo']['category'],
            'Token')
        tokens = self.client.post('/auth/token/redeem', headers=T.bearer(
                body['authenticationToken']['token'])).json()
        # the session UPO names the token
        access = tokens['accessToken']['token']
        session, key = T.open_online(self.client, access)
        xml = T.sample_invoice(NIP, issue_date=self.sim.now().astimezone(
                WARSAW).date())
        T.send(self.client, access, session, key, xml)
        self.client.post('/sessions/online/%s/close' % session,
            headers=T.bearer(access))
        final = T.wait_session(self.client, access, session)
        page = final['upo']['pages'][0]['referenceNumber']
        upo = self.client.get('/sessions/%s/upo/%s' % (session, page),
            headers=T.bearer(access)).content
        self.assertIn(reference.encode(), upo)
        self.assertEqual(T.upo_errors(upo), [])

    def test_token_created_over_api(self):
        access = self.token()
        response = self.client.post('/tokens', headers=T.bearer(access),
            json={'permissions': ['InvoiceWrite'],
                'description': "Token do wysyłki"})
        self.assertEqual(response.status_code, 202, response.text)
        created = response.json()
        self.assertIn('|nip-%s|' % NIP, created['token'])
        time.sleep(0.05)
        status = self.client.get('/tokens/%s' % created['referenceNumber'],
            headers=T.bearer(access)).json()
        self.assertEqual(status['status'], 'Active')
        body, auth = self.token_auth(created['token'])
        self.assertEqual(auth['status']['code'], 200)
        revoked = self.client.delete('/tokens/%s'
            % created['referenceNumber'], headers=T.bearer(access))
        self.assertEqual(revoked.status_code, 204)
        body, auth = self.token_auth(created['token'])
        self.assertEqual(auth['status']['code'], 450)

    def test_token_permissions_not_held(self):
        _, secret = self.sim.create_ksef_token(NIP,
            permissions=['InvoiceWrite'])
        body, _ = self.token_auth(secret)
        access = self.client.post('/auth/token/redeem', headers=T.bearer(
                body['authenticationToken']['token'])).json()
        response = self.client.post('/tokens', headers=T.bearer(
                access['accessToken']['token']),
            json={'permissions': ['InvoiceRead'],
                'description': "Nowy token"})
        self.assertEqual(response.status_code, 403)

    def test_wrong_timestamp(self):
        _, secret = self.sim.create_ksef_token(NIP)
        _, status = self.token_auth(secret, timestamp_delta=1)
        self.assertEqual(status['status']['code'], 450)
        self.assertEqual(status['status']['details'],
            ["Nieprawidłowy czas tokena"])

    def test_unknown_key_id(self):
        challenge = self.client.post('/auth/challenge').json()
        response = self.client.post('/auth/ksef-token', json={
                'challenge': challenge['challenge'],
                'contextIdentifier': {'type': 'Nip', 'value': NIP},
                'encryptedToken': crypto.b64(b'x' * 256),
                'publicKeyId': crypto.sha256_b64(b'unknown')})
        self.assertKSeFError(response, 21470)


class OnlineSessionTest(SimulatorCase):

    def today(self):
        return self.sim.now().astimezone(WARSAW).date()

    def test_invoice_accepted(self):
        xml = T.sample_invoice(NIP, issue_date=self.today())
        token, session, status = self.online_invoice(xml)
        self.assertEqual(status['status']['code'], 200)
        self.assertEqual(status['invoicingMode'], 'Online')
        self.assertEqual(status['invoiceHash'], crypto.sha256_b64(xml))
        number = status['ksefNumber']
        self.assertEqual(len(number), 35)
        self.assertTrue(number.startswith(NIP + '-'
                + self.today().strftime('%Y%m%d')))
        parsed = ksef_number.parse(number)
        self.assertEqual(parsed.nip, NIP)
        self.assertEqual(number[-2:], ksef_number.checksum(number[:32]))
        # UPO by invoice reference, by KSeF number, and the link
        for response in (
                self.client.get('/sessions/%s/invoices/%s/upo'
                    % (session, status['referenceNumber']),
                    headers=T.bearer(token)),
                self.client.get('/sessions/%s/invoices/ksef/%s/upo'
                    % (session, number), headers=T.bearer(token),
                    # KSeF answers whatever the Accept header says
                    ),
                self.client.get(status['upoDownloadUrl'],
                    headers={'Accept': 'application/json'})):
            self.assertEqual(response.status_code, 200)
            self.assertEqual(response.headers['x-ms-meta-hash'],
                crypto.sha256_b64(response.content))
            self.assertEqual(T.upo_errors(response.content), [])
            root = xmlutil.parse(response.content)
            ns = {'u': xmlutil.NS_UPO}
            self.assertEqual(root.findtext('u:Dokument/u:NumerKSeFDokumentu',
                    namespaces=ns), number)
            self.assertEqual(root.findtext('u:Dokument/u:SkrotDokumentu',
                    namespaces=ns), crypto.sha256_b64(xml))
            self.assertEqual(root.findtext('u:Dokument/u:TrybWysylki',
                    namespaces=ns), 'Online')
        # the invoice can be downloaded back
        download = self.client.get('/invoices/ksef/%s' % number,
            headers=T.bearer(token))
        self.assertEqual(download.content, xml)
        # close: 204, then 200 with a session UPO
        closed = self.client.post('/sessions/online/%s/close' % session,
            headers=T.bearer(token))
        self.assertEqual(closed.status_code, 204)
        final = T.wait_session(self.client, token, session)
        self.assertEqual(final['status']['code'], 200)
        self.assertEqual(final['successfulInvoiceCount'], 1)
        page = final['upo']['pages'][0]
        upo = self.client.get('/sessions/%s/upo/%s'
            % (session, page['referenceNumber']), headers=T.bearer(token))
        self.assertEqual(T.upo_errors(upo.content), [])
        self.assertEqual(self.client.get(page['downloadUrl']).content,
            upo.content)
        # a closed session takes no more invoices
        key = crypto.SymmetricKey.generate()
        late = T.send(self.client, token, session, key, xml)
        self.assertKSeFError(late, 21180)

    def test_processing_is_asynchronous(self):
        self.sim.processing_delay = 0.3
        token = self.token()
        session, key = T.open_online(self.client, token)
        sent = T.send(self.client, token, session, key,
            T.sample_invoice(NIP, issue_date=self.today()))
        reference = sent.json()['referenceNumber']
        first = self.client.get('/sessions/%s/invoices/%s'
            % (session, reference), headers=T.bearer(token)).json()
        self.assertEqual(first['status']['code'], 150)
        self.assertNotIn('ksefNumber', first)
        final = T.wait_invoice(self.client, token, session, reference)
        self.assertEqual(final['status']['code'], 200)

    def test_empty_session_is_cancelled(self):
        token = self.token()
        session, _ = T.open_online(self.client, token)
        self.client.post('/sessions/online/%s/close' % session,
            headers=T.bearer(token))
        final = T.wait_session(self.client, token, session)
        self.assertEqual(final['status']['code'], 440)
        self.assertNotIn('upo', final)

    def test_wrong_encrypted_hash(self):
        token = self.token()
        session, key = T.open_online(self.client, token)
        body = T.send_body(key, T.sample_invoice(NIP))
        body['encryptedInvoiceHash'] = crypto.sha256_b64(b'other')
        response = self.client.post('/sessions/online/%s/invoices'
            % session, headers=T.bearer(token), json=body)
        self.assertKSeFError(response, 21403)

    def test_wrong_encrypted_size(self):
        token = self.token()
        session, key = T.open_online(self.client, token)
        body = T.send_body(key, T.sample_invoice(NIP))
        body['encryptedInvoiceSize'] += 16
        response = self.client.post('/sessions/online/%s/invoices'
            % session, headers=T.bearer(token), json=body)
        self.assertKSeFError(response, 21402)

    def test_wrong_plain_hash(self):
        token = self.token()
        session, key = T.open_online(self.client, token)
        body = T.send_body(key, T.sample_invoice(NIP,
                issue_date=self.today()))
        body['invoiceHash'] = crypto.sha256_b64(b'not this invoice')
        response = self.client.post('/sessions/online/%s/invoices'
            % session, headers=T.bearer(token), json=body)
        self.assertEqual(response.status_code, 202)
        status = T.wait_invoice(self.client, token, session,
            response.json()['referenceNumber'])
        self.assertEqual(status['status']['code'], 430)

    def test_wrong_session_key(self):
        "Content encrypted with another key: decryption error 435."
        token = self.token()
        session, _ = T.open_online(self.client, token)
        other = crypto.SymmetricKey.generate()
        response = T.send(self.client, token, session, other,
            T.sample_invoice(NIP))
        status = T.wait_invoice(self.client, token, session,
            response.json()['referenceNumber'])
        self.assertIn(status['status']['code'], (430, 435))

    def test_invalid_fa3(self):
        xml = T.sample_invoice(NIP, issue_date=self.today()).replace(
            b'<P_12>23</P_12>', b'<P_12>24</P_12>')
        _, _, status = self.online_invoice(xml)
        self.assertEqual(status['status']['code'], 430)
        self.assertTrue(any('P_12' in d for d in status['status']['details']))
        self.assertNotIn('ksefNumber', status)

    def test_not_utf8_declaration(self):
        xml = T.sample_invoice(NIP, issue_date=self.today()).replace(
            b'encoding="UTF-8"', b'encoding="ISO-8859-2"')
        _, _, status = self.online_invoice(xml)
        self.assertEqual(status['status']['code'], 430)

    def test_processing_instruction_refused(self):
        xml = T.sample_invoice(NIP, issue_date=self.today()).replace(
            b'<Naglowek>', b'<?tryton x?><Naglowek>')
        _, _, status = self.online_invoice(xml)
        self.assertEqual(status['status']['code'], 430)

    def test_discouraged_characters_refused(self):
        "Characters KSeF refuses since API 2.4.0 (§11): 430."
        for char in ('\x80', '\x9f', '\ufdd0', '\U0001fffe',
                '\U0010ffff'):
            with self.subTest(char='U+%04X' % ord(char)):
                xml = T.sample_invoice(NIP, issue_date=self.today()).replace(
                    b'<P_7>Service</P_7>',
                    ('<P_7>Service%s</P_7>' % char).encode('utf-8'))
                self.assertIn(char.encode('utf-8'), xml)
                _, _, status = self.online_invoice(xml)
                self.assertEqual(status['status']['code'], 430, status)
                self.assertIn('U+%04X' % ord(char),
                    ' '.join(status['status']['details']))

    def test_ordinary_characters_accepted(self):
        "NEL (U+0085), Polish letters, emoji: nothing discouraged."
        xml = T.sample_invoice(NIP, issue_date=self.today()).replace(
            b'<P_7>Service</P_7>',
            '<P_7>Usługa\x85 zażółć 😀</P_7>'.encode('utf-8'))
        _, _, status = self.online_invoice(xml)
        self.assertEqual(status['status']['code'], 200, status)

    def test_seller_of_another_context(self):
        xml = T.sample_invoice(OTHER_NIP, issue_date=self.today())
        _, _, status = self.online_invoice(xml)
        self.assertEqual(status['status']['code'], 410)

    def test_unsupported_form_code(self):
        token = self.token()
        _, info = T.encryption(self.client)
        response = self.client.post('/sessions/online',
            headers=T.bearer(token), json={'formCode': {
                    'systemCode': 'FA (2)', 'schemaVersion': '1-0E',
                    'value': 'FA'}, 'encryption': info})
        self.assertKSeFError(response, 21405)

    def test_duplicate(self):
        xml = T.sample_invoice(NIP, number='FV/7/2026',
            issue_date=self.today())
        token, session, first = self.online_invoice(xml)
        self.assertEqual(first['status']['code'], 200)
        # the same number again, other content, in another session
        again = xml.replace(b'<P_7>Service</P_7>', b'<P_7>Other</P_7>')
        _, _, second = self.online_invoice(again, token=token)
        self.assertEqual(second['status']['code'], 440)
        extensions = second['status']['extensions']
        self.assertEqual(extensions['originalKsefNumber'],
            first['ksefNumber'])
        self.assertEqual(extensions['originalSessionReferenceNumber'],
            session)
        # exactly the extensions open-api.json names for 440
        self.assertEqual(set(extensions), {'originalKsefNumber',
                'originalSessionReferenceNumber'})
        self.assertEqual(second['invoiceNumber'], 'FV/7/2026')
        # another RodzajFaktury with the same number is not a duplicate
        other_kind = T.sample_invoice(NIP, number='FV/7/2026',
            issue_date=self.today(), kind='UPR')
        _, _, third = self.online_invoice(other_kind, token=token)
        self.assertEqual(third['status']['code'], 200)

    def test_failed_invoices_list(self):
        token = self.token()
        session, key = T.open_online(self.client, token)
        good = T.sample_invoice(NIP, number='A/1', issue_date=self.today())
        bad = good.replace(b'<P_15>123.00</P_15>', b'')
        for xml in (good, bad):
            reference = T.send(self.client, token, session, key,
                xml).json()['referenceNumber']
            T.wait_invoice(self.client, token, session, reference)
        listing = self.client.get('/sessions/%s/invoices' % session,
            headers=T.bearer(token)).json()
        self.assertEqual(len(listing['invoices']), 2)
        failed = self.client.get('/sessions/%s/invoices/failed' % session,
            headers=T.bearer(token)).json()
        self.assertEqual([i['status']['code'] for i in failed['invoices']],
            [430])

    def test_pagination(self):
        self.sim.limiter.enabled = False
        token = self.token()
        session, key = T.open_online(self.client, token)
        for index in range(12):
            T.send(self.client, token, session, key, T.sample_invoice(NIP,
                    number='P/%d' % index, issue_date=self.today()))
        first = self.client.get('/sessions/%s/invoices?pageSize=10'
            % session, headers=T.bearer(token)).json()
        self.assertEqual(len(first['invoices']), 10)
        second = self.client.get('/sessions/%s/invoices?pageSize=10'
            % session, headers=dict(T.bearer(token), **{
                    'x-continuation-token': first['continuationToken']}))
        self.assertEqual(len(second.json()['invoices']), 2)
        bad = self.client.get('/sessions/%s/invoices' % session,
            headers=dict(T.bearer(token),
                **{'x-continuation-token': '!!'}))
        self.assertKSeFError(bad, 21418)

    def test_sessions_list(self):
        token = self.token()
        session, _ = T.open_online(self.client, token)
        listing = self.client.get('/sessions?sessionType=Online'
            '&statuses=InProgress', headers=T.bearer(token)).json()
        self.assertEqual([s['referenceNumber'] for s in listing['sessions']],
            [session])
        done = self.client.get('/sessions?sessionType=Online'
            '&statuses=Succeeded', headers=T.bearer(token)).json()
        self.assertEqual(done['sessions'], [])

    def test_session_expires_after_12_hours(self):
        token = self.token()
        session, key = T.open_online(self.client, token)
        self.sim.clock.advance(dt.timedelta(hours=12, seconds=1))
        # a fresh token: the old access token expired meanwhile
        token = self.token()
        response = T.send(self.client, token, session, key,
            T.sample_invoice(NIP))
        self.assertKSeFError(response, 21180)


class OfflineTest(SimulatorCase):
    "§12.1: P_1 before the day of acceptance (Polish time) is offline."

    def send_at(self, moment, issue_date, **kwargs):
        self.sim.clock.freeze(moment)
        xml = T.sample_invoice(NIP, number=str(moment), issue_date=issue_date)
        return self.online_invoice(xml, **kwargs)

    def test_yesterday_is_offline(self):
        _, session, status = self.send_at(warsaw(2026, 3, 4, 0, 0, 1),
            dt.date(2026, 3, 3))
        self.assertEqual(status['status']['code'], 200)
        self.assertEqual(status['invoicingMode'], 'Offline')
        self.assertTrue(status['ksefNumber'].startswith(NIP + '-20260304'))

    def test_same_day_is_online(self):
        _, _, status = self.send_at(warsaw(2026, 3, 3, 23, 59, 59),
            dt.date(2026, 3, 3))
        self.assertEqual(status['invoicingMode'], 'Online')

    def test_polish_day_not_utc(self):
        # 2026-03-03 23:30 UTC is already 2026-03-04 in Warsaw
        moment = dt.datetime(2026, 3, 3, 23, 30, tzinfo=dt.timezone.utc)
        _, _, status = self.send_at(moment, dt.date(2026, 3, 3))
        self.assertEqual(status['invoicingMode'], 'Offline')

    def test_declared_offline(self):
        _, _, status = self.send_at(warsaw(2026, 3, 3),
            dt.date(2026, 3, 3), offline=True)
        self.assertEqual(status['invoicingMode'], 'Offline')

    def test_future_issue_date_refused(self):
        _, _, status = self.send_at(warsaw(2026, 3, 3),
            dt.date(2026, 3, 4))
        self.assertEqual(status['status']['code'], 450)

    def test_technical_correction(self):
        self.sim.clock.freeze(warsaw(2026, 3, 4))
        token = self.token()
        original = T.sample_invoice(NIP, number='OFF/1',
            issue_date=dt.date(2026, 3, 3)).replace(
            b'<P_12>23</P_12>', b'<P_12>24</P_12>')
        _, session, rejected = self.online_invoice(original, token=token,
            offline=True)
        self.assertEqual(rejected['status']['code'], 430)
        fixed = T.sample_invoice(NIP, number='OFF/1',
            issue_date=dt.date(2026, 3, 3))
        corrected_hash = crypto.sha256_b64(original)
        _, _, accepted = self.online_invoice(fixed, token=token,
            offline=True, corrected_hash=corrected_hash)
        self.assertEqual(accepted['status']['code'], 200)
        self.assertEqual(accepted['invoicingMode'], 'Offline')
        # a second correction of the same original: 21166
        session2, key = T.open_online(self.client, token)
        again = T.send(self.client, token, session2, key, fixed,
            offline=True, corrected_hash=corrected_hash)
        self.assertKSeFError(again, 21166)
        # correcting an accepted invoice: 21167
        accepted_again = T.send(self.client, token, session2, key, fixed,
            offline=True, corrected_hash=crypto.sha256_b64(fixed))
        self.assertKSeFError(accepted_again, 21167)


class BatchTest(SimulatorCase):

    def open_batch(self, token, files, part_size=None, offline=False,
            compression=None):
        archive = T.zip_package(files)
        key, info = T.encryption(self.client)
        parts = T.batch_parts(key, archive, part_size or len(archive))
        body = T.open_batch_body(info, archive, parts, offline)
        if compression:
            body['batchFile']['compressionType'] = compression
        response = self.client.post('/sessions/batch',
            headers=T.bearer(token), json=body)
        self.assertEqual(response.status_code, 201, response.text)
        return response.json(), parts

    def upload(self, upload, data, headers=None):
        return httpx.Client(transport=self.sim.transport()).request(
            upload['method'], upload['url'], content=data,
            headers=upload['headers'] if headers is None else headers)

    def test_batch(self):
        token = self.token()
        today = self.sim.now().astimezone(WARSAW).date()
        files = {
            'a.xml': T.sample_invoice(NIP, 'B/1', today),
            'b.xml': T.sample_invoice(NIP, 'B/2', today),
            'c.xml': T.sample_invoice(NIP, 'B/3', today).replace(
                b'<P_12>23</P_12>', b'<P_12>24</P_12>'),
            }
        opened, parts = self.open_batch(token, files, part_size=700)
        self.assertGreater(len(parts), 1)
        requests_ = opened['partUploadRequests']
        self.assertEqual(len(requests_), len(parts))
        for upload, (_, data) in zip(requests_, parts):
            self.assertEqual(upload['headers'],
                {'x-ms-blob-type': 'BlockBlob'})
            self.assertTrue(upload['url'].startswith('http://ksef.test/'))
            self.assertEqual(self.upload(upload, data).status_code, 201)
        session = opened['referenceNumber']
        closed = self.client.post('/sessions/batch/%s/close' % session,
            headers=T.bearer(token))
        self.assertEqual(closed.status_code, 204)
        final = T.wait_session(self.client, token, session)
        self.assertEqual(final['status']['code'], 200)
        self.assertEqual(final['successfulInvoiceCount'], 2)
        self.assertEqual(final['failedInvoiceCount'], 1)
        invoices = self.client.get('/sessions/%s/invoices' % session,
            headers=T.bearer(token)).json()['invoices']
        by_name = {i['invoiceFileName']: i for i in invoices}
        self.assertEqual(by_name['a.xml']['status']['code'], 200)
        self.assertEqual(by_name['c.xml']['status']['code'], 430)
        self.assertEqual(by_name['a.xml']['invoiceHash'],
            crypto.sha256_b64(files['a.xml']))
        upo = self.client.get('/sessions/%s/upo/%s' % (session,
                final['upo']['pages'][0]['referenceNumber']),
            headers=T.bearer(token))
        self.assertEqual(T.upo_errors(upo.content), [])
        self.assertEqual(upo.content.count(b'<Dokument>'), 2)

    def test_part_checks(self):
        token = self.token()
        files = {'a.xml': T.sample_invoice(NIP, 'C/1')}
        opened, parts = self.open_batch(token, files)
        upload = opened['partUploadRequests'][0]
        data = parts[0][1]
        # wrong bytes, missing header, forged signature
        self.assertEqual(self.upload(upload, data[:-16]).status_code, 400)
        self.assertEqual(self.upload(upload, data, headers={}).status_code,
            400)
        forged = dict(upload, url=upload['url'].replace('sig=', 'sig=0'))
        self.assertEqual(self.upload(forged, data).status_code, 403)
        session = opened['referenceNumber']
        missing = self.client.post('/sessions/batch/%s/close' % session,
            headers=T.bearer(token))
        self.assertKSeFError(missing, 21205)

    def test_batch_offline_and_tar(self):
        token = self.token()
        self.sim.clock.freeze(warsaw(2026, 5, 6))
        token = self.token()
        import io
        import tarfile
        buffer = io.BytesIO()
        data = T.sample_invoice(NIP, 'T/1', dt.date(2026, 5, 5))
        with tarfile.open(fileobj=buffer, mode='w:gz') as archive:
            info = tarfile.TarInfo('t1.xml')
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        archive = buffer.getvalue()
        key, info = T.encryption(self.client)
        parts = T.batch_parts(key, archive, len(archive))
        body = T.open_batch_body(info, archive, parts)
        body['batchFile']['compressionType'] = 'TarGz'
        opened = self.client.post('/sessions/batch', headers=T.bearer(token),
            json=body).json()
        self.upload(opened['partUploadRequests'][0], parts[0][1])
        session = opened['referenceNumber']
        self.client.post('/sessions/batch/%s/close' % session,
            headers=T.bearer(token))
        self.assertEqual(T.wait_session(self.client, token,
                session)['status']['code'], 200)
        invoice = self.client.get('/sessions/%s/invoices' % session,
            headers=T.bearer(token)).json()['invoices'][0]
        self.assertEqual(invoice['invoicingMode'], 'Offline')

    def test_upload_window(self):
        token = self.token()
        opened, parts = self.open_batch(token,
            {'a.xml': T.sample_invoice(NIP, 'W/1')})
        self.sim.clock.advance(dt.timedelta(minutes=21))
        self.assertEqual(self.upload(opened['partUploadRequests'][0],
                parts[0][1]).status_code, 403)
        token = self.token()
        response = self.client.post('/sessions/batch/%s/close'
            % opened['referenceNumber'], headers=T.bearer(token))
        self.assertKSeFError(response, 21208)

    def test_wrong_archive_hash(self):
        token = self.token()
        archive = T.zip_package({'a.xml': T.sample_invoice(NIP, 'H/1')})
        key, info = T.encryption(self.client)
        parts = T.batch_parts(key, archive, len(archive))
        body = T.open_batch_body(info, archive, parts)
        body['batchFile']['fileHash'] = crypto.sha256_b64(b'other')
        opened = self.client.post('/sessions/batch', headers=T.bearer(token),
            json=body).json()
        self.upload(opened['partUploadRequests'][0], parts[0][1])
        session = opened['referenceNumber']
        self.client.post('/sessions/batch/%s/close' % session,
            headers=T.bearer(token))
        self.assertEqual(T.wait_session(self.client, token,
                session)['status']['code'], 405)


class KsefNumberFormatTest(unittest.TestCase):

    def test_numbers_carry_a_valid_crc(self):
        sim = Simulator(processing_delay=0)
        for _ in range(50):
            number = sim.new_ksef_number(NIP, dt.date(2026, 2, 1))
            crc = 0
            for byte in number[:32].encode('ascii'):
                crc ^= byte
                for _ in range(8):
                    crc = ((crc << 1) ^ 7) & 0xFF if crc & 0x80 \
                        else (crc << 1) & 0xFF
            self.assertEqual(number[-2:], '%02X' % crc)
            self.assertRegex(number,
                r'^5265877635-20260201-[0-9A-F]{12}-[0-9A-F]{2}$')

    def test_reference_numbers_match_upo_schema(self):
        from trytond_ksef.simulator.state import reference_number
        now = dt.datetime.now(dt.timezone.utc)
        for infix in ('SO', 'SB', 'EE', 'EU', 'AU', 'CR', 'EC'):
            self.assertRegex(reference_number(infix, now),
                r'^\d{8}-%s-[0-9A-F]{10}-[0-9A-F]{10}-[0-9A-F]{2}$' % infix)

