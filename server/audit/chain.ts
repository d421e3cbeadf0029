// The audit trail's hash chain. Pure: hashing over RFC 8785 canonical JSON and walking stored records.
//
//   event_hash_i = SHA-256(JCS(event_i))            (hex)
//   hash_i       = SHA-256(hash_{i-1} ‖ event_hash_i) (hex of the hex concatenation; hash_0 = 64 zeros)
//
// A changed record no longer hashes to its event_hash (or its hash no longer follows from it); a removed
// or reordered record breaks the next record's link (prev_hash) or leaves a gap in seq; a record removed
// at the end is found against the chain head (and the signed checkpoints).
import { createHash } from 'node:crypto';

export const GENESIS_HASH = '0'.repeat(64);

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');

/**
 * RFC 8785 (JCS) canonical JSON of an event: members sorted by their UTF-16 code units, strings and
 * numbers as ECMAScript's JSON.stringify writes them (which is what RFC 8785 specifies), no whitespace.
 * Throws when it is not JSON: undefined at the top, NaN or an infinity, a lone surrogate, a BigInt, a
 * cycle. Members that are undefined (or functions, or symbols) are left out, as JSON.stringify does.
 */
export function canonicalJson(event: unknown): string {
  const text = jcs(event, 0);
  if (text === undefined) throw new TypeError('the audit event is not representable as JSON');
  return text;
}

/** In a `u` expression a surrogate pair is one code point: only a lone surrogate is in the category Cs. */
const LONE_SURROGATE = /\p{Cs}/u;

