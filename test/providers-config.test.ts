/**
 * Provider configuration: a provider is offered only when configured, a half-configured one stops start-up with
 * one line naming the variable, keys load from PEM text, base64 DER or a file, and secrets never print.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { loadConfig, startupWarnings } from '../src/config';
import { createProviders } from '../src/providers';
import { rsaPair } from './support/provider-fakes';
import { configErrorOf } from './support/config-error';

const alipayApp = rsaPair();
const alipayPublic = rsaPair();
const wechatMerchant = rsaPair();
const wechatPlatform = rsaPair();

const ALIPAY = {
  ALIPAY_APP_ID: '2021000000000001',
  ALIPAY_SELLER_ID: '2088000000000001',
  ALIPAY_PRIVATE_KEY: alipayApp.privatePem,
  ALIPAY_PUBLIC_KEY: alipayPublic.publicPem,
};
const WECHAT = {
  WECHAT_MCH_ID: '1230000109',
  WECHAT_APP_ID: 'wx0123456789abcdef',
  WECHAT_API_V3_KEY: 'abcdefghijklmnopqrstuvwxyz012345',
  WECHAT_PRIVATE_KEY: wechatMerchant.privatePem,
  WECHAT_CERT_SERIAL: '1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C',
  WECHAT_PLATFORM_KEYS: `PUB_KEY_ID_0114232134912410000000=${wechatPlatform.publicPem}`,
};
const STRIPE = {
  STRIPE_SECRET_KEY: 'sk_test_payflowLocal0123456789',
  STRIPE_WEBHOOK_SECRET: 'whsec_payflowTestSecret0123456789',
  STRIPE_PAYMENT_PAGE_URL: 'https://shop.example.com/pay',
};

/** A live-mode Stripe configuration (production accepts no test-mode key without PROVIDER_TEST_MODE). */
const STRIPE_LIVE = { ...STRIPE, STRIPE_SECRET_KEY: 'sk_live_payflowLive0123456789' };

