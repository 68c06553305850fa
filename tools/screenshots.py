# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""`make screenshots`: the README's pictures of the web client.

Run by tools/dev.py with the Tryton 8.0 venv's Python (it has Selenium).
It serves the demo database as `make web` does (tools/web.py), drives
Tryton's web client in Debian's headless Chromium, logs in as admin and
saves to docs/screenshots/:

- ksef-certificates.png: the KSeF authorization of the demo company, with
  its certificates;
- ksef-invoice.png: an invoice issued offline, on its KSeF tab;
- ksef-invoice-qr.png: the KSeF record of that invoice: state, mode,
  deadline and the QR codes CODE I and CODE II.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import web
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

OUT = os.path.join(web.ROOT, 'docs', 'screenshots')
CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
WIDTH, HEIGHT = 1280, 860
QR_HEIGHT = 1240
LOGIN, PASSWORD = 'admin', 'admin'
# Issued offline: they carry CODE II
OFFLINE_MODES = ['offline', 'offline24']


class ScreenshotError(Exception):
    pass


def step(msg):
    print("==> " + msg, flush=True)


def browser(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ['--headless=new', '--no-sandbox', '--disable-gpu',
            '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update',
            '--disable-sync', '--disable-dev-shm-usage', '--lang=en-US',
            '--hide-scrollbars', '--force-device-scale-factor=1',
            '--window-size=%d,%d' % (WIDTH, HEIGHT),
            '--user-data-dir=' + profile]:
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options,
        service=Service(CHROMEDRIVER))
    viewport(driver, HEIGHT)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


def viewport(driver, height, width=WIDTH):
    "Make the page exactly `width` x `height` pixels."
    driver.execute_cdp_cmd('Emulation.setDeviceMetricsOverride', {
            'width': width, 'height': height, 'deviceScaleFactor': 1,
            'mobile': False})


class Sao:
    "Tryton's web client in a browser."

    def __init__(self, driver, url, database):
        self.driver = driver
        self.url = url
        self.database = database

    def wait(self, condition, timeout=30, message=None):
        try:
            return WebDriverWait(self.driver, timeout, 0.1).until(
                condition, message)
        except TimeoutException:
            self.driver.save_screenshot(os.path.join(
                    web.WEB_CACHE, 'screenshot-failure.png'))
            raise ScreenshotError("timed out waiting for %s (the page is"
                " saved in .cache/web/screenshot-failure.png)"
                % (message or condition))

    def visible(self, css, timeout=30):
        def find(driver):
            for element in driver.find_elements(By.CSS_SELECTOR, css):
                if element.is_displayed():
                    return element
            return False
        return self.wait(find, timeout, css)

    def idle(self):
        "Wait until no request is in flight and the page has settled."
        self.wait(lambda d: d.execute_script(
                "return window.jQuery !== undefined && jQuery.active == 0"
                " && !jQuery('#processing').is(':visible')"),
            message="the requests to end")
        time.sleep(0.5)

    def login(self):
        self.driver.get('%s#%s' % (self.url, self.database))
        login = self.visible('.login-dialog input#login')
        login.send_keys(LOGIN)
        self.visible('.login-dialog button[type=submit]').click()
        password = self.visible('.modal input[type=password]')
        password.send_keys(PASSWORD + Keys.ENTER)
        self.visible('#user-preferences a')
        self.idle()
        # The forms get the whole width
        self.visible('[data-toggle="menu"]').click()
        self.driver.execute_script("document.activeElement.blur()")
        self.idle()

    def rpc(self, method, *params):
        "Call `method` on the server through the web client's session."
        result = self.driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            Sao.rpc({'method': arguments[0], 'params': arguments[1]},
                Sao.Session.current_session, true, false)
            .then(r => done({'result': r}),
                e => done({'error': String(e)}));
            """, method, list(params) + [{}])
        if 'error' in result:
            raise ScreenshotError("%s: %s" % (method, result['error']))
        return result['result']

    def open(self, model, id_):
        "Open the form of a record in the only tab of the web client."
        self.driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            jQuery.when(Sao.Tab.tabs.close(false)).always(() => done());
            """)
        self.driver.get('%s#%s/model/%s/%d' % (
                self.url, self.database, model, id_))
        self.visible('.tab-pane.active .form')
        self.idle()

    def tab(self, text):
        "Select the notebook page named `text` of the current form."
        for link in self.driver.find_elements(By.CSS_SELECTOR,
                '.tab-pane.active .form .nav-tabs a'):
            if link.is_displayed() and link.text.strip() == text:
                link.click()
                self.driver.execute_script("document.activeElement.blur()")
                self.idle()
                return
        raise ScreenshotError("no page %r on the form" % text)

    def save(self, name):
        path = os.path.join(OUT, name)
        self.driver.save_screenshot(path)
        step("Saved %s" % os.path.relpath(path, web.ROOT))
        return path


def pick_records(sao):
    """The authorization to show (the first with certificates) and the KSeF
    record of an invoice issued offline (with CODE II)."""
    authorizations = sao.rpc('model.ksef.authorization.search_read',
        [], 0, None, [('id', 'ASC')], ['certificates', 'rec_name'])
    authorization = next(
        (a for a in authorizations if a['certificates']), None)
    if not authorization:
        raise ScreenshotError("the demo database has no KSeF authorization"
            " with certificates: run `make demo`")
    records = sao.rpc('model.account.invoice.ksef.search_read',
        [('mode', 'in', OFFLINE_MODES), ('code2_link', '!=', None)],
        0, None, [('id', 'ASC')], ['invoice', 'mode', 'state'])
    if not records:
        raise ScreenshotError("the demo database has no invoice issued"
            " offline: run `make demo`")
    # An invoice of the outage (mode offline) rather than a back-dated one
    records.sort(key=lambda r: OFFLINE_MODES.index(r['mode']))
    return authorization, records[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--port', type=int, default=web.PORT)
    args = parser.parse_args(argv)
    for path in [CHROMIUM, CHROMEDRIVER]:
        if not os.path.exists(path):
            print("ERROR: %s is missing: install Debian's chromium and"
                " chromium-driver" % path, file=sys.stderr)
            return 1
    os.makedirs(OUT, exist_ok=True)
    profile = tempfile.mkdtemp(prefix='ksef-chromium-')
    driver = None
    try:
        with web.WebClient(os.path.dirname(sys.executable),
                port=args.port, quiet=True) as client:
            step("Web client at %s (logs in %s)" % (
                    client.url, os.path.relpath(web.WEB_CACHE, web.ROOT)))
            driver = browser(profile)
            sao = Sao(driver, client.url, client.database)
            sao.login()
            step("Logged in as %s" % LOGIN)
            authorization, record = pick_records(sao)
            sao.open('ksef.authorization', authorization['id'])
            sao.save('ksef-certificates.png')
            sao.open('account.invoice', record['invoice'])
            sao.tab('KSeF')
            sao.save('ksef-invoice.png')
            # Tall enough for the whole form down to the QR codes
            viewport(driver, QR_HEIGHT)
            sao.open('account.invoice.ksef', record['id'])
            sao.save('ksef-invoice-qr.png')
    except (web.WebError, ScreenshotError) as error:
        print("ERROR: %s" % error, file=sys.stderr)
        return 1
    finally:
        if driver:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
