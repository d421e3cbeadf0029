// What a FHIR request may carry as its body, the same for every adapter (Koa, node:http, Express): JSON
// (a resource, a Bundle, a JSON Patch) or a form (POST _search). A body that cannot be taken becomes a
// refusal that the guard answers itself, so that it is audited with the token that sent it.
import type { Refusal } from './types.ts';

export const JSON_BODY_TYPES: readonly string[] = ['application/json', 'application/fhir+json', 'application/json-patch+json'];
const FORM = 'application/x-www-form-urlencoded';

/** How a body of this Content-Type is parsed, or undefined when the guard does not take it. */
export function bodyKind(contentType: string | undefined): 'json' | 'form' | undefined {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (JSON_BODY_TYPES.includes(type)) return 'json';
  return type === FORM ? 'form' : undefined;
}

export const unsupportedBody = (contentType: string | undefined): Refusal =>
  ({ status: 415, code: 'not-supported', message: `a request body must be application/fhir+json (or a form for _search), not ${contentType || 'untyped'}` });

export const bodyTooLarge: Refusal = { status: 413, code: 'too-costly', message: 'the request body is too large' };

export const malformedBody: Refusal = { status: 400, code: 'invalid', message: 'the request body is not valid JSON or form data' };

/** Thrown by an adapter's body reader; the adapter hands its refusal to the guard. */
export class BodyRefused extends Error {
  constructor(readonly refusal: Refusal) {
    super(refusal.message);
  }
}
