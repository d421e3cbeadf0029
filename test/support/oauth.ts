// A SMART app and a person's browser, over plain HTTP: a cookie jar, manual redirects, PKCE.
import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { totpCode } from '../../server/auth/totp.ts';

export class Browser {
  private cookies = new Map<string, string>();

  /** A cookie's value as this browser holds it (e.g. to replay it from elsewhere). */
  cookie(name: string): string | undefined {
    return this.cookies.get(name);
  }

  async fetch(url: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    const cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    if (cookie) headers.set('cookie', cookie);
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const set of res.headers.getSetCookie()) {
      const [pair] = set.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      if (/expires=Thu, 01 Jan 1970/i.test(set) || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    return res;
  }

  /** Follows redirects on the server until one leaves it (to the app) or a page is shown. */
  async follow(url: string, origin: string, init?: RequestInit): Promise<{ res: Response; url: string }> {
    let res = await this.fetch(url, init);
    let current = url;
    while (res.status >= 300 && res.status < 400) {
      current = new URL(res.headers.get('location')!, current).href;
      if (!current.startsWith(origin)) return { res, url: current };
      res = await this.fetch(current);
    }
    return { res, url: current };
  }
}

/** `verifier`: one the app chose (RFC 7636 allows 43-128 characters); a random 64-character one by default. */
export function pkce(verifier = randomBytes(48).toString('base64url')) {
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

export const form = (data: Record<string, string | string[]>) => {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(data)) for (const item of [v].flat()) body.append(k, item);
  return body;
};

export function hiddenValue(html: string, name: string): string {
  const match = new RegExp(`name="${name}" value="([^"]*)"`).exec(html);
  if (!match) throw new Error(`no hidden ${name} in page:\n${html.slice(0, 2000)}`);
  return match[1];
}

/** The values of every checkbox named scope on a consent page, with whether it is checked. */
export function scopeCheckboxes(html: string): { value: string; checked: boolean }[] {
  return [...html.matchAll(/<input type="checkbox" name="scope" value="([^"]*)"\s*(checked)?/g)].map((m) => ({
    value: m[1].replace(/&amp;/g, '&').replace(/&#34;/g, '"'),
    checked: Boolean(m[2]),
  }));
}

export interface LaunchOptions {
  server: { issuer: string; fhirBase: string };
  client: { client_id: string; redirect_uri: string; client_secret?: string };
  scope: string;
  username?: string;
  password?: string;
  /** Patient to pick when the picker shows. */
  patient?: string;
  launch?: string;
  aud?: string;
  /** Scopes to leave ticked on the consent page (default: those checked by default), or 'deny'. */
  consent?: string[] | 'deny' | ((offered: { value: string; checked: boolean }[]) => string[]);
  browser?: Browser;
  extra?: Record<string, string>;
  method?: 'GET' | 'POST';
  /** The purpose of use to choose on the consent page (default: what the page preselects). */
  purpose?: string;
  btgReason?: string;
  /** The answer to a second-factor page: a TOTP or recovery code, or a function giving one. */
  otp?: string | (() => string);
  /** Filled in when the sign-in makes the user set up an authenticator: its secret and the recovery codes shown. */
  enrolled?: { secret?: string; recoveryCodes?: string[] };
  /** The step-up code sent with a break-the-glass consent. */
  btgOtp?: string;
  /** An authorization URL the app built itself (e.g. with a PAR request_uri): followed instead of building one. */
  startUrl?: string;
  /** The PKCE code_verifier the app uses (default: a random one). */
  verifier?: string;
  /** The state the app sends (default: a random one). */
  state?: string;
}

/** The TOTP secret a set-up page shows (grouped by four for people). */
export const shownTotpSecret = (html: string) => /class="totp-secret">([^<]*)</.exec(html)?.[1].replace(/\s/g, '');
export const shownRecoveryCodes = (html: string) => [...html.matchAll(/<li><code>([0-9a-f]{5}-[0-9a-f]{5})<\/code><\/li>/g)].map((m) => m[1]);

export interface LaunchResult {
  code?: string;
  state: string;
  error?: string;
  redirect: URL;
  verifier: string;
  challenge: string;
  browser: Browser;
  pages: string[];
  /** Set when the last page was an error status (e.g. a consent form re-shown with a message). */
  status?: number;
}

