// Paging links the client can follow but not read or make: `{base}/{path}?_page=<token>`, the token a JWE
// (dir, A256GCM) over the upstream link, how many of that page's matches to skip (where a refilled page
// ends inside an upstream page), the access token it was issued to and an expiry. FHIR holds paging
// links opaque; an offset in them would tell how many hidden matches the guard skipped, and an offset the
// client chose would let it probe where they lie, so the paging parameters of FHIR servers are refused.
import { createHash, randomBytes } from 'node:crypto';
import { CompactEncrypt, compactDecrypt } from 'jose';
import type { PagePosition, Refusal, TokenContext } from './types.ts';

/** The parameter of the guard's paging links. */
export const PAGE_PARAM = '_page';
/**
 * The offsets, cursors and page numbers of FHIR servers, refused from clients whatever the server behind the
 * guard: HAPI and the bundled store (`_getpages`, `_getpagesoffset`, `_offset`), Medplum (`_offset`, `_cursor`),
 * Azure (`ct`), Google Cloud (`_page_token`), and those of other servers (`page`, `_skip`, `_pageToken`,
 * `_start`). A page number in `_page` (IBM's, WSO2's) is refused as a page link the guard did not seal.
 */
export const PAGING_PARAMS: readonly string[] = ['_getpages', '_getpagesoffset', '_offset', '_cursor', 'ct', '_page_token', '_pageToken', 'page', '_skip', '_start'];
/** A page link outlives neither its access token nor this bound. */
const MAX_SECONDS = 3600;

const HEADER = { alg: 'dir', enc: 'A256GCM' } as const;

interface Sealed extends PagePosition { path: string; bound: string; exp: number }

const invalid = (message: string): Refusal => ({ status: 400, code: 'invalid', message });

/** The access token a page link belongs to (its jti and client), so that another token cannot follow it. */
const boundTo = (token: TokenContext) => createHash('sha256').update(`${token.clientId}\n${token.jti}`).digest('base64url');

/** What is wrong with a list of the FHIR server's paging parameters (search parameter names, not the guard's own); undefined when nothing. */
export function pagingParamsProblem(names: readonly string[]): string | undefined {
  const bad = names.filter((name) => !/^[A-Za-z_][\w.-]*$/.test(name) || name === PAGE_PARAM);
  return bad.length ? `takes search parameter names other than ${PAGE_PARAM}, got ${bad.join(', ')}` : undefined;
}

/**
 * Page links sealed with `secret` (any string of 16+ characters; instances with the same secret follow each
 * other's links), or with a random key of this process when none is given. `pagingParams`: the FHIR server's
 * own paging parameters, refused from clients as those of PAGING_PARAMS are.
 */
export function pageLinks(secret?: string, pagingParams: readonly string[] = []) {
  if (secret !== undefined && secret.length < 16) throw new TypeError('pagingKey must be at least 16 characters');
  const problem = pagingParamsProblem(pagingParams);
  if (problem) throw new TypeError(`pagingParams ${problem}`);
  const refused = new Set([...PAGING_PARAMS, ...pagingParams]);
  const key = secret === undefined ? randomBytes(32) : createHash('sha256').update(`paging-links:${secret}`).digest();
  return {
    /** A token for `position` (its link below the upstream base), to be followed at the public `path` with `token` only. */
    async seal({ link, skip, search }: PagePosition, path: string, token: TokenContext, now = Date.now()): Promise<string> {
      const sealed: Sealed = { link, skip, ...(search && { search }), path, bound: boundTo(token), exp: Math.min(token.exp, Math.floor(now / 1000) + MAX_SECONDS) };
      return new CompactEncrypt(new TextEncoder().encode(JSON.stringify(sealed))).setProtectedHeader(HEADER).encrypt(key);
    },

    /**
     * The upstream position behind the `_page` of `params`, checked for the public `path` and `token`; undefined
     * when there is none; a refusal for paging parameters of FHIR servers (with any modifier) and for a page
     * token that is not good here.
     */
    async open(params: URLSearchParams, path: string, token: TokenContext, now = Date.now()): Promise<PagePosition | Refusal | undefined> {
      const raw = [...params.keys()].find((name) => refused.has(name.split(':')[0]));
      if (raw) return invalid(`the paging parameter ${raw} is not supported: follow the Bundle's paging links`);
      const value = params.getAll(PAGE_PARAM);
      if (value.length === 0) return undefined;
      if (value.length > 1 || [...params.keys()].some((name) => name !== PAGE_PARAM)) return invalid(`a paging link takes ${PAGE_PARAM} alone: follow it as given`);
      let sealed: Sealed;
      try {
        const { plaintext } = await compactDecrypt(value[0], key, { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] });
        sealed = JSON.parse(new TextDecoder().decode(plaintext)) as Sealed;
      } catch {
        return invalid('the paging link is not valid: follow a paging link as this server gave it');
      }
      if (sealed.path !== path) return invalid('the paging link belongs to another search');
      if (sealed.bound !== boundTo(token)) return invalid('the paging link was given to another access token');
      if (!(sealed.exp * 1000 > now)) return invalid('the paging link has expired: search again');
      if (typeof sealed.link !== 'string' || !Number.isSafeInteger(sealed.skip) || sealed.skip < 0) return invalid('the paging link is not valid: follow a paging link as this server gave it');
      return { link: sealed.link, skip: sealed.skip, ...(typeof sealed.search === 'string' && { search: sealed.search }) };
    },
  };
}

export type PageLinks = ReturnType<typeof pageLinks>;
