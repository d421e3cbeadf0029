// The developer portal at /apps: register a SMART app through a form (the same rules as the CLI and
// RFC 7591 /register), see its credentials once, and later manage it by proving ownership with the
// registration access token (RFC 7592): edit its URLs, rotate its client secret, or delete it.
import Router from '@koa/router';
import type { Context } from 'koa';
import type { ClientMetadata } from 'oidc-provider';
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import type { ProviderHost } from '../oidc/provider-host.ts';
import { csrfToken, validCsrf } from '../csrf.ts';
import {
  addClient, ClientError, findClientMetadata, removeClient, rotateClientSecret, rotationOf, SecretAlreadyRotated, updateClient, usesClientSecret, type ClientAuth,
} from '../oidc/clients.ts';
import { field, FORM_EXPIRED, formBody, sendPage } from './session.ts';
import { databaseAuditSink } from '../audit/store.ts';
import { NO_PRIVILEGES, privilegesOfToken } from '../oidc/registration-privileges.ts';
import { changedMetadata, displayText, MAX_DISPLAY_LENGTH } from '../oidc/client-metadata.ts';
import { clientRegistrationChanged } from '../audit/balp.ts';

export interface DeveloperPortalDeps {
  config: Config;
  db: Db;
  host: ProviderHost;
}

const KINDS = ['public', 'secret', 'jwks-uri'] as const;
type Kind = (typeof KINDS)[number];

const MAX_URIS = 20;
const NOT_OWNER = 'The client ID or registration access token is not correct.';

const AUTH_LABELS: Record<string, string> = {
  none: 'Public (no secret; PKCE only)',
  client_secret_basic: 'Confidential, client secret (HTTP Basic)',
  client_secret_post: 'Confidential, client secret (form post)',
  private_key_jwt: 'Confidential, asymmetric (private_key_jwt)',
};

interface RegistrationForm {
  client_name: string;
  redirect_uris: string;
  launch_uri: string;
  auth: string;
  jwks_uri: string;
  scope: string;
}

const EMPTY_FORM: RegistrationForm = { client_name: '', redirect_uris: '', launch_uri: '', auth: 'public', jwks_uri: '', scope: '' };

const lines = (text: string) => text.split(/\r?\n/).map((s) => s.trim()).filter(Boolean);

/** An https logo URL, or undefined: anything else is not shown. */
export function httpsLogo(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const url = URL.parse(value);
  return url?.protocol === 'https:' ? url.href : undefined;
}

/** What the manage page shows of a client (never its secret). */
function clientView(md: ClientMetadata) {
  const authMethod = String(md.token_endpoint_auth_method ?? 'client_secret_basic');
  return {
    clientId: String(md.client_id),
    name: typeof md.client_name === 'string' && md.client_name ? md.client_name : String(md.client_id),
    logo: httpsLogo(md.logo_uri),
    authLabel: AUTH_LABELS[authMethod] ?? authMethod,
    grantTypes: Array.isArray(md.grant_types) ? md.grant_types.map(String) : [],
    scope: typeof md.smart_scope === 'string' ? md.smart_scope : undefined,
    redirectUris: Array.isArray(md.redirect_uris) ? md.redirect_uris.map(String) : [],
    postLogoutRedirectUris: Array.isArray(md.post_logout_redirect_uris) ? md.post_logout_redirect_uris.map(String) : [],
    launchUri: typeof md.launch_uri === 'string' ? md.launch_uri : '',
    jwksUri: typeof md.jwks_uri === 'string' ? md.jwks_uri : '',
    // A key URL can be edited for private_key_jwt clients that publish their keys at a URL (not inline keys).
    editableJwksUri: authMethod === 'private_key_jwt' && md.jwks === undefined,
    hasSecret: usesClientSecret(md),
    /** What the rotation form names as the secret it replaces (a reload of its answer rotates nothing). */
    rotation: usesClientSecret(md) ? rotationOf(md) : undefined,
  };
}

/** The page a registration form gets when its address is over the registration rate limit (429 and Retry-After are set). */
export const registrationFormRefused = (demo: boolean) => (ctx: Context, retryAfter: number) => sendPage(ctx, 'error', {
  demo, title: 'Too many registrations',
  description: `Too many apps were registered from your network. Try again in ${retryAfter} seconds.`,
  hint: 'Wait, then go back and send the form again.',
}, 429);

