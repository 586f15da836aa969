/**
 * Key material for the provider adapters: RSA keys given as PEM text, bare base64 DER (as the Alipay console
 * shows them) or a file path holding either; and a Secret wrapper that never prints its value.
 */
import { type KeyObject, createPrivateKey, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';

/** A secret string that logs, JSON and string interpolation show as `[hidden]`; `reveal()` gives the value. */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return '[hidden]';
  }
  toJSON(): string {
    return '[hidden]';
  }
  [inspect.custom](): string {
    return 'Secret([hidden])';
  }
}

/** Why a key could not be loaded; the message never contains key material. */
export class KeyLoadError extends Error {
  override name = 'KeyLoadError';
}

const BASE64_BODY = /^[A-Za-z0-9+/=\s]+$/;

/** PEM text, base64 DER or file contents; `\n` escapes (one-line env values) become newlines. */
function keyText(value: string, depth = 0): { kind: 'pem' | 'der'; text: string } {
  const trimmed = value.trim().replace(/\\n/g, '\n');
  if (trimmed.startsWith('-----BEGIN ')) return { kind: 'pem', text: trimmed };
  if (trimmed.length >= 64 && BASE64_BODY.test(trimmed)) return { kind: 'der', text: trimmed.replace(/\s+/g, '') };
  if (depth > 0) throw new KeyLoadError('the file holds neither a PEM key nor a base64 DER key');
  let contents: string;
  try {
    contents = readFileSync(trimmed, 'utf8');
  } catch {
    throw new KeyLoadError('is neither a PEM key, a base64 DER key, nor a readable key file');
  }
  return keyText(contents, depth + 1);
}

function requireRsa(key: KeyObject, what: string): KeyObject {
  if (key.asymmetricKeyType !== 'rsa')
    throw new KeyLoadError(`${what} must be an RSA key, not ${key.asymmetricKeyType ?? 'unknown'}`);
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < 2048) throw new KeyLoadError(`${what} must be an RSA key of at least 2048 bits (RSA2), not ${bits}`);
  return key;
}

/** Loads an RSA private key (PKCS#8 or PKCS#1, PEM or base64 DER, inline or from a file). */
export function loadRsaPrivateKey(value: string): KeyObject {
  const { kind, text } = keyText(value);
  const attempts: Array<() => KeyObject> =
    kind === 'pem'
      ? [() => createPrivateKey(text)]
      : [
          () => createPrivateKey({ key: Buffer.from(text, 'base64'), format: 'der', type: 'pkcs8' }),
          () => createPrivateKey({ key: Buffer.from(text, 'base64'), format: 'der', type: 'pkcs1' }),
        ];
  for (const attempt of attempts) {
    try {
      return requireRsa(attempt(), 'the private key');
    } catch (err) {
      if (err instanceof KeyLoadError) throw err;
    }
  }
  throw new KeyLoadError('is not a readable RSA private key');
}

/** Loads an RSA public key (SPKI or PKCS#1, PEM or base64 DER, or an X.509 certificate PEM, inline or from a file). */
export function loadRsaPublicKey(value: string): KeyObject {
  const { kind, text } = keyText(value);
  // createPublicKey would quietly derive the public half of a private key: a mixed-up variable must fail.
  if (kind === 'pem' && text.includes('PRIVATE KEY'))
    throw new KeyLoadError('is a private key where a public key is expected');
  const attempts: Array<() => KeyObject> =
    kind === 'pem'
      ? [() => createPublicKey(text)]
      : [
          () => createPublicKey({ key: Buffer.from(text, 'base64'), format: 'der', type: 'spki' }),
          () => createPublicKey({ key: Buffer.from(text, 'base64'), format: 'der', type: 'pkcs1' }),
        ];
  for (const attempt of attempts) {
    try {
      return requireRsa(attempt(), 'the public key');
    } catch (err) {
      if (err instanceof KeyLoadError) throw err;
    }
  }
  throw new KeyLoadError('is not a readable RSA public key or certificate');
}
