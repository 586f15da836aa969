/**
 * Bill files as providers hand them out: downloaded to a temporary file (so a big bill is never held in memory
 * and can be hash-checked before a row is trusted), then read as a line stream, from a ZIP entry (Alipay) or a
 * gzip file (WeChat Pay). Only what those files use is supported: stored/deflated entries, no ZIP64.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createInflateRaw } from 'node:zlib';
import iconv from 'iconv-lite';
import { ProviderUnavailableError } from './http';

/** A temporary download; `dispose` removes it. */
export interface Download {
  path: string;
  bytes: number;
  dispose(): Promise<void>;
}

/** Streams a response body to a temporary file, counting its bytes (a provider's hash is checked by its adapter). */
export async function downloadToTemp(
  url: string,
  init: RequestInit,
  what: string,
  timeoutMs = 120_000,
): Promise<Download> {
  let response: Response;
  try {
    response = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    throw new ProviderUnavailableError(`${what} failed: ${(err as Error).message}`);
  }
  if (!response.ok || !response.body) throw new ProviderUnavailableError(`${what} answered ${response.status}`);
  const dir = await mkdtemp(join(tmpdir(), 'payflow-bill-'));
  const path = join(dir, 'bill');
  let bytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      bytes += chunk.length;
      done(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(response.body as never), counter, createWriteStream(path));
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw new ProviderUnavailableError(`${what} broke off: ${(err as Error).message}`);
  }
  return {
    path,
    bytes,
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
}

/** One entry of a ZIP file's central directory. */
export interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  localHeaderOffset: number;
}

/** Lists a ZIP file's entries (names in UTF-8 when flagged, else GBK as Alipay's are). */
export async function listZipEntries(path: string): Promise<ZipEntry[]> {
  const file = await open(path, 'r');
  try {
    const { size } = await file.stat();
    const tailLength = Math.min(size, 22 + 0xffff);
    const tail = Buffer.alloc(tailLength);
    await file.read(tail, 0, tailLength, size - tailLength);
    let eocd = -1;
    for (let i = tailLength - 22; i >= 0; i--) {
      if (tail.readUInt32LE(i) === 0x06054b50) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw new Error('not a ZIP file (no end of central directory)');
    const count = tail.readUInt16LE(eocd + 10);
    const cdSize = tail.readUInt32LE(eocd + 12);
    const cdOffset = tail.readUInt32LE(eocd + 16);
    if (cdOffset === 0xffffffff || cdOffset + cdSize > size)
      throw new Error('unsupported or damaged ZIP (ZIP64 or bad offsets)');
    const cd = Buffer.alloc(cdSize);
    await file.read(cd, 0, cdSize, cdOffset);
    const entries: ZipEntry[] = [];
    let p = 0;
    for (let n = 0; n < count; n++) {
      if (cd.readUInt32LE(p) !== 0x02014b50) throw new Error('damaged ZIP central directory');
      const flags = cd.readUInt16LE(p + 8);
      const nameLength = cd.readUInt16LE(p + 28);
      const nameBytes = cd.subarray(p + 46, p + 46 + nameLength);
      entries.push({
        name: flags & 0x800 ? nameBytes.toString('utf8') : iconv.decode(nameBytes, 'gbk'),
        method: cd.readUInt16LE(p + 10),
        compressedSize: cd.readUInt32LE(p + 20),
        localHeaderOffset: cd.readUInt32LE(p + 42),
      });
      p += 46 + nameLength + cd.readUInt16LE(p + 30) + cd.readUInt16LE(p + 32);
    }
    return entries;
  } finally {
    await file.close();
  }
}

/** The entry's uncompressed bytes as a stream. */
export async function openZipEntry(path: string, entry: ZipEntry): Promise<Readable> {
  const file = await open(path, 'r');
  const local = Buffer.alloc(30);
  try {
    await file.read(local, 0, 30, entry.localHeaderOffset);
  } finally {
    await file.close();
  }
  if (local.readUInt32LE(0) !== 0x04034b50) throw new Error(`damaged ZIP entry ${entry.name}`);
  const start = entry.localHeaderOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
  const raw = createReadStream(path, { start, end: start + entry.compressedSize - 1 });
  if (entry.method === 0) return raw;
  if (entry.method !== 8)
    throw new Error(`ZIP entry ${entry.name} uses unsupported compression method ${entry.method}`);
  const inflate = createInflateRaw();
  raw.on('error', (err) => inflate.destroy(err));
  return raw.pipe(inflate);
}

/** A gzip file's uncompressed bytes as a stream. */
export function openGzip(path: string): Readable {
  const raw = createReadStream(path);
  const gunzip = createGunzip();
  raw.on('error', (err) => gunzip.destroy(err));
  return raw.pipe(gunzip);
}

/** The hex digest of a stream's bytes. */
export async function digestOf(bytes: Readable, algorithm: 'sha1' | 'sha256'): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of bytes) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Lines of a byte stream decoded from `encoding` (a leading BOM is dropped; `\r\n` and `\n` both end lines). */
export async function* decodedLines(bytes: Readable, encoding: string): AsyncGenerator<string> {
  const decoder = iconv.decodeStream(encoding);
  bytes.on('error', (err) => decoder.emit('error', err));
  const lines = createInterface({ input: bytes.pipe(decoder), crlfDelay: Infinity });
  let first = true;
  for await (const line of lines) {
    yield first ? line.replace(/^\uFEFF/, '') : line;
    first = false;
  }
}

/** Splits one CSV line: commas, with RFC 4180 double quotes when a field has them. */
export function splitCsvLine(line: string): string[] {
  const cells: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cell += ch;
    } else if (ch === '"' && cell === '') quoted = true;
    else if (ch === ',') {
      cells.push(cell);
      cell = '';
    } else cell += ch;
  }
  cells.push(cell);
  return cells;
}