describe('provider configuration', () => {
  test('with no provider variables only the sandbox is offered', () => {
    const config = loadConfig({});
    expect(config.providers).toEqual({});
    expect(Object.keys(createProviders(config))).toEqual(['sandbox']);
  });

  test('each fully configured provider is offered under its name', () => {
    const config = loadConfig({ ...ALIPAY, ...WECHAT, ...STRIPE });
    const providers = createProviders(config);
    expect(Object.keys(providers).sort()).toEqual(['alipay', 'sandbox', 'stripe', 'wechat']);
    expect(providers.alipay!.merchantId).toBe('2088000000000001');
    expect(providers.wechat!.merchantId).toBe('1230000109');
    expect(config.providers.stripe).toMatchObject({ livemode: false, paymentPageUrl: 'https://shop.example.com/pay' });
  });

  test.each([
    ['ALIPAY_PUBLIC_KEY', ALIPAY],
    ['WECHAT_PLATFORM_KEYS', WECHAT],
    ['STRIPE_WEBHOOK_SECRET', STRIPE],
  ])('a provider missing %s stops start-up naming that variable', (missing, group) => {
    const env: Record<string, string> = { ...group };
    delete env[missing];
    const message = configErrorOf(env);
    expect(message).toMatch(new RegExp(`^Invalid configuration: ${missing} is required when `));
    expect(message.split('\n')).toHaveLength(1);
  });

  test('a key that is not a key stops start-up with one line that hides the value', () => {
    const message = configErrorOf({ ...ALIPAY, ALIPAY_PRIVATE_KEY: 'definitely-not-a-key' });
    expect(message).toBe(
      'Invalid configuration: ALIPAY_PRIVATE_KEY=(hidden): is neither a PEM key, a base64 DER key, nor a readable key file',
    );
  });

  test('a private key given where the public key belongs is refused', () => {
    expect(configErrorOf({ ...ALIPAY, ALIPAY_PUBLIC_KEY: alipayApp.privatePem })).toMatch(
      /^Invalid configuration: ALIPAY_PUBLIC_KEY=\(hidden\): is a private key/,
    );
  });

  test('a 1024-bit key is refused for RSA2', () => {
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString();
    expect(configErrorOf({ ...ALIPAY, ALIPAY_PRIVATE_KEY: small })).toMatch(/at least 2048 bits/);
  });

  test('keys load from a file path, from bare base64 DER as the Alipay console shows them, and from one-line PEM with \\n escapes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'payflow-keys-'));
    const file = join(dir, 'app_private_key.pem');
    writeFileSync(file, alipayApp.privatePem);
    const der = alipayPublic.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
    const oneLine = wechatMerchant.privatePem.replace(/\n/g, '\\n');
    const config = loadConfig({
      ...ALIPAY,
      ALIPAY_PRIVATE_KEY: file,
      ALIPAY_PUBLIC_KEY: der,
      ...WECHAT,
      WECHAT_PRIVATE_KEY: oneLine,
    });
    expect(config.providers.alipay!.privateKey.asymmetricKeyType).toBe('rsa');
    expect(config.providers.alipay!.alipayPublicKey.export({ type: 'spki', format: 'der' }).toString('base64')).toBe(
      der,
    );
    expect(config.providers.wechat!.privateKey.export({ type: 'pkcs8', format: 'pem' })).toBe(
      wechatMerchant.privatePem,
    );
  });

  test.each([
    ['ALIPAY_APP_ID', { ...ALIPAY, ALIPAY_APP_ID: 'app-1' }, /16-digit/],
    ['WECHAT_API_V3_KEY', { ...WECHAT, WECHAT_API_V3_KEY: 'short' }, /32-byte/],
    ['STRIPE_SECRET_KEY', { ...STRIPE, STRIPE_SECRET_KEY: 'pk_test_abcdefghijkl' }, /secret or restricted key/],
    ['STRIPE_API_BASE', { ...STRIPE, STRIPE_API_BASE: 'ftp://mock' }, /http\(s\) URL/],
  ])('a malformed %s is refused with a one-line message', (name, env, reason) => {
    const message = configErrorOf(env);
    expect(message.startsWith(`Invalid configuration: ${name}`)).toBe(true);
    expect(message).toMatch(reason);
  });

  test('secrets and keys never show in the config when it is logged or serialised', () => {
    const config = loadConfig({ ...ALIPAY, ...WECHAT, ...STRIPE });
    const printed = `${inspect(config, { depth: 10 })}\n${JSON.stringify(config)}`;
    for (const secret of [STRIPE.STRIPE_SECRET_KEY, STRIPE.STRIPE_WEBHOOK_SECRET, WECHAT.WECHAT_API_V3_KEY])
      expect(printed).not.toContain(secret);
    const keyBody = alipayApp.privatePem.split('\n')[1]!;
    expect(printed).not.toContain(keyBody);
    expect(config.providers.stripe!.secretKey.reveal()).toBe(STRIPE.STRIPE_SECRET_KEY);
  });
});

describe('production: the address Alipay and WeChat Pay post notifications to', () => {
  const PROD = { NODE_ENV: 'production', ADMIN_TOKEN: 'p'.repeat(40) };
  test.each([
    ['unset', {}, /PUBLIC_BASE_URL is not set/],
    ["the compose network's name", { PUBLIC_BASE_URL: 'http://api:3000' }, /not HTTPS/],
    ['loopback over HTTPS', { PUBLIC_BASE_URL: 'https://127.0.0.1:3000' }, /not a public host/],
    ['a private address', { PUBLIC_BASE_URL: 'https://10.0.3.7' }, /not a public host/],
    ['a single-label name', { PUBLIC_BASE_URL: 'https://api' }, /not a public host/],
    ['plain HTTP on a public name', { PUBLIC_BASE_URL: 'http://pay.example.com' }, /not HTTPS/],
  ])('%s is refused at start-up, naming PUBLIC_BASE_URL', (_what, env, message) => {
    for (const provider of [ALIPAY, WECHAT]) {
      const err = configErrorOf({ ...PROD, ...provider, ...env });
      expect(err).toMatch(/PUBLIC_BASE_URL/);
      expect(err).toMatch(message);
    }
  });

  test('a public HTTPS address is accepted; without Alipay or WeChat Pay (Stripe, the sandbox) nothing is asked', () => {
    expect(
      loadConfig({ ...PROD, ...ALIPAY, ...WECHAT, PUBLIC_BASE_URL: 'https://pay.example.com/' }).publicBaseUrl,
    ).toBe('https://pay.example.com');
    expect(loadConfig({ ...PROD, ...STRIPE_LIVE }).publicBaseUrl).toBe('http://127.0.0.1:3000');
    expect(loadConfig({ ...ALIPAY, PUBLIC_BASE_URL: 'http://api:3000' }).publicBaseUrl).toBe('http://api:3000');
  });
});

