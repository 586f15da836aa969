/** loadConfig: documented defaults, derived URLs, one-line ConfigError per bad variable, independent instances. */
import { ConfigError, loadConfig } from '../src/config';

/** Calls loadConfig with `env` and returns the ConfigError it must throw. */
function configErrorOf(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(env)}`);
}

describe('defaults', () => {
  test('an empty environment yields the documented defaults', () => {
    const config = loadConfig({});

    expect(config).toMatchObject({
      databaseUrl: 'mysql://root@127.0.0.1:3306/payments',
      temporalAddress: '127.0.0.1:7233',
      temporalNamespace: 'default',
      taskQueue: 'order-payments',
      port: 3000,
      sandboxPort: 4000,
      paymentTimeoutMs: 900_000,
      queryFirstDelayMs: 30_000,
      queryMaxIntervalMs: 120_000,
      providerExpiryMarginMs: 60_000,
      inboxRetryIntervalMs: 5_000,
      publicBaseUrl: 'http://127.0.0.1:3000',
      sandboxUrl: 'http://127.0.0.1:4000',
      temporalUiUrl: 'http://127.0.0.1:8233',
      logLevel: 'info',
      workflowCacheSize: 500,
      workflowTaskPollers: 40,
    });
    expect(config.sandboxNotifySchedule).toEqual([
      0, 2_000, 4_000, 8_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000,
    ]);
  });

  test('empty strings count as unset and fall back to the defaults', () => {
    const config = loadConfig({
      PORT: '',
      PAYMENT_TIMEOUT: '',
      DATABASE_URL: '',
      SANDBOX_URL: '',
      UNRELATED: undefined,
    });

    expect(config.port).toBe(3000);
    expect(config.paymentTimeoutMs).toBe(900_000);
    expect(config.databaseUrl).toBe('mysql://root@127.0.0.1:3306/payments');
    expect(config.sandboxUrl).toBe('http://127.0.0.1:4000');
  });

  test('PUBLIC_BASE_URL is derived from PORT and SANDBOX_URL from SANDBOX_PORT when they are not set', () => {
    const config = loadConfig({ PORT: '3100', SANDBOX_PORT: '4100' });

    expect(config.port).toBe(3100);
    expect(config.sandboxPort).toBe(4100);
    expect(config.publicBaseUrl).toBe('http://127.0.0.1:3100');
    expect(config.sandboxUrl).toBe('http://127.0.0.1:4100');
  });

  test('explicit URLs win over the derived ones and lose their trailing slash', () => {
    const config = loadConfig({
      PORT: '3100',
      SANDBOX_PORT: '4100',
      PUBLIC_BASE_URL: 'https://shop.example.com/',
      SANDBOX_URL: 'http://sandbox.internal:9000/',
      TEMPORAL_UI_URL: 'http://temporal-ui:8080/',
    });

    expect(config.publicBaseUrl).toBe('https://shop.example.com');
    expect(config.sandboxUrl).toBe('http://sandbox.internal:9000');
    expect(config.temporalUiUrl).toBe('http://temporal-ui:8080');
  });

  test('durations accept every unit and a mysql2:// database URL is accepted', () => {
    const config = loadConfig({
      DATABASE_URL: 'mysql2://app:pw@db:3307/pay_prod',
      PAYMENT_TIMEOUT: '2h',
      QUERY_FIRST_DELAY: '500ms',
      QUERY_MAX_INTERVAL: '1500',
      SANDBOX_NOTIFY_SCHEDULE: '0s,1s,1m',
    });

    expect(config.databaseUrl).toBe('mysql2://app:pw@db:3307/pay_prod');
    expect(config.paymentTimeoutMs).toBe(7_200_000);
    expect(config.queryFirstDelayMs).toBe(500);
    expect(config.queryMaxIntervalMs).toBe(1_500);
    expect(config.sandboxNotifySchedule).toEqual([0, 1_000, 60_000]);
  });

  test('QUERY_MAX_INTERVAL equal to QUERY_FIRST_DELAY is allowed', () => {
    expect(loadConfig({ QUERY_FIRST_DELAY: '1m', QUERY_MAX_INTERVAL: '60s' }).queryMaxIntervalMs).toBe(60_000);
  });
});

describe('bad variables', () => {
  const cases: [variable: string, env: Record<string, string>][] = [
    ['PORT', { PORT: 'abc' }],
    ['PORT', { PORT: '70000' }],
    ['PORT', { PORT: '-1' }],
    ['PORT', { PORT: '80.5' }],
    ['SANDBOX_PORT', { SANDBOX_PORT: 'abc' }],
    ['PAYMENT_TIMEOUT', { PAYMENT_TIMEOUT: 'soon' }],
    ['PAYMENT_TIMEOUT', { PAYMENT_TIMEOUT: '15d' }],
    ['PAYMENT_TIMEOUT', { PAYMENT_TIMEOUT: '0s' }],
    ['QUERY_FIRST_DELAY', { QUERY_FIRST_DELAY: '0' }],
    ['QUERY_FIRST_DELAY', { QUERY_FIRST_DELAY: 'later' }],
    ['QUERY_MAX_INTERVAL', { QUERY_FIRST_DELAY: '1m', QUERY_MAX_INTERVAL: '30s' }],
    ['QUERY_MAX_INTERVAL', { QUERY_MAX_INTERVAL: '10s' }],
    ['PROVIDER_EXPIRY_MARGIN', { PROVIDER_EXPIRY_MARGIN: 'a while' }],
    ['INBOX_RETRY_INTERVAL', { INBOX_RETRY_INTERVAL: '5 sec' }],
    // 0 swept the inbox back to back; past Node's timer limit (about 24.8 days) a timer fires after 1 ms, every time.
    ['INBOX_RETRY_INTERVAL', { INBOX_RETRY_INTERVAL: '0s' }],
    ['INBOX_RETRY_INTERVAL', { INBOX_RETRY_INTERVAL: '600h' }],
    ['RESERVATION_SWEEP_INTERVAL', { RESERVATION_SWEEP_INTERVAL: '600h' }],
    ['TEMPORAL_CALL_TIMEOUT', { TEMPORAL_CALL_TIMEOUT: '600h' }],
    ['TEMPORAL_UPDATE_TIMEOUT', { TEMPORAL_UPDATE_TIMEOUT: '600h' }],
    ['SANDBOX_NOTIFY_SCHEDULE', { SANDBOX_NOTIFY_SCHEDULE: '0s,2s,soon' }],
    ['DATABASE_URL', { DATABASE_URL: 'postgres://x' }],
    ['DATABASE_URL', { DATABASE_URL: 'mysql://root@127.0.0.1:3306' }],
    ['DATABASE_URL', { DATABASE_URL: 'mysql://root@127.0.0.1:3306/bad-name' }],
    ['SANDBOX_URL', { SANDBOX_URL: 'ftp://x' }],
    ['SANDBOX_URL', { SANDBOX_URL: 'not a url' }],
    ['PUBLIC_BASE_URL', { PUBLIC_BASE_URL: 'ftp://shop.example.com' }],
    ['TEMPORAL_UI_URL', { TEMPORAL_UI_URL: 'ws://temporal:8233' }],
    ['TEMPORAL_ADDRESS', { TEMPORAL_ADDRESS: 'localhost' }],
    ['SANDBOX_SECRET', { SANDBOX_SECRET: 'short' }],
    ['ADMIN_TOKEN', { ADMIN_TOKEN: 'tiny' }],
    ['LOG_LEVEL', { LOG_LEVEL: 'verbose' }],
    ['METRICS_PORT', { PORT: '3000', METRICS_PORT: '3000' }],
    ['LATE_PAYMENT_RECHECKS', { LATE_PAYMENT_RECHECKS: '30s,later' }],
    ['PROVIDER_TEST_MODE', { PROVIDER_TEST_MODE: 'yes' }],
    // Refused by Temporal only when the Schedule was created, in the background: the service ran without reconciling.
    ['RECONCILIATION_SCHEDULE', { RECONCILIATION_SCHEDULE: '61 10 * * *' }],
    ['RECONCILIATION_SCHEDULE', { RECONCILIATION_SCHEDULE: '30 25 * * *' }],
    ['RECONCILIATION_SCHEDULE', { RECONCILIATION_SCHEDULE: '30 10 0 * *' }],
    ['RECONCILIATION_SCHEDULE', { RECONCILIATION_SCHEDULE: '*/0 10 * * *' }],
    ['RECONCILIATION_SCHEDULE', { RECONCILIATION_SCHEDULE: '30 10 * FOO *' }],
    ['RECONCILIATION_SCHEDULE', { RECONCILIATION_SCHEDULE: '30 10 * * 1-9' }],
    ['RECONCILIATION_SCHEDULE', { RECONCILIATION_SCHEDULE: '30 10 * *' }],
  ];

  test.each(cases)(
    '%s set to %j throws a ConfigError whose message is one line naming the variable',
    (variable, env) => {
      const error = configErrorOf(env);

      expect(error).toBeInstanceOf(ConfigError);
      expect(error).toBeInstanceOf(Error);
      expect(error.name).toBe('ConfigError');
      expect(error.message).not.toMatch(/[\r\n]/);
      expect(error.message).toMatch(new RegExp(`^Invalid configuration: ${variable}\\b`));
    },
  );

  test('a bad variable is reported even when every other variable is valid', () => {
    const error = configErrorOf({
      PORT: '3100',
      SANDBOX_PORT: '4100',
      DATABASE_URL: 'mysql://root@db/payments',
      PAYMENT_TIMEOUT: 'soon',
    });

    expect(error.message).toMatch(/^Invalid configuration: PAYMENT_TIMEOUT="soon": /);
  });
});

describe('independence', () => {
  test('two configs with different ports do not collide', () => {
    const a = loadConfig({ PORT: '3201', SANDBOX_PORT: '4201' });
    const b = loadConfig({ PORT: '3202', SANDBOX_PORT: '4202' });

    expect([a.port, a.sandboxPort, b.port, b.sandboxPort]).toEqual([3201, 4201, 3202, 4202]);
    expect(a.publicBaseUrl).toBe('http://127.0.0.1:3201');
    expect(b.publicBaseUrl).toBe('http://127.0.0.1:3202');
    expect(a.sandboxUrl).toBe('http://127.0.0.1:4201');
    expect(b.sandboxUrl).toBe('http://127.0.0.1:4202');
    // No shared mutable state between the two results.
    expect(a).not.toBe(b);
    expect(a.sandboxNotifySchedule).not.toBe(b.sandboxNotifySchedule);
    a.sandboxNotifySchedule.push(1);
    expect(b.sandboxNotifySchedule).toEqual(loadConfig({}).sandboxNotifySchedule);
    // Loading b did not change a.
    expect(a.port).toBe(3201);
  });

  test('an explicit environment map is read instead of process.env', () => {
    const saved = process.env.PORT;
    process.env.PORT = '5999';
    try {
      expect(loadConfig({}).port).toBe(3000);
      expect(loadConfig({ PORT: '3300' }).port).toBe(3300);
    } finally {
      if (saved === undefined) delete process.env.PORT;
      else process.env.PORT = saved;
    }
  });
});

describe('WORKFLOW_CACHE_SIZE', () => {
  test('sizes the worker cache, and the worker passes it to the SDK as maxCachedWorkflows', async () => {
    const config = loadConfig({ WORKFLOW_CACHE_SIZE: '1500' });
    expect(config.workflowCacheSize).toBe(1500);
    const { buildWorkerOptions } = await import('../src/workers/worker');
    const options = buildWorkerOptions({
      config,
      db: {} as never,
      providers: {} as never,
      workflows: { workflowBundle: { code: '' } },
    });
    expect(options.maxCachedWorkflows).toBe(1500);
  });

  test.each(['5', 'many', '-1'])('refuses %s', (value) => {
    expect(configErrorOf({ WORKFLOW_CACHE_SIZE: value }).message).toMatch(/WORKFLOW_CACHE_SIZE/);
  });
});

describe('WORKFLOW_TASK_POLLERS', () => {
  const optionsFor = async (env: Record<string, string>) => {
    const { buildWorkerOptions } = await import('../src/workers/worker');
    return buildWorkerOptions({
      config: loadConfig(env),
      db: {} as never,
      providers: {} as never,
      workflows: { workflowBundle: { code: '' } },
    });
  };

  test('the worker autoscales its workflow-task polls up to 40 by default, up to the value when set', async () => {
    expect((await optionsFor({})).workflowTaskPollerBehavior).toEqual({ type: 'autoscaling', maximum: 40, initial: 5 });
    expect((await optionsFor({ WORKFLOW_TASK_POLLERS: '64' })).workflowTaskPollerBehavior).toEqual({
      type: 'autoscaling',
      maximum: 64,
      initial: 5,
    });
    // Below the SDK's initial 5 the initial count follows the maximum (the SDK refuses initial > maximum).
    expect((await optionsFor({ WORKFLOW_TASK_POLLERS: '3' })).workflowTaskPollerBehavior).toEqual({
      type: 'autoscaling',
      maximum: 3,
      initial: 3,
    });
  });

  test.each(['1', 'many', '-1', '5000'])('refuses %s', (value) => {
    expect(configErrorOf({ WORKFLOW_TASK_POLLERS: value }).message).toMatch(/WORKFLOW_TASK_POLLERS/);
  });
});

describe('secrets in error messages', () => {
  // [what, DATABASE_URL, the user info it must never show, the rest it still shows]
  test.each([
    ['a plain password', 'mysql://app:s3cret-pw@db:3306/pay-bad', 'app:s3cret-pw', 'db:3306/pay-bad'],
    ["a password with '/'", 'mysql://app:ab/cd@db:3306/payments', 'app:ab/cd', 'db:3306/payments'],
    ["a password with '@' and '/'", 'mysql://app:p@ss/w@Zq9@db:3306/payments', 'app:p@ss/w@Zq9', 'db:3306/payments'],
    ["a password with ':'", 'mysql://app:a:b/c@db/payments', 'app:a:b/c', 'db/payments'],
    ['no scheme', 'app:ab/cd@db:3306/payments', 'app:ab/cd', 'db:3306/payments'],
  ])('a bad DATABASE_URL with %s never shows what comes before the last @', (_what, url, hidden, shown) => {
    const error = configErrorOf({ DATABASE_URL: url });
    expect(error.message).toMatch(/^Invalid configuration: DATABASE_URL=/);
    for (const part of hidden.split(/[:@]/).filter((p) => p.length > 1)) expect(error.message).not.toContain(part);
    // What is not secret is still shown, so the operator can tell which URL was wrong.
    expect(error.message).toContain(`***@${shown}`);
  });
});

test('a RECONCILIATION_SCHEDULE of values, ranges, steps, lists and names is accepted as given, and off is none', () => {
  for (const cron of [
    '30 10 * * *',
    '0 */6 * * 1-5',
    '15 2 1,15 JAN-MAR MON',
    '0 0 * * 7',
    '5-55/10 0-23/2 * * SUN-SAT',
  ])
    expect(loadConfig({ RECONCILIATION_SCHEDULE: cron }).reconciliationSchedule).toBe(cron);
  expect(loadConfig({ RECONCILIATION_SCHEDULE: '@daily' }).reconciliationSchedule).toBe('@daily');
  expect(loadConfig({ RECONCILIATION_SCHEDULE: 'off' }).reconciliationSchedule).toBeUndefined();
});

describe('OPERATOR_TOKENS', () => {
  test('parses name:token pairs into operator names by token; unset or empty is undefined', () => {
    const tokens = loadConfig({
      OPERATOR_TOKENS: 'alice:alice-token-0123456789, bob@ops:bob-token-0123456789',
    }).operatorTokens!;
    expect([...tokens]).toEqual([
      ['alice-token-0123456789', 'alice'],
      ['bob-token-0123456789', 'bob@ops'],
    ]);
    expect(loadConfig({}).operatorTokens).toBeUndefined();
    expect(loadConfig({ OPERATOR_TOKENS: '' }).operatorTokens).toBeUndefined();
  });

  test.each([
    ['a missing name', ':alice-token-0123456789', /entry 1 has no valid operator name/],
    ['no colon', 'alice-token-0123456789', /entry 1 has no valid operator name/],
    [
      'a reversed entry (token first)',
      'bob:bob-token-0123456789,abcdef0123456789-token-0123456789:alice',
      /entry 2 has a token shorter than 16/,
    ],
    ['a short token', 'alice:short', /entry 1 has a token shorter than 16/],
    [
      'entries on separate lines',
      'alice:alice-token-0123456789\nbob:bob-token-0123456789',
      /entry 1 has a token with spaces, line breaks/,
    ],
    [
      'a name twice',
      'alice:alice-token-0123456789,alice:other-token-0123456789',
      /entry 2 names an operator named before/,
    ],
    ['a token twice', 'alice:same-token-0123456789,bob:same-token-0123456789', /entry 2 has another operator's token/],
    ['the admin token', 'alice:admin-token-0123456789', /entry 1 has a token equal to another secret/],
    ['the sandbox secret', 'alice:sandbox-secret-0123456789', /entry 1 has a token equal to another secret/],
  ])('refuses %s, naming the entry by position and never printing a token', (_what, value, message) => {
    const err = configErrorOf({
      OPERATOR_TOKENS: value,
      ADMIN_TOKEN: 'admin-token-0123456789',
      SANDBOX_SECRET: 'sandbox-secret-0123456789',
    });
    expect(err.message).toMatch(/^Invalid configuration: OPERATOR_TOKENS entry \d /);
    expect(err.message).toMatch(message);
    expect(err.message).not.toMatch(/-token-0123456789|-secret-0123456789|abcdef/);
  });

  test('a trailing comma is ignored; production wants 32 characters and no published value', () => {
    expect(loadConfig({ OPERATOR_TOKENS: 'alice:alice-token-0123456789,' }).operatorTokens?.size).toBe(1);
    const production = {
      NODE_ENV: 'production',
      ADMIN_TOKEN: 'a'.repeat(40),
      DATABASE_URL: 'mysql://u:p@db:3306/payflow',
    };
    expect(configErrorOf({ ...production, OPERATOR_TOKENS: 'alice:alice-token-0123456789' }).message).toMatch(
      /entry 1 has a token shorter than 32/,
    );
  });
});
