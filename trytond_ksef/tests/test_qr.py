# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import base64
import contextlib
import datetime
import hashlib
import io
import json
import os
import tempfile
import unittest

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from PIL import Image

from trytond_ksef import cli, environments, qr
from trytond_ksef.environments import EnvironmentConfigError
from trytond_ksef.qr import QRError

DATA = os.path.join(os.path.dirname(__file__), 'data')
TEST_QR = 'https://qr-test.ksef.mf.gov.pl'
# kody-qr.md CODE I example (PROTOCOL.md §14)
DOC_HASH = 'UtQp9Gpc51y-u3xApZjIjgkpZ01js-J8KflSPW8WzIE'
DOC_CODE1 = ('https://qr-test.ksef.mf.gov.pl/invoice/1111111111/01-02-2026/'
    'UtQp9Gpc51y-u3xApZjIjgkpZ01js-J8KflSPW8WzIE')
DOC_SERIAL = '01F20A5D352AE590'


def load_vector():
    with open(os.path.join(DATA, 'code2-mf-example.json')) as file:
        vector = json.load(file)
    key = serialization.load_der_private_key(
        base64.b64decode(vector['private_key_der_base64']), None)
    return vector, key


def doc_digest():
    return base64.urlsafe_b64decode(DOC_HASH + '=')


class Code1Test(unittest.TestCase):

    def test_doc_example(self):
        self.assertEqual(
            qr.code1_link(TEST_QR, '1111111111', datetime.date(2026, 2, 1),
                DOC_HASH),
            DOC_CODE1)

    def test_hash_forms(self):
        digest = doc_digest()
        forms = [
            digest,
            bytearray(digest),
            base64.b64encode(digest).decode(),  # KSeF's invoiceHash form
            DOC_HASH,
            DOC_HASH + '=',
            ]
        for form in forms:
            with self.subTest(form=form):
                self.assertEqual(
                    qr.code1_link(TEST_QR + '/', '1111111111',
                        datetime.date(2026, 2, 1), form),
                    DOC_CODE1)

    def test_hash_of_file(self):
        with open(os.path.join(DATA, 'fa3', 'FA_3_Przyklad_1.xml'),
                'rb') as file:
            data = file.read()
        link = qr.code1_link(
            'https://qr.ksef.mf.gov.pl', '5265877635',
            datetime.date(2026, 2, 15), hashlib.sha256(data).digest())
        expected = base64.urlsafe_b64encode(
            hashlib.sha256(data).digest()).rstrip(b'=').decode()
        self.assertEqual(link,
            'https://qr.ksef.mf.gov.pl/invoice/5265877635/15-02-2026/'
            + expected)
        self.assertEqual(len(expected), 43)
        self.assertNotIn('=', link)

    def test_errors(self):
        cases = [
            (('1111111111', 'abc'), 'qr_invalid_invoice_hash'),
            (('1111111111', b'\0' * 31), 'qr_invalid_invoice_hash'),
            (('1111111111', base64.b64encode(b'\0' * 31).decode()),
                'qr_invalid_invoice_hash'),
            (('111111111', DOC_HASH), 'qr_invalid_nip'),
            (('0111111111', DOC_HASH), 'qr_invalid_nip'),
            (('1111111111 ', DOC_HASH), 'qr_invalid_nip'),
            ]
        for (nip, digest), code in cases:
            with self.subTest(nip=nip, digest=digest):
                with self.assertRaises(QRError) as context:
                    qr.code1_link(TEST_QR, nip, datetime.date(2026, 2, 1),
                        digest)
                self.assertEqual(context.exception.code, code)
        with self.assertRaises(QRError) as context:
            qr.code1_link('qr-test.ksef.mf.gov.pl', '1111111111',
                datetime.date(2026, 2, 1), DOC_HASH)
        self.assertEqual(context.exception.code, 'qr_invalid_base_url')
        with self.assertRaises(TypeError):
            qr.code1_link(TEST_QR, '1111111111', '2026-02-01', DOC_HASH)


