# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Helpers to drive the simulator from tests with plain httpx (no client
library): authenticate with a self-signed certificate, open sessions,
encrypt invoices, build batch packages, and a sample FA(3) invoice.

They do what a KSeF client does, step by step, so that the simulator's
own tests do not depend on :mod:`trytond_ksef.client`.
"""
import base64
import io
import os
import time
import zipfile

from cryptography import x509

from trytond_ksef import crypto, testcerts, xades, xmlutil

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), 'tests', 'data')
FA3 = {'systemCode': 'FA (3)', 'schemaVersion': '1-0E', 'value': 'FA'}


def sample_invoice(nip, number='FV/1/2026', issue_date=None,
        kind='VAT'):
    """A schema-valid FA(3) invoice (tests/data/fa3/minimal-fa3-vat.xml)
    with seller `nip`, P_2 `number` and P_1 `issue_date`."""
    with open(os.path.join(DATA_DIR, 'fa3', 'minimal-fa3-vat.xml'),
            'rb') as f:
        data = f.read()
    data = data.replace(b'<NIP>1111111111</NIP>',
        b'<NIP>%s</NIP>' % nip.encode())
    data = data.replace(b'<P_2>FV/1/2026</P_2>',
        b'<P_2>%s</P_2>' % number.encode())
    if issue_date is not None:
        data = data.replace(b'<P_1>2026-02-01</P_1>',
            b'<P_1>%s</P_1>' % issue_date.isoformat().encode())
    if kind != 'VAT':
        data = data.replace(b'<RodzajFaktury>VAT</RodzajFaktury>',
            b'<RodzajFaktury>%s</RodzajFaktury>' % kind.encode())
    return data


def bearer(token):
    return {'Authorization': 'Bearer %s' % token}


def public_key(client, usage):
    "(publicKeyId, public key) of the newest certificate of `usage`."
    response = client.get('/security/public-key-certificates')
    response.raise_for_status()
    chosen = max((c for c in response.json() if usage in c['usage']),
        key=lambda c: c['validFrom'])
    certificate = x509.load_der_x509_certificate(
        base64.b64decode(chosen['certificate']))
    return chosen['publicKeyId'], certificate.public_key()


def signed_auth_request(challenge, nip, cert_der, key,
        subject_identifier_type='certificateSubject', context_type='nip'):
    xml = xades.build_auth_token_request(challenge, (context_type, nip),
        subject_identifier_type)
    return xades.sign(xml, cert_der, key)


def wait_auth(client, reference, token, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        response = client.get('/auth/%s' % reference, headers=bearer(token))
        response.raise_for_status()
        body = response.json()
        if body['status']['code'] != 100 or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def authenticate(client, nip, key_type='rsa', seal=True, cert=None):
    """XAdES authentication for the NIP context with a self-signed
    certificate (a seal VATPL-<nip> by default).  Returns the access
    token."""
    if cert is None:
        cert = testcerts.make_certificate(nip=nip, seal=seal,
            key_type=key_type)
    cert_der, key = cert
    challenge = client.post('/auth/challenge').json()['challenge']
    signed = signed_auth_request(challenge, nip, cert_der, key)
    response = client.post('/auth/xades-signature', content=signed,
        headers={'Content-Type': 'application/xml'})
    response.raise_for_status()
    body = response.json()
    token = body['authenticationToken']['token']
    status = wait_auth(client, body['referenceNumber'], token)
    if status['status']['code'] != 200:
        raise AssertionError("authentication failed: %s" % status['status'])
    response = client.post('/auth/token/redeem', headers=bearer(token))
    response.raise_for_status()
    return response.json()['accessToken']['token']


def encryption(client, key=None):
    "(SymmetricKey, encryption JSON) for opening a session."
    key = key or crypto.SymmetricKey.generate()
    key_id, public = public_key(client, 'SymmetricKeyEncryption')
    return key, {
        'encryptedSymmetricKey': crypto.b64(
            crypto.rsa_oaep_encrypt(public, key.key)),
        'initializationVector': crypto.b64(key.iv),
        'publicKeyId': key_id,
        }


def open_online(client, token):
    "Open an online FA(3) session: (referenceNumber, SymmetricKey)."
    key, info = encryption(client)
    response = client.post('/sessions/online', headers=bearer(token),
        json={'formCode': FA3, 'encryption': info})
    if response.status_code != 201:
        raise AssertionError(response.text)
    return response.json()['referenceNumber'], key


def send_body(key, xml, offline=False, corrected_hash=None):
    encrypted = key.encrypt(xml)
    body = {
        'invoiceHash': crypto.sha256_b64(xml),
        'invoiceSize': len(xml),
        'encryptedInvoiceHash': crypto.sha256_b64(encrypted),
        'encryptedInvoiceSize': len(encrypted),
        'encryptedInvoiceContent': crypto.b64(encrypted),
        'offlineMode': offline,
        }
    if corrected_hash:
        body['hashOfCorrectedInvoice'] = corrected_hash
    return body


def send(client, token, session, key, xml, **kwargs):
    "Send an invoice; return the response."
    return client.post('/sessions/online/%s/invoices' % session,
        headers=bearer(token), json=send_body(key, xml, **kwargs))


def wait_invoice(client, token, session, reference, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        response = client.get('/sessions/%s/invoices/%s'
            % (session, reference), headers=bearer(token))
        response.raise_for_status()
        body = response.json()
        if body['status']['code'] not in (100, 150) \
                or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def wait_session(client, token, session, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        response = client.get('/sessions/%s' % session,
            headers=bearer(token))
        response.raise_for_status()
        body = response.json()
        if body['status']['code'] not in (100, 150, 170) \
                or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def zip_package(files):
    "A Zip archive of {name: bytes}."
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def batch_parts(key, archive, part_size):
    "Split `archive` into encrypted parts: [(ordinal, encrypted bytes)]."
    parts = []
    for index, start in enumerate(range(0, len(archive), part_size), 1):
        parts.append((index, key.encrypt(archive[start:start + part_size])))
    return parts


def open_batch_body(info, archive, parts, offline=False):
    return {
        'formCode': FA3,
        'batchFile': {
            'fileSize': len(archive),
            'fileHash': crypto.sha256_b64(archive),
            'fileParts': [{
                    'ordinalNumber': ordinal,
                    'fileSize': len(data),
                    'fileHash': crypto.sha256_b64(data),
                    } for ordinal, data in parts],
            },
        'encryption': info,
        'offlineMode': offline,
        }


def upo_errors(document):
    "XSD errors of a UPO document ([] when valid)."
    return xmlutil.schema_errors('upo', xmlutil.parse(document))
