// smart-auth CLI: users, clients, EHR launches and keys, on the same database as the server.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, loadConfig, MAX_CLIENT_CACHE_MS, type Config } from '../server/config.ts';
import { migrate, nowSeconds, openDatabase, type Db } from '../server/db.ts';
import { addUser, checkNewUser, disableUser, findUserByUsername, listUsers, newPasswordHash, storePasswordHash, UserError, type User, type UserAttributes } from '../server/oidc/users.ts';
import { hashPassword } from '../server/oidc/passwords.ts';
import { enrolTotpDirectly, removeAllFactors } from '../server/auth/factors.ts';
import { otpauthUri } from '../server/auth/totp.ts';
import { totpIssuerName } from '../server/auth/enrolment-page.ts';
import { userSecurityChanged } from '../server/audit/balp.ts';
import { auditUserOf } from '../server/audit/security-events.ts';
import { addClient, ClientError, clientExists, clientNames, clientOrganizationOf, listClients, rebindClient, removeClient, rotateClientSecret, type ClientAuth } from '../server/oidc/clients.ts';
import { issueInitialAccessToken, invalidPrivileges, organizationProblem, type Privileges } from '../server/oidc/registration-privileges.ts';
import { checkEncryptionSecret, KeyEncryptionError, keyPolicy, listSigningKeys, rotateSigningKeys } from '../server/oidc/keys.ts';
import { isPrivacyOfficerRole, isPurposeOfUse } from '../server/hcs/codes.ts';
import { assertablePurposes, defaultUserPurposes } from '../server/hcs/policy.ts';
import { AuditWriteError, changeWithRecords, createAuditStore } from '../server/audit/audit-store.ts';
import { checkpointSigner } from '../server/oidc/keys.ts';
import { auditLogUsed, clientRegistrationChanged, ehrLaunchCreated, initialAccessTokenIssued, signingKeyRotated } from '../server/audit/balp.ts';
import { disclosureEvents, disclosureLines, summaryOf } from '../server/audit/disclosures.ts';
import { toCsv, toFhirBundle, toJson, toPdf } from '../server/audit/render.ts';
import { signedHeadIn } from '../server/audit/signed-head.ts';
import type { AuditEvent } from '../server/audit/types.ts';
import { checkLaunchRequest, launchUserProblem, mintRecordedLaunch } from '../server/launcher.ts';
import type Provider from 'oidc-provider';
import { upstreamPatientDirectory, type PatientDirectory } from '../server/fhir/patient-directory.ts';

class UsageError extends Error {}
/** The command did nothing, for now: try again shortly (exit 1). */
class Unavailable extends Error {}

// oidc-provider and the FHIR store are loaded by the commands that use them only: a CLI call that
// needs neither starts in about half the time.
const providerHost = () => import('../server/oidc/provider-host.ts');

async function toolProvider(config: Config, db: Db): Promise<Provider> {
  return (await providerHost()).createToolProvider(config, db);
}

async function patientDirectory(config: Config, db: Db): Promise<PatientDirectory> {
  return upstreamPatientDirectory((await import('../server/fhir/upstream-of.ts')).configuredUpstream(config, db).upstream);
}

/** Where a command runs: its settings and its standard streams (the process's own, or a test's). */
export interface CliIo {
  env: Record<string, string | undefined>;
  stdout: { write(chunk: string | Uint8Array): unknown };
  stderr: { write(chunk: string | Uint8Array): unknown };
  stdin: AsyncIterable<string | Uint8Array> & { isTTY?: boolean };
}

const processIo: CliIo = { env: process.env, stdout: process.stdout, stderr: process.stderr, stdin: process.stdin };

interface Command {
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  run(args: { values: Record<string, unknown>; positionals: string[] }, env: { db: Db; config: Config; io: CliIo }): Promise<{ json: unknown; text: string }>;
}

const json = { json: { type: 'boolean' } } as const;

function parseCoding(value: string): { system: string; code: string } {
  const bar = value.lastIndexOf('|');
  if (bar <= 0 || bar === value.length - 1) throw new UsageError(`--role must be <system>|<code>, got "${value}"`);
  return { system: value.slice(0, bar), code: value.slice(bar + 1) };
}

const strings = (v: unknown) => (v as string[] | undefined) ?? [];
const commaList = (s: unknown) => (typeof s === 'string' ? s.split(',').map((x) => x.trim()).filter(Boolean) : undefined);

function checkPurposes(purposes: string[]): void {
  const unknown = purposes.filter((p) => !isPurposeOfUse(p));
  if (unknown.length) throw new UsageError(`--purpose takes v3-ActReason purpose-of-use codes (TREAT, ETREAT, HPAYMT, ...): ${unknown.join(', ')}`);
}

