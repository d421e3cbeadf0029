// CORS at the FHIR base, for SMART apps that run in a browser on their own origin: preflights are
// answered without a token; an allowed origin is echoed (never `*` with data, never credentials:
// the bearer token is the credential), with Vary: Origin. Pure apart from the origin check.

/** Whether a browser page on this origin ("https://app.example.org") may call the FHIR base. */
export type OriginCheck = (origin: string) => boolean | Promise<boolean>;

/** What FHIR clients send beyond the safelisted headers: the token and its proof, the body's type, conditions (see conditional.ts), Prefer. */
export const CORS_ALLOWED_HEADERS = 'Authorization, Content-Type, DPoP, X-Request-Id, Prefer, If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since';
/** What the guard's answers carry for the app: a write's Location, the version (ETag, Last-Modified), the challenge of a 401 or 403. */
export const CORS_EXPOSED_HEADERS = 'Location, ETag, Last-Modified, X-Request-Id, WWW-Authenticate';
export const CORS_ALLOWED_METHODS = 'GET, POST, PUT, PATCH, DELETE';
const PREFLIGHT_MAX_AGE = '600';

/** The origin of a URL ("https://app.example.org:8443"), or undefined when it has none (custom schemes, garbage). */
export function originOf(url: string): string | undefined {
  try {
    const { origin } = new URL(url);
    return origin === 'null' ? undefined : origin;
  } catch {
    return undefined;
  }
}

/** These origins (or the origins of these URLs), and whatever `more` allows. */
export function allowOrigins(urls: readonly string[], more?: OriginCheck): OriginCheck {
  const listed = new Set(urls.map(originOf).filter((o): o is string => o !== undefined));
  return (origin) => listed.has(origin) || (more ? more(origin) : false);
}

/** The CORS headers of an answer to a request from `origin` (none when the origin is not allowed). */
export async function corsHeaders(origin: string | undefined, allowed: OriginCheck | undefined): Promise<Record<string, string>> {
  if (!allowed) return {};
  const vary = { vary: 'Origin' };
  if (!origin || originOf(origin) !== origin || !(await allowed(origin))) return vary;
  return { ...vary, 'access-control-allow-origin': origin, 'access-control-expose-headers': CORS_EXPOSED_HEADERS };
}

/** The answer to a preflight (OPTIONS with Access-Control-Request-Method): 204, with the grant only for an allowed origin. */
export async function preflightHeaders(origin: string | undefined, allowed: OriginCheck | undefined): Promise<Record<string, string>> {
  const headers = await corsHeaders(origin, allowed);
  if (!headers['access-control-allow-origin']) return headers;
  return {
    vary: 'Origin',
    'access-control-allow-origin': headers['access-control-allow-origin'],
    'access-control-allow-methods': CORS_ALLOWED_METHODS,
    'access-control-allow-headers': CORS_ALLOWED_HEADERS,
    'access-control-max-age': PREFLIGHT_MAX_AGE,
  };
}
