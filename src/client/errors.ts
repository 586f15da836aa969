/** The API's one error shape: `{ error: CODE, message, ...details }` with a 4xx status; 5xx only for real faults. */
import type { FastifyError, FastifyInstance } from 'fastify';
import { ZodError } from 'zod';

/** An error the API answers with its own status and code. */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** Turns a ZodError into a 400 VALIDATION_FAILED naming the first bad field. */
export function validationError(err: ZodError): ApiError {
  const issues = err.issues.slice(0, 10).map((i) => ({ path: i.path.join('.'), message: i.message }));
  const first = issues[0];
  return new ApiError(400, 'VALIDATION_FAILED', first ? `${first.path || 'body'}: ${first.message}` : 'invalid request', { issues });
}

/** Parses with a zod schema or throws the API's validation error. */
export function parseOr400<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: ZodError } }, value: unknown): T {
  const result = schema.safeParse(value);
  if (!result.success) throw validationError(result.error);
  return result.data;
}

/** Installs the error and not-found handlers that keep every answer in the error shape. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: 'NOT_FOUND', message: `no route ${request.method} ${request.url.split('?')[0]}` });
  });
  app.setErrorHandler((err: FastifyError | ApiError | ZodError, request, reply) => {
    if (err instanceof ApiError) {
      return reply.code(err.statusCode).send({ error: err.code, message: err.message, ...err.details });
    }
    if (err instanceof ZodError) {
      const api = validationError(err);
      return reply.code(400).send({ error: api.code, message: api.message, ...api.details });
    }
    const status = (err as FastifyError).statusCode;
    if (status && status >= 400 && status < 500) {
      // Fastify's own 4xx: bad JSON, body too large, unsupported media type.
      const code = status === 413 ? 'PAYLOAD_TOO_LARGE' : status === 415 ? 'UNSUPPORTED_MEDIA_TYPE' : 'VALIDATION_FAILED';
      return reply.code(status).send({ error: code, message: err.message });
    }
    request.log.error({ err }, 'request failed');
    return reply.code(500).send({ error: 'INTERNAL', message: 'internal error; it has been logged' });
  });
}
