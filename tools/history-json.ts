/**
 * Workflow histories to and from JSON in the standard proto3 JSON form: what `temporal workflow show --output json`
 * and the Web UI's download produce, and what `Worker.runReplayHistories` accepts.
 *
 * The SDK's codec needs a single protobufjs 8 in the install: @temporalio/common and @temporalio/proto must
 * share one copy, or it throws "type must be a Type". @grpc/proto-loader pins protobufjs 7, which npm would
 * hoist to the top and nest a copy of 8 under each Temporal package; package.json therefore names protobufjs 8
 * itself, so that 8 is the shared top-level copy and 7 is nested under proto-loader.
 */
import type { History } from '@temporalio/common/lib/proto-utils';
import { historyFromJSON, historyToJSON } from '@temporalio/common/lib/proto-utils';

export type { History };

/** A history (e.g. from `handle.fetchHistory()`) as pretty-printed proto3 JSON. */
export function historyToJson(history: History): string {
  return historyToJSON(history);
}

/** A history parsed from proto3 JSON, ready for `Worker.runReplayHistories` / `runReplayHistory`. */
export function historyFromJson(json: unknown): History {
  const history = historyFromJSON(json);
  if (!history.events?.length) throw new TypeError('not a workflow history: no events');
  return history;
}
