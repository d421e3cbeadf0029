// What the TOTP set-up page of a session shows: the secret of its unconfirmed authenticator (a new one
// if it has none) as a QR code of its otpauth:// URI and as text, again after a wrong code or a reload.
import type { Db } from '../db.ts';
import type { Config } from '../config.ts';
import type { User } from '../oidc/users.ts';
import { pendingTotp, startTotp } from './factors.ts';
import { otpauthUri } from './totp.ts';

/** The name authenticator apps show for this server: the issuer's host name (no port: the otpauth key URI format forbids a colon in it). */
export const totpIssuerName = (issuer: string) => new URL(issuer).hostname;

/** `sessionId`: the session (user_sessions.id) doing the set-up; only it is shown (and can confirm) its secret. */
export async function enrolmentPage(db: Db, config: Pick<Config, 'issuer' | 'keyEncryptionSecret'>, user: User, sessionId: string): Promise<{ qr: string; secret: string }> {
  const { secret } = (await pendingTotp(db, user.id, sessionId, config.keyEncryptionSecret)) ?? (await startTotp(db, user.id, sessionId, config.keyEncryptionSecret));
  // The QR code library is loaded when someone first enrols, not at start.
  const { default: QRCode } = await import('qrcode');
  const qr = await QRCode.toDataURL(otpauthUri(secret, totpIssuerName(config.issuer), user.username), { margin: 2, width: 220 });
  return { qr, secret: secret.replace(/(.{4})/g, '$1 ').trim() };
}
