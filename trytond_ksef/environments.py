# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The three KSeF environments and their base URLs (PROTOCOL.md §1, §21).

TEST is for integration tests, DEMO is the production-like pre-production
and PROD issues legally binding invoices.  Each has an API base URL, a base
URL for the QR verification links printed on invoices and the base URL of
the status service ("Latarnia") that announces failures.

Only the TEST API URL is stated by the API specification; the DEMO and
PROD API URLs are inferred from the documented ``/docs/v2`` addresses and
the status-service URLs come from third-party clients (PROTOCOL.md §1, §20,
§21).  Every URL can therefore be replaced by configuration, see `urls`.
"""
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

TEST = 'test'
DEMO = 'demo'
PROD = 'prod'


@dataclass(frozen=True)
class Environment:
    "Base URLs of one KSeF environment, without a trailing slash."
    name: str
    api_url: str
    qr_url: str
    status_url: str


ENVIRONMENTS = {
    TEST: Environment(
        name=TEST,
        api_url='https://api-test.ksef.mf.gov.pl/v2',
        qr_url='https://qr-test.ksef.mf.gov.pl',
        status_url='https://api-latarnia-test.ksef.mf.gov.pl'),
    DEMO: Environment(
        name=DEMO,
        # [inferred] from https://api-demo.ksef.mf.gov.pl/docs/v2
        api_url='https://api-demo.ksef.mf.gov.pl/v2',
        qr_url='https://qr-demo.ksef.mf.gov.pl',
        # TEST and DEMO share one status service (PROTOCOL.md §21).
        status_url='https://api-latarnia-test.ksef.mf.gov.pl'),
    PROD: Environment(
        name=PROD,
        # [inferred] from https://api.ksef.mf.gov.pl/docs/v2
        api_url='https://api.ksef.mf.gov.pl/v2',
        qr_url='https://qr.ksef.mf.gov.pl',
        status_url='https://api-latarnia.ksef.mf.gov.pl'),
    }

URL_FIELDS = ('api_url', 'qr_url', 'status_url')


class EnvironmentConfigError(ValueError):
    "An unknown environment name or an unusable URL override."

    def __init__(self, code, message, **params):
        super().__init__(message)
        self.code = code
        self.params = params


def normalize(name):
    "Return the canonical name ('test', 'demo', 'prod') of `name`."
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in ENVIRONMENTS:
        raise EnvironmentConfigError(
            'unknown_environment',
            "unknown KSeF environment %r (expected test, demo or prod)"
            % (name,),
            environment=str(name))
    return key


def urls(env, overrides=None):
    """Return the `Environment` named `env` ('test', 'demo' or 'prod', any
    case) with the URLs of `overrides` replacing the official ones.

    `overrides` maps a field ('api_url', 'qr_url', 'status_url') to a URL;
    the key may also carry the environment as a prefix ('test_api_url'),
    which wins over the bare key, so the whole ``[ksef]`` section of
    trytond.conf can be passed as it is.  Empty values and unrelated keys
    are ignored.  A trailing slash is removed.
    """
    name = normalize(env)
    environment = ENVIRONMENTS[name]
    if not overrides:
        return environment
    changes = {}
    for field in URL_FIELDS:
        value = overrides.get('%s_%s' % (name, field)) or overrides.get(field)
        if value:
            changes[field] = _check_url(field, value)
    return replace(environment, **changes)


def _check_url(field, value):
    value = str(value).strip().rstrip('/')
    parts = urlsplit(value)
    # http is accepted for a loopback simulator; the official URLs are
    # all https.
    if (parts.scheme not in ('https', 'http') or not parts.netloc
            or parts.query or parts.fragment):
        raise EnvironmentConfigError(
            'invalid_environment_url',
            "%s must be an absolute http(s) URL without query or "
            "fragment" % field,
            field=field, url=value)
    return value
