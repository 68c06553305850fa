# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Certificate uploads, good and bad, generated in bulk.

Shared by the property tests of the core (test_certificates_property.py,
with hypothesis) and the Tryton scenario that drives the upload wizard with
a seeded sample (tests/scenario_ksef_bad_uploads.rst).

A `Case` describes an upload by its ingredients (key type, key usage,
validity, subject, container, encodings, password); `build` turns it into
the bytes a user would upload and `expected` says what the upload must
give: the code of the CertificateError (the message ``ksef.msg_<code>``),
or None when the upload is good, with the warnings it must raise.  The
expectation follows PROTOCOL.md §5 and the order of checks documented in
`certificates.check`, independently of the code under test.

`hostile` inputs (random bytes, truncated or mutated files) have no exact
expectation: they must be refused with a CertificateError, or (for a
mutation that left the file intact in substance) give a usable result.
"""
import base64
import datetime
import functools
import random
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from trytond_ksef import testcerts

UTC = datetime.timezone.utc
# Every case is judged at this moment (certificates are made around it).
NOW = datetime.datetime.now(UTC).replace(microsecond=0)
NIP = '5265877635'
OTHER_NIP = '1111111111'
PASSWORD = 'Zaq1@WSX-correct'

# name: (testcerts.new_key arguments, KSeF verdict: None = accepted,
#        else (error code, key type as the message shows it))
KEYS = {
    'rsa2048': (dict(key_type='rsa'), None),
    'p256': (dict(key_type='ec'), None),
    'rsa1024': (dict(key_type='rsa', key_size=1024),
        ('weak_key', 'RSA 1024')),
    'p384': (dict(key_type='ec', curve='P-384'),
        ('unsupported_key', 'EC P-384')),
    'p521': (dict(key_type='ec', curve='P-521'),
        ('unsupported_key', 'EC P-521')),
    'secp256k1': (dict(key_type='ec', curve=ec.SECP256K1()),
        ('unsupported_key', 'EC secp256k1')),
    'ed25519': (dict(key_type='ed25519'), ('unsupported_key', 'Ed25519')),
    }
# keyUsage of the certificate: (testcerts key_usage, purpose KSeF reads)
USAGES = {
    'authentication': ({'digital_signature'}, 'authentication'),
    'offline': ({'content_commitment'}, 'offline'),
    'both': ({'digital_signature', 'content_commitment'}, 'authentication'),
    'no_extension': (None, 'authentication'),
    'encipherment': ({'key_encipherment'}, None),
    }
VALIDITIES = {
    'valid': (-1, 700),
    'expiring': (-700, 10),
    'expired': (-800, -2),
    'not_yet_valid': (2, 800),
    }
SUBJECTS = ('company_seal', 'other_nip', 'pesel', 'fingerprint')
CONTAINERS = ('separate', 'pkcs12', 'pkcs12_3des')
CERT_ENCODINGS = ('der', 'pem', 'base64')
KEY_ENCODINGS = ('pkcs8_pem', 'pkcs8_der', 'traditional_pem',
    'traditional_der', 'base64_der', 'encrypted_pkcs8_pem',
    'encrypted_pkcs8_der', 'encrypted_traditional_pem')
PASSWORDS = ('right', 'wrong', 'none', 'empty')
PURPOSES = ('authentication', 'offline', None)


@dataclass(frozen=True)
class Case:
    key: str = 'rsa2048'
    mismatch: bool = False
    usage: str = 'authentication'
    validity: str = 'valid'
    subject: str = 'company_seal'
    container: str = 'separate'
    cert_encoding: str = 'der'
    key_encoding: str = 'pkcs8_pem'
    password: str = 'none'
    purpose: str = 'authentication'
    # the password typed when it is wrong (varied by the generators)
    wrong_password: str = 'wrong-password'

    @property
    def encrypted(self):
        if self.container == 'separate':
            return self.key_encoding.startswith('encrypted')
        return True

    @property
    def given_password(self):
        return {
            'right': PASSWORD, 'wrong': self.wrong_password,
            'none': None, 'empty': ''}[self.password]


@functools.lru_cache(maxsize=None)
def key(name, other=False):
    "The key `name` of this process (a second one with `other`)."
    arguments = KEYS[name][0]
    if other:
        return testcerts.new_key(**arguments)
    return testcerts.cached_key(**arguments)


@functools.lru_cache(maxsize=None)
def certificate(key_name, usage, validity, subject):
    "DER of a certificate made for these ingredients (cached)."
    start, end = VALIDITIES[validity]
    kwargs = {
        'company_seal': dict(nip=NIP, seal=True),
        'other_nip': dict(nip=OTHER_NIP),
        'pesel': dict(pesel='02070803628'),
        'fingerprint': dict(common_name='Anna Nowak'),
        }[subject]
    key_usage = USAGES[usage][0]
    der, _ = testcerts.make_certificate(
        None, key=key(key_name), key_usage=key_usage,
        not_before=NOW + datetime.timedelta(days=start),
        not_after=NOW + datetime.timedelta(days=end), **kwargs)
    return der


def _key_bytes(private_key, encoding):
    s = serialization
    encrypted = encoding.startswith('encrypted_')
    form = encoding[len('encrypted_'):] if encrypted else encoding
    encryption = (s.BestAvailableEncryption(PASSWORD.encode())
        if encrypted else s.NoEncryption())
    if form == 'base64_der':
        return base64.encodebytes(private_key.private_bytes(
                s.Encoding.DER, s.PrivateFormat.PKCS8, s.NoEncryption()))
    kind, container = form.split('_')
    return private_key.private_bytes(
        s.Encoding.PEM if container == 'pem' else s.Encoding.DER,
        s.PrivateFormat.PKCS8 if kind == 'pkcs8'
        else s.PrivateFormat.TraditionalOpenSSL,
        encryption)


def _cert_bytes(der, encoding):
    if encoding == 'pem':
        return testcerts.pem(der)
    if encoding == 'base64':
        return base64.encodebytes(der)
    return der


@functools.lru_cache(maxsize=256)
def _pkcs12(der, key_name, legacy):
    private_key = key(key_name)
    if legacy:
        encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
            .build(PASSWORD.encode()))
    else:
        encryption = serialization.BestAvailableEncryption(PASSWORD.encode())
    return pkcs12.serialize_key_and_certificates(b'KSeF', private_key,
        x509.load_der_x509_certificate(der), None, encryption)


def valid(case):
    """Whether `case` can be built: Ed25519 keys have no traditional
    (PKCS#1/SEC1) form, and a PKCS#12 file holds the certificate's own
    key."""
    if case.key == 'ed25519' and 'traditional' in case.key_encoding:
        return False
    if case.container != 'separate' and case.mismatch:
        return False
    return True


def build(case):
    """The upload of `case`: keyword arguments of `certificates.inspect`
    (without purpose and nip)."""
    der = certificate(case.key, case.usage, case.validity, case.subject)
    password = case.given_password
    if case.container == 'separate':
        private_key = key(case.key, other=case.mismatch)
        return {
            'cert_bytes': _cert_bytes(der, case.cert_encoding),
            'key_bytes': _key_bytes(private_key, case.key_encoding),
            'password': password,
            }
    return {
        'p12_bytes': _pkcs12(der, case.key, case.container == 'pkcs12_3des'),
        'password': password,
        }


def expected(case):
    """(error code or None, expected warning codes) for `case`.

    Order: opening the key (password), then as `certificates.check`: key
    type and size, key matching the certificate, purpose, validity."""
    if case.encrypted and case.password != 'right':
        return 'wrong_password', ()
    verdict = KEYS[case.key][1]
    if verdict:
        return verdict[0], ()
    if case.mismatch:
        return 'key_mismatch', ()
    found = USAGES[case.usage][1]
    if case.purpose is not None and found != case.purpose:
        return 'purpose_mismatch', ()
    if case.validity in ('expired', 'not_yet_valid'):
        return case.validity, ()
    warnings = []
    if case.subject == 'other_nip':
        warnings.append('nip_mismatch')
    if case.validity == 'expiring':
        warnings.append('expires_soon')
    return None, tuple(warnings)


def expected_params(case):
    "The parameters the error of `case` must carry (those known here)."
    code, _ = expected(case)
    if code in ('weak_key', 'unsupported_key'):
        params = {'key_type': KEYS[case.key][1][1]}
        if code == 'weak_key':
            params['minimum'] = 'RSA 2048'
        return params
    if code == 'purpose_mismatch':
        return {'expected': case.purpose,
            'found': USAGES[case.usage][1] or 'none'}
    return None


# --- hostile inputs ---------------------------------------------------------

PEM_LABELS = (b'CERTIFICATE', b'PRIVATE KEY', b'ENCRYPTED PRIVATE KEY',
    b'RSA PRIVATE KEY', b'EC PRIVATE KEY', b'PKCS12')


def pem_wrap(label, body):
    return (b'-----BEGIN %s-----\n%s-----END %s-----\n'
        % (label, base64.encodebytes(body), label))


def truncate(data, fraction):
    """`data` cut at `fraction` (0..1) of its meaningful length: a PEM
    file always loses at least the end of its END line."""
    length = len(data.rstrip()) if data.lstrip().startswith(b'-----') \
        else len(data)
    return data[:min(length - 1, int(length * fraction))]


def mutate(data, edits):
    "`data` with (position fraction, operation, byte) edits applied."
    data = bytearray(data)
    for fraction, operation, value in edits:
        if not data:
            break
        i = min(len(data) - 1, int(len(data) * fraction))
        if operation == 'set':
            data[i] = value
        elif operation == 'xor':
            data[i] ^= value or 1
        elif operation == 'delete':
            del data[i:i + 1 + value % 8]
        else:
            data[i:i] = bytes([value]) * (1 + value % 4)
    return bytes(data)


def material():
    "Good files to damage: name -> (inspect keyword, bytes, password)."
    der = certificate('rsa2048', 'authentication', 'valid', 'company_seal')
    ec_der = certificate('p256', 'offline', 'valid', 'company_seal')
    rsa, p256 = key('rsa2048'), key('p256')
    return {
        'cert_der': ('cert_bytes', der, None),
        'cert_pem': ('cert_bytes', testcerts.pem(der), None),
        'ec_cert_der': ('cert_bytes', ec_der, None),
        'key_pkcs8_der': ('key_bytes', _key_bytes(rsa, 'pkcs8_der'), None),
        'key_pkcs8_pem': ('key_bytes', _key_bytes(rsa, 'pkcs8_pem'), None),
        'ec_key_sec1_der': ('key_bytes',
            _key_bytes(p256, 'traditional_der'), None),
        'key_encrypted_pem': ('key_bytes',
            _key_bytes(rsa, 'encrypted_pkcs8_pem'), PASSWORD),
        'key_encrypted_der': ('key_bytes',
            _key_bytes(rsa, 'encrypted_pkcs8_der'), PASSWORD),
        'p12': ('p12_bytes', _pkcs12(der, 'rsa2048', False), PASSWORD),
        'p12_3des': ('p12_bytes', _pkcs12(der, 'rsa2048', True), PASSWORD),
        }


def arguments(which, data, password):
    """inspect() keyword arguments putting `data` in place of the file
    `which` (the other file of a pair is the good one)."""
    good = certificate('rsa2048', 'authentication', 'valid', 'company_seal')
    if which == 'cert_bytes':
        return {'cert_bytes': data,
            'key_bytes': _key_bytes(key('rsa2048'), 'pkcs8_der'),
            'password': password}
    if which == 'key_bytes':
        return {'cert_bytes': good, 'key_bytes': data, 'password': password}
    return {'p12_bytes': data, 'password': password}


ERROR_CODES = ('wrong_password', 'weak_key', 'unsupported_key',
    'key_mismatch', 'purpose_mismatch', 'expired', 'not_yet_valid')


def sample(count, seed):
    """`count` bad cases drawn with `random.Random(seed)`, taking each
    expected error of `ERROR_CODES` in turn (so a sample of a few dozen
    meets every check, with varied key types, containers, encodings and
    passwords)."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        wanted = ERROR_CODES[len(cases) % len(ERROR_CODES)]
        case = Case(
            key=rng.choice(list(KEYS)),
            mismatch=rng.random() < 0.3,
            usage=rng.choice(list(USAGES)),
            validity=rng.choice(list(VALIDITIES)),
            subject=rng.choice(SUBJECTS),
            container=rng.choice(CONTAINERS),
            cert_encoding=rng.choice(CERT_ENCODINGS),
            key_encoding=rng.choice(KEY_ENCODINGS),
            password=rng.choice(PASSWORDS),
            purpose=rng.choice(('authentication', 'offline')),
            wrong_password='wrong-%08x' % rng.getrandbits(32))
        if valid(case) and expected(case)[0] == wanted:
            cases.append(case)
    return cases


HOSTILE_KINDS = ('random', 'pem_random', 'truncated', 'mutated')


def hostile_sample(count, seed, kinds=HOSTILE_KINDS):
    """`count` (description, inspect keyword arguments) of random,
    truncated and mutated files, drawn with `random.Random(seed)`.  All
    but 'mutated' ones must be refused (a mutation may hit a byte without
    meaning)."""
    rng = random.Random(seed)
    files = material()
    result = []
    while len(result) < count:
        kind = rng.choice(kinds)
        which = rng.choice(('cert_bytes', 'key_bytes', 'p12_bytes'))
        if kind == 'random':
            data = rng.randbytes(rng.randrange(0, 2048))
            password = None
        elif kind == 'pem_random':
            data = pem_wrap(rng.choice(PEM_LABELS),
                rng.randbytes(rng.randrange(0, 1024)))
            password = None
        else:
            name = rng.choice(list(files))
            which, good, password = files[name]
            if kind == 'truncated':
                data = truncate(good, rng.random())
            else:
                data = mutate(good, [(rng.random(),
                            rng.choice(('set', 'xor', 'delete', 'insert')),
                            rng.randrange(256))
                        for _ in range(rng.randint(1, 4))])
            kind = '%s %s' % (kind, name)
        result.append((kind, arguments(which, data, password)))
    return result
