/**
 * Per-provider configuration from the environment. A provider none of whose variables is set is simply not
 * offered; one with some variables set must be complete and valid, or start-up fails naming the variable.
 * Keys are loaded and checked here, once, so a bad key stops the process before it takes any traffic.
 */
import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import { KeyLoadError, Secret, loadRsaPrivateKey, loadRsaPublicKey } from './keys';

/** Alipay (OpenAPI v2 gateway, RSA2 with the Alipay public key). */
export interface AlipayConfig {
  appId: string;
  /** The merchant's PID (2088...), `seller_id` in notifications. */
  sellerId: string;
  privateKey: KeyObject;
  alipayPublicKey: KeyObject;
  gateway: string;
  /** Cashier product: `page` (alipay.trade.page.pay, PC) or `wap` (alipay.trade.wap.pay, mobile browsers). */
  payMethod: 'page' | 'wap';
  /** Where the buyer's browser returns after paying (display only: never trusted as proof of payment). */
  returnUrl?: string;
}

/** WeChat Pay API v3. */
export interface WechatConfig {
  mchId: string;
  appId: string;
  apiV3Key: Secret;
  /** The merchant API private key (apiclient_key.pem) and its certificate serial number. */
  privateKey: KeyObject;
  certSerial: string;
  /** WeChat Pay platform public keys (or certificates) by serial / public key id, as `Wechatpay-Serial` names them. */
  platformKeys: Map<string, KeyObject>;
  apiBase: string;
}

/** Stripe. */
export interface StripeConfig {
  secretKey: Secret;
  webhookSecret: Secret;
  /** Test mode keys (sk_test_/rk_test_) accept only test-mode events, live keys only live events. */
  livemode: boolean;
  /**
   * Our account id (acct_...), also our merchant id. Events of another (connected) account are refused whether or not
   * it is set: unset, any event that names an account is refused.
   */
  accountId?: string;
  /** API base URL override, e.g. a local stripe-mock; unset = api.stripe.com. */
  apiBase?: string;
  /** The merchant's page that confirms the PaymentIntent with Stripe.js; the payment URL points there. */
  paymentPageUrl: string;
}

/** Configured real providers; absent = not offered. */
export interface ProvidersConfig {
  alipay?: AlipayConfig;
  wechat?: WechatConfig;
  stripe?: StripeConfig;
}

/** A bad provider variable: the variable's name and what is wrong, never its value. */
export class ProviderEnvError extends Error {
  override name = 'ProviderEnvError';
  constructor(
    readonly variable: string,
    readonly reason: string,
  ) {
    super(`${variable}: ${reason}`);
  }
}

/** Every provider variable, by provider; the first of each group's required ones decides "configured". */
export const PROVIDER_ENV = {
  alipay: [
    'ALIPAY_APP_ID',
    'ALIPAY_SELLER_ID',
    'ALIPAY_PRIVATE_KEY',
    'ALIPAY_PUBLIC_KEY',
    'ALIPAY_GATEWAY',
    'ALIPAY_PAY_METHOD',
    'ALIPAY_RETURN_URL',
  ],
  wechat: [
    'WECHAT_MCH_ID',
    'WECHAT_APP_ID',
    'WECHAT_API_V3_KEY',
    'WECHAT_PRIVATE_KEY',
    'WECHAT_CERT_SERIAL',
    'WECHAT_PLATFORM_KEYS',
    'WECHAT_API_BASE',
  ],
  stripe: [
    'STRIPE_SECRET_KEY',
    'STRIPE_WEBHOOK_SECRET',
    'STRIPE_PAYMENT_PAGE_URL',
    'STRIPE_ACCOUNT_ID',
    'STRIPE_API_BASE',
  ],
} as const;

const REQUIRED = {
  alipay: ['ALIPAY_APP_ID', 'ALIPAY_SELLER_ID', 'ALIPAY_PRIVATE_KEY', 'ALIPAY_PUBLIC_KEY'],
  wechat: [
    'WECHAT_MCH_ID',
    'WECHAT_APP_ID',
    'WECHAT_API_V3_KEY',
    'WECHAT_PRIVATE_KEY',
    'WECHAT_CERT_SERIAL',
    'WECHAT_PLATFORM_KEYS',
  ],
  stripe: ['STRIPE_SECRET_KEY', 'STRIPE_WEBHOOK_SECRET', 'STRIPE_PAYMENT_PAGE_URL'],
} as const;

