/** For configuration tests: the one-line message of the ConfigError loadConfig must throw for `env`. */
import { ConfigError, loadConfig } from '../../src/config';

export function configErrorOf(env: Record<string, string | undefined>): string {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(Object.keys(env))}`);
}
