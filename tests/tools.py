# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Helpers for the scenarios of the ksef module."""
import base64
import binascii

from proteus import Model
from trytond.pool import Pool
from trytond.transaction import Transaction


def count_secrets(config):
    "Number of rows in the secret store (read server side, as root)."
    with Transaction().start(config.database_name, 0, readonly=True):
        return Pool().get('ksef.secret').search_count([])


def _forms(secret):
    if isinstance(secret, str):
        secret = secret.encode('utf-8')
    forms = {secret, base64.b64encode(secret),
        binascii.hexlify(secret), binascii.hexlify(secret).upper()}
    # A PEM body line is also a giveaway.
    lines = secret.splitlines() if secret.startswith(b'-----') else []
    for line in lines:
        if len(line) >= 32 and not line.startswith(b'-----'):
            forms.add(line)
    return {f for f in forms if len(f) >= 6}


def _scan(value, forms):
    if value is None or isinstance(value, (bool, int, float)):
        return False
    if isinstance(value, dict):
        return any(_scan(v, forms) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_scan(v, forms) for v in value)
    if isinstance(value, str):
        value = value.encode('utf-8')
    elif not isinstance(value, (bytes, bytearray, memoryview)):
        value = str(value).encode('utf-8')
    value = bytes(value)
    return any(form in value for form in forms)


def find_secrets(config, model_names, secrets):
    """Read every field of every record of `model_names` over RPC as the
    current user, and export them, and return the (model, field, how) where
    a form of one of `secrets` shows up."""
    forms = set()
    for secret in secrets:
        forms |= _forms(secret)
    found = []
    context = dict(config.context, active_test=False)
    for name in model_names:
        Model_ = Model.get(name)
        ids = Model_._proxy.search([], 0, None, None, context)
        fields = sorted(Model_._fields)
        for field in fields:
            values = Model_._proxy.read(ids, [field], context)
            if _scan(values, forms):
                found.append((name, field, 'read'))
        exportable = [f for f in fields
            if Model_._fields[f]['type'] not in {'one2many', 'many2many'}]
        rows = Model_._proxy.export_data(ids, exportable, {}, context)
        if _scan(rows, forms):
            found.append((name, '*', 'export'))
    return found


def count_certificates(config):
    "Number of KSeF certificates, inactive ones included (server side)."
    with Transaction().start(config.database_name, 0, readonly=True,
            context={'active_test': False}):
        return Pool().get('ksef.certificate').search_count([])


def message_patterns(config, names, language):
    """{name: compiled regular expression} matching the text of message
    ``ksef.<name>`` in `language`, any value in place of its parameters."""
    import re
    patterns = {}
    with Transaction().start(config.database_name, 0, readonly=True,
            context={'language': language}):
        pool = Pool()
        Message = pool.get('ir.message')
        ModelData = pool.get('ir.model.data')
        for name in names:
            text = Message(ModelData.get_id('ksef', name)).text
            pattern = re.sub(r'%\\\(\w+\\\)s', '.+', re.escape(text))
            patterns[name] = re.compile(pattern + r'\Z', re.S)
    return patterns


# --- secrets -----------------------------------------------------------------

