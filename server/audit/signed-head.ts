// Signed chain heads kept outside the database (server/audit/audit-store.ts signs them): the structured
// log line, the copy for the audit repository, and reading one back for `audit verify --checkpoint`.
import type { SignedHead } from './audit-store.ts';

/** The fields of the `audit checkpoint` log line. */
export const headLogFields = (head: SignedHead) => ({ seq: head.seq, hash: head.hash, signature: head.jws });

/** The head as a FHIR Binary for the audit repository (`PUT Binary/{id}`): its content is the JWS itself. */
export function headBinary(head: SignedHead) {
  return { resourceType: 'Binary', id: `audit-head-${head.seq}`, contentType: 'application/jose', data: Buffer.from(head.jws).toString('base64') };
}

const JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** The JWS of one kept head. */
function jwsOf(value: unknown): string | undefined {
  if (typeof value === 'string') return JWS.test(value.trim()) ? value.trim() : undefined;
  if (!value || typeof value !== 'object') return undefined;
  const v = value as Record<string, unknown>;
  if (v.resourceType === 'Binary' && typeof v.data === 'string') return jwsOf(Buffer.from(v.data, 'base64').toString('utf8'));
  return jwsOf(v.signature ?? v.jws);
}

/**
 * The signed head in what an operator kept: a JWS, the JSON of an `audit checkpoint` log line or of the
 * Binary sent to the repository, or a log with several such lines (the last one counts, the newest).
 */
export function signedHeadIn(text: string): string {
  const direct = jwsOf(text);
  if (direct) return direct;
  const parse = (line: string) => {
    try {
      return JSON.parse(line) as unknown;
    } catch {
      return undefined;
    }
  };
  const whole = jwsOf(parse(text));
  if (whole) return whole;
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean).map(parse)
    .filter((l) => (l as { msg?: unknown } | undefined)?.msg === 'audit checkpoint').map(jwsOf).filter(Boolean);
  if (lines.length) return lines[lines.length - 1]!;
  throw new TypeError('no signed audit head found: give its JWS, an "audit checkpoint" log line, or a file holding one');
}
