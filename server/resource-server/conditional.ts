// Conditional reads (RFC 9110 §13.1.2-3), answered by the guard itself: the upstream never sees the client's
// If-None-Match, since its 304 would come before the rules and tell a hidden resource's existence and version.
// Pure.

/** What a conditional read compares: the stored version's ETag and meta.lastUpdated. */
export interface Validators {
  etag?: string;
  lastUpdated?: string;
}

/** W/"3" for versionId 3. */
export const weakETag = (versionId: unknown): string | undefined =>
  (typeof versionId === 'string' && versionId !== '' ? `W/"${versionId}"` : undefined);

const opaque = (tag: string) => tag.trim().replace(/^W\//, '');

/**
 * Whether the client's copy is current: If-None-Match names the ETag (weak comparison) or is `*`; without
 * If-None-Match, If-Modified-Since is not before meta.lastUpdated (to the second, as HTTP dates go).
 */
export function notModified(headers: Readonly<Record<string, string | undefined>>, validators: Validators): boolean {
  const ifNoneMatch = headers['if-none-match'];
  if (ifNoneMatch !== undefined) {
    if (ifNoneMatch.trim() === '*') return true;
    return validators.etag !== undefined && ifNoneMatch.split(',').some((tag) => opaque(tag) === opaque(validators.etag!));
  }
  const since = Date.parse(headers['if-modified-since'] ?? '');
  const modified = Date.parse(validators.lastUpdated ?? '');
  if (Number.isNaN(since) || Number.isNaN(modified)) return false;
  return Math.floor(modified / 1000) <= Math.floor(since / 1000);
}
