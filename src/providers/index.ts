import type { ProviderRegistry } from '../activities/payments';
import type { Config } from '../config';
import { createSandboxProvider } from './sandbox';

/** Providers configured for this deployment (only the sandbox so far). */
export function createProviders(config: Pick<Config, 'sandboxUrl' | 'sandboxSecret' | 'sandboxMerchantId'>): ProviderRegistry {
  return { sandbox: createSandboxProvider({ baseUrl: config.sandboxUrl, secret: config.sandboxSecret, merchantId: config.sandboxMerchantId }) };
}
