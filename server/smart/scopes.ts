// SMART App Launch 2.x scope grammar: parsing, formatting, coverage and
// enforcement helpers. Pure functions only; see scopes-and-launch-context.md.

export type Level = 'patient' | 'user' | 'system';
export type Permission = 'c' | 'r' | 'u' | 'd' | 's';
export type V1Permission = 'read' | 'write' | '*';
export type QueryPair = readonly [name: string, value: string];

export interface ResourceScope {
  kind: 'resource';
  level: Level;
  /** FHIR resource type, or '*' for every type (including future ones). */
  type: string;
  /** Always in `cruds` order, no duplicates, never empty. */
  permissions: readonly Permission[];
  /** `?name=value&...` restrictions in original order; values verbatim. */
  query: readonly QueryPair[];
  /** Set when written in v1 syntax (`.read`, `.write`, `.*`); such scopes have no query. */
  v1?: V1Permission;
}

export interface LaunchScope {
  kind: 'launch';
  /** 'launch' or 'launch/<lowercase type>'. */
  value: string;
  /** Absolute URI from `launch/<type>?role=<uri>`. */
  role?: string;
}

export type Scope =
  | ResourceScope
  | LaunchScope
  | { kind: 'identity'; value: 'openid' | 'fhirUser' | 'profile' }
  | { kind: 'refresh'; value: 'offline_access' | 'online_access' }
  | { kind: 'purpose'; system: string; code: string }
  | { kind: 'other'; value: string };

export type Interaction =
  | 'create'
  | 'read' | 'vread' | 'history-instance'
  | 'update' | 'patch'
  | 'delete'
  | 'search-type' | 'search-system' | 'search-compartment' | 'history-type' | 'history-system';

const V1_PERMISSIONS: Record<V1Permission, string> = { read: 'rs', write: 'cud', '*': 'cruds' };

/** RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E. */
const TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;
const RESOURCE = /^(patient|user|system)\/([A-Z][A-Za-z]+|\*)\.(c?r?u?d?s?|read|write|\*)(?:\?(.*))?$/;
const LAUNCH = /^launch\/([a-z]{2,})(?:\?role=([^&?]+))?$/;
const ABSOLUTE_URI = /^[A-Za-z][A-Za-z0-9+.-]*:./;
const PURPOSE_PREFIX = 'purpose_of_use=';

const IDENTITY = new Set(['openid', 'fhirUser', 'profile']);
const REFRESH = new Set(['offline_access', 'online_access']);

export function isResourceScope(s: Scope): s is ResourceScope {
  return s.kind === 'resource';
}

export function isPatientScope(s: Scope): s is ResourceScope & { level: 'patient' } {
  return s.kind === 'resource' && s.level === 'patient';
}

export function parseScope(token: string): Scope | undefined {
  if (!TOKEN.test(token)) return undefined;
  if (IDENTITY.has(token)) return { kind: 'identity', value: token as 'openid' | 'fhirUser' | 'profile' };
  if (REFRESH.has(token)) return { kind: 'refresh', value: token as 'offline_access' | 'online_access' };
  if (token === 'launch') return { kind: 'launch', value: token };
  if (token.startsWith('launch/')) return parseLaunch(token);
  if (token.startsWith(PURPOSE_PREFIX)) return parsePurpose(token.slice(PURPOSE_PREFIX.length));
  if (/^(patient|user|system)\//.test(token)) return parseResource(token);
  if (token === 'introspect' || (token.startsWith('__') && token.length > 2) || ABSOLUTE_URI.test(token)) {
    return { kind: 'other', value: token };
  }
  return undefined;
}

function parseResource(token: string): ResourceScope | undefined {
  const m = RESOURCE.exec(token);
  if (!m || m[3] === '') return undefined;
  const [, level, type, perms, rawQuery] = m;
  const v1 = Object.hasOwn(V1_PERMISSIONS, perms) ? (perms as V1Permission) : undefined;
  let query: QueryPair[] = [];
  if (rawQuery !== undefined) {
    if (v1) return undefined; // query restrictions are a v2 feature
    const parsed = parseQuery(rawQuery);
    if (!parsed) return undefined;
    query = parsed;
  }
  const permissions = (v1 ? V1_PERMISSIONS[v1] : perms).split('') as Permission[];
  const scope: ResourceScope = { kind: 'resource', level: level as Level, type, permissions, query };
  if (v1) scope.v1 = v1;
  return scope;
}

function parseQuery(raw: string): QueryPair[] | undefined {
  const pairs: QueryPair[] = [];
  for (const part of raw.split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0 || eq === part.length - 1 || part.includes('?')) return undefined;
    pairs.push([part.slice(0, eq), part.slice(eq + 1)]);
  }
  return pairs;
}

