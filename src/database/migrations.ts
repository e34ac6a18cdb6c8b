/** Migration classes, listed explicitly (a glob finds nothing when tests run from .ts). */
import { Initial1795304937774 } from '../../migrations/1795304937774-Initial.js';
import { ConnectorsAndIdentityProviders1795307123236 } from '../../migrations/1795307123236-ConnectorsAndIdentityProviders.js';
import { ConnectSessions1795307477134 } from '../../migrations/1795307477134-ConnectSessions.js';
import { ClientAssertionsUsed1795390000000 } from '../../migrations/1795390000000-ClientAssertionsUsed.js';
import { TenantKeyBackends1795400000000 } from '../../migrations/1795400000000-TenantKeyBackends.js';
import { TenantProviders1795410000000 } from '../../migrations/1795410000000-TenantProviders.js';
import { ConnectFlow1795420000000 } from '../../migrations/1795420000000-ConnectFlow.js';
import { PendingRevocations1795430000000 } from '../../migrations/1795430000000-PendingRevocations.js';
import { TenantWebhooks1795440000000 } from '../../migrations/1795440000000-TenantWebhooks.js';
import { ConnectLogin1795450000000 } from '../../migrations/1795450000000-ConnectLogin.js';
import { ConnectionExternalAccount1795460000000 } from '../../migrations/1795460000000-ConnectionExternalAccount.js';
import { RefreshLease1795470000000 } from '../../migrations/1795470000000-RefreshLease.js';
import { RefreshSchedule1795480000000 } from '../../migrations/1795480000000-RefreshSchedule.js';
import { KeyMigrationState1795491000000 } from '../../migrations/1795491000000-KeyMigrationState.js';
import { ConnectSessionRetention1795500000000 } from '../../migrations/1795500000000-ConnectSessionRetention.js';
import { SealedAudit1795510000000 } from '../../migrations/1795510000000-SealedAudit.js';
import { AuditForwarding1795520000000 } from '../../migrations/1795520000000-AuditForwarding.js';
import { AuditPartitions1795530000000 } from '../../migrations/1795530000000-AuditPartitions.js';
import { TenantDeletion1795540000000 } from '../../migrations/1795540000000-TenantDeletion.js';
import { ScopePassThrough1795550000000 } from '../../migrations/1795550000000-ScopePassThrough.js';
import { ConnectBranding1795560000000 } from '../../migrations/1795560000000-ConnectBranding.js';
import { ConsoleSessions1795570000000 } from '../../migrations/1795570000000-ConsoleSessions.js';
import { PortalSessions1795580000000 } from '../../migrations/1795580000000-PortalSessions.js';
import { ConsoleSso1795590000000 } from '../../migrations/1795590000000-ConsoleSso.js';

export const migrations = [
  Initial1795304937774,
  ConnectorsAndIdentityProviders1795307123236,
  ConnectSessions1795307477134,
  ClientAssertionsUsed1795390000000,
  TenantKeyBackends1795400000000,
  TenantProviders1795410000000,
  ConnectFlow1795420000000,
  PendingRevocations1795430000000,
  TenantWebhooks1795440000000,
  ConnectLogin1795450000000,
  ConnectionExternalAccount1795460000000,
  RefreshLease1795470000000,
  RefreshSchedule1795480000000,
  KeyMigrationState1795491000000,
  ConnectSessionRetention1795500000000,
  SealedAudit1795510000000,
  AuditForwarding1795520000000,
  AuditPartitions1795530000000,
  TenantDeletion1795540000000,
  ScopePassThrough1795550000000,
  ConnectBranding1795560000000,
  ConsoleSessions1795570000000,
  PortalSessions1795580000000,
  ConsoleSso1795590000000,
];