class Code2Test(unittest.TestCase):

    def test_mf_example_unsigned_part(self):
        vector, _ = load_vector()
        unsigned = qr.code2_unsigned_link(
            TEST_QR, 'Nip', '1111111111', '1111111111', DOC_SERIAL,
            DOC_HASH)
        self.assertEqual(unsigned, vector['link'].rsplit('/', 1)[0])
        self.assertEqual(qr.signed_data(unsigned),
            vector['signed_text'].encode())
        self.assertEqual(vector['certificate_serial_hex'], DOC_SERIAL)

    def test_mf_example_signature_verifies(self):
        vector, key = load_vector()
        self.assertTrue(qr.verify_code2_link(vector['link'],
            key.public_key()))
        self.assertTrue(qr.verify_code2_link(vector['link'], key))
        signature = qr.b64url_decode(vector['link'].rsplit('/', 1)[1])
        self.assertEqual(len(signature), 256)

    def test_tampered_links_fail(self):
        vector, key = load_vector()
        link = vector['link']
        other = rsa.generate_private_key(65537, 2048)
        tampered = [
            link.replace('/1111111111/01F2', '/1111111112/01F2'),
            link.replace('01F20A5D352AE590', '01F20A5D352AE591'),
            link.replace('/Nip/', '/InternalId/'),
            link[:-2] + ('AA' if link[-2:] != 'AA' else 'BA'),
            link.rsplit('/', 1)[0],
            link + '/',
            'garbage',
            ]
        for candidate in tampered:
            with self.subTest(link=candidate):
                self.assertFalse(qr.verify_code2_link(candidate, key))
        self.assertFalse(qr.verify_code2_link(link, other.public_key()))
        self.assertFalse(qr.verify_code2_link(
            link, ec.generate_private_key(ec.SECP256R1()).public_key()))

    def test_rsa_link(self):
        vector, key = load_vector()
        link = qr.code2_link(
            TEST_QR, 'Nip', '1111111111', '1111111111', DOC_SERIAL,
            doc_digest(), key)
        unsigned, _, signature = link.rpartition('/')
        self.assertEqual(unsigned, vector['link'].rsplit('/', 1)[0])
        self.assertEqual(len(qr.b64url_decode(signature)), 256)
        self.assertNotIn('=', signature)
        self.assertTrue(qr.verify_code2_link(link, key.public_key()))
        # PSS is randomised: a second link differs and verifies too.
        again = qr.code2_link(
            TEST_QR, 'Nip', '1111111111', '1111111111', DOC_SERIAL,
            doc_digest(), key)
        self.assertNotEqual(again, link)
        self.assertTrue(qr.verify_code2_link(again, key.public_key()))
        # The signature is PSS with a 32-byte salt, SHA-256, MGF1-SHA-256.
        key.public_key().verify(
            qr.b64url_decode(signature), qr.signed_data(unsigned),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256())

    def test_ec_link_p1363(self):
        key = ec.generate_private_key(ec.SECP256R1())
        link = qr.code2_link(
            TEST_QR, 'InternalId', '1111111111-00001', '1111111111',
            int(DOC_SERIAL, 16), DOC_HASH, key)
        unsigned, _, signature = link.rpartition('/')
        self.assertEqual(unsigned,
            TEST_QR + '/certificate/InternalId/1111111111-00001/1111111111/'
            + DOC_SERIAL + '/' + DOC_HASH)
        raw = qr.b64url_decode(signature)
        self.assertEqual(len(raw), 64)  # r||s, not DER
        self.assertTrue(qr.verify_code2_link(link, key.public_key()))
        # r||s is what the key signed: check it independently.
        key.public_key().verify(
            utils.encode_dss_signature(int.from_bytes(raw[:32], 'big'),
                int.from_bytes(raw[32:], 'big')),
            qr.signed_data(unsigned), ec.ECDSA(hashes.SHA256()))

    def test_ec_der_signature_accepted_by_verify(self):
        key = ec.generate_private_key(ec.SECP256R1())
        unsigned = qr.code2_unsigned_link(
            TEST_QR, 'Nip', '1111111111', '1111111111', DOC_SERIAL,
            DOC_HASH)
        der = key.sign(qr.signed_data(unsigned), ec.ECDSA(hashes.SHA256()))
        link = unsigned + '/' + qr.b64url(der)
        self.assertTrue(qr.verify_code2_link(link, key.public_key()))

    def test_unsupported_keys(self):
        keys = [
            ec.generate_private_key(ec.SECP384R1()),
            rsa.generate_private_key(65537, 1024),
            object(),
            ]
        for key in keys:
            with self.subTest(key=key):
                with self.assertRaises(QRError) as context:
                    qr.code2_link(TEST_QR, 'Nip', '1111111111',
                        '1111111111', DOC_SERIAL, DOC_HASH, key)
                self.assertEqual(context.exception.code,
                    'qr_unsupported_key')

    def test_context_identifiers(self):
        valid = [
            ('Nip', '1111111111'),
            ('InternalId', '1111111111-12345'),
            ('NipVatUe', '1111111111-DE123456789'),
            ('PeppolId', 'PPL123456'),
            ]
        for context_type, value in valid:
            with self.subTest(context_type=context_type):
                link = qr.code2_unsigned_link(TEST_QR, context_type, value,
                    '1111111111', DOC_SERIAL, DOC_HASH)
                self.assertIn('/certificate/%s/%s/' % (context_type, value),
                    link)
        invalid = [
            ('nip', '1111111111', 'qr_invalid_context_type'),
            ('Pesel', '44051401359', 'qr_invalid_context_type'),
            ('Nip', '111111111/', 'qr_invalid_context_value'),
            ('InternalId', '1111111111', 'qr_invalid_context_value'),
            ('NipVatUe', 'DE123456789', 'qr_invalid_context_value'),
            ('PeppolId', 'ppl123456', 'qr_invalid_context_value'),
            ]
        for context_type, value, code in invalid:
            with self.subTest(context_type=context_type, value=value):
                with self.assertRaises(QRError) as context:
                    qr.code2_unsigned_link(TEST_QR, context_type, value,
                        '1111111111', DOC_SERIAL, DOC_HASH)
                self.assertEqual(context.exception.code, code)

    def test_identifier_patterns_are_the_api_ones(self):
        path = os.path.join(os.path.dirname(qr.__file__), 'schemas',
            'open-api.json')
        with open(path, 'rb') as file:
            schemas = json.load(file)['components']['schemas']
        for name, pattern in qr.IDENTIFIER_PATTERNS.items():
            with self.subTest(name=name):
                self.assertEqual(pattern, schemas[name]['pattern'])
        self.assertEqual(
            set(qr.CONTEXT_TYPES),
            set(schemas['AuthenticationContextIdentifierType']['enum']))

    def test_certificate_serial(self):
        self.assertEqual(qr.certificate_serial(0x01F20A5D352AE590),
            DOC_SERIAL)
        self.assertEqual(qr.certificate_serial('01f20a5d352ae590'),
            DOC_SERIAL)
        for bad in ['01F2-0A5D', '', -1]:
            with self.subTest(serial=bad):
                with self.assertRaises(QRError) as context:
                    qr.certificate_serial(bad)
                self.assertEqual(context.exception.code,
                    'qr_invalid_certificate_serial')

    def test_signed_data(self):
        self.assertEqual(qr.signed_data('https://a.example/x/y/'),
            b'a.example/x/y')
        self.assertEqual(qr.signed_data('http://127.0.0.1:8080/x'),
            b'127.0.0.1:8080/x')


