// An error of the FHIR server, or an OperationOutcome of a successful answer (its warnings), as the guard
// passes it on. Its free text names and quotes other resources (HAPI FHIR: "Unable to delete Patient/1
// because … First reference found was resource Observation/2"), which the token may not see: the client gets each issue's severity, code and coded details, with a
// standard text per code; the original goes to the guard's log. Pure.
import type { FhirResource } from './types.ts';

/** FHIR R4 IssueType: a standard text for each code. */
const ISSUE_TEXT: Readonly<Record<string, string>> = {
  invalid: 'the FHIR server found the request invalid',
  structure: 'the FHIR server found the content not well-formed',
  required: 'the FHIR server found a required element missing',
  value: 'the FHIR server found an element with a value it does not allow',
  invariant: 'the FHIR server found a rule of the content broken',
  security: 'the FHIR server refused the request for security reasons',
  login: 'the FHIR server asked for authentication',
  unknown: 'the FHIR server did not know the user',
  expired: 'the FHIR server found the session expired',
  forbidden: 'the FHIR server forbade the request',
  suppressed: 'the FHIR server suppressed information',
  processing: 'the FHIR server could not process the request',
  'not-supported': 'the FHIR server does not support the request',
  duplicate: 'the FHIR server found the request would duplicate a resource',
  'multiple-matches': 'the FHIR server found more than one match',
  'not-found': 'the FHIR server did not find something the request needs',
  deleted: 'the FHIR server found a resource deleted',
  'too-long': 'the FHIR server found the content too long',
  'code-invalid': 'the FHIR server did not accept a code',
  extension: 'the FHIR server did not accept an extension',
  'too-costly': 'the FHIR server found the request too costly',
  'business-rule': 'the FHIR server refused the request by a business rule',
  conflict: 'the FHIR server found the request in conflict with what it holds',
  transient: 'the FHIR server failed for a while',
  'lock-error': 'the FHIR server could not lock what the request needs',
  'no-store': 'the FHIR server could not reach its store',
  exception: 'the FHIR server failed',
  timeout: 'the FHIR server timed out',
  incomplete: 'the FHIR server could not give a complete answer',
  throttled: 'the FHIR server throttled the request',
  informational: 'the FHIR server gave information',
};

const SEVERITIES = new Set(['fatal', 'error', 'warning', 'information']);

interface Issue {
  severity?: unknown;
  code?: unknown;
  details?: { coding?: unknown; text?: unknown };
  diagnostics?: unknown;
  expression?: unknown;
  location?: unknown;
}

const issuesOf = (body: unknown): Issue[] => {
  const issue = (body as FhirResource | undefined)?.resourceType === 'OperationOutcome' ? (body as { issue?: unknown }).issue : undefined;
  return Array.isArray(issue) ? issue.filter((i): i is Issue => typeof i === 'object' && i !== null) : [];
};

/** A coding's system, version and code: its display is free text. */
const codedOnly = (coding: unknown): { system?: string; version?: string; code: string }[] =>
  (Array.isArray(coding) ? coding : []).flatMap((c) => (typeof c?.code === 'string'
    ? [{ ...(typeof c.system === 'string' && { system: c.system }), ...(typeof c.version === 'string' && { version: c.version }), code: c.code }]
    : []));

function publicIssue(issue: Issue) {
  const code = typeof issue.code === 'string' && ISSUE_TEXT[issue.code] ? issue.code : 'exception';
  const coding = codedOnly(issue.details?.coding);
  return {
    severity: typeof issue.severity === 'string' && SEVERITIES.has(issue.severity) ? issue.severity : 'error',
    code,
    ...(coding.length && { details: { coding } }),
    diagnostics: ISSUE_TEXT[code],
  };
}

/**
 * The OperationOutcome a client gets for an upstream error of `status`: each issue's severity, code and coded
 * details, with the standard text of its code; nothing else of the body (narrative, extensions, ids).
 */
export function publicOutcome(body: unknown, status: number): FhirResource {
  const issues = issuesOf(body);
  return {
    resourceType: 'OperationOutcome',
    issue: issues.length ? issues.map(publicIssue) : [{ severity: 'error', code: 'exception', diagnostics: `the FHIR server answered ${status}` }],
  };
}

/** An issue's original free text, for the guard's log. */
export type IssueText = Pick<Issue, 'code' | 'diagnostics' | 'details' | 'expression' | 'location'>;

/**
 * An error of the FHIR server, the outcome entries of a page (status 200) or a successful write's or operation's
 * OperationOutcome, as whoever runs the guard is told it (never the request's query, headers or body).
 */
export interface UpstreamErrorReport {
  status: number;
  method: string;
  /** The path asked below the FHIR base, without its query. */
  path: string;
  requestId?: string;
  /** Each issue's original text; undefined when the body was no OperationOutcome (and the client got a standard one). */
  issues?: IssueText[];
}

/** The free text of an upstream error's issues, for the guard's log; undefined when its body is no OperationOutcome. */
export function outcomeText(body: unknown): IssueText[] | undefined {
  if ((body as FhirResource | undefined)?.resourceType !== 'OperationOutcome') return undefined;
  return issuesOf(body).map(({ code, diagnostics, details, expression, location }) => ({ code, diagnostics, details, expression, location }));
}