/** A string JSON.stringify writes as it is, between quotes: no quote, backslash, control character or surrogate. */
const VERBATIM = /^[^"\\\u0000-\u001f\ud800-\udfff]*$/;

/** A string as JSON (most strings of an event are written as they are, without JSON.stringify's call). */
function jsonString(value: string): string {
  if (VERBATIM.test(value)) return `"${value}"`;
  if (LONE_SURROGATE.test(value)) throw new TypeError('the audit event holds a lone surrogate');
  return JSON.stringify(value);
}

/** Deeper than this is taken for a cycle (an AuditEvent nests a few levels). */
const MAX_DEPTH = 64;

function jcs(value: unknown, depth: number): string | undefined {
  switch (typeof value) {
    case 'string':
      return jsonString(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`the audit event holds ${value}, which is not a JSON number`);
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      throw new TypeError('the audit event holds a BigInt');
    case 'object':
      break;
    default:
      return undefined;
  }
  if (value === null) return 'null';
  if (depth > MAX_DEPTH) throw new TypeError('the audit event nests too deeply: a cycle?');
  const toJson = (value as { toJSON?: unknown }).toJSON;
  if (typeof toJson === 'function') return jcs(toJson.call(value), depth + 1);
  if (Array.isArray(value)) return `[${value.map((item) => jcs(item, depth + 1) ?? 'null').join(',')}]`;
  let members = '';
  for (const key of Object.keys(value).sort()) {
    const member = jcs((value as Record<string, unknown>)[key], depth + 1);
    if (member !== undefined) members += `${members ? ',' : ''}${jsonString(key)}:${member}`;
  }
  return `{${members}}`;
}

export function eventHash(event: unknown): string {
  return sha256(canonicalJson(event));
}

export function chainHash(prevHash: string, eventHashHex: string): string {
  return sha256(prevHash + eventHashHex);
}

/** One stored record, as read from audit_events. `event` is the stored JSON text (or already parsed). */
export interface ChainRecord {
  seq: number;
  id: string;
  event: string | object;
  eventHash: string;
  prevHash: string;
  hash: string;
}

/** A point on the chain: the record at `seq` has `hash` (seq 0 is the genesis). */
export interface ChainPoint {
  seq: number;
  hash: string;
}

/** The chain's recorded end (audit_chain_head), with the id of the last event when known. */
export interface ChainHead extends ChainPoint {
  eventId?: string | null;
}

export interface ChainFailure {
  seq: number;
  /** The AuditEvent id of the record that does not match ('' when there is no such record). */
  eventId: string;
  problem: string;
}

function parsedId(event: string | object): { value?: unknown; parsed?: unknown; error?: string } {
  try {
    const parsed = typeof event === 'string' ? JSON.parse(event) : event;
    return { parsed, value: (parsed as { id?: unknown } | null)?.id };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

/** Checks one record on its own: its content hashes to its event_hash and names the same id. */
export function checkRecordContent(record: ChainRecord): string | undefined {
  const { parsed, value, error } = parsedId(record.event);
  if (error !== undefined) return `its stored JSON does not parse (${error}): the record was changed`;
  let recomputed: string;
  try {
    recomputed = eventHash(parsed);
  } catch (err) {
    return `its stored JSON cannot be canonicalized (${(err as Error).message}): the record was changed`;
  }
  if (recomputed !== record.eventHash) {
    return `its content was changed: the stored event hashes to ${recomputed.slice(0, 12)}…, the chain recorded ${String(record.eventHash).slice(0, 12)}…`;
  }
  if (value !== record.id) return `its id column (${record.id}) differs from the stored event's id (${String(value)}): the record was changed`;
  return undefined;
}

/**
 * Walks records in seq order, one at a time (so a caller can stream them in batches).
 * Starts at the genesis, or at a purge anchor whose (signed) hash the first remaining record links to.
 */
export class ChainVerifier {
  private prev: ChainPoint;
  private lastId: string | null = null;
  private count = 0;

  constructor(anchor?: ChainPoint) {
    this.prev = anchor ? { seq: anchor.seq, hash: anchor.hash } : { seq: 0, hash: GENESIS_HASH };
  }

  /** Records checked so far. */
  get records(): number {
    return this.count;
  }

  /** Where the chain stands after the records pushed so far. */
  get position(): ChainPoint & { eventId: string | null } {
    return { ...this.prev, eventId: this.lastId };
  }

  push(record: ChainRecord): ChainFailure | undefined {
    const fail = (problem: string): ChainFailure => ({ seq: record.seq, eventId: String(record.id), problem });
    if (record.seq <= this.prev.seq) {
      return fail(`record seq ${record.seq} comes after seq ${this.prev.seq}: the records are out of order`);
    }
    const contentProblem = checkRecordContent(record);
    if (contentProblem) return fail(`record seq ${record.seq} (AuditEvent ${record.id}): ${contentProblem}`);
    if (record.prevHash !== this.prev.hash) {
      if (record.seq !== this.prev.seq + 1) {
        const missing = record.seq === this.prev.seq + 2 ? `seq ${this.prev.seq + 1}` : `seq ${this.prev.seq + 1}–${record.seq - 1}`;
        return fail(`record seq ${record.seq} (AuditEvent ${record.id}) does not link to the record before it: the record(s) at ${missing} were removed`);
      }
      return fail(`record seq ${record.seq} (AuditEvent ${record.id}) does not link to the record before it (seq ${this.prev.seq}): records were reordered, removed or replaced`);
    }
    if (record.seq !== this.prev.seq + 1) {
      return fail(`record seq ${record.seq} (AuditEvent ${record.id}) follows seq ${this.prev.seq}: the seq numbers were changed`);
    }
    const expected = chainHash(record.prevHash, record.eventHash);
    if (record.hash !== expected) {
      return fail(`record seq ${record.seq} (AuditEvent ${record.id}): its chain hash does not follow from its prev_hash and event_hash: the record was changed`);
    }
    this.prev = { seq: record.seq, hash: record.hash };
    this.lastId = String(record.id);
    this.count++;
    return undefined;
  }

  /** After the last record: the chain must end where its head says. */
  end(head?: ChainHead): ChainFailure | undefined {
    if (!head) return undefined;
    if (head.seq > this.prev.seq) {
      const missing = head.seq === this.prev.seq + 1 ? `seq ${head.seq}` : `seq ${this.prev.seq + 1}–${head.seq}`;
      return {
        seq: head.seq,
        eventId: head.eventId ?? '',
        problem: `the chain ends at seq ${this.prev.seq} but its head is at seq ${head.seq}${head.eventId ? ` (AuditEvent ${head.eventId})` : ''}: the record(s) at ${missing} were removed`,
      };
    }
    if (head.seq < this.prev.seq) {
      return {
        seq: this.prev.seq,
        eventId: this.lastId ?? '',
        problem: `records up to seq ${this.prev.seq} are stored but the chain head is at seq ${head.seq}: records were added outside the chain`,
      };
    }
    if (head.hash !== this.prev.hash) {
      return {
        seq: head.seq,
        eventId: this.lastId ?? head.eventId ?? '',
        problem: `the chain head's hash at seq ${head.seq} differs from the last record's hash: the chain was rewritten`,
      };
    }
    return undefined;
  }
}

/**
 * Verifies records, given in the order they are stored (seq order), from the genesis or a purge anchor;
 * with `head`, also that nothing is missing at the end. Returns the first failure.
 */
export function verifyRecords(records: ChainRecord[], anchor?: ChainPoint, head?: ChainHead): ChainFailure | undefined {
  const verifier = new ChainVerifier(anchor);
  for (const record of records) {
    const failure = verifier.push(record);
    if (failure) return failure;
  }
  return verifier.end(head);
}
