import type { Knex } from 'knex';
import type { Config } from '../config';
import { createAlipayProvider } from './alipay';
import { createSandboxProvider } from './sandbox';
import { createStripeProvider } from './stripe';
import type { ProviderRegistry } from './types';
import { createWechatProvider } from './wechat';

/**
 * Providers configured for this deployment: the sandbox (a fake provider whose cashier pays with one click) only when
 * `sandboxEnabled` (development, or a staging deployment that says so), Alipay / WeChat Pay / Stripe only when their
 * variables are set (see src/providers/config.ts). Pass `db` where the payments table is reachable: Stripe finds
 * an order's PaymentIntent there (trade_no); without it, it uses its own memory and Stripe's search API.
 */
export function createProviders(
  config: Pick<Config, 'sandboxEnabled' | 'sandboxUrl' | 'sandboxSecret' | 'sandboxMerchantId'> &
    Partial<Pick<Config, 'providers' | 'publicBaseUrl'>>,
  deps: { db?: Knex } = {},
): ProviderRegistry {
  const registry: ProviderRegistry = {};
  if (config.sandboxEnabled)
    registry.sandbox = createSandboxProvider({
      baseUrl: config.sandboxUrl,
      secret: config.sandboxSecret,
      merchantId: config.sandboxMerchantId,
    });
  const { alipay, wechat, stripe } = config.providers ?? {};
  if (alipay) registry.alipay = createAlipayProvider(alipay);
  if (wechat)
    registry.wechat = createWechatProvider({
      ...wechat,
      // Refund outcomes come to the same route as payments (the callback route tells them apart).
      ...(config.publicBaseUrl ? { refundNotifyUrl: `${config.publicBaseUrl}/callbacks/wechat` } : {}),
    });
  if (stripe) {
    const db = deps.db;
    registry.stripe = createStripeProvider({
      ...stripe,
      findPaymentIntentId: db
        ? async (outTradeNo) =>
            (
              (await db('payments').where({ out_trade_no: outTradeNo, provider: 'stripe' }).first('trade_no')) as
                { trade_no?: string } | undefined
            )?.trade_no || undefined
        : undefined,
    });
  }
  return registry;
}