function parseLaunch(token: string): LaunchScope | undefined {
  const m = LAUNCH.exec(token);
  if (!m) return undefined;
  const role = m[2];
  if (role === undefined) return { kind: 'launch', value: `launch/${m[1]}` };
  return ABSOLUTE_URI.test(role) ? { kind: 'launch', value: `launch/${m[1]}`, role } : undefined;
}

function parsePurpose(rest: string): Scope | undefined {
  const bar = rest.indexOf('|');
  if (bar < 0 || bar !== rest.lastIndexOf('|') || bar === rest.length - 1) return undefined;
  const system = rest.slice(0, bar);
  return ABSOLUTE_URI.test(system) ? { kind: 'purpose', system, code: rest.slice(bar + 1) } : undefined;
}

/** Splits on runs of spaces; duplicates are dropped (parsing is exact, so text equality is formatted-form equality). */
export function parseScopes(s: string): { scopes: Scope[]; invalid: string[] } {
  const seen = new Set<string>();
  const scopes: Scope[] = [];
  const invalid: string[] = [];
  for (const token of s.split(' ')) {
    if (token === '' || seen.has(token)) continue;
    seen.add(token);
    const scope = parseScope(token);
    if (scope) scopes.push(scope);
    else invalid.push(token);
  }
  return { scopes, invalid };
}

export function formatScope(s: Scope): string {
  switch (s.kind) {
    case 'resource': {
      let text = `${s.level}/${s.type}.${s.v1 ?? s.permissions.join('')}`;
      for (let i = 0; i < s.query.length; i++) text += `${i === 0 ? '?' : '&'}${s.query[i][0]}=${s.query[i][1]}`;
      return text;
    }
    case 'launch':
      return s.role === undefined ? s.value : `${s.value}?role=${s.role}`;
    case 'purpose':
      return `${PURPOSE_PREFIX}${s.system}|${s.code}`;
    default:
      return s.value;
  }
}

export function formatScopes(scopes: readonly Scope[]): string {
  return scopes.map(formatScope).join(' ');
}

/** v1 ⇒ v2: read ⇒ rs, write ⇒ cud, * ⇒ cruds. */
export function toV2(s: ResourceScope): ResourceScope {
  const permissions = s.v1 ? (V1_PERMISSIONS[s.v1].split('') as Permission[]) : s.permissions;
  return { kind: 'resource', level: s.level, type: s.type, permissions, query: s.query };
}

export function permissionFor(interaction: Interaction): Permission {
  switch (interaction) {
    case 'create':
      return 'c';
    case 'read': case 'vread': case 'history-instance':
      return 'r';
    case 'update': case 'patch':
      return 'u';
    case 'delete':
      return 'd';
    case 'search-type': case 'search-system': case 'search-compartment': case 'history-type': case 'history-system':
      return 's';
  }
}

/**
 * A backend writes Consent only when its registration names `system/Consent.*` itself: `system/*`
 * does not cover it (the guard, for its part, never lets a `*` scope write Consent).
 */