/** `--organization-id <uri> [--organization <name>]`, as `user add` names them: the organization a client is bound to. */
const ORGANIZATION_OPTIONS = { organization: { type: 'string' }, 'organization-id': { type: 'string' } } as const;

function organizationOf(v: Record<string, unknown>): { organizationId?: string; organizationName?: string } {
  const organization = { organizationId: v['organization-id'] as string | undefined, organizationName: v.organization as string | undefined };
  const problem = organizationProblem(organization.organizationId, organization.organizationName);
  if (problem) throw new UsageError(problem);
  return organization;
}

const commands: Record<string, Command> = {
  'user add': {
    usage: 'user add <username> --password <pw> [--name "Jane Smith"] [--fhir-user Practitioner/123] [--role <system>|<code>]... [--purpose <code>]... [--clearance N] [--sensitivity HIV,PSY] [--break-glass] [--auditor] [--privacy-officer] [--organization "<name>"] [--organization-id <uri>] [--patients <id>,<id>] [--require-mfa]',
    options: {
      ...json, password: { type: 'string' }, name: { type: 'string' }, 'fhir-user': { type: 'string' },
      role: { type: 'string', multiple: true }, purpose: { type: 'string', multiple: true }, clearance: { type: 'string' },
      sensitivity: { type: 'string' }, 'break-glass': { type: 'boolean' }, auditor: { type: 'boolean' }, 'privacy-officer': { type: 'boolean' },
      organization: { type: 'string' }, 'organization-id': { type: 'string' }, patients: { type: 'string' },
      'require-mfa': { type: 'boolean' },
    },
    async run({ values: v, positionals: [username] }, { db, config }) {
      if (!username || !v.password) throw new UsageError('a username and --password are required');
      const list = commaList;
      const attributes: UserAttributes = {
        roles: strings(v.role).map(parseCoding),
        purposes: strings(v.purpose),
        clearance: (v.clearance as string | undefined) ?? 'N',
        sensitivities: list(v.sensitivity) ?? [],
        breakGlass: Boolean(v['break-glass']),
        auditor: Boolean(v.auditor),
        privacyOfficer: Boolean(v['privacy-officer']),
        organization: v.organization as string | undefined,
        organizationId: v['organization-id'] as string | undefined,
        patients: list(v.patients),
        ...(v['require-mfa'] ? { requireMfa: true } : {}),
      };
      if (attributes.roles!.some(isPrivacyOfficerRole)) throw new UsageError('the privacy-officer role is given with --privacy-officer, not --role');
      checkPurposes(attributes.purposes!);
      // A user may name their organization without its URI.
      const organization = organizationProblem(attributes.organizationId, undefined);
      if (organization) throw new UsageError(organization);
      if (!['U', 'L', 'M', 'N', 'R', 'V'].includes(attributes.clearance!)) throw new UsageError('--clearance is one of U L M N R V');
      const fhirUser = v['fhir-user'] as string | undefined;
      checkNewUser({ username, password: String(v.password), fhirUser });
      const patientUser = Boolean(fhirUser?.startsWith('Patient/'));
      if (!attributes.purposes!.length) {
        attributes.purposes = defaultUserPurposes(config.policy, { roles: attributes.roles!, patientUser, operations: attributes.auditor! || attributes.privacyOfficer! });
      }
      const subject = { roles: attributes.roles!, purposes: attributes.purposes!, clearance: 'N', sensitivities: [], breakGlass: attributes.breakGlass!, patientUser };
      if (!assertablePurposes(config.policy, subject).length) {
        throw new UsageError(`${username} could assert no purpose of use under the policy, so could sign in to no app: give a clinician a --role `
          + '(e.g. http://terminology.hl7.org/CodeSystem/practitioner-role|doctor), a patient --fhir-user Patient/<id>, or --purpose codes their role may assert');
      }
      // Hashed before the transaction: scrypt inside it would hold SQLite's write lock (the server's writes wait) for its ~0.15 s.
      const passwordHash = await hashPassword(String(v.password));
      const { id, name } = await recordedChange(db, (trx) => addUser(trx, { username, password: String(v.password), name: v.name as string | undefined, fhirUser, attributes }, async () => passwordHash),
        (user) => [userSecurityChanged({ ...administrator(config), user: auditUserOf(user), change: 'create', what: 'account', byAdministrator: true })]);
      return { json: { id, username, name, fhirUser: fhirUser ?? null, ...attributes }, text: `added user ${username} (${id}), purposes of use ${attributes.purposes!.join(', ')}` };
    },
  },
  'user list': {
    usage: 'user list',
    options: json,
    async run(_args, { db }) {
      const users = (await listUsers(db)).map(({ id, username, name, fhirUser, disabled, attributes }) => ({ id, username, name, fhirUser, disabled, ...attributes }));
      return {
        json: { users },
        text: users.map((u) => `${u.username.padEnd(20)} ${(u.fhirUser ?? '-').padEnd(28)} ${(u.disabled ? 'disabled' : 'active').padEnd(8)} `
          + `${(u.purposes?.join(',') || '-').padEnd(24)} ${u.name ?? ''}${u.privacyOfficer ? '  (privacy officer)' : ''}`).join('\n') || 'no users',
      };
    },
  },
  'user disable': {
    usage: 'user disable <username>',
    options: json,
    async run({ positionals: [username] }, { db, config }) {
      const user = await existingUser(db, username);
      await recordedChange(db, (trx) => disableUser(trx, user.username),
        () => [userSecurityChanged({ ...administrator(config), user: auditUserOf(user), change: 'update', what: 'disabled; sessions and grants ended', byAdministrator: true })]);
      return { json: { username, disabled: true }, text: `disabled ${username}; their sessions and grants have ended` };
    },
  },
  'user mfa': {
    usage: 'user mfa <username> (--totp | --remove)   (--totp: a new authenticator, printed as an otpauth:// URI, and recovery codes; --remove: every second factor, after a lost device)',
    options: { ...json, totp: { type: 'boolean' }, remove: { type: 'boolean' } },
    async run({ values: v, positionals: [username] }, { db, config }) {
      const user = await existingUser(db, username);
      if (Boolean(v.totp) === Boolean(v.remove)) throw new UsageError('give exactly one of --totp and --remove');
      if (v.remove) {
        const removed = await recordedChange(db, (trx) => removeAllFactors(trx, user.id),
          () => [userSecurityChanged({ ...administrator(config), user: auditUserOf(user), change: 'delete', what: 'all second factors', byAdministrator: true })]);
        return { json: { username, removed }, text: `removed ${removed} second factor(s) of ${username}` };
      }
      await checkEncryptionSecret(db, config.keyEncryptionSecret);
      const { secret, recoveryCodes } = await recordedChange(db, (trx) => enrolTotpDirectly(trx, user.id, config.keyEncryptionSecret),
        () => [userSecurityChanged({ ...administrator(config), user: auditUserOf(user), change: 'create', what: 'totp', byAdministrator: true })]);
      const uri = otpauthUri(secret, totpIssuerName(config.issuer), user.username);
      return {
        json: { username, otpauth_uri: uri, recovery_codes: recoveryCodes },
        text: [`authenticator for ${username} (give it to them privately; it replaces any earlier one):`, uri, '', 'recovery codes (each works once):', ...recoveryCodes].join('\n'),
      };
    },
  },
  'user password': {
    usage: 'user password <username> [--password <pw>]   (without --password: read from stdin; ends the user\'s sessions and grants)',
    options: { ...json, password: { type: 'string' } },
    async run({ values: v, positionals: [username] }, { db, config, io }) {
      const user = await existingUser(db, username);
      const password = typeof v.password === 'string' ? v.password : (await readStdin(io)).replace(/\r?\n$/, '');
      const passwordHash = await newPasswordHash(user, password); // before the transaction, as in user add
      await recordedChange(db, (trx) => storePasswordHash(trx, user, passwordHash),
        () => [userSecurityChanged({ ...administrator(config), user: auditUserOf(user), change: 'update', what: 'password', byAdministrator: true })]);
      return { json: { username, password_changed: true }, text: `changed the password of ${username}; their sessions and grants have ended` };
    },
  },
  'client add': {
    usage: 'client add --name <name> [--redirect-uri <url>]... [--post-logout-redirect-uri <url>]... [--launch-uri <url>] (--public | --secret | --jwks-uri <url> | --jwks-file <path>) [--scope "<scopes>"] [--grant-type <type>]... [--purpose <code>]... [--resource-server] [--clearance <code>] [--sensitivity <codes or *>] [--organization-id <uri> [--organization "<name>"]]',
    options: {
      ...json, name: { type: 'string' }, 'redirect-uri': { type: 'string', multiple: true }, 'post-logout-redirect-uri': { type: 'string', multiple: true },
      'launch-uri': { type: 'string' },
      public: { type: 'boolean' }, secret: { type: 'boolean' }, 'jwks-uri': { type: 'string' }, 'jwks-file': { type: 'string' },
      scope: { type: 'string' }, 'grant-type': { type: 'string', multiple: true }, 'resource-server': { type: 'boolean' },
      purpose: { type: 'string', multiple: true }, clearance: { type: 'string' }, sensitivity: { type: 'string' },
      ...ORGANIZATION_OPTIONS,
    },
    async run({ values: v }, { db, config }) {
      if (!v.name) throw new UsageError('--name is required');
      const organization = organizationOf(v);
      const auths: ClientAuth[] = [];
      if (v.public) auths.push({ kind: 'public' });
      if (v.secret) auths.push({ kind: 'secret' });
      if (v['jwks-uri']) auths.push({ kind: 'jwks-uri', jwksUri: String(v['jwks-uri']) });
      if (v['jwks-file']) {
        let jwks: { keys?: unknown };
        try {
          jwks = JSON.parse(readFileSync(String(v['jwks-file']), 'utf8'));
        } catch (err) {
          throw new UsageError(`--jwks-file: cannot read a JSON JWKS: ${(err as Error).message}`);
        }
        if (!Array.isArray(jwks.keys)) throw new UsageError('--jwks-file must hold {"keys": [...]}');
        if (jwks.keys.some((k: { d?: unknown }) => k.d !== undefined)) throw new UsageError('--jwks-file must hold public keys only');
        auths.push({ kind: 'jwks', jwks: jwks as { keys: object[] } });
      }
      if (auths.length !== 1) throw new UsageError('choose exactly one of --public, --secret, --jwks-uri, --jwks-file');
      const provider = await toolProvider(config, db);
      const metadata = await recordedChange(db, (trx) => addClient(trx, provider, {
        name: String(v.name), redirectUris: strings(v['redirect-uri']), postLogoutRedirectUris: strings(v['post-logout-redirect-uri']),
        launchUri: v['launch-uri'] as string | undefined,
        auth: auths[0], scope: v.scope as string | undefined, grantTypes: strings(v['grant-type']),
        resourceServer: Boolean(v['resource-server']), purposes: strings(v.purpose),
        clearance: v.clearance as string | undefined, sensitivity: commaList(v.sensitivity), ...organization,
      }), (added) => [clientRegistrationChanged({ ...administrator(config), change: 'create', clientId: String(added.client_id), by: {}, fields: Object.keys(added) })]);
      const out: Record<string, unknown> = { client_id: metadata.client_id };
      if (metadata.client_secret) out.client_secret = metadata.client_secret;
      return {
        json: out,
        text: `client_id: ${metadata.client_id}${metadata.client_secret ? `\nclient_secret: ${metadata.client_secret}  (shown once; store it now)` : ''}`,
      };
    },
  },
  'client list': {
    usage: 'client list',
    options: json,
    async run(_args, { db }) {
      const clients = (await listClients(db)).map(({ client_secret: _secret, ...c }) => c);
      return {
        json: { clients },
        text: clients.map((c) => `${String(c.client_id).padEnd(36)} ${String(c.token_endpoint_auth_method).padEnd(20)} ${c.client_name ?? ''}`
          + (c.organization_id ? `  (organization ${[c.organization_name, c.organization_id].filter(Boolean).join(', ')})` : '')).join('\n') || 'no clients',
      };
    },
  },
  'client remove': {
    usage: 'client remove <client_id>',
    options: json,
    async run({ positionals: [clientId] }, { db, config }) {
      if (!clientId) throw new UsageError('a client_id is required');
      await recordedChange(db, async (trx) => {
        if (!(await removeClient(trx, clientId))) throw new UsageError(`no client ${clientId}`);
      }, () => [clientRegistrationChanged({ ...administrator(config), change: 'delete', clientId, by: {} })]);
      return { json: { client_id: clientId, removed: true }, text: `removed ${clientId}` };
    },
  },
  'client rotate-secret': {
    usage: 'client rotate-secret <client_id>   (a new client secret, shown once; the old one stops working, on a running server within CLIENT_CACHE_MS)',
    options: json,
    async run({ positionals: [clientId] }, { db, config }) {
      if (!clientId) throw new UsageError('a client_id is required');
      const secret = await recordedChange(db, (trx) => rotateClientSecret(trx, clientId),
        () => [clientRegistrationChanged({ ...administrator(config), change: 'update', clientId, by: {}, fields: ['client_secret'] })]);
      return { json: { client_id: clientId, client_secret: secret }, text: `client_secret: ${secret}  (shown once; store it now; the old secret no longer works)` };
    },
  },
  'client update': {
    usage: 'client update <client_id> (--organization-id <uri> [--organization "<name>"] | --no-organization)   (binds the client to another organization, or to none, and ends the access tokens and grants it holds, and those issued in the minute after, while a running server may still use its cached copy)',
    options: { ...json, ...ORGANIZATION_OPTIONS, 'no-organization': { type: 'boolean' } },
    async run({ values: v, positionals: [clientId] }, { db, config }) {
      if (!clientId) throw new UsageError('a client_id is required');
      const { organizationId, organizationName } = organizationOf(v);
      if (Boolean(v['no-organization']) === (organizationId !== undefined)) throw new UsageError('give --organization-id <uri> [--organization "<name>"], or --no-organization');
      // A new binding replaces the whole old one: a name left out is removed, not kept from the old organization.
      const provider = await toolProvider(config, db);
      // Tokens a running server issues before it rereads the client carry the old binding: they end too. Servers may
      // run with another CLIENT_CACHE_MS than this process: allow for the longest any may have.
      const issuedUpTo = nowSeconds() + Math.ceil(MAX_CLIENT_CACHE_MS / 1000);
      // The binding the client already has is no change: nothing recorded, nothing ended.
      const { metadata, changed } = await recordedChange(db,
        (trx) => rebindClient(trx, provider, clientId, organizationId === undefined ? undefined : { id: organizationId, name: organizationName }, issuedUpTo),
        (done) => done.changed ? [clientRegistrationChanged({ ...administrator(config), change: 'update', clientId, by: {}, fields: ['organization_id', 'organization_name'], endedAccess: true })] : []);
      const organization = clientOrganizationOf(metadata);
      const bound = organization ? `${clientId} is bound to organization ${[organization.name, organization.id].filter(Boolean).join(', ')}` : `${clientId} is bound to no organization`;
      return {
        json: { client_id: clientId, organization_id: organization?.id ?? null, organization_name: organization?.name ?? null, ended_access: changed },
        text: changed ? `${bound}; its access tokens and grants issued before the change, and in the minute after it, have ended` : `${bound} already: nothing changed`,
      };
    },
  },
  'launch create': {
    usage: 'launch create --patient <id> [--encounter <id>] [--client <client_id>] [--user <username>] [--fhir-context <Type/id>]...',
    options: { ...json, patient: { type: 'string' }, encounter: { type: 'string' }, client: { type: 'string' }, user: { type: 'string' }, 'fhir-context': { type: 'string', multiple: true } },
    async run({ values: v }, { db, config }) {
      if (!v.patient) throw new UsageError('--patient is required');
      const username = v.user as string | undefined;
      const user = username ? await findUserByUsername(db, username) : undefined;
      const request = {
        patient: String(v.patient), encounter: v.encounter as string | undefined, clientId: v.client as string | undefined,
        userId: user?.id, fhirContext: strings(v['fhir-context']),
      };
      const patients = await patientDirectory(config, db);
      const problem = await checkLaunchRequest({ patients, clientExists: (id) => clientExists(db, id) }, request)
        ?? (username ? launchUserProblem(username, user, request.patient) : undefined);
      if (problem) throw new UsageError(problem);
      let launch: string;
      try {
        launch = await mintRecordedLaunch(db, config, request, (id) => recordAdministration(db, config, ehrLaunchCreated({ ...administrator(config), launch: id, ...request, by: {} })));
      } catch (err) {
        if (err instanceof AuditWriteError) throw new Unavailable('the audit trail cannot take the record of this launch now: no launch was created; try again shortly');
        throw err;
      }
      return { json: { launch, expires_in: config.launchTtl }, text: `launch: ${launch}  (single use, expires in ${config.launchTtl} s)` };
    },
  },
  'keys list': {
    usage: 'keys list',
    options: json,
    async run(_args, { db, config }) {
      const keys = await listSigningKeys(db, keyPolicy(config));
      const when = (t: number | null) => (t === null ? '-' : new Date(t * 1000).toISOString());
      return {
        json: { keys },
        text: keys.map((k) => `${k.kid.padEnd(44)} ${k.alg.padEnd(6)} ${k.state.padEnd(8)} created ${when(k.createdAt)}  signs from ${when(k.activatesAt)}  unpublished ${when(k.unpublishAt)}`).join('\n'),
      };
    },
  },
  'keys rotate': {
    usage: 'keys rotate',
    options: json,
    async run(_args, { db, config }) {
      const keys = await recordedChange(db, (trx) => rotateSigningKeys(trx, keyPolicy(config)),
        (added) => added.map((key) => signingKeyRotated({ ...administrator(config), kid: key.kid, alg: key.alg })));
      return {
        json: { keys },
        text: keys.map((k) => `new ${k.alg} key ${k.kid}: published now, signs from ${new Date(k.activatesAt * 1000).toISOString()}`).join('\n'),
      };
    },
  },
  'audit verify': {
    usage: 'audit verify [--checkpoint <file or JSON>]   (exit 0 when the chain, its index columns and its checkpoints are intact, and it reaches the signed head given; else 1 and the first bad record)',
    options: { ...json, checkpoint: { type: 'string' } },
    async run({ values: v }, { db, config }) {
      const result = await auditStore(db, config).verify(v.checkpoint === undefined ? undefined : signedHeadArgument(String(v.checkpoint)));
      if (!result.ok) {
        throw new AuditBroken(result, `the audit trail does not verify: record ${result.seq} (AuditEvent/${result.eventId}): ${result.problem}`);
      }
      return { json: result, text: `the audit trail verifies: ${result.records} records, ${result.checkpoints} signed checkpoints` };
    },
  },
  'audit export': {
    usage: 'audit export --patient <id> --format csv|json|fhir|pdf [--out <file>] [--names] [--attempts]   (the accounting of disclosures; --names: also the staff member\'s name, in json and pdf; --attempts: also the refused and failed accesses that named the patient)',
    options: { ...json, patient: { type: 'string' }, format: { type: 'string' }, out: { type: 'string' }, names: { type: 'boolean' }, attempts: { type: 'boolean' } },
    async run({ values: v }, { db, config, io }) {
      const patient = String(v.patient ?? '');
      const format = String(v.format ?? '');
      if (!patient) throw new UsageError('--patient is required');
      if (!['csv', 'json', 'fhir', 'pdf'].includes(format)) throw new UsageError('--format is csv, json, fhir or pdf');
      const store = auditStore(db, config);
      const events = await store.search({ patient }); // every event: a report is never cut short
      const selfUserIds = (await db('users').where('fhir_user', `Patient/${patient}`).select('id')).map((r: { id: string }) => r.id);
      const attempts = Boolean(v.attempts);
      // Reading the trail is recorded before anything is shown, as every other read of it is.
      const details = { format, names: v.names ? 'true' : undefined, attempts: attempts ? 'true' : undefined };
      await failingClosed(() => recordAdministration(db, config, auditLogUsed({ ...administrator(config), use: 'export', patient, details })), 'read', 'nothing was exported');
      const plain = disclosureLines(events, { patient, names: Boolean(v.names), selfUserIds, attempts });
      const appNames = await clientNames(db, plain.map((l) => l.app));
      const lines = plain.map((l) => ({ ...l, app: appNames[l.app] ?? l.app }));
      const content = format === 'csv' ? toCsv(lines)
        : format === 'json' ? toJson(lines, { extras: Boolean(v.names) })
          : format === 'fhir' ? JSON.stringify(toFhirBundle(disclosureEvents(events, { patient, attempts })), null, 2)
            : await toPdf(lines, summaryOf(lines), {
              patientId: patient, generated: new Date(),
              patientName: await (await patientDirectory(config, db)).get(patient).then((p) => p?.name, () => undefined),
            });
      if (v.out) writeFileSync(String(v.out), content);
      else io.stdout.write(content);
      return v.out ? { json: { patient, format, out: v.out, lines: lines.length }, text: `wrote ${lines.length} disclosures to ${v.out}` } : { json: undefined, text: '' };
    },
  },
  'audit purge': {
    usage: 'audit purge [--before <date>]   (removes older records, default: older than AUDIT_RETENTION_DAYS; keeps those of patients under a privacy hold; the chain stays verifiable)',
    options: { ...json, before: { type: 'string' } },
    async run({ values: v }, { db, config }) {
      if (!v.before && !config.auditRetentionDays) throw new UsageError('give --before <date>, or set AUDIT_RETENTION_DAYS');
      const kept = config.auditRetentionDays === undefined ? undefined : new Date(Date.now() - config.auditRetentionDays * 86_400_000);
      const before = v.before ? new Date(String(v.before)) : kept!;
      if (Number.isNaN(before.getTime())) throw new UsageError('--before takes a date, e.g. 2025-01-01');
      // A cut-off to come would take records still being written, at every instance; one inside the retention
      // period, records the policy keeps.
      if (before.getTime() > Date.now()) throw new UsageError(`--before ${before.toISOString()} is in the future: a purge removes records older than a past date`);
      if (kept && before > kept) throw new UsageError(`--before ${before.toISOString()} would remove records AUDIT_RETENTION_DAYS (${config.auditRetentionDays}) keeps: give ${kept.toISOString().slice(0, 10)} or earlier`);
      if (config.auditForwardUrl) {
        // Records the external repository does not have yet stay: forwarding must lose nothing.
        const forwarded = Number((await db('audit_forwarding').where('id', 1).first('seq'))?.seq ?? 0);
        const last = await db('audit_events').where('recorded_at', '<', before.getTime()).max({ seq: 'seq' }).first();
        if (Number(last?.seq ?? 0) > forwarded) throw new UsageError(`records before ${before.toISOString()} are not yet forwarded to ${config.auditForwardUrl}; purge after they are`);
      }
      // The purge and its record commit together: nothing is removed unrecorded.
      const result = await failingClosed(() => auditStore(db, config).purge(before, ({ removed, kept }) =>
        [auditLogUsed({ ...administrator(config), use: 'purge', details: { before: before.toISOString(), removed: String(removed), kept: String(kept) } })]));
      return { json: result, text: `removed ${result.removed} audit records recorded before ${before.toISOString()}; kept ${result.kept} under privacy holds` };
    },
  },
  'audit hold': {
    usage: 'audit hold --patient <id> --reason "<why>"   (a privacy hold: the patient\'s records are never purged)',
    options: { ...json, patient: { type: 'string' }, reason: { type: 'string' } },
    async run({ values: v }, { db, config }) {
      if (!v.patient || !v.reason) throw new UsageError('--patient and --reason are required');
      await recordedChange(db, (trx) => auditStore(trx, config).hold(String(v.patient), String(v.reason)),
        () => [auditLogUsed({ ...administrator(config), use: 'hold', patient: String(v.patient), details: { reason: String(v.reason) } })]);
      return { json: { patient: v.patient, held: true }, text: `privacy hold on patient ${v.patient}` };
    },
  },
  'audit release': {
    usage: 'audit release --patient <id>',
    options: { ...json, patient: { type: 'string' } },
    async run({ values: v }, { db, config }) {
      if (!v.patient) throw new UsageError('--patient is required');
      const store = auditStore(db, config);
      const patient = String(v.patient);
      if (!(await store.holds()).some((h) => h.patient === patient)) throw new UsageError(`no privacy hold on patient ${patient}`);
      // Once released, the patient's old records may be purged: the release must be on record.
      await recordedChange(db, (trx) => auditStore(trx, config).release(patient), () => [auditLogUsed({ ...administrator(config), use: 'release', patient })]);
      return { json: { patient: v.patient, held: false }, text: `privacy hold on patient ${v.patient} released` };
    },
  },
  'registration token': {
    usage: 'registration token [--ttl <seconds>] [--scope "<system/ scopes>"] [--resource-server] [--purpose <code>]... [--clearance <code>] [--sensitivity <codes or *>] [--organization-id <uri> [--organization "<name>"]]'
      + '   (an initial access token for POST /register and /apps; a registration with it may ask for at most these privileges)',
    options: {
      ...json, ttl: { type: 'string' }, scope: { type: 'string' }, 'resource-server': { type: 'boolean' },
      purpose: { type: 'string', multiple: true }, clearance: { type: 'string' }, sensitivity: { type: 'string' },
      ...ORGANIZATION_OPTIONS,
    },
    async run({ values: v }, { db, config }) {
      const ttl = v.ttl === undefined ? 86400 : Number(v.ttl);
      if (!Number.isInteger(ttl) || ttl < 60) throw new UsageError('--ttl is a number of seconds, at least 60');
      checkPurposes(strings(v.purpose));
      const privileges: Privileges = {
        systemScope: (v.scope as string | undefined)?.trim() || undefined,
        resourceServer: v['resource-server'] ? true : undefined,
        purposes: strings(v.purpose),
        clearance: v.clearance as Privileges['clearance'],
        sensitivity: commaList(v.sensitivity),
        ...organizationOf(v),
      };
      const problem = invalidPrivileges(privileges);
      if (problem) throw new UsageError(problem);
      // It lets someone register clients, privileged ones too: the trail says when, for how long and what it allows.
      // The provider stores the token, so it works on the transaction too; loaded before, not while the transaction holds the audit chain.
      const { createToolProvider } = await providerHost();
      const token = await recordedChange(db, async (trx) => issueInitialAccessToken(trx, await createToolProvider(config, trx), ttl, privileges), (issued) => [initialAccessTokenIssued({
        ...administrator(config), tokenDigest: createHash('sha256').update(issued).digest('base64url'), expiresIn: ttl,
        privileges: Object.entries(privileges).filter(([, v]) => v !== undefined && !(Array.isArray(v) && !v.length))
          .map(([field, v]) => `${field}: ${Array.isArray(v) ? v.join(' ') : String(v)}`),
      })]);
      return { json: { initial_access_token: token, expires_in: ttl }, text: `initial access token (valid ${ttl} s): ${token}` };
    },
  },
};

