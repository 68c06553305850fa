# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The KSeF simulator: fault injection, rate limits, clock, Latarnia, the
exchange log, the real HTTP server and the command line."""
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import httpx

from trytond_ksef import crypto
from trytond_ksef.simulator import Simulator, serve_in_thread
from trytond_ksef.simulator import testing as T
from trytond_ksef.simulator.limits import RateLimiter
from trytond_ksef.simulator.state import WARSAW
from trytond_ksef.tests.test_simulator import NIP, SimulatorCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))


class FaultTest(SimulatorCase):

    def today(self):
        return self.sim.now().astimezone(WARSAW).date()

    def test_outage_one_shot(self):
        self.sim.faults.add('outage', path=r'/auth/challenge$')
        self.assertEqual(self.client.post('/auth/challenge').status_code, 503)
        self.assertEqual(self.client.post('/auth/challenge').status_code, 200)

    def test_outage_persistent_and_per_path(self):
        fault = self.sim.faults.add('outage', path=r'/auth/challenge$',
            persistent=True)
        for _ in range(3):
            self.assertEqual(
                self.client.post('/auth/challenge').status_code, 503)
        # another path is not affected
        self.assertEqual(self.client.get(
                '/security/public-key-certificates').status_code, 200)
        self.assertEqual(fault.hits, 3)
        self.sim.faults.remove(fault.id)
        self.assertEqual(self.client.post('/auth/challenge').status_code, 200)

    def test_outage_method_filter(self):
        self.sim.faults.add('outage', method='GET', persistent=True)
        self.assertEqual(self.client.post('/auth/challenge').status_code, 200)
        self.assertEqual(self.client.get(
                '/security/public-key-certificates').status_code, 503)

    def test_connection_refused_in_process(self):
        self.sim.faults.add('outage', mode='drop')
        with self.assertRaises(httpx.RemoteProtocolError):
            self.client.post('/auth/challenge')
        self.assertTrue(self.sim.log.entries()[-1]['dropped'])

    def test_timeout_in_process(self):
        self.sim.faults.add('delay', path='challenge', delay=30)
        started = time.monotonic()
        with self.assertRaises(httpx.ReadTimeout):
            self.client.post('/auth/challenge', timeout=0.2)
        self.assertLess(time.monotonic() - started, 5)

    def test_short_delay_answers(self):
        self.sim.faults.add('delay', path='challenge', delay=0.1)
        started = time.monotonic()
        self.assertEqual(self.client.post('/auth/challenge').status_code, 200)
        self.assertGreaterEqual(time.monotonic() - started, 0.1)

    def test_answer_lost_after_accept(self):
        token = self.token()
        session, key = T.open_online(self.client, token)
        xml = T.sample_invoice(NIP, 'LOST/1', self.today())
        self.sim.faults.add('drop_after_accept', method='POST',
            path=r'/invoices$')
        with self.assertRaises(httpx.RemoteProtocolError):
            T.send(self.client, token, session, key, xml)
        # KSeF kept it: the session lists it, and sending again is a
        # duplicate pointing at the first one
        listing = self.client.get('/sessions/%s/invoices' % session,
            headers=T.bearer(token)).json()['invoices']
        self.assertEqual(len(listing), 1)
        first = T.wait_invoice(self.client, token, session,
            listing[0]['referenceNumber'])
        again = T.send(self.client, token, session, key, xml)
        second = T.wait_invoice(self.client, token, session,
            again.json()['referenceNumber'])
        self.assertEqual(second['status']['code'], 440)
        self.assertEqual(second['status']['extensions']['originalKsefNumber'],
            first['ksefNumber'])

    def test_answer_lost_as_5xx(self):
        token = self.token()
        session, key = T.open_online(self.client, token)
        self.sim.faults.add('drop_after_accept', mode='status', status=504,
            path=r'/invoices$')
        response = T.send(self.client, token, session, key,
            T.sample_invoice(NIP, 'LOST/2', self.today()))
        self.assertEqual(response.status_code, 504)
        self.assertEqual(len(self.sim.sessions[session].invoices), 1)

    def test_reject_invoice(self):
        token = self.token()
        session, key = T.open_online(self.client, token)
        xml = T.sample_invoice(NIP, 'REJ/1', self.today())
        self.sim.faults.add('reject_invoice', path=r'/invoices$')
        sent = T.send(self.client, token, session, key, xml)
        self.assertEqual(sent.status_code, 202)
        refused = T.wait_invoice(self.client, token, session,
            sent.json()['referenceNumber'])
        self.assertEqual(refused['status']['code'], 430)
        self.assertNotIn('ksefNumber', refused)
        # One-shot: the same document sent again is processed normally.
        again = T.send(self.client, token, session, key, xml)
        accepted = T.wait_invoice(self.client, token, session,
            again.json()['referenceNumber'])
        self.assertEqual(accepted['status']['code'], 200)

    def test_expired_token_fault(self):
        token = self.token()
        self.sim.faults.add('expired_token', path='/sessions')
        response = self.client.get('/sessions?sessionType=Online',
            headers=T.bearer(token))
        self.assertEqual(response.status_code, 401)
        self.assertEqual(self.client.get('/sessions?sessionType=Online',
                headers=T.bearer(token)).status_code, 200)

    def test_expire_access_tokens_then_refresh(self):
        challenge = self.client.post('/auth/challenge').json()['challenge']
        cert = testcertificate()
        signed = T.signed_auth_request(challenge, NIP, *cert)
        body = self.client.post('/auth/xades-signature', content=signed,
            headers={'Content-Type': 'application/xml'}).json()
        auth_token = body['authenticationToken']['token']
        T.wait_auth(self.client, body['referenceNumber'], auth_token)
        tokens = self.client.post('/auth/token/redeem',
            headers=T.bearer(auth_token)).json()
        access = tokens['accessToken']['token']
        self.sim.expire_access_tokens()
        self.assertEqual(self.client.get('/sessions?sessionType=Online',
                headers=T.bearer(access)).status_code, 401)
        refreshed = self.client.post('/auth/token/refresh',
            headers=T.bearer(tokens['refreshToken']['token'])).json()
        self.assertEqual(self.client.get('/sessions?sessionType=Online',
                headers=T.bearer(refreshed['accessToken']['token'])
                ).status_code, 200)

    def test_rotated_key(self):
        token = self.token()
        old_id, old_public = T.public_key(self.client,
            'SymmetricKeyEncryption')
        self.sim.rotate_key('SymmetricKeyEncryption')
        key = crypto.SymmetricKey.generate()
        stale = {
            'encryptedSymmetricKey': crypto.b64(
                crypto.rsa_oaep_encrypt(old_public, key.key)),
            'initializationVector': crypto.b64(key.iv),
            'publicKeyId': old_id,
            }
        response = self.client.post('/sessions/online',
            headers=T.bearer(token), json={'formCode': T.FA3,
                'encryption': stale})
        self.assertKSeFError(response, 21470)
        new_id, _ = T.public_key(self.client, 'SymmetricKeyEncryption')
        self.assertNotEqual(new_id, old_id)
        session, _ = T.open_online(self.client, token)
        self.assertTrue(session)

    def test_planned_rotation_keeps_old_key(self):
        token = self.token()
        old_id, _ = T.public_key(self.client, 'SymmetricKeyEncryption')
        self.sim.rotate_key('SymmetricKeyEncryption', keep_old=True)
        listed = self.client.get('/security/public-key-certificates').json()
        ids = [c['publicKeyId'] for c in listed
            if 'SymmetricKeyEncryption' in c['usage']]
        self.assertEqual(len(ids), 2)
        self.assertIn(old_id, ids)
        session, _ = T.open_online(self.client, token)
        self.assertTrue(session)

    def test_session_closed_by_ksef(self):
        token = self.token()
        session, key = T.open_online(self.client, token)
        self.sim.faults.add('session_closed', path=r'/invoices$')
        response = T.send(self.client, token, session, key,
            T.sample_invoice(NIP, 'CL/1', self.today()))
        self.assertKSeFError(response, 21180)
        final = T.wait_session(self.client, token, session)
        self.assertEqual(final['status']['code'], 440)

    def test_close_session_helper(self):
        token = self.token()
        session, key = T.open_online(self.client, token)
        T.send(self.client, token, session, key,
            T.sample_invoice(NIP, 'CL/2', self.today()))
        self.sim.close_session(session)
        final = T.wait_session(self.client, token, session)
        self.assertEqual(final['status']['code'], 200)
        self.assertKSeFError(T.send(self.client, token, session, key,
                T.sample_invoice(NIP, 'CL/3', self.today())), 21180)

    def test_admin_endpoints(self):
        admin = httpx.Client(transport=self.sim.transport(),
            base_url='http://ksef.test/_sim')
        created = admin.post('/faults', json={'kind': 'outage',
                'path': 'challenge', 'status': 503, 'persistent': True})
        self.assertEqual(created.status_code, 201)
        self.assertEqual(self.client.post('/auth/challenge').status_code, 503)
        self.assertEqual(len(admin.get('/faults').json()), 1)
        self.assertEqual(admin.delete('/faults/%d'
                % created.json()['id']).status_code, 204)
        self.assertEqual(self.client.post('/auth/challenge').status_code, 200)
        self.assertEqual(admin.post('/faults', json={
                    'kind': 'nonsense'}).status_code, 400)
        # admin requests are never faulted
        admin.post('/faults', json={'kind': 'outage', 'persistent': True})
        self.assertEqual(admin.get('/health').status_code, 200)
        self.assertEqual(admin.delete('/faults').status_code, 204)
        # clock
        moved = admin.post('/clock', json={'set': '2030-01-02T03:04:05Z'})
        self.assertTrue(moved.json()['now'].startswith('2030-01-02T03:04'))
        admin.post('/clock', json={'freeze': '2030-01-02T00:00:00Z'})
        admin.post('/clock', json={'advance': 60})
        self.assertEqual(admin.get('/clock').json()['now'],
            '2030-01-02T00:01:00.000000+00:00')
        # KSeF token for the token flow
        issued = admin.post('/ksef-tokens', json={
                'context': {'type': 'Nip', 'value': NIP}}).json()
        self.assertIn('|nip-%s|' % NIP, issued['token'])
        # key rotation
        before, _ = T.public_key(self.client, 'KsefTokenEncryption')
        admin.post('/keys/rotate', json={'usage': 'KsefTokenEncryption'})
        after, _ = T.public_key(self.client, 'KsefTokenEncryption')
        self.assertNotEqual(before, after)
        self.assertIsInstance(admin.get('/log').json(), list)


def testcertificate():
    from trytond_ksef.tests.test_simulator import long_lived
    return long_lived()


class RateLimitTest(unittest.TestCase):

    def test_limiter_windows(self):
        now = [0.0]
        limiter = RateLimiter(monotonic=lambda: now[0])
        limits = {'perSecond': 2, 'perMinute': 3}
        self.assertIsNone(limiter.hit('k', limits))
        self.assertIsNone(limiter.hit('k', limits))
        wait = limiter.hit('k', limits)
        self.assertAlmostEqual(wait, 1.0)
        self.assertIsNone(limiter.hit('other', limits))
        now[0] = 1.0
        self.assertIsNone(limiter.hit('k', limits))
        wait = limiter.hit('k', limits)
        self.assertAlmostEqual(wait, 59.0)

    def test_time_scale(self):
        now = [0.0]
        limiter = RateLimiter(time_scale=0.001, monotonic=lambda: now[0])
        limits = {'perHour': 1}
        self.assertIsNone(limiter.hit('k', limits))
        self.assertAlmostEqual(limiter.hit('k', limits), 3.6)
        now[0] = 3.6
        self.assertIsNone(limiter.hit('k', limits))

    def test_429_with_retry_after(self):
        sim = Simulator(processing_delay=0, time_scale=0.01)
        client = httpx.Client(transport=sim.transport(),
            base_url='http://ksef.test/v2')
        token = T.authenticate(client, NIP, cert=testcertificate())
        # GET /sessions: 5/s, 10/min, 60/h; at this scale a minute is 0.6 s
        codes = [client.get('/sessions?sessionType=Online',
                headers=T.bearer(token)).status_code for _ in range(11)]
        self.assertEqual(codes[:10], [200] * 10)
        self.assertEqual(codes[10], 429)
        response = client.get('/sessions?sessionType=Online',
            headers=T.bearer(token))
        self.assertEqual(response.status_code, 429)
        self.assertEqual(response.json()['status']['code'], 429)
        self.assertGreaterEqual(int(response.headers['Retry-After']), 1)
        time.sleep(0.65)
        self.assertEqual(client.get('/sessions?sessionType=Online',
                headers=T.bearer(token)).status_code, 200)
        sim.check()

    def test_group_shared_by_operations(self):
        """KSeF counts per group: opening and closing online sessions
        share onlineSession's 10 a second."""
        sim = Simulator(processing_delay=0)
        sim.limiter = RateLimiter(monotonic=lambda: 0.0)
        client = httpx.Client(transport=sim.transport(),
            base_url='http://ksef.test/v2')
        token = T.authenticate(client, NIP, cert=testcertificate())
        sessions = [T.open_online(client, token)[0] for _ in range(6)]
        codes = [client.post('/sessions/online/%s/close' % ref,
                headers=T.bearer(token)).status_code for ref in sessions]
        self.assertEqual(codes, [204] * 4 + [429] * 2)
        # another group is not affected
        self.assertEqual(client.get('/sessions/%s' % sessions[0],
                headers=T.bearer(token)).status_code, 200)
        sim.check()

    def test_groups_from_the_spec(self):
        from trytond_ksef.simulator import openapi
        for method, template, group in [
                ('POST', '/sessions/online', 'onlineSession'),
                ('POST', '/sessions/online/{referenceNumber}/close',
                    'onlineSession'),
                ('POST', '/sessions/online/{referenceNumber}/invoices',
                    'invoiceSend'),
                ('GET', '/sessions/{referenceNumber}/upo/'
                    '{upoReferenceNumber}', 'sessionMisc'),
                ('GET', '/tokens', 'other'),
                ('DELETE', '/auth/sessions/current', 'other'),
                ('POST', '/auth/challenge', None),
                ]:
            with self.subTest(template=template):
                self.assertEqual(
                    openapi.rate_limit_group(method, template), group)

    def test_public_endpoint_per_ip(self):
        sim = Simulator(processing_delay=0)
        client = httpx.Client(transport=sim.transport(),
            base_url='http://ksef.test/v2')
        codes = [client.post('/auth/challenge').status_code
            for _ in range(61)]
        self.assertEqual(codes.count(429), 1)
        self.assertEqual(codes[-1], 429)
        sim.check()

    def test_disabled(self):
        sim = Simulator(processing_delay=0, rate_limits=False)
        client = httpx.Client(transport=sim.transport(),
            base_url='http://ksef.test/v2')
        codes = {client.post('/auth/challenge').status_code
            for _ in range(70)}
        self.assertEqual(codes, {200})


