// Entry point: config -> database -> app -> listen; graceful shutdown on SIGTERM/SIGINT.
import { ConfigError, loadConfig } from './config.ts';
import { KeyEncryptionError } from './oidc/keys.ts';

async function main() {
  const config = loadConfig();
  // The rest is loaded once the settings are known to be good: a refused start says why in a fraction of the time.
  const [{ migrate, openDatabase }, { hasDemoAccounts }, { startServer }] = await Promise.all([import('./db.ts'), import('../db/seed.ts'), import('./app.ts')]);
  if (config.production) {
    const db = openDatabase(config.databaseUrl, config.databasePool);
    await migrate(db);
    const demoAccounts = await hasDemoAccounts(db);
    await db.destroy();
    if (demoAccounts) throw new ConfigError('refusing to start with NODE_ENV=production: the database holds enabled demo accounts (disable them with `smart-auth user disable <name>`)');
  }
  const running = await startServer(config);
  const { port } = running.server.address() as { port: number };
  running.logger.log('info', `smart-auth listening on ${config.host}:${port}`, { issuer: config.issuer, fhir_base: config.fhirBase, demo: config.demo });
  const stop = async (signal: string) => {
    running.logger.log('info', `${signal}: finishing requests in flight, then stopping`);
    await running.close();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
}

main().catch((err) => {
  if (err instanceof ConfigError || err instanceof KeyEncryptionError) {
    console.error(`smart-auth: ${err.message}`);
  } else {
    console.error('smart-auth failed to start:', err);
  }
  process.exit(1);
});