async function existingUser(db: Db, username: string | undefined): Promise<User> {
  if (!username) throw new UsageError('a username is required');
  const user = await findUserByUsername(db, username);
  if (!user) throw new UsageError(`no user ${username}`);
  return user;
}

async function readStdin({ stdin, stderr }: CliIo): Promise<string> {
  if (stdin.isTTY) stderr.write('new password: ');
  let text = '';
  for await (const chunk of stdin) {
    text += String(chunk);
    if (stdin.isTTY && text.includes('\n')) break;
  }
  return text;
}

/** `--checkpoint`: a signed head given inline (JWS or JSON), or the file holding it (a log file will do). */
function signedHeadArgument(value: string): string {
  let text = value;
  if (!/^\s*[{[]/.test(value) && !/^[\w-]+\.[\w-]+\.[\w-]+$/.test(value.trim())) {
    try {
      text = readFileSync(value, 'utf8');
    } catch {
      throw new UsageError(`--checkpoint: ${value} is neither a signed head nor a readable file`);
    }
  }
  try {
    return signedHeadIn(text);
  } catch (err) {
    throw new UsageError(`--checkpoint: ${(err as Error).message}`);
  }
}

/** The audit store of the server's database, signing checkpoints with the server's keys. */
const auditStore = (db: Db, config: Config) => createAuditStore(db, checkpointSigner(db, keyPolicy(config)));

/** Administration done with the CLI is part of the audit trail too. */
const administrator = (config: Config) => ({ recorded: new Date(), issuer: config.issuer, address: 'smart-auth CLI' });
/** Closed before the command ends, so the head it signs for the record is written before the database closes. */
async function recordAdministration(db: Db, config: Config, event: AuditEvent): Promise<void> {
  const store = auditStore(db, config);
  try {
    await store.append([event]);
  } finally {
    await store.close();
  }
}

/** A step that the audit trail must record, failing closed: when it cannot, the administrator is told what did not happen. */
async function failingClosed<T>(step: () => Promise<T>, what = 'change', consequence = 'nothing was changed'): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (err instanceof AuditWriteError) throw new Unavailable(`the audit trail cannot take the record of this ${what} now: ${consequence}; try again`);
    throw err;
  }
}

