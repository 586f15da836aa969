/**
 * Notification delivery of the sandbox, modelled on Alipay/WeChat async notifications: at least once,
 * redelivered on a schedule until the merchant answers HTTP 200 `success`, and, when faults are on,
 * dropped, duplicated, delayed or reordered (providers.md, "Notification delivery").
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { type FastifyBaseLogger } from 'fastify';
import { SANDBOX_ACK_BODY, SANDBOX_SIGNATURE_HEADER, SandboxNotification } from '../contracts/sandbox';
import { signSandboxPayload } from '../providers/sandbox-signature';
import { SandboxApiError, SandboxLocalErrorCode } from './errors';
import { type Faults } from './faults';
import { type Payment } from './payments';

/** WeChat Pay gives merchants 5 s to answer; a slower answer counts as a failure. */
export const ANSWER_TIMEOUT_MS = 5_000;

/** A held-back (reordered) notification is released after this long even if no other one is sent. */
export const MAX_HOLD_MS = 2_000;

/** Only the start of the merchant's answer matters: it must be `success`. */
const MAX_ANSWER_BYTES = 4_096;

/** What `GET /_control/notifications` reports about one notification. */
export interface NotificationView {
  id: string;
  outTradeNo: string;
  /** Delivery attempts made (scheduled and forced); duplicates of one attempt count once. */
  attempts: number;
  /** HTTP requests made, duplicates included. */
  sends: number;
  acknowledged: boolean;
  /** A fault dropped it: no scheduled attempt will ever be made. */
  dropped: boolean;
  /** The redelivery schedule ran out without an acknowledgement. */
  gaveUp: boolean;
  lastStatus: number | null;
  lastError: string | null;
}

/** Settings of the delivery service. */
export interface DeliveryOptions {
  secret: string;
  /** Delay before the first attempt, then before each retry after a failed attempt (ms). */
  schedule: number[];
  faults: Faults;
  now: () => Date;
  logger: FastifyBaseLogger;
}

interface TrackedNotification extends NotificationView {
  notifyUrl: string;
  /** Serialised once so that every redelivery carries the same bytes. */
  rawBody: string;
  /** Index into the schedule of the next scheduled attempt. */
  scheduleIndex: number;
  firstDelayMs: number;
  timer?: NodeJS.Timeout;
}

interface SendOutcome {
  acknowledged: boolean;
  status: number | null;
  error: string | null;
}

/** Builds, signs, sends and redelivers payment notifications; `close()` stops everything. */
export class NotificationDelivery {
  private readonly notifications = new Map<string, TrackedNotification>();
  /** Reordered notifications waiting for another notification to go first. */
  private readonly held = new Set<TrackedNotification>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly closing = new AbortController();

  constructor(private readonly options: DeliveryOptions) {
    if (options.schedule.length === 0) throw new Error('notifySchedule needs at least one delay (the first attempt)');
  }

  /** Starts delivering the `payment.succeeded` notification of a payment that was just paid. */
  notifyPaid(payment: Payment): NotificationView {
    const faults = this.options.faults.get();
    const tracked = this.track(payment, this.options.schedule[0]! + faults.notificationDelayMs);
    if (this.options.faults.happens(faults.dropNotifications)) {
      tracked.dropped = true;
      this.options.logger.info(
        { notificationId: tracked.id, outTradeNo: tracked.outTradeNo },
        'notification dropped (fault)',
      );
    } else if (this.options.faults.happens(faults.reorderNotifications)) {
      this.hold(tracked);
    } else {
      this.scheduleAttempt(tracked, tracked.firstDelayMs);
    }
    return view(tracked);
  }

  /** Every notification, optionally only those of one payment, oldest first. */
  list(outTradeNo?: string): NotificationView[] {
    return [...this.notifications.values()]
      .filter((n) => outTradeNo === undefined || n.outTradeNo === outTradeNo)
      .map(view);
  }

  /** Makes one more delivery attempt now, whatever the state (lets tests send a duplicate on purpose). */
  async redeliver(id: string): Promise<NotificationView> {
    const tracked = this.notifications.get(id);
    if (!tracked) throw new SandboxApiError(404, SandboxLocalErrorCode.NOT_FOUND, `No notification with id ${id}`);
    await this.attempt(tracked);
    return view(tracked);
  }

  /** Cancels every pending attempt and aborts the ones in flight. */
  close(): void {
    this.closing.abort(new Error('the sandbox is shutting down'));
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.held.clear();
  }

  private track(payment: Payment, firstDelayMs: number): TrackedNotification {
    const body = SandboxNotification.parse({
      id: `evt_${randomBytes(12).toString('hex')}`,
      type: 'payment.succeeded',
      createdAt: this.options.now().toISOString(),
      data: {
        outTradeNo: payment.outTradeNo,
        tradeNo: payment.tradeNo,
        amount: payment.paidAmount ?? payment.amount,
        currency: payment.currency,
        merchantId: payment.merchantId,
        paidAt: (payment.paidAt ?? this.options.now()).toISOString(),
      },
    });
    const tracked: TrackedNotification = {
      id: body.id,
      outTradeNo: payment.outTradeNo,
      attempts: 0,
      sends: 0,
      acknowledged: false,
      dropped: false,
      gaveUp: false,
      lastStatus: null,
      lastError: null,
      notifyUrl: payment.notifyUrl,
      rawBody: JSON.stringify(body),
      scheduleIndex: 0,
      firstDelayMs,
    };
    this.notifications.set(tracked.id, tracked);
    return tracked;
  }

