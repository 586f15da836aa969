/**
 * What every phase of the order workflow works with: the order's state, its steps (activities with the stuck rule),
 * and what the Web UI and visibility show (current details, search attributes). One instance per execution.
 */
import type { SearchAttributeUpdatePair } from '@temporalio/common';
import {
  metricMeter,
  setCurrentDetails,
  upsertSearchAttributes,
  type LocalActivityOptions,
} from '@temporalio/workflow';
import type { Activities } from '../../activities';
import type { OrderStage } from '../../contracts/order-workflow';
import {
  NeedsReviewKey,
  OrderAmountKey,
  OrderStageKey,
  OrderStatusKey,
  StuckKey,
} from '../../contracts/search-attributes';
import { MUST, errorMessage, outOfAttempts, run, runLocal } from '../shared/steps';
import type { OrderState } from './state';

/** Must-succeed attempts after which the order is marked Stuck (search attribute + metric); retries go on. */
export const STUCK_AFTER_ATTEMPTS = 5;

/** The order's participants as the merged steps take them. */
export interface Participants {
  orderId: string;
  userId: string;
  lines: { sku: string; quantity: number }[];
  benefits: OrderState['benefits'];
}

export class OrderContext {
  /** What visibility last showed, so one upsert carries only what changed. */
  private shown: { stage?: string; status?: string; needsReview?: boolean; amount?: number } = {};

  constructor(readonly state: OrderState) {
    this.shown.status = 'AWAITING_PAYMENT'; // set by the API at the start (typed search attributes of the start)
  }

  get orderId(): string {
    return this.state.orderId;
  }

  get provider(): string {
    return this.state.input.provider;
  }

  /** The order's participants for the merged TCC steps. */
  participants(): Participants {
    const s = this.state;
    return {
      orderId: s.orderId,
      userId: s.input.userId,
      lines: s.lines.map((l) => ({ sku: l.sku, quantity: l.quantity })),
      benefits: s.benefits,
    };
  }

  /** Enters a stage: shown at once in the Web UI's current details; on visibility at the next `publish()`. */
  enter(stage: OrderStage, details: string): void {
    this.state.enter(stage);
    setCurrentDetails(`**${stage}**: ${details}`);
  }

  /**
   * Shows the order's stage, status, amount and review flag on visibility, in one upsert of what changed since the
   * last one (none when nothing did). Called where an operator's list must change: after setup, at each status change,
   * when the order starts waiting for review or for a late payment, and at the end.
   */
  publish(extra: SearchAttributeUpdatePair[] = []): void {
    const s = this.state;
    const pairs: SearchAttributeUpdatePair[] = [...extra];
    if (this.shown.stage !== s.stage) pairs.push({ key: OrderStageKey, value: s.stage });
    if (this.shown.status !== s.status) pairs.push({ key: OrderStatusKey, value: s.status });
    const needsReview = s.status === 'NEEDS_REVIEW' || s.stage === 'AWAITING_REVIEW';
    if ((this.shown.needsReview ?? false) !== needsReview) pairs.push({ key: NeedsReviewKey, value: needsReview });
    if (s.amount !== undefined && this.shown.amount !== s.amount) pairs.push({ key: OrderAmountKey, value: s.amount });
    if (pairs.length === 0) return;
    upsertSearchAttributes(pairs);
    this.shown = { stage: s.stage, status: s.status, needsReview, amount: s.amount };
  }

  /**
   * Runs a step that must eventually succeed (TCC confirm, cancel and return; closing the provider payment; a refund;
   * a status change; an outbox row). After STUCK_AFTER_ATTEMPTS failed attempts the order is marked Stuck (search
   * attribute, metric, timeline) and the step keeps retrying with backoff until it succeeds. `local`: a short MySQL
   * step, run as a local activity.
   */
  async must<K extends keyof Activities>(
    name: K,
    how: 'local' | 'task',
    summary: string,
    ...args: Parameters<Activities[K]>
  ): Promise<Awaited<ReturnType<Activities[K]>>> {
    const once = (options: LocalActivityOptions, label: string) =>
      how === 'local' ? runLocal(name, options, label, ...args) : run(name, options, label, ...args);
    try {
      return await once({ ...MUST, retry: { ...MUST.retry, maximumAttempts: STUCK_AFTER_ATTEMPTS } }, summary);
    } catch (err) {
      if (!outOfAttempts(err)) throw err;
      this.publish([{ key: StuckKey, value: true }]);
      metricMeter
        .createCounter(
          'order_tcc_stuck',
          'steps',
          'Must-succeed steps (TCC confirm/cancel/return, close, refund, status change) that kept failing',
        )
        .add(1, { activity: name });
      this.state.note(
        'STUCK',
        `${summary} failed ${STUCK_AFTER_ATTEMPTS} times (${errorMessage(err)}); still retrying`,
      );
      const result = await once(MUST, `${summary} (retrying while stuck)`);
      // In review the mark stays until the decision is carried out (review.ts unstuck), which clears it then.
      if (this.state.status !== 'NEEDS_REVIEW') upsertSearchAttributes([{ key: StuckKey, value: false }]);
      else this.state.markedStuckForReview = true;
      this.state.note('UNSTUCK', `${summary} succeeded after being stuck`);
      return result;
    }
  }
}