const writesPolicyData = (s: ResourceScope) => s.level === 'system' && s.type === 'Consent' && s.permissions.some((p) => p === 'c' || p === 'u' || p === 'd');

/**
 * Is `requested` within `pattern`? A restriction narrows access, so the pattern's
 * query pairs must all appear in the requested scope (which may add more).
 */
export function covers(pattern: ResourceScope, requested: ResourceScope): boolean {
  if (pattern.level !== requested.level) return false;
  if (pattern.type !== '*' && pattern.type !== requested.type) return false;
  if (pattern.type === '*' && writesPolicyData(requested)) return false;
  for (const p of requested.permissions) if (!pattern.permissions.includes(p)) return false;
  for (let i = 0; i < pattern.query.length; i++) {
    const [name, value] = pattern.query[i];
    let found = false;
    for (let j = 0; j < requested.query.length && !found; j++) {
      found = requested.query[j][0] === name && requested.query[j][1] === value;
    }
    if (!found) return false;
  }
  return true;
}

/**
 * Limits a request to a client's allow-list. Resource scopes are kept whole when
 * covered (not intersected); purpose-of-use is decided elsewhere, so it passes.
 */
export function narrowToAllowed(requested: readonly Scope[], allowed: readonly Scope[]): Scope[] {
  const allowedResources = allowed.filter(isResourceScope);
  const allowedText = new Set(allowed.filter((s) => s.kind !== 'resource').map(formatScope));
  return requested.filter((s) => {
    if (s.kind === 'purpose') return true;
    if (s.kind === 'resource') return allowedResources.some((a) => covers(a, s));
    return allowedText.has(formatScope(s));
  });
}

/**
 * The granted scopes permitting `interaction` on `type` (empty ⇒ deny). A match
 * with an empty `query` is unrestricted; otherwise the caller must apply its
 * restrictions. A `type` of '*' (system-wide operations) matches only '*' scopes.
 */
export function allows(
  granted: readonly ResourceScope[],
  request: { level?: Level; type: string; interaction: Interaction },
): ResourceScope[] {
  const needed = permissionFor(request.interaction);
  const matches: ResourceScope[] = [];
  for (const s of granted) {
    if (request.level !== undefined && s.level !== request.level) continue;
    if (s.type !== '*' && s.type !== request.type) continue;
    if (s.permissions.includes(needed)) matches.push(s);
  }
  return matches;
}

const OBSERVATION_CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';
const CONDITION_CATEGORY = 'http://terminology.hl7.org/CodeSystem/condition-category';
const US_CORE_CATEGORY = 'http://hl7.org/fhir/us/core/CodeSystem/us-core-category';
const US_CORE_CONDITION_CATEGORY = 'http://hl7.org/fhir/us/core/CodeSystem/condition-category';

/** type ⇒ category value (`system|code`) ⇒ consent-page label. */
const CATEGORY_LABELS = new Map<string, ReadonlyMap<string, string>>([
  ['Observation', new Map([
    [`${OBSERVATION_CATEGORY}|laboratory`, 'laboratory results'],
    [`${OBSERVATION_CATEGORY}|social-history`, 'social history'],
    [`${OBSERVATION_CATEGORY}|vital-signs`, 'vital signs'],
    [`${OBSERVATION_CATEGORY}|survey`, 'surveys'],
    [`${OBSERVATION_CATEGORY}|procedure`, 'clinical tests'],
    [`${OBSERVATION_CATEGORY}|exam`, 'exam findings'],
    [`${OBSERVATION_CATEGORY}|imaging`, 'imaging results'],
    [`${OBSERVATION_CATEGORY}|therapy`, 'therapy observations'],
    [`${OBSERVATION_CATEGORY}|activity`, 'activity observations'],
    [`${US_CORE_CATEGORY}|sdoh`, 'social determinants of health (SDOH)'],
  ])],
  ['Condition', new Map([
    [`${CONDITION_CATEGORY}|encounter-diagnosis`, 'encounter diagnoses'],
    [`${CONDITION_CATEGORY}|problem-list-item`, 'problem list items'],
    [`${US_CORE_CONDITION_CATEGORY}|health-concern`, 'health concerns'],
  ])],
]);

