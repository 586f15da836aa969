/**
 * The payment-waiting page in a real headless Chromium (Debian's, driven by playwright-core; no browser download),
 * against the whole system: it shows "waiting", turns "paid" by itself after a sandbox payment, and its support
 * button shows the escalation answer. Also GET /orders/:id's messages and live stage, and its fallback to MySQL.
 * Screenshots of each state are written to reports/screenshots/ as test artifacts.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, type BrowserContext, type Page, chromium } from 'playwright-core';
import { ORDER_WORKFLOW_TYPE, orderWorkflowId, statusQuery } from '../src/contracts/order';
import {
  createProduct,
  placeOrder as placeOrderFor,
  startSystem,
  type TestSystem,
  userId,
  waitFor,
} from './support/system';
import { testChromiumPath } from './support/env';

// Browser steps and the system's reactions are waited for, never timed; a loaded machine only makes a test slower.
jest.setTimeout(120_000);

const SCREENSHOTS = join(__dirname, '..', 'reports', 'screenshots');
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--disable-component-update',
  '--disable-sync',
];

let sys: TestSystem;
let browser: Browser;
const contexts: BrowserContext[] = [];

beforeAll(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  // A long payment window: under load the browser steps take a while, and no order may expire mid-test.
  [sys, browser] = await Promise.all([
    startSystem({ PAYMENT_TIMEOUT: '5m' }),
    chromium.launch({ executablePath: testChromiumPath(), args: CHROMIUM_ARGS }),
  ]);
}, 90_000);

afterAll(async () => {
  await browser?.close();
  await sys?.stop();
});

afterEach(async () => {
  await Promise.all(contexts.splice(0).map((c) => c.close()));
});

async function placeOrder(
  price = 2590,
): Promise<{ orderId: string; payment: { paymentUrl: string; expiresAt: string } }> {
  return placeOrderFor(sys, await createProduct(sys, { price, stock: 5 }));
}

/** Opens a page in a fresh browser context, recording console errors, page errors and CSP violations. */
async function openPage(
  path: string,
  locale = 'en-US',
): Promise<{ page: Page; problems: string[]; status: number; csp: string }> {
  const context = await browser.newContext({ locale, viewport: { width: 720, height: 1100 } });
  contexts.push(context);
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || /Content Security Policy/i.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  const response = await page.goto(`${sys.apiUrl}${path}`);
  return {
    page,
    problems,
    status: response?.status() ?? 0,
    csp: (await response?.allHeaders())?.['content-security-policy'] ?? '',
  };
}