export function developerPortalRoutes({ config, db, host }: DeveloperPortalDeps): Router {
  const router = new Router();
  const audit = databaseAuditSink(db);
  const registrationChanged = (ctx: Context, change: 'create' | 'update' | 'delete', clientId: string, fields?: string[]) =>
    audit.append(clientRegistrationChanged({ recorded: new Date(), issuer: config.issuer, address: ctx.ip, change, clientId, by: { clientId }, fields }));
  const needsInitialAccessToken = config.registration === 'token';

  function showRegistration(ctx: Context, form: RegistrationForm, message?: string, status = 200) {
    return sendPage(ctx, 'apps', {
      title: 'Register a SMART app', demo: config.demo, csrf: csrfToken(ctx), form, message,
      needsInitialAccessToken, issuer: config.issuer, fhirBase: config.fhirBase,
    }, status);
  }

  function showManageLogin(ctx: Context, clientId = '', message?: string, status = 200) {
    return sendPage(ctx, 'apps-manage-login', { title: 'Manage an app', demo: config.demo, csrf: csrfToken(ctx), clientId, message }, status);
  }

  function showManage(ctx: Context, md: ClientMetadata, rat: string, extra: { message?: string; notice?: string; form?: Record<string, string>; newSecret?: string } = {}, status = 200) {
    const client = clientView(md);
    const form = extra.form ?? {
      redirect_uris: client.redirectUris.join('\n'), post_logout_redirect_uris: client.postLogoutRedirectUris.join('\n'),
      launch_uri: client.launchUri, jwks_uri: client.jwksUri,
    };
    return sendPage(ctx, 'apps-manage', {
      title: `Manage ${client.name}`, demo: config.demo, csrf: csrfToken(ctx), client, rat, form,
      registrationClientUri: `${config.issuer}/register/${encodeURIComponent(client.clientId)}`,
      message: extra.message, notice: extra.notice, newSecret: extra.newSecret,
    }, status);
  }

  /**
   * The app a management form is for and the token that proves it is the sender's, when the form carries a
   * valid CSRF token and the registration access token issued for the client named; otherwise the refusal
   * is sent and undefined returned. An unknown client and a wrong token look the same to the caller.
   */
  async function formOwner(ctx: Context) {
    const body = ctx.request.body;
    if (!validCsrf(ctx, field(body, 'csrf'))) {
      await sendPage(ctx, 'error', { demo: config.demo, ...FORM_EXPIRED }, 403);
      return undefined;
    }
    const clientId = field(body, 'client_id').trim();
    const rat = field(body, 'registration_access_token').trim();
    const token = clientId && rat ? await host.provider.RegistrationAccessToken.find(rat) : undefined;
    const metadata = token?.clientId === clientId ? await findClientMetadata(db, clientId) : undefined;
    if (!token || !metadata) {
      await showManageLogin(ctx, clientId, NOT_OWNER, 403);
      return undefined;
    }
    return { clientId, rat, token, metadata };
  }

  router.get('/apps', (ctx) => showRegistration(ctx, EMPTY_FORM));

  router.post('/apps', formBody, async (ctx) => {
    const body = ctx.request.body;
    if (!validCsrf(ctx, field(body, 'csrf'))) return sendPage(ctx, 'error', { demo: config.demo, ...FORM_EXPIRED }, 403);
    const form: RegistrationForm = {
      client_name: field(body, 'client_name').trim(),
      redirect_uris: field(body, 'redirect_uris'),
      launch_uri: field(body, 'launch_uri').trim(),
      auth: field(body, 'auth'),
      jwks_uri: field(body, 'jwks_uri').trim(),
      scope: field(body, 'scope').trim().split(/\s+/).filter(Boolean).join(' '),
    };

    // Anyone registers SMART apps only; more needs an initial access token that carries it.
    let ceiling = NO_PRIVILEGES;
    if (needsInitialAccessToken) {
      const privileges = await privilegesOfToken(db, host.provider, field(body, 'initial_access_token').trim());
      if (!privileges) {
        return showRegistration(ctx, form, 'A valid initial access token is required to register an app on this server. Ask its administrator for one.', 403);
      }
      ceiling = privileges;
    }

    const redirectUris = lines(form.redirect_uris);
    const kind = (KINDS as readonly string[]).includes(form.auth) ? (form.auth as Kind) : undefined;
    let problem: string | undefined;
    if (!form.client_name) problem = 'Enter a name for the app.';
    else if ('problem' in displayText('client_name', form.client_name)) problem = `The name must be at most ${MAX_DISPLAY_LENGTH} characters, on one line, without control characters.`;
    else if (!kind) problem = 'Choose the kind of client.';
    else if (kind !== 'jwks-uri' && !redirectUris.length) problem = 'Enter at least one redirect URI.';
    else if (redirectUris.length > MAX_URIS) problem = `Enter at most ${MAX_URIS} redirect URIs.`;
    else if (kind === 'jwks-uri' && !form.jwks_uri) problem = 'Enter the JWKS URL where the app publishes its public keys.';
    if (problem || !kind) return showRegistration(ctx, form, problem, 400);

    const auth: ClientAuth = kind === 'jwks-uri' ? { kind, jwksUri: form.jwks_uri } : { kind };
    let metadata: ClientMetadata;
    try {
      metadata = await addClient(db, host.provider, {
        name: form.client_name, redirectUris, launchUri: form.launch_uri || undefined, auth, scope: form.scope || undefined,
        // The form asks for no purposes of use nor organization: the app keeps the initial access token's.
        purposes: ceiling.purposes, organizationId: ceiling.organizationId, organizationName: ceiling.organizationName,
      }, ceiling);
    } catch (err) {
      if (err instanceof ClientError) return showRegistration(ctx, form, err.message, 400);
      throw err;
    }
    const clientId = String(metadata.client_id);
    await registrationChanged(ctx, 'create', clientId, Object.keys(metadata));
    // (the published types lack the constructor's properties argument; this is `new RegistrationAccessToken({ clientId })`)
    const token = new host.provider.RegistrationAccessToken();
    token.clientId = clientId;
    const rat = await token.save();
    return sendPage(ctx, 'apps-registered', {
      title: 'App registered', demo: config.demo,
      client: clientView(metadata),
      clientSecret: typeof metadata.client_secret === 'string' ? metadata.client_secret : undefined,
      rat,
      registrationClientUri: `${config.issuer}/register/${encodeURIComponent(clientId)}`,
      issuer: config.issuer, fhirBase: config.fhirBase,
    });
  });

  router.get('/apps/manage', (ctx) => showManageLogin(ctx));

  router.post('/apps/manage', formBody, async (ctx) => {
    const owned = await formOwner(ctx);
    if (owned) await showManage(ctx, owned.metadata, owned.rat);
  });

  router.post('/apps/manage/edit', formBody, async (ctx) => {
    const owned = await formOwner(ctx);
    if (!owned) return;
    const { clientId, rat } = owned;
    const body = ctx.request.body;
    const form = {
      redirect_uris: field(body, 'redirect_uris'), post_logout_redirect_uris: field(body, 'post_logout_redirect_uris'),
      launch_uri: field(body, 'launch_uri').trim(), jwks_uri: field(body, 'jwks_uri').trim(),
    };
    const redirectUris = lines(form.redirect_uris);
    const postLogoutRedirectUris = lines(form.post_logout_redirect_uris);
    const grantTypes = Array.isArray(owned.metadata.grant_types) ? owned.metadata.grant_types : [];
    const fail = (message: string) => showManage(ctx, owned.metadata, rat, { message, form }, 400);
    if (grantTypes.includes('authorization_code') && !redirectUris.length) return fail('Enter at least one redirect URI.');
    if (redirectUris.length > MAX_URIS) return fail(`Enter at most ${MAX_URIS} redirect URIs.`);
    if (postLogoutRedirectUris.length > MAX_URIS) return fail(`Enter at most ${MAX_URIS} post-logout redirect URIs.`);
    const editableJwksUri = clientView(owned.metadata).editableJwksUri;
    if (editableJwksUri && !form.jwks_uri) return fail('Enter the JWKS URL where the app publishes its public keys.');

    let updated: ClientMetadata;
    try {
      // The same rules as at registration (client-metadata.ts): https, or http on localhost outside production; no fragment.
      updated = await updateClient(db, host.provider, clientId, {
        redirect_uris: redirectUris,
        post_logout_redirect_uris: postLogoutRedirectUris.length ? postLogoutRedirectUris : undefined,
        launch_uri: form.launch_uri || undefined,
        ...(editableJwksUri ? { jwks_uri: form.jwks_uri } : {}),
      });
    } catch (err) {
      if (err instanceof ClientError) return fail(err.message);
      throw err;
    }
    await registrationChanged(ctx, 'update', clientId, changedMetadata(owned.metadata, updated));
    return showManage(ctx, updated, rat, { notice: 'Saved. The new settings apply at once.' });
  });

  router.post('/apps/manage/rotate-secret', formBody, async (ctx) => {
    const owned = await formOwner(ctx);
    if (!owned) return;
    const client = clientView(owned.metadata);
    if (!client.hasSecret) return showManage(ctx, owned.metadata, owned.rat, { message: `This app has no client secret to rotate: ${client.authLabel}.` }, 400);
    let secret: string;
    try {
      secret = await rotateClientSecret(db, owned.clientId, field(ctx.request.body, 'rotation'));
    } catch (err) {
      if (err instanceof SecretAlreadyRotated) return showManage(ctx, owned.metadata, owned.rat, { message: `${err.message} The new secret was shown once, after that rotation; if it is lost, rotate again below.` }, 409);
      if (err instanceof ClientError) return showManage(ctx, owned.metadata, owned.rat, { message: err.message }, 400);
      throw err;
    }
    await registrationChanged(ctx, 'update', owned.clientId, ['client_secret']);
    // Answered here, with no-store (sendPage): the secret is shown once and kept nowhere; sending the form again is refused.
    return showManage(ctx, { ...owned.metadata, client_secret: secret }, owned.rat, { newSecret: secret });
  });

  router.post('/apps/manage/delete', formBody, async (ctx) => {
    const owned = await formOwner(ctx);
    if (!owned) return;
    const { clientId } = owned;
    const name = clientView(owned.metadata).name;
    // What the app was granted dies with it: refresh tokens, codes, and access tokens through their grant.
    await removeClient(db, clientId);
    await owned.token.destroy();
    await registrationChanged(ctx, 'delete', clientId);
    return sendPage(ctx, 'apps-deleted', { title: 'App deleted', demo: config.demo, name, clientId });
  });

  return router;
}
