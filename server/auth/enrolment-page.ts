// What the TOTP set-up page shows: the secret of the user's unconfirmed authenticator (a new one
// if there is none) as a QR code of its otpauth:// URI and as text. A set-up starts with startTotp
// (a new secret); this page shows its secret again after a wrong code or a reload.
import type { Db } from '../db.ts';
import type { Config } from '../config.ts';
import type { User } from '../oidc/users.ts';
import { pendingTotp, startTotp } from './factors.ts';
import { otpauthUri } from './totp.ts';

/** The name authenticator apps show for this server: the issuer's host name (no port: the otpauth key URI format forbids a colon in it). */
export const totpIssuerName = (issuer: string) => new URL(issuer).hostname;

export async function enrolmentPage(db: Db, config: Pick<Config, 'issuer' | 'keyEncryptionSecret'>, user: User): Promise<{ qr: string; secret: string }> {
  const { secret } = (await pendingTotp(db, user.id, config.keyEncryptionSecret)) ?? (await startTotp(db, user.id, config.keyEncryptionSecret));
  // The QR code library is loaded when someone first enrols, not at start.
  const { default: QRCode } = await import('qrcode');
  const qr = await QRCode.toDataURL(otpauthUri(secret, totpIssuerName(config.issuer), user.username), { margin: 2, width: 220 });
  return { qr, secret: secret.replace(/(.{4})/g, '$1 ').trim() };
}
