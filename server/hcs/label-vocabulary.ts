// The security-label vocabulary of an HCS policy (the `labels` section of the policy file): the
// sensitivity codes it knows, each with what it subsumes, and the labels that restrict nobody.
// Any other `meta.security` code that is neither a v3-Confidentiality nor a v3-ActReason (purpose of
// use, HTEST) code is an unknown sensitivity, and fails closed (see privacy/labels.ts). Pure, except
// that the bundled policy file's vocabulary is read once as the default.
import { readFileSync } from 'node:fs';
import type { Coding } from './codes.ts';

export interface LabelVocabulary {
  /** v3-ActCode sensitivity code ⇒ the codes it subsumes directly. */
  sensitivities: ReadonlyMap<string, readonly string[]>;
  /** "system|code", or "system|*" for every code of a system. */
  harmless: ReadonlySet<string>;
}

const CODE = /^[A-Za-z0-9._-]{1,64}$/;

/** The `labels` section of a policy file; `fail` reports what is wrong (it throws). */
export function parseLabelVocabulary(json: unknown, fail: (message: string) => never): LabelVocabulary {
  const labels = json as { sensitivities?: unknown; harmless?: unknown } | undefined;
  if (!labels || typeof labels !== 'object') return fail('labels must be an object with sensitivities and harmless');
  const sensitivities = labels.sensitivities as Record<string, unknown> | undefined;
  if (!sensitivities || typeof sensitivities !== 'object' || Array.isArray(sensitivities)) return fail('labels.sensitivities must map each code to the codes it subsumes');
  for (const [code, children] of Object.entries(sensitivities)) {
    if (!CODE.test(code) || !Array.isArray(children) || children.some((c) => typeof c !== 'string' || !Object.hasOwn(sensitivities, c))) {
      fail(`labels.sensitivities.${code} must list codes that are themselves listed`);
    }
  }
  const harmless = labels.harmless;
  if (!Array.isArray(harmless) || harmless.some((h) => typeof h !== 'string' || !/^[^|]+\|[^|]+$/.test(h))) {
    return fail('labels.harmless must list "<system>|<code>" or "<system>|*"');
  }
  return {
    sensitivities: new Map(Object.entries(sensitivities as Record<string, string[]>)),
    harmless: new Set(harmless as string[]),
  };
}

/** The vocabulary of the bundled policy file. */
export const DEFAULT_LABEL_VOCABULARY: LabelVocabulary = parseLabelVocabulary(
  (JSON.parse(readFileSync(new URL('./default-policy.json', import.meta.url), 'utf8')) as { labels?: unknown }).labels,
  (message) => { throw new Error(`the bundled policy file: ${message}`); },
);

function closureOf(code: string, vocabulary: LabelVocabulary): ReadonlySet<string> {
  const seen = new Set<string>();
  const visit = (c: string) => {
    if (seen.has(c)) return;
    seen.add(c);
    for (const child of vocabulary.sensitivities.get(c) ?? []) visit(child);
  };
  visit(code);
  return seen;
}

/** Each vocabulary's closures of its own codes, worked out when first asked for (a vocabulary never changes). */
const closures = new WeakMap<LabelVocabulary, ReadonlyMap<string, ReadonlySet<string>>>();

/** Every sensitivity code a code covers, itself included (a forbid on SUD also catches ETHUD and OPIOIDUD). */
export function sensitivityClosure(code: string, vocabulary: LabelVocabulary = DEFAULT_LABEL_VOCABULARY): ReadonlySet<string> {
  let known = closures.get(vocabulary);
  if (!known) {
    known = new Map([...vocabulary.sensitivities.keys()].map((c) => [c, closureOf(c, vocabulary)]));
    closures.set(vocabulary, known);
  }
  return known.get(code) ?? new Set([code]);
}

/** The sensitivity codes a clearance names one by one (the residual forbids each one not granted). */
export const knownSensitivities = (vocabulary: LabelVocabulary = DEFAULT_LABEL_VOCABULARY): string[] => [...vocabulary.sensitivities.keys()];

export const isHarmless = (coding: Coding, vocabulary: LabelVocabulary = DEFAULT_LABEL_VOCABULARY): boolean =>
  vocabulary.harmless.has(`${coding.system}|${coding.code}`) || vocabulary.harmless.has(`${coding.system}|*`);
