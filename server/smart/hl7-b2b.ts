// HL7 UDAP "hl7-b2b" authorization extension (from a client assertion) to IHE IUA attributes
// (`extensions.ihe_iua` in the access token). Pure.

import { isPrivacyOfficerRole, type Coding } from '../hcs/codes.ts';
import type { IheIua } from '../hcs/token-claims.ts';

export class B2bError extends Error {
  override name = 'B2bError';
}

const V3_ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
/** OIDs that have a canonical FHIR code system URI. */
const KNOWN_SYSTEMS: Record<string, string> = {
  'urn:oid:2.16.840.1.113883.5.8': V3_ACT_REASON,
  'urn:oid:2.16.840.1.113883.6.101': 'http://nucc.org/provider-taxonomy',
};

/** `system#code` (UDAP's string form of a code) as a FHIR Coding; split on the last `#`. */
export function codingFromUdap(value: string): Coding {
  const hash = value.lastIndexOf('#');
  if (hash <= 0 || hash === value.length - 1) throw new B2bError(`"${value}" is not a code in the form system#code`);
  const system = value.slice(0, hash);
  return { system: KNOWN_SYSTEMS[system] ?? system, code: value.slice(hash + 1) };
}

const optionalString = (ext: Record<string, unknown>, key: string): string | undefined => {
  const value = ext[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !value) throw new B2bError(`hl7-b2b ${key} must be a non-empty string`);
  return value;
};

export function iuaFromHl7B2b(extension: unknown): IheIua {
  if (typeof extension !== 'object' || extension === null || Array.isArray(extension)) throw new B2bError('hl7-b2b must be an object');
  const ext = extension as Record<string, unknown>;
  if (ext.version !== '1') throw new B2bError('hl7-b2b version must be "1"');
  const organizationId = optionalString(ext, 'organization_id');
  if (!organizationId || !URL.canParse(organizationId)) throw new B2bError('hl7-b2b organization_id is required and must be a URI');
  const purposes = ext.purpose_of_use;
  if (!Array.isArray(purposes) || purposes.length === 0 || purposes.some((p) => typeof p !== 'string')) {
    throw new B2bError('hl7-b2b purpose_of_use is required: an array of system#code strings');
  }
  const role = optionalString(ext, 'subject_role');
  // The privacy-officer role lets a token rewrite policy data: only the authorization server's own user records grant it.
  if (role && isPrivacyOfficerRole(codingFromUdap(role))) throw new B2bError('hl7-b2b subject_role cannot claim the privacy-officer role');
  const attributes: IheIua = {
    subject_name: optionalString(ext, 'subject_name'),
    subject_id: optionalString(ext, 'subject_id'),
    subject_organization: optionalString(ext, 'organization_name'),
    subject_organization_id: organizationId,
    subject_role: role ? [codingFromUdap(role)] : undefined,
    purpose_of_use: (purposes as string[]).map(codingFromUdap),
  };
  return Object.fromEntries(Object.entries(attributes).filter(([, v]) => v !== undefined)) as IheIua;
}
