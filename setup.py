#!/usr/bin/env python3
# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Packaging of the Tryton module `ksef` and of the framework-free core
`trytond_ksef`.

One setup.py serves Tryton 8.0 (LTS) and 8.2: hatch-tryton pins a single
series, so the version ranges are written here by hand.
"""
import configparser
import io
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# 8.1 is a development series and was never released.
SERIES = '>=8.0,<8.3,!=8.1.*'


def read(fname):
    with io.open(os.path.join(HERE, fname), encoding='utf-8') as f:
        return f.read()


def tryton_config():
    config = configparser.ConfigParser()
    config.read_file(io.StringIO(read('tryton.cfg')))
    info = dict(config.items('tryton'))
    for key in ('depends', 'extras_depend', 'xml'):
        if key in info:
            info[key] = info[key].strip().splitlines()
    return info


info = tryton_config()
version = info.get('version', '8.0.0')

requires = [
    'cryptography>=44',
    'lxml>=5.0',
    'httpx>=0.27',
    'qrcode>=8.0',
    'pillow>=10',
    'python-stdnum>=2.2',
    'signxml>=5.2,<6',
    'asn1crypto>=1.5',
    'holidays>=0.64',
    'openapi-core>=0.19',
    'werkzeug>=2.0',
    ]
for dep in info.get('depends', []):
    if dep not in ('ir', 'res'):
        requires.append('trytond_%s %s' % (dep, SERIES))
requires.append('trytond %s' % SERIES)

tests_require = [
    'proteus %s' % SERIES,
    'ruff>=0.6',
    'hypothesis>=6.100',
    'zxing-cpp>=2.2',
    # drives Tryton's web client in headless Chromium (tools/screenshots.py)
    'selenium>=4.20',
    ]

data_files_module = (
    info.get('xml', [])
    + ['tryton.cfg', 'view/*.xml', 'locale/*.po', '*.fodt', '*.odt',
        'tests/*.rst', 'tests/*.json', 'icons/*.svg'])

setup(
    name='trytond_ksef',
    version=version,
    description="KSeF 2.0 (Polish national e-invoicing system) for Tryton",
    long_description=read('README.md'),
    long_description_content_type='text/markdown',
    license='GPL-3.0-or-later',
    python_requires='>=3.10',
    package_dir={
        'trytond.modules.ksef': '.',
        'trytond_ksef': 'trytond_ksef',
        },
    packages=[
        'trytond.modules.ksef',
        'trytond.modules.ksef.tests',
        ] + find_packages(include=['trytond_ksef', 'trytond_ksef.*']),
    package_data={
        'trytond.modules.ksef': data_files_module,
        'trytond_ksef': [
            'schemas/*/*.xsd', 'schemas/*.json', 'schemas/*.txt',
            'data/*', 'data/*/*'],
        'trytond_ksef.tests': ['data/*', 'data/*/*'],
        },
    install_requires=requires,
    extras_require={
        'test': tests_require,
        'postgresql': ['psycopg[pool]>=3.2'],
        },
    entry_points={
        'trytond.modules': ['ksef = trytond.modules.ksef'],
        'console_scripts': ['trytond-ksef = trytond_ksef.cli:main'],
        },
    zip_safe=False,
    )
