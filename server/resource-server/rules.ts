// Every rule beyond scopes, and the audit, built one way for every shape of the guard: the bundled
// /fhir, the module in someone else's service, and scripts/guard-proxy.ts. Labels and clearance, test
// data, purpose of use, the patients' Consent (read from the protected FHIR server itself), de-identification.
import { randomBytes } from 'node:crypto';
import { createPrivacyPolicy } from '../privacy/pipeline.ts';
import { createConsentCache, type ConsentCache } from '../privacy/consent.ts';
import { purposeRefusal } from '../privacy/purpose.ts';
import { loadPolicy, type HcsPolicy } from '../hcs/policy.ts';
import { CONFIDENTIALITY_SCALE, type ConfidentialityCode } from '../hcs/codes.ts';
import type { DeidPolicy } from '../privacy/deidentify.ts';
import { accessAuditFrom } from '../audit/access.ts';
import { accessAuditEvents } from '../audit/balp.ts';
import type { AuditEvent } from '../audit/types.ts';
import { oneOf, type AccessRecord, type GuardOptions } from './guard.ts';
import { UpstreamError, type Upstream } from './upstream.ts';
import type { FhirBundle, FhirResource } from './types.ts';

/** The privacy rules; each is on unless turned off here. */
export interface GuardRules {
  /** The confidentiality of resources without one (default N). */
  defaultConfidentiality?: ConfidentialityCode;
  /** Purposes of use (with what is-a them) whose answers are de-identified (default HRESCH); [] turns de-identification off. */
  deidentifyPurposes?: readonly string[];
  /** Pseudonym and date-shift secret (16+ characters): the same key gives the same pseudonyms everywhere (default: random per process). */
  deidentificationKey?: string;
  deidentifyDates?: DeidPolicy['dates'];
  /** Tell a token that hit hidden data that break-the-glass exists (default false: that leaks the data exists). */
  breakGlassHint?: boolean;
  /** Read each patient's Consent resources from the upstream and enforce them (default true). */
  consent?: boolean;
  /** How long a patient's consents are reused, in ms (default 60000; a Consent written through the guard counts at once). */
  consentCacheMs?: number;
  /** Where no consent applies: the organization's default (default permit). */
  withoutConsent?: 'permit' | 'deny';
  /** The HCS policy: the role x purpose-of-use rules every user's token must satisfy, and the label vocabulary (default: the bundled policy); false turns the purpose check off. */
  purposePolicy?: HcsPolicy | false;
  /** A further check after the purpose of use. */
  authorize?: GuardOptions['authorize'];
}

/**
 * A patient's consents, read from the FHIR server the guard protects and cached briefly. When they cannot
 * be read the request fails closed: 502, as when the data itself cannot be read.
 */
export function upstreamConsents(upstream: Upstream, ttlMs?: number): ConsentCache {
  return createConsentCache(async (patient) => {
    const res = await upstream.send({ method: 'GET', path: `Consent?patient=${encodeURIComponent(`Patient/${patient}`)}&_count=200` });
    if (res.status !== 200) throw new UpstreamError(502, `the consents of a patient could not be read (the FHIR server answered ${res.status})`);
    return ((res.body as FhirBundle).entry ?? []).flatMap((e) => (e.resource ? [e.resource as FhirResource] : []));
  }, { ttlMs });
}

/** The guard options that enforce the rules: `resourcePolicy` and the purpose-of-use check in `authorize`. */
export function ruleOptions(upstream: Upstream, rules: GuardRules = {}): Pick<GuardOptions, 'resourcePolicy' | 'authorize'> {
  checkRules(rules);
  const purposePolicy = rules.purposePolicy === undefined ? loadPolicy() : rules.purposePolicy;
  return {
    resourcePolicy: createPrivacyPolicy({
      defaultConfidentiality: rules.defaultConfidentiality ?? 'N',
      // The label vocabulary (known sensitivities, harmless labels) is the policy's: the bundled one when the check is off.
      labels: (purposePolicy || loadPolicy()).labels,
      deidentifyPurposes: rules.deidentifyPurposes ?? ['HRESCH'],
      deidentification: { key: rules.deidentificationKey ?? randomBytes(32).toString('base64url'), dates: rules.deidentifyDates ?? 'truncate-year' },
      breakGlassHint: rules.breakGlassHint ?? false,
      withoutConsent: rules.withoutConsent ?? 'permit',
      consents: rules.consent === false ? undefined : upstreamConsents(upstream, rules.consentCacheMs),
    }),
    authorize: purposePolicy || rules.authorize
      ? async (token, interaction) => (purposePolicy ? purposeRefusal(purposePolicy, token) : undefined) ?? (await rules.authorize?.(token, interaction))
      : undefined,
  };
}

/** A rule setting left out takes its default; one the rules do not know would be followed as another (`Deny` as permit). */
function checkRules(rules: GuardRules): void {
  oneOf('withoutConsent', rules.withoutConsent, ['permit', 'deny']);
  oneOf('deidentifyDates', rules.deidentifyDates, ['truncate-year', 'truncate-month', 'shift']);
  oneOf('defaultConfidentiality', rules.defaultConfidentiality, CONFIDENTIALITY_SCALE);
  if (rules.deidentifyPurposes !== undefined && !(Array.isArray(rules.deidentifyPurposes) && rules.deidentifyPurposes.every((p) => typeof p === 'string'))) {
    throw new TypeError('deidentifyPurposes must be an array of purpose-of-use codes ([] turns de-identification off)');
  }
  if (rules.deidentificationKey !== undefined && !(typeof rules.deidentificationKey === 'string' && rules.deidentificationKey.length >= 16)) {
    throw new TypeError('deidentificationKey must be at least 16 characters');
  }
}

/** The guard's `audit` option: each access as BALP AuditEvents, handed to `append` before the answer goes out. */
export function balpAudit(base: string, append: (events: AuditEvent[]) => Promise<void>): (record: AccessRecord) => Promise<void> {
  return (record) => append(accessAuditEvents(accessAuditFrom(record, base, new Date())));
}

/**
 * Appends to a FHIR audit record repository (IHE ATNA / BALP): `PUT {url}/AuditEvent/{id}` each event,
 * so a retry never duplicates one. Anything but a 2xx fails the append (and the guard answers 503).
 */
export function auditRepository(url: string, options: { timeoutMs?: number; headers?: Record<string, string> } = {}): (events: AuditEvent[]) => Promise<void> {
  const base = url.replace(/\/+$/, '');
  return async (events) => {
    for (const event of events) {
      const res = await fetch(`${base}/AuditEvent/${encodeURIComponent(String(event.id))}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/fhir+json', ...options.headers },
        body: JSON.stringify(event),
        signal: AbortSignal.timeout(options.timeoutMs ?? 10_000),
      });
      await res.arrayBuffer();
      if (!res.ok) throw new Error(`the audit repository answered ${res.status}`);
    }
  };
}