const httpUrl = z.url({ protocol: /^https?$/, message: 'must be an http(s) URL' });

function check<T>(variable: string, schema: z.ZodType<T>, value: string): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new ProviderEnvError(variable, parsed.error.issues[0]?.message ?? 'is invalid');
  return parsed.data;
}

function key<T>(variable: string, load: (v: string) => T, value: string): T {
  try {
    return load(value);
  } catch (err) {
    if (err instanceof KeyLoadError) throw new ProviderEnvError(variable, err.message);
    throw err;
  }
}

/** The group's variables, or undefined when none is set; throws when some required one is missing. */
function group<N extends keyof typeof REQUIRED>(
  env: Record<string, string | undefined>,
  name: N,
): Record<string, string> | undefined {
  const set = PROVIDER_ENV[name].filter((v) => env[v] !== undefined && env[v] !== '');
  if (set.length === 0) return undefined;
  const missing = REQUIRED[name].find((v) => env[v] === undefined || env[v] === '');
  if (missing)
    throw new ProviderEnvError(
      missing,
      `is required when ${set[0]} is set (or unset every ${name.toUpperCase()}_ variable to not offer ${name})`,
    );
  return Object.fromEntries(set.map((v) => [v, env[v]!]));
}

function alipayFrom(e: Record<string, string>): AlipayConfig {
  return {
    appId: check('ALIPAY_APP_ID', z.string().regex(/^\d{16}$/, 'must be the 16-digit Alipay app id'), e.ALIPAY_APP_ID!),
    sellerId: check(
      'ALIPAY_SELLER_ID',
      z.string().regex(/^2088\d{12}$/, 'must be the 16-digit merchant PID starting with 2088'),
      e.ALIPAY_SELLER_ID!,
    ),
    privateKey: key('ALIPAY_PRIVATE_KEY', loadRsaPrivateKey, e.ALIPAY_PRIVATE_KEY!),
    alipayPublicKey: key('ALIPAY_PUBLIC_KEY', loadRsaPublicKey, e.ALIPAY_PUBLIC_KEY!),
    gateway: check('ALIPAY_GATEWAY', httpUrl, e.ALIPAY_GATEWAY ?? 'https://openapi.alipay.com/gateway.do'),
    payMethod: check(
      'ALIPAY_PAY_METHOD',
      z.enum(['page', 'wap'], 'must be page or wap'),
      e.ALIPAY_PAY_METHOD ?? 'page',
    ),
    returnUrl: e.ALIPAY_RETURN_URL === undefined ? undefined : check('ALIPAY_RETURN_URL', httpUrl, e.ALIPAY_RETURN_URL),
  };
}

/** `serial=PEM-or-path` entries separated by `;` (a PEM holds no `;`; base64 `=` comes after the first `=`). */
function platformKeys(value: string): Map<string, KeyObject> {
  const keys = new Map<string, KeyObject>();
  for (const entry of value
    .split(';')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const eq = entry.indexOf('=');
    const serial = eq > 0 ? entry.slice(0, eq).trim() : '';
    if (!/^[A-Za-z0-9_]{8,64}$/.test(serial)) {
      throw new ProviderEnvError(
        'WECHAT_PLATFORM_KEYS',
        'must be serial=key entries separated by ";" (serial: the Wechatpay-Serial value; key: PEM text or a file path)',
      );
    }
    keys.set(serial, key('WECHAT_PLATFORM_KEYS', loadRsaPublicKey, entry.slice(eq + 1)));
  }
  if (keys.size === 0) throw new ProviderEnvError('WECHAT_PLATFORM_KEYS', 'names no platform key');
  return keys;
}

function wechatFrom(e: Record<string, string>): WechatConfig {
  return {
    mchId: check(
      'WECHAT_MCH_ID',
      z.string().regex(/^\d{8,12}$/, 'must be the numeric merchant id (mchid)'),
      e.WECHAT_MCH_ID!,
    ),
    appId: check(
      'WECHAT_APP_ID',
      z.string().regex(/^wx[0-9A-Za-z]{16}$/, 'must be an app id like wx0123456789abcdef'),
      e.WECHAT_APP_ID!,
    ),
    apiV3Key: new Secret(
      check(
        'WECHAT_API_V3_KEY',
        z.string().refine((v) => Buffer.byteLength(v) === 32, 'must be the 32-byte API v3 key'),
        e.WECHAT_API_V3_KEY!,
      ),
    ),
    privateKey: key('WECHAT_PRIVATE_KEY', loadRsaPrivateKey, e.WECHAT_PRIVATE_KEY!),
    certSerial: check(
      'WECHAT_CERT_SERIAL',
      z.string().regex(/^[0-9A-Fa-f]{8,64}$/, 'must be the hex serial number of the merchant API certificate'),
      e.WECHAT_CERT_SERIAL!,
    ),
    platformKeys: platformKeys(e.WECHAT_PLATFORM_KEYS!),
    apiBase: check('WECHAT_API_BASE', httpUrl, e.WECHAT_API_BASE ?? 'https://api.mch.weixin.qq.com').replace(/\/$/, ''),
  };
}