class PngTest(unittest.TestCase):

    def check_round_trip(self, link, label):
        data = qr.png(link, label)
        self.assertTrue(data.startswith(b'\x89PNG\r\n\x1a\n'))
        self.assertEqual(qr.decode_png(data), link)
        self.assertEqual(qr.png(link, label), data)  # deterministic
        return data

    def test_code1(self):
        number = '5265877635-20250826-0100001AF629-AF'
        with_number = self.check_round_trip(DOC_CODE1, number)
        offline = self.check_round_trip(DOC_CODE1, qr.LABEL_OFFLINE)
        self.assertNotEqual(with_number, offline)
        image = Image.open(io.BytesIO(with_number))
        self.assertGreater(image.height, image.width * 0.8)
        self.assertEqual(round(image.info['dpi'][0]), qr.DPI)

    def test_code2(self):
        vector, key = load_vector()
        self.check_round_trip(vector['link'], qr.LABEL_CERTIFICATE)
        ec_link = qr.code2_link(
            TEST_QR, 'Nip', '1111111111', '1111111111', DOC_SERIAL,
            DOC_HASH, ec.generate_private_key(ec.SECP256R1()))
        self.check_round_trip(ec_link, qr.LABEL_CERTIFICATE)

    def test_label_is_drawn_below_the_code(self):
        data = qr.png(DOC_CODE1, qr.LABEL_OFFLINE)
        image = Image.open(io.BytesIO(data)).convert('L')
        quiet = qr.QUIET_ZONE * qr.MODULE_PIXELS
        code_size = image.width  # the OFFLINE label is narrower
        below = image.crop((0, code_size, image.width, image.height))
        self.assertLess(below.getextrema()[0], 128)  # some dark text
        # the quiet zone under the code stays white
        zone = image.crop(
            (0, code_size - quiet, image.width, code_size))
        self.assertEqual(zone.getextrema(), (255, 255))

    def test_no_label(self):
        with self.assertRaises(QRError) as context:
            qr.png(DOC_CODE1, ' ')
        self.assertEqual(context.exception.code, 'qr_invalid_label')

    def test_decode_nothing(self):
        out = io.BytesIO()
        Image.new('L', (100, 100), 255).save(out, format='PNG')
        with self.assertRaises(QRError) as context:
            qr.decode_png(out.getvalue())
        self.assertEqual(context.exception.code, 'qr_not_found')


