/** Names of the payment providers this build knows (each is offered only when configured; see createProviders). */
import { z } from 'zod';

/** A provider's name, as orders, callbacks, bills and the ops API spell it. */
export const ProviderName = z.enum(['sandbox', 'alipay', 'wechat', 'stripe']);
export type ProviderName = z.infer<typeof ProviderName>;