/** An administrator's change and its records in the audit trail, stored together or not at all (the trail is complete). */
const recordedChange = <T>(db: Db, change: (trx: Db) => Promise<T>, records: (value: T) => AuditEvent[]): Promise<T> =>
  failingClosed(() => changeWithRecords(db, change, records));

class AuditBroken extends Error {
  constructor(readonly result: object, message: string) {
    super(message);
  }
}

function help(): string {
  return ['usage: smart-auth <command> [options] [--json]', '', ...Object.values(commands).map((c) => `  smart-auth ${c.usage}`),
    '', 'Settings come from the environment (DATABASE_URL, ISSUER, ...), as for the server.'].join('\n');
}

/** Runs one command; its exit code. `io` is the process's environment and streams unless given. */
export async function runCli(argv: string[], io: CliIo = processIo): Promise<number> {
  const out = (text: string) => io.stdout.write(`${text}\n`);
  const name = argv.slice(0, 2).join(' ');
  const command = commands[name];
  if (!command || argv.includes('--help') || argv.includes('-h')) {
    const helpAsked = argv.length === 0 || argv.includes('--help') || argv.includes('-h');
    if (command) out(`usage: smart-auth ${command.usage}`);
    else if (helpAsked) out(help());
    else io.stderr.write(`smart-auth: unknown command: ${argv.filter((a) => !a.startsWith('-')).slice(0, 2).join(' ')}\n\n${help()}\n`);
    return command || helpAsked ? 0 : 2;
  }
  let wantsJson = argv.includes('--json');
  let db: Db | undefined;
  try {
    const args = parseArgs({ args: argv.slice(2), options: command.options, allowPositionals: true, strict: true });
    wantsJson = Boolean(args.values.json);
    const config = loadConfig(io.env);
    db = openDatabase(config.databaseUrl, config.databasePool);
    await migrate(db);
    const result = await command.run(args as { values: Record<string, unknown>; positionals: string[] }, { db, config, io });
    if (result.json !== undefined || result.text) out(wantsJson ? JSON.stringify(result.json) : result.text);
    return 0;
  } catch (err) {
    if (err instanceof AuditBroken) {
      out(wantsJson ? JSON.stringify(err.result) : err.message);
      return 1;
    }
    const known = err instanceof UsageError || err instanceof UserError || err instanceof ClientError || err instanceof ConfigError || err instanceof KeyEncryptionError
      || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    const message = known || err instanceof Unavailable ? (err as Error).message : `unexpected error: ${(err as Error).message}`;
    if (wantsJson) out(JSON.stringify({ error: message }));
    else io.stderr.write(`smart-auth ${name}: ${message}\n`);
    return known ? 2 : 1;
  } finally {
    await db?.destroy();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.exitCode = await runCli(process.argv.slice(2));
}
