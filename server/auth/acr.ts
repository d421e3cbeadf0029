// How strongly a person signed in: RFC 8176 `amr` values and this server's `acr` levels. Pure.

export const ACR = {
  /** Password only. */
  pwd: 'urn:smart-auth:acr:pwd',
  /** Password and a second factor (TOTP or recovery code), or better. */
  mfa: 'urn:smart-auth:acr:mfa',
  /** Phishing-resistant: a passkey with user verification. */
  phr: 'urn:smart-auth:acr:phr',
} as const;

export type AcrLevel = (typeof ACR)[keyof typeof ACR];

/** Weakest first: a level satisfies a request for itself or any level before it. */
export const ACR_VALUES: readonly AcrLevel[] = [ACR.pwd, ACR.mfa, ACR.phr];

const rank = (acr: string | undefined) => ACR_VALUES.indexOf(acr as AcrLevel);

/** How a sign-in was made. */
export type SignInMethod = 'pwd' | 'otp' | 'recovery' | 'hwk' | 'swk';

/** The RFC 8176 `amr` of a sign-in: the password and/or second factor used; `mfa` when two were. */
export function amrOf(methods: readonly SignInMethod[]): string[] {
  const amr = [...new Set(methods.map((m) => (m === 'recovery' ? 'otp' : m)))];
  // A passkey with user verification is a possession and a user-verification factor on its own.
  const factors = methods.includes('hwk') || methods.includes('swk') ? 2 : new Set(amr).size;
  return factors >= 2 ? [...amr, 'mfa'] : amr;
}

/** The `acr` level an `amr` reaches. */
export function acrOf(amr: readonly string[]): AcrLevel {
  if (amr.includes('hwk') || amr.includes('swk')) return ACR.phr;
  return amr.includes('mfa') ? ACR.mfa : ACR.pwd;
}

/**
 * The `acr` and `amr` a token carries: those of the sign-in, joined by a step-up made for this
 * authorization (break-the-glass). A sign-in without `amr` keeps its `acr` as it is.
 */
export function authenticationClaims(signIn: { acr?: unknown; amr?: unknown } | undefined, stepUp: readonly string[] = []): { acr?: string; amr?: string[] } {
  const amr = Array.isArray(signIn?.amr) ? (signIn.amr as string[]) : [];
  if (!amr.length && !stepUp.length) return typeof signIn?.acr === 'string' ? { acr: signIn.acr } : {};
  const combined = amrOf([...amr, ...stepUp].filter((m) => m !== 'mfa') as SignInMethod[]);
  return { acr: acrOf(combined), amr: combined };
}

/** Whether a sign-in at `have` is enough for `want` (undefined: anything is). */
export function acrSatisfies(have: string | undefined, want: AcrLevel | undefined): boolean {
  return !want || rank(have) >= rank(want);
}

/**
 * The level an authorization request asks for: the weakest known level among `acr_values` (OIDC Core
 * 3.1.2.1, voluntary) and `claims.id_token.acr` / `claims.userinfo.acr` (`value` or `values`); unknown
 * values are ignored. Asking for a level forces it: a password-only session signs in again.
 */
export function requestedAcr(params: { acr_values?: unknown; claims?: unknown }): AcrLevel | undefined {
  const asked: string[] = [];
  if (typeof params.acr_values === 'string') asked.push(...params.acr_values.split(' '));
  let claims: unknown = params.claims;
  if (typeof claims === 'string') {
    try {
      claims = JSON.parse(claims);
    } catch {
      claims = undefined;
    }
  }
  for (const where of ['id_token', 'userinfo'] as const) {
    const acr = (claims as Record<string, Record<string, { value?: unknown; values?: unknown }> | undefined> | undefined)?.[where]?.acr;
    if (typeof acr?.value === 'string') asked.push(acr.value);
    if (Array.isArray(acr?.values)) asked.push(...acr.values.filter((v): v is string => typeof v === 'string'));
  }
  const known = asked.map(rank).filter((r) => r >= 0);
  return known.length ? ACR_VALUES[Math.min(...known)] : undefined;
}