async function shot(page: Page, name: string): Promise<string> {
  const path = join(SCREENSHOTS, `wait-page-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

const stepStates = (page: Page) =>
  page.$$eval('#steps li', (items) => items.map((li) => li.getAttribute('data-state')));

describe('the waiting page in headless Chromium', () => {
  test('it shows the order waiting with a countdown and the payment link, then shows it paid after a sandbox payment without a reload', async () => {
    const order = await placeOrder();
    const openedAt = Date.now();
    const { page, problems, status, csp } = await openPage(`/orders/${order.orderId}/wait`);
    expect(status).toBe(200);
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'(;|$)/);
    expect(csp).not.toContain('unsafe-inline');

    await page.waitForSelector('body[data-ready="true"][data-polling="on"]');
    const label = page.locator('#status-label');
    await expect(label.getAttribute('data-status')).resolves.toBe('AWAITING_PAYMENT');
    expect(await label.innerText()).toMatch(/^Waiting for payment$/);
    expect(await stepStates(page)).toEqual(['done', 'current', 'todo', 'todo']);
    expect(await page.locator('#pay').getAttribute('href')).toBe(order.payment.paymentUrl);
    expect(await page.locator('#pay').isVisible()).toBe(true);
    expect(await page.locator('#countdown').innerText()).toMatch(/^Time left to pay: \d+:\d\d$/);
    expect(await page.locator('#expected').innerText()).toMatch(/^Pay before \d\d:\d\d:\d\d$/);
    const leftBefore = Number(await page.locator('#countdown').getAttribute('data-left-ms'));
    expect(leftBefore).toBeGreaterThan(5_000);
    // The page counts down from the server's clock at the time it rendered, which is after we opened it (the same
    // machine's clock; a little slack for rounding): no bound on how long the steps above took.
    expect(leftBefore).toBeLessThanOrEqual(Date.parse(order.payment.expiresAt) - openedAt + 100);
    const api = (await sys.http('GET', `/orders/${order.orderId}`)).body;
    expect(await page.locator('#now [lang="en"]').innerText()).toBe(
      'Waiting for your payment. Your items are held for you until the deadline.',
    );
    expect(await page.locator('#now [lang="en"]').innerText()).toBe(api.messages.user.en);
    expect(await page.locator('#next [lang="en"]').innerText()).toBe(api.messages.next.en);
    expect(await page.locator('#reassurance').innerText()).toMatch(/refunded to you automatically and in full/);
    await page.waitForFunction(
      (before) =>
        Number((globalThis as any).document.getElementById('countdown')?.getAttribute('data-left-ms')) <=
        before - 1_000,
      leftBefore,
    );
    await shot(page, 'waiting');

    // The page must update itself: mark this document and count navigations, then pay at the sandbox.
    await page.evaluate(() => ((globalThis as any).sameDocument = true));
    let navigations = 0;
    page.on('framenavigated', () => navigations++);
    const paid = await sys.sandbox('POST', `/v1/payments/${order.orderId}/pay`, {});
    expect(paid.status).toBe(200);

    await page.waitForSelector('#status-label[data-status="PAID"]', { timeout: 60_000 });
    expect(await label.innerText()).toBe('Paid');
    expect(await page.evaluate(() => (globalThis as any).sameDocument)).toBe(true);
    expect(navigations).toBe(0);
    expect(await stepStates(page)).toEqual(['done', 'done', 'done', 'done']);
    expect(await page.locator('#pay').isVisible()).toBe(false);
    expect(await page.locator('#countdown').isVisible()).toBe(false);
    expect(await page.locator('#now [lang="en"]').innerText()).toBe('Payment received and your order is confirmed.');
    await shot(page, 'paid');

    // Final: polling stops. From now on count the page's requests, in the page itself (its fetch) and on the wire.
    await page.waitForSelector('body[data-polling="stopped"]');
    let polls = 0;
    page.on('request', (r) => {
      if (r.url().endsWith(`/orders/${order.orderId}`)) polls++;
    });
    await page.evaluate(() => {
      const w = globalThis as any;
      const fetch = w.fetch.bind(w);
      w.fetches = 0;
      w.fetch = (...args: unknown[]) => (w.fetches++, fetch(...args));
    });
    // Let the page's own clock run two poll intervals: the page's timers fire in order, so a poll still scheduled
    // (at most one interval ahead) has been sent before this resolves, however slowly the browser runs.
    await page.evaluate(() => {
      const d = (globalThis as any).document;
      const { pollMs } = JSON.parse(d.getElementById('page-data').textContent) as { pollMs: number };
      return new Promise((resolve) => setTimeout(resolve, 2 * pollMs));
    });
    expect(await page.evaluate(() => (globalThis as any).fetches)).toBe(0);
    expect(polls).toBe(0);
    expect(problems).toEqual([]);
  });

  test('the support button posts to the escalate endpoint and shows the answer with its ticket number', async () => {
    const order = await placeOrder();
    const { page, problems } = await openPage(`/orders/${order.orderId}/wait`);
    await page.waitForSelector('body[data-ready="true"]');
    const [response] = await Promise.all([
      page.waitForResponse(
        (r) => r.url() === `${sys.apiUrl}/orders/${order.orderId}/escalate` && r.request().method() === 'POST',
        { timeout: 60_000 },
      ),
      page.click('#support'),
    ]);
    expect(response.status()).toBe(200);
    const answer = (await response.json()) as {
      ticketId: string;
      orderId: string;
      messages: { user: { en: string; zh: string } };
    };
    expect(answer.orderId).toBe(order.orderId);
    expect(answer.ticketId).toEqual(expect.any(String));

    await page.waitForSelector(`#support-answer[data-ticket="${answer.ticketId}"]`);
    const shown = await page.locator('#support-answer [lang="en"]').innerText();
    expect(shown).toContain(`ticket ${answer.ticketId}`);
    expect(shown).toContain(answer.messages.user.en);
    expect(await page.locator('#support').isEnabled()).toBe(true);
    const ticket = await sys.db('support_tickets').where({ ticket_id: answer.ticketId }).first();
    expect(ticket).toMatchObject({ order_id: order.orderId });
    await shot(page, 'support');
    expect(problems).toEqual([]);
  });

  test('the language buttons switch the texts between English, Chinese and both', async () => {
    const order = await placeOrder();
    const { page, problems } = await openPage(`/orders/${order.orderId}/wait`);
    await page.waitForSelector('body[data-ready="true"]');
    const api = (await sys.http('GET', `/orders/${order.orderId}`)).body;
    expect(await page.locator('#now [lang="zh"]').isVisible()).toBe(false);

    await page.click('.langs button[data-lang="zh"]');
    expect(await page.locator('#status-label').innerText()).toBe('等待付款');
    expect(await page.locator('#now [lang="zh"]').innerText()).toBe(api.messages.user.zh);
    expect(await page.locator('#now [lang="en"]').isVisible()).toBe(false);
    expect(await page.locator('.langs button[data-lang="zh"]').getAttribute('aria-pressed')).toBe('true');
    await shot(page, 'waiting-zh');

    await page.click('.langs button[data-lang="both"]');
    expect(await page.locator('#now [lang="en"]').isVisible()).toBe(true);
    expect(await page.locator('#now [lang="zh"]').isVisible()).toBe(true);
    expect(problems).toEqual([]);
  });

  test('a cancelled order turns to cancelled by itself and tells the buyer that any money taken is refunded automatically', async () => {
    const order = await placeOrder();
    const { page, problems } = await openPage(`/orders/${order.orderId}/wait`);
    await page.waitForSelector('body[data-ready="true"][data-polling="on"]');
    const cancelled = await sys.http('POST', `/orders/${order.orderId}/cancel`, {});
    expect(cancelled.body).toMatchObject({ status: 'CANCELLED' });

    await page.waitForSelector('#status-label[data-status="CANCELLED"]', { timeout: 60_000 });
    expect(await page.locator('#status-label').innerText()).toBe('Cancelled');
    expect(await stepStates(page)).toEqual(['done', 'done', 'skipped', 'ended']);
    expect(await page.locator('#now [lang="en"]').innerText()).toMatch(
      /If money left your account, it is refunded automatically\.$/,
    );
    expect(await page.locator('#pay').isVisible()).toBe(false);
    await page.waitForSelector('body[data-polling="stopped"]');
    await shot(page, 'cancelled');
    expect(problems).toEqual([]);
  });

  test('a Chinese browser gets the Chinese texts first', async () => {
    const order = await placeOrder();
    const { page } = await openPage(`/orders/${order.orderId}/wait`, 'zh-CN');
    await page.waitForSelector('body[data-ready="true"]');
    expect(await page.locator('#status-label').innerText()).toBe('等待付款');
    expect(await page.locator('#countdown').innerText()).toMatch(/^剩余付款时间：\d+:\d\d$/);
  });

  test('an unknown order gets a 404 page, and an id carrying markup is shown as text, never run', async () => {
    const unknown = await openPage('/orders/ord_doesnotexist/wait');
    expect(unknown.status).toBe(404);
    expect(await unknown.page.locator('#not-found').innerText()).toMatch(/Order not found/);

    const evil = '<img src=x onerror="window.pwned=1">';
    const injected = await openPage(`/orders/${encodeURIComponent(evil)}/wait`);
    expect(injected.status).toBe(404);
    expect(await injected.page.locator('.sub').innerText()).toBe(evil);
    expect(await injected.page.$('img')).toBeNull();
    expect(await injected.page.evaluate(() => (globalThis as any).pwned)).toBeUndefined();

    const raw = await fetch(`${sys.apiUrl}/orders/${encodeURIComponent(evil)}/wait`);
    expect(raw.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await raw.text();
    expect(html).not.toContain('<img');
    expect(html).toContain('&#60;img src=x onerror=&#34;window.pwned=1&#34;&#62;');
  });
});