class LatarniaTest(unittest.TestCase):

    def setUp(self):
        self.sim = Simulator(processing_delay=0)
        self.sim.clock.freeze('2026-03-01T10:00:00Z')
        self.client = httpx.Client(transport=self.sim.transport(),
            base_url='http://ksef.test/latarnia')

    def status(self):
        response = self.client.get('/status')
        self.assertEqual(response.status_code, 200)
        return response.json()

    def test_available(self):
        self.assertEqual(self.status(), {'status': 'AVAILABLE',
                'messages': []})
        self.assertEqual(self.client.get('/messages').json(), [])

    def test_failure_start_and_end(self):
        event = self.sim.latarnia.announce('FAILURE')
        status = self.status()
        self.assertEqual(status['status'], 'FAILURE')
        self.assertEqual(status['messages'][0]['type'], 'FAILURE_START')
        self.assertIsNone(status['messages'][0]['end'])
        self.sim.clock.advance(3600)
        self.sim.latarnia.end(event)
        self.assertEqual(self.status()['status'], 'AVAILABLE')
        messages = self.client.get('/messages').json()
        self.assertEqual([m['type'] for m in messages],
            ['FAILURE_START', 'FAILURE_END'])
        self.assertEqual(messages[1]['end'],
            '2026-03-01T11:00:00.000000+00:00')
        self.assertEqual(messages[1]['eventId'], event)

    def test_end_names_its_own_event(self):
        failure = self.sim.latarnia.announce('FAILURE', title="Awaria A")
        self.sim.latarnia.announce('MAINTENANCE', title="Prace B",
            end='2026-03-02T10:00:00Z')
        self.sim.latarnia.end(failure)
        last = self.client.get('/messages').json()[-1]
        self.assertEqual((last['eventId'], last['title']),
            (failure, "Koniec: Awaria A"))

    def test_total_failure_wins(self):
        self.sim.latarnia.announce('FAILURE')
        self.sim.latarnia.announce('TOTAL_FAILURE')
        self.assertEqual(self.status()['status'], 'TOTAL_FAILURE')

    def test_scheduled_maintenance(self):
        self.sim.latarnia.announce('MAINTENANCE',
            start='2026-03-01T16:00:00+01:00',
            end='2026-03-01T18:00:00+01:00')
        self.assertEqual(self.status()['status'], 'AVAILABLE')
        self.sim.clock.freeze('2026-03-01T15:30:00Z')
        self.assertEqual(self.status()['status'], 'MAINTENANCE')
        self.sim.clock.freeze('2026-03-01T17:00:00Z')
        self.assertEqual(self.status()['status'], 'AVAILABLE')

    def test_over_admin_http_and_outage(self):
        admin = httpx.Client(transport=self.sim.transport(),
            base_url='http://ksef.test/_sim')
        event = admin.post('/latarnia', json={'category': 'FAILURE',
                'title': "Awaria"}).json()['eventId']
        self.assertEqual(self.status()['status'], 'FAILURE')
        admin.post('/latarnia/%d/end' % event, json={})
        self.assertEqual(self.status()['status'], 'AVAILABLE')
        # the status service itself can be down
        self.sim.faults.add('outage', path='^/latarnia/')
        self.assertEqual(self.client.get('/status').status_code, 503)


