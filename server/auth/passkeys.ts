// Passkeys (WebAuthn Level 3) with @simplewebauthn/server: the relying-party id is the issuer's host,
// user verification is required (so a passkey alone is a phishing-resistant multi-factor sign-in),
// and every challenge is stored once in the database and used up by the check.
import type { AuthenticationResponseJSON, AuthenticatorTransport, RegistrationResponseJSON } from '@simplewebauthn/server';
import type { Db } from '../db.ts';
import { nowSeconds } from '../db.ts';
import type { User } from '../oidc/users.ts';
import { addPasskey, findPasskey, passkeysOf, passkeyUsed } from './factors.ts';
import type { SignInMethod } from './acr.ts';

const CHALLENGE_TTL = 300;

export interface RelyingParty {
  /** The issuer's host name. */
  id: string;
  /** The issuer's origin: where the browser must have been. */
  origin: string;
  name: string;
}

/** The WebAuthn library (about 28 MB of memory) is loaded when a passkey is first used, not at start. */
const webauthn = () => import('@simplewebauthn/server');

export const relyingPartyOf = (issuer: string): RelyingParty => {
  const url = new URL(issuer);
  return { id: url.hostname, origin: url.origin, name: 'smart-auth' };
};

async function storeChallenge(db: Db, challenge: string, userId: string | undefined): Promise<void> {
  await db('webauthn_challenges').where('expires_at', '<=', nowSeconds()).delete();
  await db('webauthn_challenges').insert({ challenge, user_id: userId ?? null, expires_at: nowSeconds() + CHALLENGE_TTL });
}

/** Uses up a challenge issued for this user (or for anyone, when `userId` is undefined); false when it was not live. */
async function consumeChallenge(db: Db, challenge: string, userId: string | undefined): Promise<boolean> {
  const q = db('webauthn_challenges').where('challenge', challenge).andWhere('expires_at', '>', nowSeconds());
  if (userId) q.andWhere('user_id', userId);
  else q.whereNull('user_id');
  return (await q.delete()) === 1;
}

/** The options to create a passkey for a signed-in (or password-checked) user. */
export async function registrationOptions(db: Db, rp: RelyingParty, user: User) {
  const existing = await passkeysOf(db, user.id);
  const options = await (await webauthn()).generateRegistrationOptions({
    rpName: rp.name, rpID: rp.id,
    userName: user.username, userDisplayName: user.name ?? user.username,
    userID: new TextEncoder().encode(user.id),
    attestationType: 'none',
    excludeCredentials: existing.map((k) => ({ id: k.credentialId, transports: k.transports as AuthenticatorTransport[] })),
    authenticatorSelection: { residentKey: 'required', userVerification: 'required' },
  });
  await storeChallenge(db, options.challenge, user.id);
  return options;
}

/**
 * Checks the browser's answer and stores the passkey; its id, or undefined when the answer is not valid.
 * `sessionId`: the session registering it, whose sign-in goes on (addPasskey ends the other set-ups).
 */
export async function registerPasskey(db: Db, rp: RelyingParty, user: User, response: unknown, sessionId: string): Promise<string | undefined> {
  try {
    const result = await (await webauthn()).verifyRegistrationResponse({
      response: response as RegistrationResponseJSON,
      expectedChallenge: (challenge) => consumeChallenge(db, challenge, user.id),
      expectedOrigin: rp.origin, expectedRPID: rp.id, requireUserVerification: true,
    });
    if (!result.verified) return undefined;
    const { credential, credentialDeviceType } = result.registrationInfo;
    return await addPasskey(db, user.id, {
      credentialId: credential.id, publicKey: credential.publicKey, counter: credential.counter,
      deviceType: credentialDeviceType, transports: credential.transports ?? [],
    }, sessionId);
  } catch {
    return undefined; // malformed answers, unknown challenges, a credential registered twice
  }
}

/** The options to sign in with a passkey: any of the user's, or (no user yet) any discoverable one. */
export async function authenticationOptions(db: Db, rp: RelyingParty, user?: User) {
  const keys = user ? await passkeysOf(db, user.id) : [];
  const options = await (await webauthn()).generateAuthenticationOptions({
    rpID: rp.id, userVerification: 'required',
    allowCredentials: keys.map((k) => ({ id: k.credentialId, transports: k.transports as AuthenticatorTransport[] })),
  });
  await storeChallenge(db, options.challenge, user?.id);
  return options;
}

/**
 * Checks a passkey assertion; the user it proves and the method (`hwk` for a device-bound passkey,
 * `swk` for a synced one), or undefined. With `user`, only that user's passkeys count.
 */
export async function verifyPasskey(db: Db, rp: RelyingParty, response: unknown, user?: User): Promise<{ userId: string; method: Extract<SignInMethod, 'hwk' | 'swk'> } | undefined> {
  const answer = response as AuthenticationResponseJSON;
  if (typeof answer?.id !== 'string') return undefined;
  const key = await findPasskey(db, answer.id);
  if (!key || (user && key.userId !== user.id)) return undefined;
  try {
    const result = await (await webauthn()).verifyAuthenticationResponse({
      response: answer,
      expectedChallenge: (challenge) => consumeChallenge(db, challenge, user?.id),
      expectedOrigin: rp.origin, expectedRPID: rp.id, requireUserVerification: true,
      credential: { id: key.credentialId, publicKey: key.publicKey, counter: key.counter, transports: key.transports as AuthenticatorTransport[] },
    });
    if (!result.verified || !(await passkeyUsed(db, key.id, result.authenticationInfo.newCounter))) return undefined;
    return { userId: key.userId, method: key.deviceType === 'multiDevice' ? 'swk' : 'hwk' };
  } catch {
    return undefined;
  }
}
