// The patients a user may pick for an app: read from the FHIR server the app named in `aud`, through that
// server's guard, with the user's own rights — a one-minute token for the user (scope user/Patient.rs, the
// user's clearance and purpose of use) that only this server uses. The bundled /fhir is asked in process,
// every base of ADDITIONAL_FHIR_BASES over HTTP. Labels, consent, test data and the user's patient list
// apply as they will to the app; the reads are audited like any other.
import { randomUUID } from 'node:crypto';
import type { Config } from '../config.ts';
import type { User } from '../oidc/users.ts';
import { appTokenClaims } from '../oidc/token/claims.ts';
import type { Guard } from '../resource-server/guard.ts';
import { summarise, type PatientSummary } from './patient-directory.ts';
import type { FhirBundle, FhirResource } from './types.ts';

/** The client named in the picker's tokens and in the audit records of its reads. */
export const PICKER_CLIENT = 'patient-picker';
const TOKEN_SECONDS = 60;
const SEARCH = 'Patient?_count=200';

export interface UserPatientsDeps {
  config: Pick<Config, 'issuer' | 'fhirBase' | 'fhirAudiences' | 'policy' | 'upstreamTimeout'>;
  /** Signs an RFC 9068 access token (typ at+jwt) with the server's key. */
  signAccessToken(claims: Record<string, unknown>): Promise<string>;
  /** The bundled /fhir guard. */
  guard: Guard;
  /** Where a server that could not be read is reported (a warning). */
  warn(message: string, fields: Record<string, unknown>): void;
}

export type UserPatients = (user: User, aud: string, purpose: string | undefined) => Promise<PatientSummary[]>;

export function userPatients(deps: UserPatientsDeps): UserPatients {
  const { config } = deps;

  async function search(aud: string, token: string): Promise<{ status: number; body?: unknown }> {
    if (aud === config.fhirBase) return deps.guard.handle({ method: 'GET', path: `/${SEARCH}`, headers: { authorization: `Bearer ${token}` } });
    const res = await fetch(`${aud}/${SEARCH}`, { headers: { authorization: `Bearer ${token}`, accept: 'application/fhir+json' }, signal: AbortSignal.timeout(config.upstreamTimeout * 1000) });
    return { status: res.status, body: res.ok ? await res.json() : undefined };
  }

  /**
   * The Patients of a searchset, or why there are none to read: a server that is down, slow or answers
   * an error or no Bundle lists nobody, and the sign-in goes on.
   */
  async function patientsAt(aud: string, token: string): Promise<FhirResource[] | string> {
    try {
      const { status, body } = await search(aud, token);
      if (status !== 200) return `answered ${status}`;
      const entries = (body as FhirBundle | null)?.entry ?? [];
      return Array.isArray(entries) ? entries.flatMap((e) => (e?.resource?.resourceType === 'Patient' ? [e.resource] : [])) : 'answered no Bundle';
    } catch (err) {
      if (err instanceof SyntaxError) return 'answered no JSON';
      const cause = (err as { cause?: { code?: unknown } }).cause?.code;
      return typeof cause === 'string' ? cause : (err as Error).name;
    }
  }

  return async (user, aud, purpose) => {
    // Only a base this server issues tokens for: never a URL from the request elsewhere.
    if (!config.fhirAudiences.includes(aud)) return [];
    const now = Math.floor(Date.now() / 1000);
    const token = await deps.signAccessToken({
      ...appTokenClaims(config, aud, user, { launch: { need_patient_banner: false, smart_style_url: '' }, purposeOfUse: purpose }),
      iss: config.issuer, aud, sub: user.id, client_id: PICKER_CLIENT, scope: 'user/Patient.rs', jti: randomUUID(), iat: now, exp: now + TOKEN_SECONDS,
    });
    const found = await patientsAt(aud, token);
    // A server that cannot be read lists nobody: the picker says there is no one to choose.
    if (typeof found === 'string') {
      deps.warn('the patient picker could not read the FHIR server: it lists nobody', { fhir_base: aud, reason: found });
      return [];
    }
    return found.map(summarise);
  };
}