class ClockTest(unittest.TestCase):

    def test_injected_now(self):
        moment = dt.datetime(2026, 2, 1, 8, 0, tzinfo=dt.timezone.utc)
        sim = Simulator(now=lambda: moment, processing_delay=0)
        client = httpx.Client(transport=sim.transport(),
            base_url='http://ksef.test/v2')
        body = client.post('/auth/challenge').json()
        self.assertTrue(body['challenge'].startswith('20260201-CR-'))
        self.assertEqual(body['timestampMs'],
            int(moment.timestamp() * 1000))

    def test_set_runs_on(self):
        sim = Simulator(processing_delay=0)
        sim.clock.set('2027-01-01T00:00:00Z')
        first = sim.now()
        time.sleep(0.01)
        self.assertGreater(sim.now(), first)
        self.assertEqual(first.year, 2027)


class ExchangeLogTest(SimulatorCase):

    def test_log_has_references_and_no_secrets(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'log.jsonl')
            self.sim.log.path = path
            token = self.token()
            session, key = T.open_online(self.client, token)
            xml = T.sample_invoice(NIP, 'LOG/1',
                self.sim.now().astimezone(WARSAW).date())
            body = T.send_body(key, xml)
            sent = self.client.post('/sessions/online/%s/invoices' % session,
                headers=T.bearer(token), json=body)
            with open(path, encoding='utf-8') as f:
                lines = [json.loads(line) for line in f]
        entries = self.sim.log.entries()
        self.assertEqual(lines, entries)
        text = json.dumps(entries)
        for secret in (token, body['encryptedInvoiceContent'],
                crypto.b64(key.key), 'Seller Sp. z o.o.'):
            self.assertNotIn(secret, text)
        last = entries[-1]
        self.assertEqual(last['operation'],
            'POST /sessions/online/{referenceNumber}/invoices')
        self.assertEqual(last['references']['referenceNumber'], session)
        self.assertEqual(last['references']['response.referenceNumber'],
            sent.json()['referenceNumber'])
        self.assertEqual(last['validation'], 'ok')
        self.assertEqual(last['status'], 202)
        for key_ in ('time', 'durationMs', 'method', 'path', 'client'):
            self.assertIn(key_, last)


