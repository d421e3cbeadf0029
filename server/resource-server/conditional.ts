// Conditional requests (RFC 9110 §13), evaluated by the guard itself after every rule, against the version
// the token may see: an upstream answering a condition first (304, 412) would tell a hidden resource's
// existence and version. Only a write the rules allowed takes its If-Match upstream too (see
// UPSTREAM_CONDITIONS). Pure.
import type { Refusal } from './types.ts';

/** What a condition compares: the stored version's ETag and meta.lastUpdated. */
export interface Validators {
  etag?: string;
  lastUpdated?: string;
}

/** The request headers that make a request conditional (If-None-Exist: a conditional create, refused); never passed upstream before the rules decided. */
export const CONDITIONAL_HEADERS: readonly string[] = ['if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since', 'if-none-exist'];

/** FHIR's version-aware update: an allowed write sends If-Match on, so the upstream checks it as it writes. */
export const UPSTREAM_CONDITIONS: readonly string[] = ['if-match'];

/** W/"3" for versionId 3. */
export const weakETag = (versionId: unknown): string | undefined =>
  (typeof versionId === 'string' && versionId !== '' ? `W/"${versionId}"` : undefined);

/** A stored resource's validators: the FHIR server's ETag, else W/"versionId". */
export const validatorsOf = (resource: { meta?: { versionId?: string; lastUpdated?: string } }, etag?: string | null): Validators =>
  ({ etag: etag || weakETag(resource.meta?.versionId), lastUpdated: resource.meta?.lastUpdated });

const opaque = (tag: string) => tag.trim().replace(/^W\//, '');

/** `*` matches any stored version; a list matches when it names the stored ETag (weak comparison, as FHIR's W/"n" needs). */
function matches(list: string, current: Validators | undefined): boolean {
  if (!current) return false;
  if (list.trim() === '*') return true;
  return current.etag !== undefined && list.split(',').some((tag) => opaque(tag) === opaque(current.etag!));
}

/** Whether `modified` is after the HTTP date `since` (to the second); undefined when either is unknown. */
function modifiedSince(since: string | undefined, modified: string | undefined): boolean | undefined {
  const at = Date.parse(since ?? '');
  const changed = Date.parse(modified ?? '');
  if (Number.isNaN(at) || Number.isNaN(changed)) return undefined;
  return Math.floor(changed / 1000) > Math.floor(at / 1000);
}

/**
 * RFC 9110 §13.2.2, in its order: what the conditions make of a request on the version `current`
 * (undefined: nothing stored). 'not-modified' (304) for GET and HEAD only; 'failed' is a 412.
 * A date not known (de-identified answers do not tell theirs) is no condition at all.
 */
export function precondition(
  method: string, headers: Readonly<Record<string, string | undefined>>, current: Validators | undefined,
): 'pass' | 'not-modified' | 'failed' {
  const read = method === 'GET' || method === 'HEAD';
  if (headers['if-match'] !== undefined) {
    if (!matches(headers['if-match'], current)) return 'failed';
  } else if (modifiedSince(headers['if-unmodified-since'], current?.lastUpdated) === true) {
    return 'failed';
  }
  if (headers['if-none-match'] !== undefined) {
    if (matches(headers['if-none-match'], current)) return read ? 'not-modified' : 'failed';
  } else if (read && modifiedSince(headers['if-modified-since'], current?.lastUpdated) === false) {
    return 'not-modified';
  }
  return 'pass';
}

export const preconditionFailed: Refusal = {
  status: 412, code: 'conflict', message: 'the resource is not in the state the request\'s If-Match, If-None-Match or If-Unmodified-Since names',
};