/** Drives a whole authorization: authorize, login, picker, consent, back to the app. */
export async function authorize(o: LaunchOptions): Promise<LaunchResult> {
  const browser = o.browser ?? new Browser();
  const { verifier, challenge } = pkce(o.verifier);
  const state = o.state ?? randomBytes(16).toString('hex');
  const params: Record<string, string> = {
    response_type: 'code', client_id: o.client.client_id, redirect_uri: o.client.redirect_uri, scope: o.scope, state,
    aud: o.aud ?? o.server.fhirBase, code_challenge: challenge, code_challenge_method: 'S256', ...(o.launch ? { launch: o.launch } : {}), ...o.extra,
  };
  const pages: string[] = [];
  let step = o.startUrl ? await browser.follow(o.startUrl, o.server.issuer) : o.method === 'POST'
    ? await browser.follow(`${o.server.issuer}/authorize`, o.server.issuer, { method: 'POST', body: form(params) })
    : await browser.follow(`${o.server.issuer}/authorize?${new URLSearchParams(params)}`, o.server.issuer);
  for (let guard = 0; guard < 10 && step.url.startsWith(o.server.issuer); guard++) {
    const html = await step.res.text();
    pages.push(html);
    if (step.res.status >= 400) {
      if (html.includes('name="decision"')) return { code: undefined, state, redirect: new URL(step.url), verifier, challenge, browser, pages, status: step.res.status };
      throw Object.assign(new Error(`page ${step.url} answered ${step.res.status}: ${html.slice(0, 500)}`), { html });
    }
    const uid = /\/interaction\/([^/"?]+)/.exec(step.url)?.[1];
    if (html.includes('name="password"')) {
      step = await browser.follow(`${o.server.issuer}/interaction/${uid}/login`, o.server.issuer, {
        method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), username: o.username ?? 'dr.smith', password: o.password ?? 'demo-password-1' }),
      });
    } else if (html.includes('name="otp"')) {
      if (o.otp === undefined) throw new Error(`a second factor is asked for at ${step.url}`);
      const otp = typeof o.otp === 'function' ? o.otp() : o.otp;
      step = await browser.follow(`${o.server.issuer}/interaction/${uid}/second-factor`, o.server.issuer, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), otp }) });
    } else if (shownTotpSecret(html)) {
      const secret = shownTotpSecret(html)!;
      if (o.enrolled) o.enrolled.secret = secret;
      step = await browser.follow(`${o.server.issuer}/interaction/${uid}/enrol`, o.server.issuer, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf'), code: totpCode(secret) }) });
    } else if (html.includes('class="recovery-codes"')) {
      if (o.enrolled) o.enrolled.recoveryCodes = shownRecoveryCodes(html);
      step = await browser.follow(`${o.server.issuer}/interaction/${uid}/continue`, o.server.issuer, { method: 'POST', body: form({ csrf: hiddenValue(html, 'csrf') }) });
    } else if (html.includes('name="patient" value=') && html.includes('type="radio"')) {
      step = await browser.follow(`${o.server.issuer}/interaction/${uid}?patient=${encodeURIComponent(o.patient ?? 'pat-1')}`, o.server.issuer);
    } else if (html.includes('name="decision"')) {
      const offered = scopeCheckboxes(html);
      const chosen = o.consent === 'deny' ? [] : typeof o.consent === 'function' ? o.consent(offered) : o.consent ?? offered.filter((s) => s.checked).map((s) => s.value);
      const data: Record<string, string | string[]> = { csrf: hiddenValue(html, 'csrf'), scope: chosen, decision: o.consent === 'deny' ? 'deny' : 'allow' };
      const patient = /name="patient" value="([^"]*)"/.exec(html)?.[1];
      if (patient) data.patient = patient;
      if (o.purpose) data.purpose_of_use = o.purpose;
      if (o.btgReason !== undefined) data.btg_reason = o.btgReason;
      if (o.btgOtp !== undefined) data.btg_otp = o.btgOtp;
      step = await browser.follow(`${o.server.issuer}/interaction/${uid}/consent`, o.server.issuer, { method: 'POST', body: form(data) });
    } else {
      throw new Error(`unexpected page at ${step.url}: ${html.slice(0, 800)}`);
    }
  }
  const redirect = new URL(step.url);
  return {
    code: redirect.searchParams.get('code') ?? undefined,
    error: redirect.searchParams.get('error') ?? undefined,
    state: redirect.searchParams.get('state') ?? '',
    redirect, verifier, challenge, browser, pages,
  };
}

