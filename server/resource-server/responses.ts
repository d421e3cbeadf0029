// The guard's answers: FHIR OperationOutcome bodies and RFC 6750 challenges. Pure.
import type { Refusal } from './types.ts';

export interface GuardResponse {
  status: number;
  headers: Record<string, string>;
  body?: unknown;
}

export const FHIR_JSON = 'application/fhir+json; charset=utf-8';

export function operationOutcome(severity: 'error' | 'warning' | 'information', code: string, diagnostics: string) {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, diagnostics }] };
}

const quoted = (value: string) => value.replace(/["\\]/g, '');

/** A refusal as a response: OperationOutcome body, and a Bearer challenge for 401 and scope 403s. */
export function refusalResponse(refusal: Refusal, realm: string, tokenSent: boolean): GuardResponse {
  const headers: Record<string, string> = { 'content-type': FHIR_JSON };
  if (refusal.status === 401) {
    // RFC 6750 3.1: no error code when the request carried no token at all.
    const error = tokenSent ? `, error="invalid_token", error_description="${quoted(refusal.message)}"` : '';
    headers['www-authenticate'] = `Bearer realm="${quoted(realm)}"${error}`;
  } else if (refusal.bearerError === 'insufficient_scope') {
    headers['www-authenticate'] = `Bearer realm="${quoted(realm)}", error="insufficient_scope", error_description="${quoted(refusal.message)}"`;
  }
  return { status: refusal.status, headers, body: operationOutcome('error', refusal.code, refusal.message) };
}

export const isRefusal = (value: unknown): value is Refusal =>
  typeof value === 'object' && value !== null && 'status' in value && 'code' in value && 'message' in value && !('resourceType' in value);
