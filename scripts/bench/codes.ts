// Authorization codes for the code-exchange benchmark, minted as a finished login and consent leaves
// them (a grant, its launch context, the code), so the benchmark measures POST /token alone.
import { createHash } from 'node:crypto';
import { loadConfig } from '../../server/config.ts';
import { migrate, openDatabase } from '../../server/db.ts';
import { createToolProvider } from '../../server/oidc/provider-host.ts';
import { saveGrantContext } from '../../server/oidc/launch-store.ts';
import { listUsers } from '../../server/oidc/users.ts';
import { buildLaunchContext } from '../../server/smart/launch-context.ts';
import type { ServerProcess } from './lib.ts';

export const BENCH_REDIRECT_URI = 'http://127.0.0.1:9/callback';
const verifier = 'bench-code-verifier-0123456789-0123456789-0123456789';
export const BENCH_CODE_VERIFIER = { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
/** What the minted grants hold: the demo patient Amy's standalone launch of a patient-facing app. */
export const BENCH_APP_SCOPE = 'openid fhirUser launch/patient patient/Patient.rs';

export async function mintSmartAuthCodes(server: ServerProcess, clientId: string, count: number): Promise<string[]> {
  const config = loadConfig(server.env);
  const db = openDatabase(server.databaseUrl);
  try {
    await migrate(db);
    const provider = await createToolProvider(config, db);
    const amy = (await listUsers(db)).find((u) => u.username === 'amy');
    if (!amy) throw new Error('the demo account amy is missing (DEMO must be on)');
    const client = await provider.Client.find(clientId);
    if (!client) throw new Error(`client ${clientId} is not registered`);
    const codes: string[] = [];
    for (let i = 0; i < count; i++) {
      const grant = new provider.Grant({ accountId: amy.id, clientId });
      grant.addOIDCScope('openid fhirUser');
      grant.addResourceScope(config.fhirBase, 'launch/patient patient/Patient.rs');
      const grantId = await grant.save();
      await saveGrantContext(db, grantId, {
        launch: buildLaunchContext({ patient: 'pat-1', ehrLaunch: false, styleUrl: `${config.issuer}/smart-style/v1.json` }),
        purposeOfUse: 'PATRQT', // Amy's own purpose, as her consent page chooses: the token endpoint checks it
      }, config.refreshTokenTtl);
      codes.push(await new provider.AuthorizationCode({
        client, accountId: amy.id, grantId, scope: BENCH_APP_SCOPE, resource: config.fhirBase, redirectUri: BENCH_REDIRECT_URI,
        codeChallenge: BENCH_CODE_VERIFIER.challenge, codeChallengeMethod: 'S256', gty: 'authorization_code',
      }).save());
    }
    return codes;
  } finally {
    await db.destroy();
  }
}