describe('GET /orders/:orderId', () => {
  test('it returns the messages and, while awaiting payment, the live stage, next check and deadline', async () => {
    const placedAt = Date.now();
    const order = await placeOrder();
    // The live stage comes from a workflow query the API waits for only briefly (under load it may fall back to MySQL
    // without it, which the next test covers): ask until an answer carries it.
    const r = await waitFor(
      async () => {
        const answer = await sys.http('GET', `/orders/${order.orderId}`);
        return answer.body?.stage !== undefined ? answer : undefined;
      },
      { timeoutMs: 60_000, what: 'an answer with the live stage' },
    );
    expect(r.status).toBe(200);
    expect(['AWAITING_PAYMENT', 'QUERYING_PROVIDER']).toContain(r.body.stage);
    expect(r.body.deadline).toBe(order.payment.expiresAt);
    expect(Date.parse(r.body.nextCheckAt)).toBeGreaterThan(placedAt);
    expect(Date.parse(r.body.nextCheckAt)).toBeLessThanOrEqual(Date.parse(order.payment.expiresAt));
    expect(r.body.queryAttempts).toEqual(expect.any(Number));
    expect(r.body.messages).toMatchObject({
      code: expect.stringMatching(/^(WAITING_FOR_PAYMENT|CHECKING_WITH_PROVIDER)$/),
      phase: 'AWAITING_PAYMENT',
      expectedBy: order.payment.expiresAt,
    });
    expect(r.body.messages.support.en).toContain(`deadline ${order.payment.expiresAt}`);
    expect(r.body.userMessage).toBe(r.body.messages.user.en);

    await sys.sandbox('POST', `/v1/payments/${order.orderId}/pay`, {});
    const paid = await waitForStatusBody(order.orderId, 'PAID');
    expect(paid.stage).toBeUndefined();
    expect(paid.messages).toMatchObject({
      code: 'PAID',
      phase: 'DONE',
      user: { en: 'Payment received and your order is confirmed.', zh: '付款成功，订单已确认。' },
    });
  });

  test('it answers from MySQL, without the live stage, when the workflow cannot be queried', async () => {
    // An order whose workflow is missing, and one whose workflow nobody works on (no worker polls its task queue).
    const missing = await insertBareOrder();
    const stuck = await insertBareOrder();
    const handle = await sys.client.workflow.start(ORDER_WORKFLOW_TYPE, {
      workflowId: orderWorkflowId(stuck),
      taskQueue: `nobody-${randomBytes(4).toString('hex')}`,
      args: [{ orderId: stuck }],
    });
    // A query of the stuck workflow, sent first, waits until the server gives up on it (about 30 s): both orders must
    // be
    // answered while it still waits, i.e. without waiting for a query nobody answers (whatever the machine's pace).
    const aborter = new AbortController();
    let directQuerySettled = false;
    const directQuery = sys.client
      .withAbortSignal(aborter.signal, () => handle.query(statusQuery))
      .catch(() => undefined)
      .finally(() => (directQuerySettled = true));
    try {
      const r = await sys.http('GET', `/orders/${missing}`);
      expect(r.status).toBe(200);
      expect(r.body.stage).toBeUndefined();
      expect(r.body.messages.code).toBe('WAITING_FOR_PAYMENT');

      const s = await sys.http('GET', `/orders/${stuck}`);
      expect(s.status).toBe(200);
      expect(s.body.stage).toBeUndefined();
      expect(s.body.messages.user.en).toBe('Waiting for your payment. Your items are held for you until the deadline.');
      const page = await fetch(`${sys.apiUrl}/orders/${stuck}/wait`);
      expect(page.status).toBe(200);
      expect(directQuerySettled).toBe(false);
    } finally {
      aborter.abort();
      await directQuery;
      await handle.terminate('test cleanup');
    }
  });
});

async function waitForStatusBody(orderId: string, status: string): Promise<any> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const r = await sys.http('GET', `/orders/${orderId}`);
    if (r.body?.status === status) return r.body;
    if (Date.now() > deadline)
      throw new Error(`order ${orderId} did not become ${status}; last ${JSON.stringify(r.body)}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** An order row in MySQL with no running workflow behind it (as after a lost start). */
async function insertBareOrder(): Promise<string> {
  const orderId = `ord_bare${randomBytes(6).toString('hex')}`;
  await sys.db('orders').insert({
    order_id: orderId,
    user_id: userId(),
    status: 'AWAITING_PAYMENT',
    amount: 100,
    currency: 'CNY',
    provider: 'sandbox',
    deadline: new Date(Date.now() + 10 * 60_000),
  });
  return orderId;
}
