# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""`trytond-ksef`: command line tools for administrators and integrators.

Each subcommand lives beside the code it exposes: the module named in
COMMANDS provides ``configure_parser(parser)`` and ``run(args) -> int``.
Modules are imported only when their subcommand runs, so ``--help`` stays
fast and a broken optional dependency cannot break the other commands.
"""
import argparse
import importlib
import sys

# name: (module, one-line help)
COMMANDS = {
    'inspect-certificate': ('trytond_ksef.certificates',
        "check a KSeF certificate (and its key) and print what it is for"),
    'validate-fa3': ('trytond_ksef.fa3',
        "validate FA(3) files: XSD plus the module's semantic checks"),
    'qr-link': ('trytond_ksef.qr',
        "print the CODE I verification link of an invoice file"),
    'simulator': ('trytond_ksef.simulator',
        "run the KSeF simulator (a strict stand-in for KSeF) on loopback"),
    }



def build_parser(argv=None):
    parser = argparse.ArgumentParser(
        prog='trytond-ksef',
        description="KSeF 2.0 tools of the Tryton module ksef.")
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    wanted = None
    if argv:
        wanted = next((a for a in argv if not a.startswith('-')), None)
    for name, (module_name, help_) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_, description=help_)
        sub.set_defaults(_module=module_name)
        if name == wanted:
            module = importlib.import_module(module_name)
            module.configure_parser(sub)
    return parser


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, 'command', None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    try:
        return module.run(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
