// A refused token request (any error answer at the token endpoint, under any spelling of its path) is
// recorded as an IUA ITI-71 AuditEvent with a failure outcome. Its record is committed after the answer,
// through the bounded backlog that introspection's records use, so a refusal adds no commit before its
// answer; one the backlog cannot take (full, or the store failing) is still answered as the same refusal:
// nothing is granted either way. Requests over the token rate limit are answered (429) before this, so a
// client cannot write more refusals than that limit lets through.
import type { Context, Next } from 'koa';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { decodeJwt } from 'jose';
import type { Db } from '../../db.ts';
import type { Logger } from '../../ops/log.ts';
import type { AuditBacklog } from '../../audit/backlog.ts';
import { accessTokenRefused, SECRET_PARAMETERS, type AccessTokenRefused } from '../../audit/balp.ts';
import { auditUserOf } from '../../audit/security-events.ts';
import { routedPath } from '../../net/routed-path.ts';
import { factsOf } from './request.ts';
import { TOKEN_PATH } from './response.ts';

/** What a token request sent, as far as its record needs it. */
export interface TokenRequestSent {
  /** The form parameters (a repeated one as a list). */
  params: Record<string, unknown>;
  authorization?: string;
  dpop?: string;
}

/** The credentials a token request carries: `code` here is the authorization code, not a FHIR search parameter. */
const CREDENTIAL_PARAMETERS = new Set([...SECRET_PARAMETERS, 'code']);

const values = (value: unknown): string[] => (Array.isArray(value) ? value : [value]).filter((v): v is string => typeof v === 'string' && v !== '');
const cut = (value: string | undefined, max: number) => value?.slice(0, max);

function basicCredentials(authorization: string | undefined): { id: string; secret: string } | undefined {
  const encoded = /^Basic\s+(\S+)$/i.exec(authorization ?? '')?.[1];
  if (!encoded) return undefined;
  const basic = Buffer.from(encoded, 'base64').toString('utf8');
  const at = basic.indexOf(':');
  if (at < 0) return undefined;
  const decode = (part: string) => {
    try {
      return decodeURIComponent(part.replace(/\+/g, '%20'));
    } catch {
      return part;
    }
  };
  return { id: decode(basic.slice(0, at)), secret: decode(basic.slice(at + 1)) };
}

/** The client_id a token request names: its parameter, else its Basic user, else its assertion's sub (none of them verified). */
export function claimedClientId(sent: TokenRequestSent): string | undefined {
  const [param] = values(sent.params.client_id);
  if (param) return param;
  const basic = basicCredentials(sent.authorization)?.id;
  if (basic) return basic;
  const [assertion] = values(sent.params.client_assertion);
  try {
    const sub = assertion ? decodeJwt(assertion).sub : undefined;
    return sub || undefined;
  } catch {
    return undefined;
  }
}

/** Every credential value the request carries (code, refresh token, assertion, secret, code_verifier, DPoP proof, ...). */
export function credentialsOf(sent: TokenRequestSent): string[] {
  return [
    ...Object.entries(sent.params).flatMap(([name, value]) => (CREDENTIAL_PARAMETERS.has(name.toLowerCase()) ? values(value) : [])),
    ...values(basicCredentials(sent.authorization)?.secret),
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
export function refusalOf(answer: { status: number; body: unknown }, sent: TokenRequestSent, authenticatedClient: string | undefined):
  Pick<AccessTokenRefused, 'status' | 'error' | 'description' | 'clientId' | 'clientAuthenticated' | 'grantType' | 'scope'> {
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

/** Koa middleware (in front of the provider, behind the token rate limit): records every error answer at the token endpoint. */
export function tokenRefusalsRecorded({ db, issuer, backlog, log }: { db: Db; issuer: string; backlog: AuditBacklog; log: Logger['log'] }) {
  return async function tokenRefusalRecorded(ctx: Context, next: Next) {
    if (ctx.method !== 'POST' || routedPath(ctx.path) !== TOKEN_PATH) return next();
    await next();
    if (ctx.status < 400) return;
    const oidc = (ctx as unknown as KoaContextWithOIDC).oidc as KoaContextWithOIDC['oidc'] | undefined;
    const sent = { params: (oidc?.body ?? {}) as Record<string, unknown>, authorization: ctx.get('authorization') || undefined, dpop: ctx.get('dpop') || undefined };
    const source = factsOf(db, ctx).source;
    const record = accessTokenRefused({
      recorded: new Date(), issuer, address: ctx.ip, requestId: ctx.state.requestId as string | undefined,
      ...refusalOf({ status: ctx.status, body: ctx.body }, sent, oidc?.client?.clientId),
      user: source?.user && auditUserOf(source.user),
      patient: source?.context?.launch.patient,
    });
    if (!(await backlog.record(record))) {
      log('warn', 'a refused token request was answered without its record: the audit backlog is full or the store fails', { request_id: ctx.state.requestId });
    }
  };
}
