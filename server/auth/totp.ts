// TOTP (RFC 6238): SHA-1, 6 digits, 30-second steps, the usual authenticator-app parameters. Pure.
import { Secret, TOTP } from 'otpauth';

const PERIOD = 30;

const totp = (secret: string, issuer: string, label: string) =>
  new TOTP({ issuer, label, algorithm: 'SHA1', digits: 6, period: PERIOD, secret: Secret.fromBase32(secret) });

/** A new random secret (160 bits, RFC 4226's recommendation), base32. */
export const newTotpSecret = (): string => new Secret({ size: 20 }).base32;

/** The otpauth:// URI an authenticator app reads (from a QR code or typed in). */
export const otpauthUri = (secret: string, issuer: string, username: string): string => totp(secret, issuer, username).toString();

/** The code for a time (tests compute codes this way, as an authenticator app does). */
export const totpCode = (secret: string, at = Date.now()): string => totp(secret, 'x', 'x').generate({ timestamp: at });

/**
 * The time step a code belongs to, accepting one step either side of `at` (clock drift), or undefined.
 * The caller refuses a step it has accepted before.
 */
export function totpStep(secret: string, code: string, at = Date.now()): number | undefined {
  if (!/^\d{6}$/.test(code)) return undefined;
  const delta = totp(secret, 'x', 'x').validate({ token: code, timestamp: at, window: 1 });
  return delta === null ? undefined : Math.floor(at / 1000 / PERIOD) + delta;
}
