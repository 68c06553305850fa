# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Encrypted storage of private keys, KSeF tokens and session keys.

The model has no RPC method at all: nothing outside server code can read,
search or export it, administrators included (on Tryton 8.2 administrators
bypass model and field access, so access rules alone cannot protect a
secret).  No other model has a relation field pointing here, so no dotted
read can reach it either.  Blobs are AES-256-GCM encrypted with the
`[ksef] secret_key` of trytond.conf and bound to their owner, so a blob
copied onto another record does not decrypt.
"""
from trytond.i18n import gettext
from trytond.model import ModelSQL, fields
from trytond.pool import Pool

from trytond_ksef import secrets as core_secrets

from .common import secret_key
from .exceptions import KSeFConfigurationError


class Secret(ModelSQL):
    "KSeF Secret"
    __string__ = "KSeF Secret"
    __name__ = 'ksef.secret'
    company = fields.Many2One(
        'company.company', "Company", required=True, ondelete='CASCADE')
    owner = fields.Char("Owner", required=True, strip=False)
    kind = fields.Char("Kind", required=True)
    blob = fields.Binary("Blob", required=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        # Server-side only: no read, search, export, copy... over RPC.
        cls.__rpc__ = {}

    @staticmethod
    def _aad(owner, kind):
        return ('%s|%s' % (owner, kind)).encode('utf-8')

    @classmethod
    def store(cls, company, owner, kind, data):
        "Encrypt `data` and keep it as the `kind` secret of `owner`."
        owner = str(owner)
        blob = core_secrets.encrypt(
            secret_key(), data, cls._aad(owner, kind))
        records = cls.search([('owner', '=', owner), ('kind', '=', kind)])
        if records:
            cls.write(records, {'blob': blob})
        else:
            cls.create([{
                        'company': getattr(company, 'id', company),
                        'owner': owner,
                        'kind': kind,
                        'blob': blob,
                        }])

    @classmethod
    def fetch(cls, owner, kind):
        "Return the decrypted `kind` secret of `owner`, or None."
        owner = str(owner)
        records = cls.search([('owner', '=', owner), ('kind', '=', kind)])
        if not records:
            return None
        try:
            return core_secrets.decrypt(
                secret_key(), records[0].blob, cls._aad(owner, kind))
        except core_secrets.SecretError as error:
            raise KSeFConfigurationError(
                gettext('ksef.msg_' + error.code)) from error

    @classmethod
    def exists(cls, owner, kind):
        return bool(cls.search([
                    ('owner', '=', str(owner)), ('kind', '=', kind)],
                limit=1))

    @classmethod
    def forget(cls, owner, kind=None):
        domain = [('owner', '=', str(owner))]
        if kind:
            domain.append(('kind', '=', kind))
        cls.delete(cls.search(domain))


def forget_owned(records):
    "Delete every secret of `records` (on their deletion)."
    Secret = Pool().get('ksef.secret')
    for record in records:
        Secret.forget(record)
