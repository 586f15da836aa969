/** Entry point of the sandbox payment provider: `npm run sandbox`. */
import { ConfigError, loadConfigOrExit, sandboxInProductionWarning } from '../config';
import { createLogger } from '../observability/logger';
import { createSandboxServer } from './server';

/** Starts the sandbox on 127.0.0.1:SANDBOX_PORT and stops it cleanly on SIGINT/SIGTERM. */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  if (!config.sandboxEnabled) {
    // A fake provider whose cashier "pays" with one click has no place in production unless staging asks for it.
    console.error(
      'Invalid configuration: the sandbox provider does not run in production (NODE_ENV=production) unless SANDBOX_ENABLED=true (staging only)',
    );
    process.exit(1);
  }
  const logger = createLogger({ level: config.logLevel, format: config.logFormat, name: 'sandbox' });
  const sandboxWarning = sandboxInProductionWarning(config);
  if (sandboxWarning) logger.warn({ sandboxEnabled: true, production: true }, sandboxWarning);
  const sandbox = createSandboxServer({
    secret: config.sandboxSecret,
    publicUrl: config.sandboxPublicUrl,
    notifySchedule: config.sandboxNotifySchedule,
    logger,
    // In development, the stand-in of the shop's systems the outbox relay can deliver to (<sandbox>/shop/outbox).
    ...(config.production ? {} : { shopOutboxSecret: config.outbox.secret }),
  });
  const address = await sandbox.app.listen({ host: config.host, port: config.sandboxPort });
  logger.info(
    { address, publicUrl: config.sandboxPublicUrl },
    `sandbox provider listening at ${address}; cashier pages at ${config.sandboxPublicUrl}/pay/<outTradeNo>`,
  );

  const stop = (signal: NodeJS.Signals): void => {
    logger.info({ signal }, 'sandbox provider stopping');
    sandbox.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'sandbox provider did not stop cleanly');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  if (process.connected) process.once('disconnect', () => stop('SIGTERM'));
}

main().catch((err: unknown) => {
  console.error(
    err instanceof ConfigError
      ? err.message
      : `sandbox provider failed to start: ${err instanceof Error ? err.message : String(err)}`,
  );
  process.exit(1);
});
