# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Glue between trytond.conf, translated messages and the core."""
import datetime

import trytond.config as config
from trytond.i18n import gettext
from trytond.pool import Pool
from trytond.transaction import check_access

from trytond_ksef import environments
from trytond_ksef import secrets as core_secrets

from .exceptions import KSeFConfigurationError

SECTION = 'ksef'


def get_option(name, default=None):
    "A `[ksef]` option of trytond.conf (or TRYTOND_KSEF__<NAME>)."
    return config.get(SECTION, name, default=default)


def secret_key():
    """The key that encrypts private keys and tokens at rest.

    Read at call time, never at import.  Refuses to work without a strong
    one, telling the administrator what to set."""
    secret = get_option('secret_key')
    try:
        core_secrets.check_secret(secret or '')
    except core_secrets.SecretError as error:
        raise KSeFConfigurationError(gettext('ksef.msg_secret_key_missing',
                minimum=core_secrets.MIN_SECRET_LENGTH)) from error
    return secret


def environment(name):
    "The URLs of KSeF environment `name`, with trytond.conf overrides."
    overrides = {}
    for field in environments.URL_FIELDS:
        for key in (field, '%s_%s' % (name, field)):
            value = get_option(key)
            if value:
                overrides[key] = value
    try:
        return environments.urls(name, overrides)
    except environments.EnvironmentConfigError as error:
        raise KSeFConfigurationError(gettext('ksef.msg_environment_invalid',
                environment=name, error=str(error))) from error


def require_ksef_admin():
    """Only KSeF administrators may change certificates and tokens.

    The wizards are started from the authorization form, but they can be
    called over RPC without it: check the right explicitly."""
    ModelAccess = Pool().get('ir.model.access')
    with check_access():
        ModelAccess.check('ksef.certificate', 'create')


def naive_utc(moment):
    """`moment` as Tryton stores a DateTime: naive UTC, whole seconds (an
    aware datetime is converted; None stays None)."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(
            tzinfo=None)
    return moment.replace(microsecond=0)
