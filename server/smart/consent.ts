// What the consent page offers and what a submitted consent grants. Pure.
import { covers, describeScope, formatScope, narrowedAlternatives, parseScope, parseScopes, type ResourceScope, type Scope } from './scopes.ts';

export interface ConsentItem {
  scope: string;
  description: string;
  checked: boolean;
}

export interface ConsentGroup {
  title: string;
  items: ConsentItem[];
  /** Narrower scopes the person may share instead (unchecked by default). */
  alternatives: ConsentItem[];
}

export interface ConsentChoices {
  groups: ConsentGroup[];
  /** Every scope the form may return, in display order. */
  offered: string[];
  wildcard: boolean;
  offline: boolean;
  patientScopes: boolean;
  /** `launch` was asked for: the context of an EHR launch. */
  ehrContext: boolean;
}

function groupTitle(s: Scope): string {
  if (s.kind === 'resource') return s.type === '*' ? 'All health data' : s.type;
  if (s.kind === 'refresh') return 'Lasting access';
  return 'Sign-in and launch';
}

/** The consent form for a grantable scope string (already limited to what the client may get). */
export function consentChoices(grantable: string, opts: { patientIsUser?: boolean } = {}): ConsentChoices {
  const { scopes } = parseScopes(grantable);
  const groups = new Map<string, ConsentGroup>();
  const requested = new Set(scopes.map(formatScope));
  const alreadyOffered = new Set<string>();

  for (const s of scopes) {
    const title = groupTitle(s);
    const group = groups.get(title) ?? { title, items: [], alternatives: [] };
    groups.set(title, group);
    group.items.push({ scope: formatScope(s), description: describeScope(s, opts), checked: true });
  }
  // Alternatives go with the group of their own type when the app asked for that type, else with `*`.
  const resources = scopes.filter((s): s is ResourceScope => s.kind === 'resource');
  const typeFirst = [...resources].sort((a, b) => Number(a.type === '*') - Number(b.type === '*'));
  for (const s of typeFirst) {
    const group = groups.get(groupTitle(s))!;
    for (const alternative of narrowedAlternatives(s)) {
      const text = formatScope(alternative);
      if (requested.has(text) || alreadyOffered.has(text)) continue;
      alreadyOffered.add(text);
      group.alternatives.push({ scope: text, description: describeScope(alternative, opts), checked: false });
    }
  }

  const list = [...groups.values()];
  return {
    groups: list,
    offered: list.flatMap((g) => [...g.items, ...g.alternatives].map((i) => i.scope)),
    wildcard: resources.some((s) => s.type === '*'),
    offline: scopes.some((s) => s.kind === 'refresh' && s.value === 'offline_access'),
    patientScopes: resources.some((s) => s.level === 'patient') || scopes.some((s) => s.kind === 'launch' && s.value === 'launch/patient'),
    ehrContext: scopes.some((s) => s.kind === 'launch' && s.value === 'launch'),
  };
}

/**
 * Whether this authorization needs a patient in context: patient/ scopes SHALL establish one, and an
 * EHR launch asking for `launch` carries the EHR's patient (and encounter) whatever its other scopes,
 * e.g. a clinician's app with user/ scopes only.
 */
export const needsPatient = (choices: ConsentChoices, { ehrLaunch }: { ehrLaunch: boolean }) =>
  choices.patientScopes || (ehrLaunch && choices.ehrContext);

/**
 * The scopes a submitted form grants: only what was offered, in the offered order; anything
 * else is ignored. A narrower scope ticked next to a broader one that is also ticked adds
 * nothing, so it is dropped.
 */
export function grantedFromForm(choices: ConsentChoices, submitted: unknown): string[] {
  const values = new Set((Array.isArray(submitted) ? submitted : [submitted]).filter((v): v is string => typeof v === 'string'));
  const ticked = choices.offered.filter((scope) => values.has(scope));
  const resources = ticked.map((text) => parseScope(text)).filter((s): s is ResourceScope => s?.kind === 'resource');
  return ticked.filter((text) => {
    const scope = parseScope(text);
    if (scope?.kind !== 'resource') return true;
    return !resources.some((other) => formatScope(other) !== text && covers(other, scope));
  });
}

/**
 * Which launch context a grant carries. SMART: patient/ scopes SHALL establish a patient
 * context; launch/patient asks for one; an EHR launch (`launch`) carries the EHR's context, fhirContext
 * only with `launch` itself.
 */
export function grantedContext(granted: readonly string[]): { patient: boolean; encounter: boolean; fhirContext: boolean } {
  const scopes = granted.map((text) => parseScope(text));
  const ehr = granted.includes('launch');
  return {
    patient: ehr || granted.includes('launch/patient') || scopes.some((s) => s?.kind === 'resource' && s.level === 'patient'),
    encounter: ehr || granted.includes('launch/encounter'),
    fhirContext: ehr,
  };
}
