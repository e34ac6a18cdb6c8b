/**
 * Every statement on console_sign_ins: the pending single sign-ons, each keyed by the SHA-256 of its state and
 * taken once.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { returned } from '../database/sql.js';

/** A pending sign-in: its tenant, the hash of the browser cookie that started it, and its sealed secrets. */
export interface PendingSignIn {
  tenant_id: string;
  browser_hash: Buffer;
  secrets: Buffer;
}

@Injectable()
export class ConsoleSignInsRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** Records a pending sign-in for `seconds`, clearing those that expired. */
  async insert(
    stateHash: Buffer,
    tenantId: string,
    browserHash: Buffer,
    secrets: Buffer,
    seconds: number,
  ): Promise<void> {
    await this.db.query(`DELETE FROM console_sign_ins WHERE expires_at <= now()`);
    await this.db.query(
      `INSERT INTO console_sign_ins (state_hash, tenant_id, browser_hash, secrets, expires_at)
       VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))`,
      [stateHash, tenantId, browserHash, secrets, seconds],
    );
  }

  /** Takes (deletes and returns) the pending sign-in with this state, if it has not expired. */
  async take(stateHash: Buffer): Promise<PendingSignIn | undefined> {
    const [row] = returned<PendingSignIn>(
      await this.db.query(
        `DELETE FROM console_sign_ins WHERE state_hash = $1 AND expires_at > now()
          RETURNING tenant_id, browser_hash, secrets`,
        [stateHash],
      ),
    );
    return row;
  }
}