class RealServerTest(unittest.TestCase):

    def test_real_http(self):
        server = serve_in_thread(port=0, processing_delay=0.02)
        self.addCleanup(server.stop)
        self.assertRegex(server.base_url, r'^http://127\.0\.0\.1:\d+/v2$')
        client = httpx.Client(base_url=server.base_url, timeout=5)
        self.addCleanup(client.close)
        token = T.authenticate(client, NIP, cert=testcertificate())
        session, key = T.open_online(client, token)
        today = server.simulator.now().astimezone(WARSAW).date()
        sent = T.send(client, token, session, key,
            T.sample_invoice(NIP, 'HTTP/1', today))
        self.assertEqual(sent.status_code, 202)
        status = T.wait_invoice(client, token, session,
            sent.json()['referenceNumber'])
        self.assertEqual(status['status']['code'], 200)
        self.assertTrue(status['upoDownloadUrl'].startswith(
                server.root_url + '/storage/'))
        self.assertEqual(httpx.get(status['upoDownloadUrl']).status_code,
            200)
        # faults over a real socket
        server.simulator.faults.add('outage', mode='drop')
        with self.assertRaises(httpx.RemoteProtocolError):
            client.post('/auth/challenge')
        server.simulator.faults.add('delay', delay=1.0)
        with self.assertRaises(httpx.ReadTimeout):
            client.post('/auth/challenge', timeout=0.2)
        server.simulator.check()

    def test_stop_closes_the_port(self):
        server = serve_in_thread(port=0, processing_delay=0)
        url = server.base_url
        self.assertEqual(httpx.post(url + '/auth/challenge').status_code, 200)
        server.stop()
        with self.assertRaises(httpx.ConnectError):
            httpx.post(url + '/auth/challenge', timeout=1)


class CommandLineTest(unittest.TestCase):

    def test_serve_and_sigterm(self):
        with tempfile.TemporaryDirectory() as folder:
            log = os.path.join(folder, 'sim.jsonl')
            env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep
                + os.environ.get('PYTHONPATH', ''))
            process = subprocess.Popen([sys.executable, '-m',
                    'trytond_ksef.cli', 'simulator', '--port', '0',
                    '--log', log], cwd=folder, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                line = process.stdout.readline()
                self.assertIn('listening on http://127.0.0.1:', line)
                url = line.split()[-1]
                self.assertEqual(httpx.post(url + '/auth/challenge',
                        timeout=5).status_code, 200)
                process.send_signal(signal.SIGTERM)
                self.assertEqual(process.wait(timeout=10), 0)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                process.stdout.close()
                process.stderr.close()
            with open(log, encoding='utf-8') as f:
                entries = [json.loads(line) for line in f]
            self.assertEqual(entries[0]['path'], '/v2/auth/challenge')
            self.assertEqual(entries[0]['status'], 200)