  private hold(tracked: TrackedNotification): void {
    this.held.add(tracked);
    tracked.timer = this.later(MAX_HOLD_MS, () => this.release(tracked));
    this.options.logger.info({ notificationId: tracked.id }, 'notification held back to arrive out of order (fault)');
  }

  private release(tracked: TrackedNotification): void {
    if (!this.held.delete(tracked)) return;
    this.cancelTimer(tracked);
    this.scheduleAttempt(tracked, tracked.firstDelayMs);
  }

  /** Called after any send: held notifications go out only after a later one did. */
  private releaseHeldOtherThan(sender: TrackedNotification): void {
    for (const tracked of [...this.held]) if (tracked !== sender) this.release(tracked);
  }

  private scheduleAttempt(tracked: TrackedNotification, delayMs: number): void {
    tracked.timer = this.later(delayMs, () => this.runScheduledAttempt(tracked));
  }

  private async runScheduledAttempt(tracked: TrackedNotification): Promise<void> {
    tracked.timer = undefined;
    // A forced redelivery may have been acknowledged while this attempt was waiting.
    if (tracked.acknowledged) return;
    const acknowledged = await this.attempt(tracked);
    if (acknowledged || this.closing.signal.aborted) return;
    tracked.scheduleIndex += 1;
    const delay = this.options.schedule[tracked.scheduleIndex];
    if (delay === undefined) {
      tracked.gaveUp = true;
      this.options.logger.warn(
        { notificationId: tracked.id, attempts: tracked.attempts },
        'notification schedule exhausted; giving up',
      );
      return;
    }
    this.scheduleAttempt(tracked, delay);
  }

  /** One delivery attempt: one HTTP request, or 2-3 identical ones when duplicates are injected. */
  private async attempt(tracked: TrackedNotification): Promise<boolean> {
    tracked.attempts += 1;
    const faults = this.options.faults;
    const copies = faults.happens(faults.get().duplicateNotifications) ? 2 + Math.floor(faults.draw() * 2) : 1;
    const outcomes = await Promise.all(Array.from({ length: copies }, () => this.send(tracked)));
    const acknowledged = outcomes.find((o) => o.acknowledged);
    if (acknowledged) {
      tracked.acknowledged = true;
      tracked.lastStatus = acknowledged.status;
      tracked.lastError = null;
      this.cancelTimer(tracked);
    }
    return acknowledged !== undefined;
  }

  private async send(tracked: TrackedNotification): Promise<SendOutcome> {
    tracked.sends += 1;
    // A fresh timestamp per request, as real providers sign each delivery anew.
    const signature = signSandboxPayload(
      this.options.secret,
      tracked.rawBody,
      Math.floor(this.options.now().getTime() / 1000),
    );
    const outcome = await postNotification(tracked.notifyUrl, tracked.rawBody, signature, this.closing.signal);
    tracked.lastStatus = outcome.status;
    tracked.lastError = outcome.error;
    this.options.logger.debug({ notificationId: tracked.id, ...outcome }, 'notification sent');
    this.releaseHeldOtherThan(tracked);
    return outcome;
  }

  private later(ms: number, run: () => void | Promise<void>): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      Promise.resolve()
        .then(run)
        .catch((err: unknown) => this.options.logger.error({ err }, 'notification delivery failed unexpectedly'));
    }, ms);
    this.timers.add(timer);
    return timer;
  }

  private cancelTimer(tracked: TrackedNotification): void {
    if (!tracked.timer) return;
    clearTimeout(tracked.timer);
    this.timers.delete(tracked.timer);
    tracked.timer = undefined;
  }
}

function view(tracked: TrackedNotification): NotificationView {
  const { id, outTradeNo, attempts, sends, acknowledged, dropped, gaveUp, lastStatus, lastError } = tracked;
  return { id, outTradeNo, attempts, sends, acknowledged, dropped, gaveUp, lastStatus, lastError };
}

/** POSTs one signed notification; never throws: failures come back as an outcome. */
async function postNotification(
  url: string,
  rawBody: string,
  signature: string,
  closing: AbortSignal,
): Promise<SendOutcome> {
  const timeout = AbortSignal.timeout(ANSWER_TIMEOUT_MS);
  try {
    const answer = await post(
      url,
      rawBody,
      { [SANDBOX_SIGNATURE_HEADER]: signature },
      AbortSignal.any([closing, timeout]),
    );
    if (answer.status !== 200)
      return { acknowledged: false, status: answer.status, error: `answered HTTP ${answer.status}` };
    if (answer.body.trim() !== SANDBOX_ACK_BODY) {
      return {
        acknowledged: false,
        status: 200,
        error: `answered ${JSON.stringify(answer.body.slice(0, 80))} instead of "${SANDBOX_ACK_BODY}"`,
      };
    }
    return { acknowledged: true, status: 200, error: null };
  } catch (err) {
    if (timeout.aborted)
      return { acknowledged: false, status: null, error: `no answer within ${ANSWER_TIMEOUT_MS} ms` };
    const e = err as NodeJS.ErrnoException;
    return { acknowledged: false, status: null, error: e.code ? `${e.code}: ${e.message}` : e.message };
  }
}

/** A bare POST without connection reuse, so that nothing lingers once the sandbox closes. */
function post(
  url: string,
  body: string,
  headers: Record<string, string>,
  signal: AbortSignal,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const client = target.protocol === 'https:' ? https : http;
    const request = client.request(
      target,
      {
        method: 'POST',
        agent: false,
        signal,
        headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size <= MAX_ANSWER_BYTES) chunks.push(chunk);
        });
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        );
        response.on('error', reject);
        response.on('close', () => {
          if (!response.complete) reject(new Error('connection closed before the answer was complete'));
        });
      },
    );
    request.on('error', reject);
    request.end(body);
  });
}