function stripeFrom(e: Record<string, string>): StripeConfig {
  const secretKey = check(
    'STRIPE_SECRET_KEY',
    z
      .string()
      .regex(
        /^(sk|rk)_(test|live)_[A-Za-z0-9]{8,}$/,
        'must be a Stripe secret or restricted key (sk_test_..., sk_live_..., rk_...)',
      ),
    e.STRIPE_SECRET_KEY!,
  );
  return {
    secretKey: new Secret(secretKey),
    webhookSecret: new Secret(
      check(
        'STRIPE_WEBHOOK_SECRET',
        z.string().regex(/^whsec_[A-Za-z0-9+/=]{8,}$/, "must be the endpoint's signing secret (whsec_...)"),
        e.STRIPE_WEBHOOK_SECRET!,
      ),
    ),
    livemode: secretKey.includes('_live_'),
    accountId:
      e.STRIPE_ACCOUNT_ID === undefined
        ? undefined
        : check(
            'STRIPE_ACCOUNT_ID',
            z.string().regex(/^acct_[A-Za-z0-9]{6,}$/, 'must be an account id (acct_...)'),
            e.STRIPE_ACCOUNT_ID,
          ),
    apiBase:
      e.STRIPE_API_BASE === undefined
        ? undefined
        : check('STRIPE_API_BASE', httpUrl, e.STRIPE_API_BASE).replace(/\/$/, ''),
    paymentPageUrl: check('STRIPE_PAYMENT_PAGE_URL', httpUrl, e.STRIPE_PAYMENT_PAGE_URL!),
  };
}

/**
 * Why a provider configuration pays with test money or sends its secrets in clear, or undefined: a Stripe test-mode key
 * (its test cards and test events confirm orders), Alipay's sandbox gateway, or a provider endpoint over plain HTTP
 * (ALIPAY_GATEWAY, WECHAT_API_BASE, STRIPE_API_BASE: the merchant's signed requests or its Stripe key as a bearer token
 * on the wire). Production refuses it unless PROVIDER_TEST_MODE=true (a staging deployment).
 */
export function testMoneyProblem(providers: ProvidersConfig): { variable: string; reason: string } | undefined {
  const { alipay, wechat, stripe } = providers;
  if (stripe && !stripe.livemode)
    return {
      variable: 'STRIPE_SECRET_KEY',
      reason: "is a test-mode key: Stripe's test cards would pay for real orders",
    };
  if (alipay && /(^|\.)alipaydev\.com$/i.test(new URL(alipay.gateway).hostname))
    return { variable: 'ALIPAY_GATEWAY', reason: "is Alipay's sandbox: its test accounts would pay for real orders" };
  const plain = (
    [
      ['ALIPAY_GATEWAY', alipay?.gateway],
      ['WECHAT_API_BASE', wechat?.apiBase],
      ['STRIPE_API_BASE', stripe?.apiBase],
    ] as const
  ).find(([, url]) => url !== undefined && new URL(url).protocol === 'http:');
  if (plain)
    return {
      variable: plain[0],
      reason: 'is plain HTTP: signed requests and API keys would cross the network in clear',
    };
  return undefined;
}

/** Reads every provider's variables; throws ProviderEnvError naming the first bad or missing one. */
export function providersFromEnv(env: Record<string, string | undefined>): ProvidersConfig {
  const alipay = group(env, 'alipay');
  const wechat = group(env, 'wechat');
  const stripe = group(env, 'stripe');
  return {
    ...(alipay ? { alipay: alipayFrom(alipay) } : {}),
    ...(wechat ? { wechat: wechatFrom(wechat) } : {}),
    ...(stripe ? { stripe: stripeFrom(stripe) } : {}),
  };
}
