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