class CommandTest(unittest.TestCase):

    def run_command(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(['qr-link', *argv])
        return status, out.getvalue(), err.getvalue()

    def setUp(self):
        handle, self.path = tempfile.mkstemp(suffix='.xml')
        self.data = b'<Faktura>\xc5\xbc</Faktura>\n'
        with os.fdopen(handle, 'wb') as file:
            file.write(self.data)
        self.addCleanup(os.unlink, self.path)
        self.hash = qr.b64url(hashlib.sha256(self.data).digest())

    def test_default_prod(self):
        status, out, err = self.run_command(
            '--nip', '5265877635', '--date', '2026-02-01', self.path)
        self.assertEqual(status, 0, err)
        self.assertEqual(out,
            'https://qr.ksef.mf.gov.pl/invoice/5265877635/01-02-2026/%s\n'
            % self.hash)

    def test_env(self):
        for env, host in [('test', 'qr-test'), ('DEMO', 'qr-demo')]:
            with self.subTest(env=env):
                status, out, err = self.run_command(
                    '--nip', '5265877635', '--date', '2026-02-01',
                    '--env', env, self.path)
                self.assertEqual(status, 0, err)
                self.assertEqual(out.strip(),
                    'https://%s.ksef.mf.gov.pl/invoice/5265877635/'
                    '01-02-2026/%s' % (host, self.hash))

    def test_qr_url_override(self):
        status, out, err = self.run_command(
            '--nip', '5265877635', '--date', '2026-02-01',
            '--qr-url', 'http://127.0.0.1:8123/', self.path)
        self.assertEqual(status, 0, err)
        self.assertTrue(out.startswith(
            'http://127.0.0.1:8123/invoice/5265877635/'))

    def test_errors(self):
        status, out, err = self.run_command(
            '--nip', '52658776', '--date', '2026-02-01', self.path)
        self.assertEqual((status, out), (2, ''))
        self.assertIn('NIP', err)
        status, out, err = self.run_command(
            '--nip', '5265877635', '--date', '2026-02-01',
            self.path + '.missing')
        self.assertEqual((status, out), (1, ''))
        with contextlib.redirect_stderr(io.StringIO()):
            with self.assertRaises(SystemExit):
                cli.main(['qr-link', '--nip', '5265877635', '--date',
                    '01-02-2026', self.path])
            with self.assertRaises(SystemExit):
                cli.main(['qr-link', '--nip', '5265877635', '--date',
                    '2026-02-01', '--env', 'prd', self.path])


class EnvironmentsTest(unittest.TestCase):

    def test_official(self):
        test = environments.urls('TEST')
        self.assertEqual(test.name, 'test')
        self.assertEqual(test.api_url, 'https://api-test.ksef.mf.gov.pl/v2')
        self.assertEqual(test.qr_url, TEST_QR)
        self.assertEqual(test.status_url,
            'https://api-latarnia-test.ksef.mf.gov.pl')
        demo = environments.urls('Demo')
        self.assertEqual(demo.api_url, 'https://api-demo.ksef.mf.gov.pl/v2')
        self.assertEqual(demo.qr_url, 'https://qr-demo.ksef.mf.gov.pl')
        self.assertEqual(demo.status_url, test.status_url)
        prod = environments.urls('prod')
        self.assertEqual(prod.api_url, 'https://api.ksef.mf.gov.pl/v2')
        self.assertEqual(prod.qr_url, 'https://qr.ksef.mf.gov.pl')
        self.assertEqual(prod.status_url,
            'https://api-latarnia.ksef.mf.gov.pl')

    def test_overrides(self):
        config = {
            'test_api_url': 'http://127.0.0.1:8000/v2/',
            'prod_api_url': 'https://elsewhere.example/v2',
            'qr_url': 'http://127.0.0.1:8000/qr',
            'status_url': '',
            'timeout': '30',
            }
        test = environments.urls('test', config)
        self.assertEqual(test.api_url, 'http://127.0.0.1:8000/v2')
        self.assertEqual(test.qr_url, 'http://127.0.0.1:8000/qr')
        self.assertEqual(test.status_url,
            environments.ENVIRONMENTS['test'].status_url)
        self.assertEqual(environments.urls('demo', config).api_url,
            environments.ENVIRONMENTS['demo'].api_url)
        self.assertEqual(environments.urls('test', None),
            environments.ENVIRONMENTS['test'])

    def test_errors(self):
        for name in ['prd', 'production', '', None]:
            with self.subTest(name=name):
                with self.assertRaises(EnvironmentConfigError) as context:
                    environments.urls(name)
                self.assertEqual(context.exception.code,
                    'unknown_environment')
                self.assertIsInstance(context.exception, ValueError)
        for url in ['api.example/v2', 'ftp://x.example', 'https://x/?a=1']:
            with self.subTest(url=url):
                with self.assertRaises(EnvironmentConfigError) as context:
                    environments.urls('test', {'api_url': url})
                self.assertEqual(context.exception.code,
                    'invalid_environment_url')


if __name__ == '__main__':
    unittest.main()