describe('production: no test money, no secrets in clear, and at least one provider', () => {
  const PROD = { NODE_ENV: 'production', ADMIN_TOKEN: 'p'.repeat(40), PUBLIC_BASE_URL: 'https://pay.example.com' };

  test('a production process with no provider at all stops start-up (every order would be refused)', () => {
    expect(configErrorOf(PROD)).toMatch(/^Invalid configuration: no payment provider is configured/);
    expect(Object.keys(loadConfig({ ...PROD, ...STRIPE_LIVE }).providers)).toEqual(['stripe']);
  });

  test.each([
    ['a Stripe test-mode key', { ...STRIPE }, /STRIPE_SECRET_KEY is a test-mode key/],
    ['a restricted test-mode key', { ...STRIPE, STRIPE_SECRET_KEY: 'rk_test_payflow0123456789' }, /STRIPE_SECRET_KEY/],
    [
      "Alipay's sandbox gateway",
      { ...ALIPAY, ALIPAY_GATEWAY: 'https://openapi-sandbox.dl.alipaydev.com/gateway.do' },
      /ALIPAY_GATEWAY is Alipay's sandbox/,
    ],
    [
      'Alipay over plain HTTP',
      { ...ALIPAY, ALIPAY_GATEWAY: 'http://openapi.alipay.com/gateway.do' },
      /ALIPAY_GATEWAY is plain HTTP/,
    ],
    [
      'WeChat Pay over plain HTTP',
      { ...WECHAT, WECHAT_API_BASE: 'http://api.mch.weixin.qq.com' },
      /WECHAT_API_BASE is plain HTTP/,
    ],
    [
      'Stripe over plain HTTP (stripe-mock)',
      { ...STRIPE_LIVE, STRIPE_API_BASE: 'http://stripe-mock:12111' },
      /STRIPE_API_BASE is plain HTTP/,
    ],
  ])('%s is refused in production, naming the variable and PROVIDER_TEST_MODE', (_what, env, message) => {
    const err = configErrorOf({ ...PROD, ...env });
    expect(err).toMatch(message);
    expect(err).toMatch(/PROVIDER_TEST_MODE=true only on a staging deployment/);
    expect(err).not.toContain('\n');
    // Development takes them as they are.
    expect(() => loadConfig(env)).not.toThrow();
  });

  test('PROVIDER_TEST_MODE=true (staging) accepts test money, with a loud start-up warning naming what is test money', () => {
    const config = loadConfig({ ...PROD, ...STRIPE, PROVIDER_TEST_MODE: 'true' });
    expect(config).toMatchObject({ production: true, providerTestMode: true });
    expect(startupWarnings(config)).toEqual([
      {
        fields: { providerTestMode: true, production: true },
        message: expect.stringMatching(/^PROVIDER TEST MODE IN PRODUCTION MODE .*STRIPE_SECRET_KEY is a test-mode key/),
      },
    ]);
    // Live keys, https endpoints: nothing to warn about.
    expect(startupWarnings(loadConfig({ ...PROD, ...STRIPE_LIVE, ...ALIPAY }))).toEqual([]);
  });
});
