// What a request that failed is answered: a failure that is the client's (an oidc-provider error, a 4xx) with
// its own status and error, any other as 500 server_error, never with its internals; the latter are logged.
import type { Context } from 'koa';
import { errors } from 'oidc-provider';
import type { Logger } from '../ops/log.ts';

export interface Failure {
  status: number;
  /** The OAuth error code of a JSON answer. */
  error: string;
  /** What the client is told, as `error_description` or on an error page. */
  description: string;
}

/** The answer to `err`, thrown while serving `ctx`; an unexpected one (500) is logged with the request's id. */
export function failureOf(ctx: Context, err: unknown, log: Logger['log']): Failure {
  const e = err as { status?: number; statusCode?: number; message?: string; error?: string; error_description?: string };
  const status = e.status ?? e.statusCode ?? 500;
  const oidc = err instanceof errors.OIDCProviderError;
  const known = oidc || (status >= 400 && status < 500);
  if (!known) log('error', 'unexpected failure', { request_id: ctx.state.requestId, method: ctx.method, path: ctx.path, err });
  const description = err instanceof errors.SessionNotFound
    ? 'This sign-in has already finished, has expired, or was opened in another browser. Return to the app and start again.'
    : oidc ? (e.error_description ?? e.message ?? '')
      : status === 413 ? 'The request is too large.'
        : known ? 'The request could not be read.' : 'An unexpected error occurred.';
  return { status: known ? status : 500, error: known ? (e.error ?? 'invalid_request') : 'server_error', description };
}
