/** The one data-source definition, shared by the app, the migration command and the tests. */
import { DataSource } from 'typeorm';
import { AuditEvent } from '../audit/audit-event.entity.js';
import { UsedAssertion } from '../broker/used-assertion.entity.js';
import { ConnectSession } from '../connect/connect-session.entity.js';
import { PendingRevocation } from '../connect/pending-revocation.entity.js';
import { Connection } from '../connections/connection.entity.js';
import { DataKey } from '../crypto/data-key.entity.js';
import { TenantKeyBackend } from '../crypto/tenant-key-backend.entity.js';
import { AdminKey } from '../identity/admin-key.entity.js';
import { Connector } from '../identity/connector.entity.js';
import { IdentityProvider } from '../identity/identity-provider.entity.js';
import { ProviderApp } from '../providers/provider-app.entity.js';
import { TenantProvider } from '../providers/tenant-provider.entity.js';
import { Tenant } from '../tenants/tenant.entity.js';
import { migrations } from './migrations.js';

export const entities = [
  Tenant,
  AdminKey,
  DataKey,
  Connection,
  AuditEvent,
  Connector,
  IdentityProvider,
  ConnectSession,
  UsedAssertion,
  TenantKeyBackend,
  TenantProvider,
  ProviderApp,
  PendingRevocation,
];

export function createDataSource(url: string, poolSize = 10): DataSource {
  return new DataSource({
    type: 'postgres',
    url,
    entities,
    migrations,
    synchronize: false,
    migrationsRun: false,
    migrationsTransactionMode: 'each',
    poolSize,
    extra: { connectionTimeoutMillis: 5000, application_name: 'custos' },
    logging: false,
  });
}

/** Runs pending migrations under an advisory lock, so replicas starting together don't race. */
export async function runMigrations(ds: DataSource): Promise<string[]> {
  const runner = ds.createQueryRunner();
  await runner.connect();
  try {
    await runner.query('select pg_advisory_lock(727274001)');
    const done = await ds.runMigrations({ transaction: 'each' });
    return done.map((m) => m.name);
  } finally {
    await runner.query('select pg_advisory_unlock(727274001)').catch(() => undefined);
    await runner.release();
  }
}