/** `category=<system>|<code>` query strings the consent page offers instead of a whole type. */
export function categoryAlternatives(type: string): string[] {
  return [...(CATEGORY_LABELS.get(type)?.keys() ?? [])].map((value) => `category=${value}`);
}

/**
 * Category-restricted replacements for an unrestricted Observation/Condition/'*'
 * scope, keeping only its r/s permissions (none ⇒ no alternatives).
 */
export function narrowedAlternatives(scope: ResourceScope): ResourceScope[] {
  if (scope.query.length > 0) return [];
  const permissions = scope.permissions.filter((p) => p === 'r' || p === 's');
  if (permissions.length === 0) return [];
  const types = scope.type === '*' ? ['Observation', 'Condition'] : [scope.type];
  const result: ResourceScope[] = [];
  for (const type of types) {
    for (const value of CATEGORY_LABELS.get(type)?.keys() ?? []) {
      result.push({ kind: 'resource', level: scope.level, type, permissions, query: [['category', value]] });
    }
  }
  return result;
}

const PERMISSION_WORDS: Record<Permission, string> = { c: 'create', r: 'read', u: 'update', d: 'delete', s: 'search' };
const LEVEL_WORDS: Record<Level, string> = {
  patient: 'of the selected patient',
  user: 'that you can access',
  system: 'for any patient (system access)',
};

function joinWords(words: readonly string[]): string {
  return words.length <= 1 ? words.join('') : `${words.slice(0, -1).join(', ')} and ${words[words.length - 1]}`;
}

/**
 * Plain-English text for the consent page. `openid` and `fhirUser` share one
 * sentence so the page can de-duplicate. `patientIsUser` says "your" for patient scopes.
 */
export function describeScope(s: Scope, opts: { patientIsUser?: boolean } = {}): string {
  switch (s.kind) {
    case 'resource': {
      const verbs = joinWords(s.permissions.map((p) => PERMISSION_WORDS[p]));
      const own = s.level === 'patient' && opts.patientIsUser;
      const what = s.type === '*'
        ? (own ? 'all types of your data' : `all types of data ${LEVEL_WORDS[s.level]}`) + ', including types added in the future'
        : own ? `your ${s.type} records` : `${s.type} records ${LEVEL_WORDS[s.level]}`;
      const only = s.query.map(([name, value]) => {
        const label = name === 'category' ? CATEGORY_LABELS.get(s.type)?.get(value) : undefined;
        return label ?? `${name} is ${value}`;
      });
      return `${verbs.charAt(0).toUpperCase()}${verbs.slice(1)} ${what}${only.length ? ` (only ${joinWords(only)})` : ''}`;
    }
    case 'launch':
      if (s.value === 'launch') return 'Use the context (such as the current patient) the app was launched with';
      if (s.value === 'launch/patient' && opts.patientIsUser) return 'Know that the record it opens is yours';
      return `Know which ${s.value.slice('launch/'.length)} is selected${s.role ? ` (role ${s.role})` : ''}`;
    case 'identity':
      if (s.value === 'profile') return 'See your name';
      if (s.value === 'openid') return 'Confirm who you are when you sign in';
      return opts.patientIsUser ? 'Know that you are the patient whose record it is' : 'Know which FHIR record describes you (your Practitioner record)';
    case 'refresh':
      return s.value === 'offline_access'
        ? 'Keep access when you are not using the app (until you revoke it)'
        : 'Keep access while you are signed in';
    case 'purpose':
      return `Purpose of use: ${s.code}`;
    case 'other':
      return s.value === 'introspect' ? 'Check whether access tokens are still valid' : `Extension permission: ${s.value}`;
  }
}
