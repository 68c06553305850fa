# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.modules.company.tests import CompanyTestMixin
from trytond.tests.test_tryton import ModuleTestCase


class KsefTestCase(CompanyTestMixin, ModuleTestCase):
    "Test KSeF module"
    module = 'ksef'


del ModuleTestCase
