/** Every table's entity: the schema the migrations must build (test/integration/database/schema.test.ts checks it). */
import { AuditEvent } from './audit/audit-event.entity.js';
import {
  AuditChainHead,
  AuditChainLink,
  AuditForwardState,
  AuditCheckpoint,
  AuditSealState,
  AuditSigningKey,
  AuditTruncation,
} from './audit/sealed-audit.entity.js';
import { UsedAssertion } from './identity/used-assertion.entity.js';
import { ConnectSession } from './connect/connect-session.entity.js';
import { PortalSession } from './connect/portal-session.entity.js';
import { Connection } from './connections/connection.entity.js';
import { ConsoleSession } from './console/console-session.entity.js';
import { ConsoleSignIn } from './console/console-sign-in.entity.js';
import { PendingRevocation } from './connections/pending-revocation.entity.js';
import { DataKey } from './crypto/data-key.entity.js';
import { TenantKeyBackend } from './crypto/tenant-key-backend.entity.js';
import { AdminKey } from './identity/admin-key.entity.js';
import { Connector } from './identity/connector.entity.js';
import { IdentityProvider } from './identity/identity-provider.entity.js';
import { ProviderApp } from './providers/provider-app.entity.js';
import { TenantProvider } from './providers/tenant-provider.entity.js';
import { Tenant } from './tenants/tenant.entity.js';

export const entities = [
  Tenant,
  AdminKey,
  DataKey,
  Connection,
  AuditEvent,
  Connector,
  IdentityProvider,
  ConnectSession,
  PortalSession,
  ConsoleSession,
  ConsoleSignIn,
  UsedAssertion,
  TenantKeyBackend,
  TenantProvider,
  ProviderApp,
  PendingRevocation,
  AuditChainLink,
  AuditChainHead,
  AuditCheckpoint,
  AuditSealState,
  AuditSigningKey,
  AuditForwardState,
  AuditTruncation,
];