/** HTTP Basic client authentication (RFC 6749 section 2.3.1: id and secret form-encoded first). */
export const basicAuth = (client: { client_id: string; client_secret?: string }) =>
  `Basic ${Buffer.from(`${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret ?? '')}`).toString('base64')}`;

/** An introspection (RFC 7662) or revocation (RFC 7009) of `token` by `client`, authenticated with HTTP Basic. */
function tokenCall(endpoint: 'introspect' | 'revoke', issuer: string, client: { client_id: string; client_secret?: string }, token: string, headers: Record<string, string> = {}) {
  return fetch(`${issuer}/${endpoint}`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(client), ...headers }, body: new URLSearchParams({ token }),
  });
}
export const introspectToken = tokenCall.bind(null, 'introspect');
export const revokeToken = tokenCall.bind(null, 'revoke');

/** `path`: the token endpoint as the request spells it. */
export async function tokenRequest(issuer: string, body: Record<string, string>, client?: { client_id: string; client_secret?: string }, headers: Record<string, string> = {}, path = '/token') {
  const h: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', ...headers };
  const data = { ...body };
  if (client?.client_secret) h.authorization = basicAuth(client);
  else if (client) data.client_id = client.client_id;
  const res = await fetch(`${issuer}${path}`, { method: 'POST', headers: h, body: new URLSearchParams(data) });
  return { res, body: (await res.json()) as Record<string, any> };
}

/** Whether the token endpoint takes the client's secret: a refresh with an unknown token is then invalid_grant, not invalid_client. */
export async function secretAccepted(issuer: string, clientId: string, secret: string, method = 'client_secret_basic'): Promise<boolean> {
  const grant = { grant_type: 'refresh_token', refresh_token: 'not-a-refresh-token' };
  const { res, body } = method === 'client_secret_post'
    ? await tokenRequest(issuer, { ...grant, client_id: clientId, client_secret: secret })
    : await tokenRequest(issuer, grant, { client_id: clientId, client_secret: secret });
  if (body.error !== (res.status === 401 ? 'invalid_client' : 'invalid_grant')) throw new Error(`unexpected token answer ${res.status}: ${JSON.stringify(body)}`);
  return res.status !== 401;
}

export async function exchangeCode(issuer: string, launch: LaunchResult, client: { client_id: string; client_secret?: string; redirect_uri: string }) {
  return tokenRequest(issuer, { grant_type: 'authorization_code', code: launch.code!, redirect_uri: client.redirect_uri, code_verifier: launch.verifier }, client);
}

/** A whole authorization (see authorize) and its code exchanged: the token response. */
export async function authorizedTokens(o: LaunchOptions) {
  return (await exchangeCode(o.server.issuer, await authorize(o), o.client)).body;
}

export function decodeJwt(token: string): { header: Record<string, any>; payload: Record<string, any> } {
  const [h, p] = token.split('.');
  return { header: JSON.parse(Buffer.from(h, 'base64url').toString()), payload: JSON.parse(Buffer.from(p, 'base64url').toString()) };
}

/** A request whose Host header names `host` (fetch always sends the URL's): a request that spells this server another way. */
export function withHost(url: string, host: string, { method = 'GET', form, headers = {} }: { method?: string; form?: Record<string, string>; headers?: Record<string, string> } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const sent = form && { 'content-type': 'application/x-www-form-urlencoded' };
    const req = httpRequest(url, { method, headers: { ...headers, host, ...sent } }, (res) => {
      let data = '';
      res.on('data', (chunk) => (data += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body: data }));
    });
    req.on('error', reject);
    req.end(form && new URLSearchParams(form).toString());
  });
}

/** A form POST whose Host header names `host`. */
export const postWithHost = (url: string, host: string, form: Record<string, string>, headers: Record<string, string> = {}) =>
  withHost(url, host, { method: 'POST', form, headers });
