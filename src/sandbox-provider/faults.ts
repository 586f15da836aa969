/** Fault injection settings of the sandbox (`/_control/faults`) and the dice that apply them. */
import { type FaultSettings } from '../contracts/sandbox';

/** Every fault setting, all present. */
export type ActiveFaults = Required<FaultSettings>;

/** No faults: a well-behaved provider. */
export const NO_FAULTS: Readonly<ActiveFaults> = Object.freeze({
  dropNotifications: 0,
  duplicateNotifications: 0,
  reorderNotifications: 0,
  notificationDelayMs: 0,
  apiErrorRate: 0,
  apiLatencyMs: 0,
  acceptPaymentAfterClose: false,
  acceptPaymentAfterExpiry: false,
  queryLagMs: 0,
});

/** The current fault settings, changed at run time by tests. */
export class Faults {
  private current: ActiveFaults = { ...NO_FAULTS };

  /** `random` returns [0, 1); injectable so a test can make the dice deterministic. */
  constructor(private readonly random: () => number = Math.random) {}

  /** A copy of the current settings. */
  get(): ActiveFaults {
    return { ...this.current };
  }

  /** Merges a partial update into the current settings and returns the result. */
  update(patch: FaultSettings): ActiveFaults {
    this.current = { ...this.current, ...stripUndefined(patch) };
    return this.get();
  }

  /** Back to no faults. */
  reset(): ActiveFaults {
    this.current = { ...NO_FAULTS };
    return this.get();
  }

  /** True with the given probability (never for 0, always for 1). */
  happens(probability: number): boolean {
    return this.random() < probability;
  }

  /** A uniform draw in [0, 1), for decisions that need more than yes/no. */
  draw(): number {
    return this.random();
  }
}

function stripUndefined(patch: FaultSettings): FaultSettings {
  return Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)) as FaultSettings;
}
