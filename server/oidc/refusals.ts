// A refused request at the token, introspection or revocation endpoint (any error answer, under any spelling
// of its path) is recorded as an AuditEvent with a failure outcome, in the pattern of that endpoint's
// successful records (IUA ITI-71, ITI-102, revocation's 110135). Its record is committed after the answer,
// through the bounded backlog that introspection's records use, so a refusal adds no commit before its
// answer; one the backlog cannot take (full, or the store failing) is still answered as the same refusal:
// nothing is granted either way. A request that fails here (the store fails the commit of a token) is answered
// 500 server_error in JSON, as these endpoints answer every error, and recorded as the server's failure (outcome
// 8). Requests over these endpoints' rate limits are answered (429) before this, so a client cannot write more
// refusals than those limits let through.
import type { Context, Next } from 'koa';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { decodeJwt } from 'jose';
import type { Db } from '../db.ts';
import type { Logger } from '../ops/log.ts';
import type { AuditBacklog } from '../audit/backlog.ts';
import { oauthRequestRefused, SECRET_PARAMETERS, type OAuthRequestRefused, type RefusingEndpoint } from '../audit/balp.ts';
import { auditUserOf } from '../audit/security-events.ts';
import { routedPath } from '../net/routed-path.ts';
import { failureOf } from '../net/failures.ts';
import { bearerToken } from '../resource-server/verify-token.ts';
import { factsOf } from './token/request.ts';
import { TOKEN_PATH } from './token/response.ts';
import { basicCredentials } from './token/provider-answers.ts';
import { INTROSPECTION_PATH, REVOCATION_PATH } from './introspection.ts';
import { refusedForAudit } from '../audit/unavailable.ts';

/** The endpoints whose refusals are recorded, by path. */
const REFUSING_ENDPOINTS: ReadonlyMap<string, RefusingEndpoint> = new Map([
  [TOKEN_PATH, 'token'], [INTROSPECTION_PATH, 'introspection'], [REVOCATION_PATH, 'revocation'],
]);

/** What a request sent, as far as its record needs it. */
export interface RequestSent {
  /** The form parameters (a repeated one as a list). */
  params: Record<string, unknown>;
  authorization?: string;
  dpop?: string;
}

/**
 * The credentials a request carries: `code` here is the authorization code, not a FHIR search parameter;
 * `token` is the token introspected or revoked.
 */
const CREDENTIAL_PARAMETERS = new Set([...SECRET_PARAMETERS, 'code', 'token']);

const values = (value: unknown): string[] => (Array.isArray(value) ? value : [value]).filter((v): v is string => typeof v === 'string' && v !== '');
const cut = (value: string | undefined, max: number) => value?.slice(0, max);

/**
 * The client_id a request names: its parameter, else its Basic user, else its assertion's sub, else its
 * bearer token's client_id (introspection; none of them verified).
 */
export function claimedClientId(sent: RequestSent): string | undefined {
  const [param] = values(sent.params.client_id);
  if (param) return param;
  const basic = basicCredentials(sent.authorization)?.id;
  if (basic) return basic;
  const [assertion] = values(sent.params.client_assertion);
  const bearer = bearerToken(sent.authorization);
  try {
    const claimed = assertion ? decodeJwt(assertion).sub : bearer ? decodeJwt(bearer).client_id : undefined;
    return typeof claimed === 'string' && claimed ? claimed : undefined;
  } catch {
    return undefined;
  }
}

/** Every credential value the request carries (code, token, refresh token, assertion, secret, code_verifier, bearer token, DPoP proof, ...). */
export function credentialsOf(sent: RequestSent): string[] {
  return [
    ...Object.entries(sent.params).flatMap(([name, value]) => (CREDENTIAL_PARAMETERS.has(name.toLowerCase()) ? values(value) : [])),
    ...values(basicCredentials(sent.authorization)?.secret),
    ...values(bearerToken(sent.authorization)),
    ...values(sent.dpop),
  ];
}

/** Shorter values are no credential this server issues or accepts; replacing them would only let a sender garble its record. */
const SHORTEST_CREDENTIAL = 8;

/** `text` with each of `secrets` replaced, so that no message can carry a credential into the trail. */
export function withoutSecrets(text: string, secrets: string[]): string {
  return secrets.filter((secret) => secret.length >= SHORTEST_CREDENTIAL).reduce((out, secret) => out.split(secret).join('redacted'), text);
}

/** The record's facts from the refused answer and the request (pure). */
export function refusalOf(answer: { status: number; body: unknown }, sent: RequestSent, authenticatedClient: string | undefined):
  Pick<OAuthRequestRefused, 'status' | 'error' | 'description' | 'clientId' | 'clientAuthenticated' | 'grantType' | 'scope'> {
  const body = (answer.body && typeof answer.body === 'object' ? answer.body : {}) as { error?: unknown; error_description?: unknown };
  const error = typeof body.error === 'string' ? body.error : `http_${answer.status}`;
  const secrets = credentialsOf(sent);
  const description = typeof body.error_description === 'string' ? cut(withoutSecrets(body.error_description, secrets), 1000) : undefined;
  // A client whose assertion turned out to be replayed was found, but did not authenticate.
  const clientAuthenticated = authenticatedClient !== undefined && error !== 'invalid_client';
  const claimed = authenticatedClient ?? claimedClientId(sent);
  return {
    status: answer.status,
    error: error.slice(0, 100),
    description,
    clientId: claimed && cut(withoutSecrets(claimed, secrets), 200),
    clientAuthenticated,
    grantType: cut(values(sent.params.grant_type)[0], 100),
    scope: cut(values(sent.params.scope)[0], 2000),
  };
}

/**
 * Koa middleware (in front of the provider, behind the rate limits): records every error answer at the token,
 * introspection and revocation endpoints, a failure's too, which it answers in JSON whatever the client accepts.
 */
export function refusalsRecorded({ db, issuer, backlog, log }: { db: Db; issuer: string; backlog: AuditBacklog; log: Logger['log'] }) {
  return async function refusalRecorded(ctx: Context, next: Next) {
    const endpoint = ctx.method === 'POST' ? REFUSING_ENDPOINTS.get(routedPath(ctx.path)) : undefined;
    if (!endpoint) return next();
    try {
      await next();
    } catch (err) {
      const { status, error, description } = failureOf(ctx, err, log);
      ctx.status = status;
      ctx.body = { error, error_description: description };
    }
    if (ctx.status < 400 || refusedForAudit(ctx)) return;
    const oidc = (ctx as unknown as KoaContextWithOIDC).oidc as KoaContextWithOIDC['oidc'] | undefined;
    const sent = { params: (oidc?.body ?? {}) as Record<string, unknown>, authorization: ctx.get('authorization') || undefined, dpop: ctx.get('dpop') || undefined };
    const source = factsOf(db, ctx).source;
    const record = oauthRequestRefused({
      endpoint, recorded: new Date(), issuer, address: ctx.ip, requestId: ctx.state.requestId as string | undefined,
      ...refusalOf({ status: ctx.status, body: ctx.body }, sent, oidc?.client?.clientId),
      user: source?.user && auditUserOf(source.user),
      patient: source?.context?.launch.patient,
    });
    if (!(await backlog.record(record))) {
      log('warn', `a refused ${endpoint} request was answered without its record: the audit backlog is full or the store fails`, { request_id: ctx.state.requestId });
    }
  };
}
