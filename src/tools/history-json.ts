/**
 * Workflow histories to and from JSON in the standard proto3 JSON form: what `historyToJSON` / `historyFromJSON` of
 * @temporalio/common write and read, what `temporal workflow show --output json` and the Web UI's download produce,
 * and what `Worker.runReplayHistories` accepts.
 *
 * The SDK's own functions are used whenever they work. In this project's install they throw "type must be a Type":
 * @temporalio/common and @temporalio/proto each carry a nested copy of protobufjs 8 (npm cannot hoist it, because
 * @grpc/proto-loader keeps protobufjs 7 at the top level), and protobufjs' JSON codec accepts only types built by its
 * own copy. The fallback runs the same codec (protobufjs/ext/protojson) from the copy that built @temporalio/proto's
 * types, so the JSON is the same either way. Once the install has a single protobufjs 8, the fallback is never taken.
 */
import { createRequire } from 'node:module';
import type { History } from '@temporalio/common/lib/proto-utils';
import { historyFromJSON, historyToJSON } from '@temporalio/common/lib/proto-utils';
import * as proto from '@temporalio/proto';
import { patchProtobufRoot } from '@temporalio/proto/lib/patch-protobuf-root';

export type { History };

interface ProtoJson {
  toJson(type: unknown, message: unknown): unknown;
  fromJson(type: unknown, json: unknown, options?: { ignoreUnknownFields?: boolean }): unknown;
}

let codec: { protojson: ProtoJson; historyType: unknown } | undefined;

/** protobufjs' JSON codec from the protobufjs copy that @temporalio/proto's types belong to. */
function alignedCodec() {
  if (!codec) {
    // Resolved from @temporalio/proto's own folder, i.e. the protobufjs copy its types were built with.
    const protojson = createRequire(require.resolve('@temporalio/proto/package.json'))('protobufjs/ext/protojson') as ProtoJson;
    const root = patchProtobufRoot(proto) as unknown as { lookupType(name: string): unknown };
    codec = { protojson, historyType: root.lookupType('temporal.api.history.v1.History') };
  }
  return codec;
}

/** The error protobufjs raises when a type from another copy of protobufjs is handed to its codec. */
function isCopyMismatch(err: unknown): boolean {
  return err instanceof TypeError && /must be a Type/.test(err.message);
}

/** A history (e.g. from `handle.fetchHistory()`) as pretty-printed proto3 JSON. */
export function historyToJson(history: History): string {
  try {
    return historyToJSON(history);
  } catch (err) {
    if (!isCopyMismatch(err)) throw err;
  }
  const { protojson, historyType } = alignedCodec();
  return JSON.stringify(protojson.toJson(historyType, proto.temporal.api.history.v1.History.fromObject(history)), null, 2);
}

/** A history parsed from proto3 JSON, ready for `Worker.runReplayHistories` / `runReplayHistory`. */
export function historyFromJson(json: unknown): History {
  try {
    return historyFromJSON(json);
  } catch (err) {
    if (!isCopyMismatch(err)) throw err;
  }
  const { protojson, historyType } = alignedCodec();
  const history = protojson.fromJson(historyType, json, { ignoreUnknownFields: true }) as History | null;
  if (!history?.events?.length) throw new TypeError('not a workflow history: no events');
  return history;
}
