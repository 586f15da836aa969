/**
 * TLS to Temporal (a cluster behind TLS, Temporal Cloud with certificates): the variables TEMPORAL_TLS_* are
 * validated at start-up, and both kinds of connection the system opens (the API's client, the worker's native
 * connection) really speak mTLS with them. The dev server has no TLS, so a TLS-terminating proxy that demands a
 * client certificate signed by a test CA stands in front of it; certificates are made with openssl.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { type AddressInfo, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Server, createServer as createTlsServer } from 'node:tls';
import { NativeConnection } from '@temporalio/worker';
import { connectTemporal } from '../src/temporal/connection';
import { loadConfig, temporalConnectionOptions } from '../src/config';
import { configErrorOf } from './support/config-error';
import { TEST_ENV } from './support/env';

let dir: string;
let proxy: Server;
let proxyAddress: string;
let handshakes = 0;
let rejected = 0;

const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'payflow-tls-'));
  openssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '1',
    '-subj',
    '/CN=payflow test CA',
  );
  for (const [name, cn] of [
    ['server', 'temporal.test'],
    ['client', 'payflow-worker'],
  ]) {
    openssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
      '-subj',
      `/CN=${cn}`,
    );
    writeFileSync(
      join(dir, `${name}.ext`),
      name === 'server' ? 'subjectAltName=DNS:temporal.test\n' : 'extendedKeyUsage=clientAuth\n',
    );
    openssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
    );
  }
  const read = (f: string) => readFileSync(join(dir, f));
  const [host, port] = TEST_ENV.temporalAddress.split(':');
  proxy = createTlsServer(
    {
      key: read('server.key'),
      cert: read('server.pem'),
      ca: read('ca.pem'),
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ['h2'],
    },
    (secure) => {
      handshakes++;
      const upstream = tcpConnect({ host, port: Number(port) });
      secure.pipe(upstream).pipe(secure);
      secure.on('error', () => upstream.destroy());
      upstream.on('error', () => secure.destroy());
    },
  );
  proxy.on('tlsClientError', () => rejected++);
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  proxyAddress = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((r) => proxy?.close(r));
});

const tlsEnv = () => ({
  TEMPORAL_ADDRESS: proxyAddress,
  TEMPORAL_TLS_CERT_PATH: join(dir, 'client.pem'),
  TEMPORAL_TLS_KEY_PATH: join(dir, 'client.key'),
  TEMPORAL_TLS_CA_PATH: join(dir, 'ca.pem'),
  TEMPORAL_TLS_SERVER_NAME: 'temporal.test',
});

test('the API client and the worker connection speak mTLS with the configured certificate, CA and server name', async () => {
  const config = loadConfig(tlsEnv());
  const client = await connectTemporal(config);
  try {
    const info = await client.workflowService.getSystemInfo({});
    expect(info.serverVersion).toBeTruthy();
  } finally {
    await client.connection.close();
  }
  const native = await NativeConnection.connect(temporalConnectionOptions(config));
  try {
    expect((await native.workflowService.getSystemInfo({})).serverVersion).toBeTruthy();
  } finally {
    await native.close();
  }
  expect(handshakes).toBeGreaterThanOrEqual(2);
}, 60_000);

test('without the client certificate the TLS server refuses the connection', async () => {
  const before = rejected;
  const { TEMPORAL_TLS_CERT_PATH: _c, TEMPORAL_TLS_KEY_PATH: _k, ...noClientCert } = tlsEnv();
  const config = loadConfig(noClientCert);
  await expect(
    (async () => {
      const client = await connectTemporal(config);
      try {
        await client.workflowService.getSystemInfo({});
      } finally {
        await client.connection.close();
      }
    })(),
  ).rejects.toThrow();
  // The proxy's refusal event and the client's error are separate events: wait (bounded) for the proxy's.
  for (const end = Date.now() + 30_000; rejected <= before && Date.now() < end;)
    await new Promise((r) => setTimeout(r, 50));
  expect(rejected).toBeGreaterThan(before);
}, 60_000);

test('TLS variables are validated at start-up with one line naming the variable', () => {
  expect(configErrorOf({ TEMPORAL_TLS_CERT_PATH: join(dir, 'client.pem') })).toMatch(
    /TEMPORAL_TLS_CERT_PATH and TEMPORAL_TLS_KEY_PATH must be set together/,
  );
  expect(
    configErrorOf({ TEMPORAL_TLS_CERT_PATH: '/nowhere/cert.pem', TEMPORAL_TLS_KEY_PATH: join(dir, 'client.key') }),
  ).toMatch(/^Invalid configuration: TEMPORAL_TLS_CERT_PATH="\/nowhere\/cert.pem": cannot read it/);
  expect(configErrorOf({ TEMPORAL_TLS_CA_PATH: join(dir, 'client.ext') })).toMatch(
    /TEMPORAL_TLS_CA_PATH=.*not a PEM file/,
  );
  expect(configErrorOf({ TEMPORAL_TLS: 'yes' })).toMatch(
    /^Invalid configuration: TEMPORAL_TLS="yes": must be true or false$/,
  );
  expect(configErrorOf({ TEMPORAL_TLS: 'false', TEMPORAL_API_KEY: 'k-123456' })).toMatch(
    /TEMPORAL_TLS=false contradicts/,
  );
  // Plain by default; an API key alone means TLS with the system's CAs, and the key travels with every connection.
  expect(temporalConnectionOptions(loadConfig({}))).toEqual({ address: '127.0.0.1:7233' });
  expect(
    temporalConnectionOptions(
      loadConfig({ TEMPORAL_ADDRESS: 'ns.acct.tmprl.cloud:7233', TEMPORAL_API_KEY: 'k-123456' }),
    ),
  ).toEqual({
    address: 'ns.acct.tmprl.cloud:7233',
    tls: true,
    apiKey: 'k-123456',
  });
  expect(temporalConnectionOptions(loadConfig({ TEMPORAL_TLS: 'true' }))).toMatchObject({ tls: true });
});