def key_secrets(private_key):
    """The forms a private key could leak in: PKCS#8 and traditional DER
    and PEM, and its private number (RSA d, EC scalar, Ed25519 seed)."""
    from cryptography.hazmat.primitives import serialization as s
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    result = []
    formats = [s.PrivateFormat.PKCS8]
    if isinstance(private_key,
            (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        formats.append(s.PrivateFormat.TraditionalOpenSSL)
    for encoding in (s.Encoding.DER, s.Encoding.PEM):
        for form in formats:
            result.append(private_key.private_bytes(
                    encoding, form, s.NoEncryption()))
    if isinstance(private_key, rsa.RSAPrivateKey):
        number = private_key.private_numbers().d
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        number = private_key.private_numbers().private_value
    elif isinstance(private_key, ed25519.Ed25519PrivateKey):
        number = None
        result.append(private_key.private_bytes(
                s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption()))
    if number is not None:
        result.append(number.to_bytes((number.bit_length() + 7) // 8, 'big'))
    return result


def public_forms(certificates):
    """The encodings of public `certificates` (DER): a PEM line of a
    private key holding only public numbers (an RSA modulus) may show up
    in them, which is no leak."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization as s
    result = []
    for der in certificates:
        spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
            s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo)
        for data in (der, spki):
            result += [data, base64.b64encode(data),
                base64.encodebytes(data), binascii.hexlify(data)]
    return result


def secret_forms(secrets, public=()):
    """Every byte form of `secrets` (str or bytes) worth searching: as is,
    Base64 (standard and URL-safe, with and without padding), hex, and the
    lines of a PEM body (those found in `public` data excepted)."""
    forms = set()
    for secret in secrets:
        if isinstance(secret, str):
            secret = secret.encode('utf-8')
        forms.add(secret)
        for b64 in (base64.b64encode(secret),
                base64.urlsafe_b64encode(secret)):
            forms.add(b64)
            forms.add(b64.rstrip(b'='))
        forms.add(binascii.hexlify(secret))
        forms.add(binascii.hexlify(secret).upper())
        if secret.startswith(b'-----'):
            for line in secret.splitlines():
                if (len(line) >= 32 and not line.startswith(b'-----')
                        and not any(line in p for p in public)):
                    forms.add(line)
    return {f for f in forms if len(f) >= 8}


def found_in(value, forms):
    "The forms found in `value` (any nesting of containers)."
    if value is None or isinstance(value, (bool, int, float)):
        return set()
    if isinstance(value, dict):
        return set().union(*(found_in(v, forms) for v in value.values()))
    if isinstance(value, (list, tuple)):
        return set().union(*(found_in(v, forms) for v in value))
    if isinstance(value, str):
        value = value.encode('utf-8')
    elif not isinstance(value, (bytes, bytearray, memoryview)):
        value = str(value).encode('utf-8')
    value = bytes(value)
    return {form for form in forms if form in value}


def module_models(config):
    """Names of the stored models the ksef module adds or extends (a field
    of it), the secret store excepted."""
    with Transaction().start(config.database_name, 0, readonly=True):
        pool = Pool()
        Field = pool.get('ir.model.field')
        IrModel = pool.get('ir.model')
        from trytond.model import ModelStorage
        names = {f.model for f in Field.search([('module', '=', 'ksef')])}
        names |= {m.name for m in IrModel.search([('module', '=', 'ksef')])}
        result = []
        for name in sorted(names):
            try:
                Model_ = pool.get(name)
            except KeyError:
                continue
            if issubclass(Model_, ModelStorage) and name != 'ksef.secret':
                result.append(name)
        return result


def rpc_findings(config, model_names, forms):
    """Read every field of every record of `model_names` over RPC as the
    current user: read field by field, search_read, export_data.  Return
    (findings, denied): the (model, field, how) where a form shows up and
    the models the user may not read."""
    from trytond.exceptions import UserError
    findings, denied = [], []
    context = dict(config.context, active_test=False)
    for name in model_names:
        try:
            Model_ = Model.get(name)
            ids = Model_._proxy.search([], 0, None, None, context)
        except UserError:
            denied.append(name)
            continue
        fields = sorted(Model_._fields)
        for field in fields:
            try:
                values = Model_._proxy.read(ids, [field], context)
            except UserError:
                continue  # a field the user may not read
            if found_in(values, forms):
                findings.append((name, field, 'read'))
        try:
            rows = Model_._proxy.search_read([], 0, None, None, fields,
                context)
        except UserError:
            rows = []
            for field in fields:
                try:
                    rows.append(Model_._proxy.search_read(
                            [], 0, None, None, [field], context))
                except UserError:
                    pass
        if found_in(rows, forms):
            findings.append((name, '*', 'search_read'))
        exportable = [f for f in fields
            if Model_._fields[f]['type'] not in {'one2many', 'many2many'}]
        for field in exportable:
            try:
                rows = Model_._proxy.export_data(ids, [field], False,
                    context)
            except UserError:
                continue
            if found_in(rows, forms):
                findings.append((name, field, 'export'))
    return findings, denied


def database_findings(config, forms):
    """Every column of every row of every table of the database, read
    server side: the (table, column) where a form shows up."""
    from trytond.model import ModelSQL
    findings = set()
    with Transaction().start(config.database_name, 0,
            readonly=True) as transaction:
        pool = Pool()
        cursor = transaction.connection.cursor()
        tables = set()
        for _, Model_ in pool.iterobject():
            if issubclass(Model_, ModelSQL) and (
                    not Model_._is_table_query()
                    or Model_._table_query_materialized()):
                tables.add(Model_._table)
                if Model_._history:
                    tables.add(Model_._table + '__history')
        for table in sorted(tables):
            cursor.execute('SELECT * FROM "%s"' % table)
            columns = [d[0] for d in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row):
                    if found_in(value, forms):
                        findings.add((table, column))
    return sorted(findings)


def decrypted_secrets(config):
    "{(owner, kind): data} of the secret store, decrypted (server side)."
    with Transaction().start(config.database_name, 0, readonly=True):
        Secret = Pool().get('ksef.secret')
        return {(s.owner, s.kind): Secret.fetch(s.owner, s.kind)
            for s in Secret.search([])}
