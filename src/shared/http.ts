/** Small HTTP helpers shared by the API and the sandbox provider. */
import type { FastifyInstance, FastifyRequest } from 'fastify';

/**
 * Fastify's own JSON parser, except that an empty body is no body: clients often send `Content-Type:
 * application/json` on bodyless POSTs (cancel, close), and that must not be a 400. A body that is there is parsed
 * (and refused) exactly as before; a route that needs a body still refuses the missing one when it validates it.
 * Call it before registering routes and plugins, so that every scope inherits it.
 */
export function acceptEmptyJsonBodies(app: FastifyInstance): void {
  // Fastify's default JSON parser is callback-style; its declared type also allows a promise-style one.
  const parseJson = app.getDefaultJsonParser('error', 'error') as (
    request: FastifyRequest,
    body: string,
    done: (err: Error | null, body?: unknown) => void,
  ) => void;
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = body.toString();
    if (text === '') done(null, undefined);
    else parseJson(request, text, done);
  });
}
