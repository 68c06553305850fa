# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The KSeF contract: every request and response checked against the
packaged ``open-api.json`` with openapi-core.

The spec declares the TEST server ``https://api-test.ksef.mf.gov.pl/v2``;
it is rewritten to the relative ``/v2`` so that any host (the loopback
address of the simulator) matches.  XML bodies are handed to the validator
as text (the spec types them ``string``), never parsed by it: the simulator
parses untrusted XML only with :func:`trytond_ksef.xmlutil.parse`.
"""
import functools
import json
import os
import re
import threading

from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import (
    WerkzeugOpenAPIRequest,
    WerkzeugOpenAPIResponse,
)
from openapi_core.validation.request.exceptions import SecurityValidationError

from trytond_ksef.xmlutil import SCHEMA_DIR

SPEC_PATH = os.path.join(SCHEMA_DIR, 'open-api.json')
_lock = threading.Lock()


def _xml_as_text(data, **kwargs):
    if isinstance(data, bytes):
        return data.decode('utf-8', 'replace')
    return data


def _json_document(data, **kwargs):
    return json.loads(data)


@functools.lru_cache(maxsize=None)
def spec_dict():
    with open(SPEC_PATH, encoding='utf-8') as f:
        return json.load(f)


def _nullable_references(node):
    """Make ``{"allOf": [...], "nullable": true}`` accept null, in place.

    The spec (generated from KSeF's .NET models) marks nullable references
    that way, e.g. ``hashOfCorrectedInvoice``, ``compressionType``,
    ``authorizationPolicy``, ``ksefNumber``.  OpenAPI 3.0.3 gives
    ``nullable`` effect only next to a ``type``, so a strict validator
    refuses the null that KSeF accepts (the docs' own send-invoice example
    has ``"hashOfCorrectedInvoice": null``) and that clients serialising
    every property send.  The reference is rewritten as "the reference or
    null"; non-null values are checked exactly as before.  Returns the
    number of schemas changed.
    """
    changed = 0
    if isinstance(node, dict):
        if node.get('nullable') is True and 'allOf' in node \
                and 'type' not in node:
            node['anyOf'] = [{'allOf': node.pop('allOf')},
                {'nullable': True, 'enum': [None]}]
            changed += 1
        for value in node.values():
            changed += _nullable_references(value)
    elif isinstance(node, list):
        for value in node:
            changed += _nullable_references(value)
    return changed


@functools.lru_cache(maxsize=None)
def _openapi():
    spec = json.loads(json.dumps(spec_dict()))
    spec['servers'] = [{'url': '/v2'}]
    _nullable_references(spec)
    config = Config(extra_media_type_deserializers={
        'application/xml': _xml_as_text,
        'application/problem+json': _json_document,
        })
    return OpenAPI.from_dict(spec, config=config)


def operation(method, template):
    "Return the spec's operation object for (method, '/path/{param}')."
    return spec_dict()['paths'].get(template, {}).get(method.lower())


@functools.lru_cache(maxsize=None)
def _templates():
    return [(re.compile('^/v2%s$' % re.sub(r'\\{[^/]+?\\}', '[^/]+',
                    re.escape(template))), template, ops)
        for template, ops in spec_dict()['paths'].items()]


def find_operation(method, path):
    """The spec template of (method, request path ``/v2/...``), or None:
    tells an operation the simulator does not serve from a wrong path."""
    for regex, template, ops in _templates():
        if method.lower() in ops and regex.match(path):
            return template
    return None


def rate_limits(method, template):
    "x-rate-limits of an operation: {'perSecond':.., 'perMinute':..}."
    op = operation(method, template) or {}
    return op.get('x-rate-limits') or {}


_GROUP_RE = re.compile(r'\|\s*([A-Za-z]\w*)\s*$')


def rate_limit_group(method, template):
    """The rate-limit group of an operation (``onlineSession``,
    ``other``...), or None when the spec names none.

    KSeF counts requests per group, not per operation (open and close of an
    online session share ``onlineSession``; tokens, certificates and
    ``/auth/sessions`` share ``other``): the groups are the properties of
    ``GET /rate-limits`` and the last column of each operation's 429
    description table, which is where they are read from."""
    op = operation(method, template) or {}
    text = ((op.get('responses') or {}).get('429') or {}).get(
        'description') or ''
    for line in reversed(text.strip().splitlines()):
        match = _GROUP_RE.search(line.strip())
        if match and match.group(1) in _groups():
            return match.group(1)
        break
    return None


@functools.lru_cache(maxsize=None)
def _groups():
    schemas = spec_dict()['components']['schemas']
    return frozenset(schemas['EffectiveApiRateLimits']['properties'])


def _describe(error):
    """Describe a schema error without echoing the offending value (it may
    be a key, a token or invoice content)."""
    location = '.'.join(str(p) for p in error.absolute_path) or '(body)'
    return '%s: %s' % (location, error.validator)


def _details(errors):
    details = []
    for error in errors:
        cause = error.__cause__
        schema_errors = getattr(cause, 'schema_errors', None)
        name = getattr(error, 'name', None) or getattr(cause, 'name', None)
        if schema_errors:
            for schema_error in schema_errors:
                text = _describe(schema_error)
                if name:
                    text = '%s %s' % (name, text)
                if text not in details:
                    details.append(text)
        else:
            details.append(type(error).__name__
                + (' %s' % name if name else ''))
    return details


def validate_request(request):
    """Validate a werkzeug request against the spec.

    Returns (errors, security_missing): `errors` is a list of short
    descriptions (no values); `security_missing` tells that the only
    problem found was the Bearer header (the caller answers 401 itself).
    """
    openapi = _openapi()
    with _lock:
        result = openapi.unmarshal_request(WerkzeugOpenAPIRequest(request))
    errors = [e for e in result.errors
        if not isinstance(e, SecurityValidationError)]
    security = any(isinstance(e, SecurityValidationError)
        for e in result.errors)
    return _details(errors), security


def validate_response(request, response):
    "Validate a werkzeug response; return a list of problems (empty: ok)."
    openapi = _openapi()
    with _lock:
        result = openapi.unmarshal_response(
            WerkzeugOpenAPIRequest(request),
            WerkzeugOpenAPIResponse(response))
    problems = []
    for error in result.errors:
        cause = error.__cause__
        schema_errors = getattr(cause, 'schema_errors', None)
        if schema_errors:
            problems.extend(_describe(e) for e in schema_errors)
        else:
            problems.append('%s: %s' % (type(error).__name__, error))
    return problems


def warm_up():
    "Compile the spec now (about a second) rather than on the first call."
    _openapi()
