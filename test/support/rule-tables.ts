// For the token rules' table tests: what an oidc-provider error tells the client.
import assert from 'node:assert/strict';

/** The OAuth error an oidc-provider error answers with, and its message: the description, or for invalid_client and invalid_grant (whose descriptions are fixed) the detail. */
export function refusalOf(err: unknown): { error: string; description: string } {
  const e = err as { error?: unknown; error_description?: unknown; error_detail?: unknown };
  assert.equal(typeof e.error, 'string', `not an OAuth error: ${String(err)}`);
  return { error: String(e.error), description: String(e.error_detail ?? e.error_description) };
}

/** Asserts that `run` is refused with the OAuth `error` and exactly `description`. */
export function assertRefused(run: () => unknown, error: string, description: string): void {
  let thrown: unknown;
  try {
    run();
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown, `expected ${error}, but it was accepted`);
  assert.deepEqual(refusalOf(thrown), { error, description });
}
