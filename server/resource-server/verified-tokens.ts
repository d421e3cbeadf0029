// Tokens already verified, by the SHA-256 of the whole token, until they expire: a repeated token costs
// no cryptography. At most `size` entries; the oldest goes first. Never keyed by a part of the token
// (a copied signature over another payload must not hit).
import { createHash } from 'node:crypto';

export class VerifiedTokens<T> {
  private readonly entries = new Map<string, { value: T; until: number }>();

  constructor(private readonly size = 10_000) {}

  /** The cache key of a token. */
  static keyOf(token: string): string {
    return createHash('sha256').update(token).digest('base64url');
  }

  /** The value kept for `key`, while `now` (seconds) is before its end. */
  get(key: string, now: number): T | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    if (hit.until > now) return hit.value;
    this.entries.delete(key);
    return undefined;
  }

  /** Keeps `value` until `until` (seconds). */
  set(key: string, value: T, until: number): void {
    if (this.entries.size >= this.size) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { value, until });
  }

  delete(key: string): void {
    this.entries.delete(key);
  }
}
