// What a new password must be (NIST SP 800-63B 5.1.1.2): long enough, not one of the most common
// passwords, not the username. Pure; the list is bundled (common-passwords.txt, one per line).
import { readFileSync } from 'node:fs';

export const MIN_PASSWORD_LENGTH = 8;
const MAX_PASSWORD_LENGTH = 256;

const COMMON = new Set(readFileSync(new URL('./common-passwords.txt', import.meta.url), 'utf8').split('\n').map((l) => l.trim().toLowerCase()).filter(Boolean));

/** Why a password cannot be used, or undefined when it can. */
export function passwordProblem(password: string, username: string): string | undefined {
  if (password.length < MIN_PASSWORD_LENGTH) return `The new password must have at least ${MIN_PASSWORD_LENGTH} characters.`;
  if (password.length > MAX_PASSWORD_LENGTH) return `The new password must have at most ${MAX_PASSWORD_LENGTH} characters.`;
  const lower = password.toLowerCase();
  if (COMMON.has(lower)) return 'That password is one of the most common ones. Choose another.';
  if (lower.includes(username.toLowerCase())) return 'The new password must not contain your username.';
  return undefined;
}
