/**
 * Tells every Custos process to drop a tenant's cached data keys (a flush after a customer revokes their key)
 * or to forget its current epoch (after a rotation). With Redis, through a pub/sub channel, so every replica
 * acts within a round trip; without Redis there is only this process, which acts at once.
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { CONFIG, type Config } from '../config/config.js';
import { CommonException } from '../common/errors.js';
import { LOGGER } from '../common/logger.js';
import { closeRedis, connectRedis, settlesWithin, START_WAIT_MS, whenReady } from '../common/redis.js';
import { DataKeyService } from './data-key.service.js';

const CHANNEL = 'custos:data-key-cache';
/** Deadline of one publish: a flush answers 503 rather than wait as long as Redis does not answer. */
const PUBLISH_TIMEOUT_MS = 2000;

type Scope = 'keys' | 'epoch';
interface Message {
  tenantId: string;
  scope: Scope;
  origin: string;
}

@Injectable()
export class KeyCacheBus implements OnModuleInit, OnModuleDestroy {
  private readonly origin = randomUUID();
  private pub: Redis | null = null;
  private sub: Redis | null = null;
  private closing = false;
  /** Messages from other processes acted on (for tests). */
  received = 0;

  constructor(
    @Inject(CONFIG) private readonly config: Config,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  /**
   * With Redis there, this process listens before it serves. Without it (refused, or no answer within a
   * moment), it starts anyway and listens once Redis answers. A flush published while this process was not
   * listening (at start-up, or during any Redis outage) does not reach it, so when its listening connection is
   * back it drops every cached data key and epoch: a key a customer revoked meanwhile is not used for the rest
   * of its cache lifetime.
   */
  async onModuleInit(): Promise<void> {
    const url = this.config.redisUrl;
    if (!url) return;
    const log = this.log;
    [this.pub, this.sub] = await Promise.all([
      connectRedis({
        url,
        purpose: 'key cache bus (publish)',
        log,
        options: { maxRetriesPerRequest: 2, commandTimeout: PUBLISH_TIMEOUT_MS },
      }),
      // Its one command, SUBSCRIBE, waits for Redis however long it is away; ioredis subscribes again itself
      // after every reconnection.
      connectRedis({
        url,
        purpose: 'key cache bus (subscribe)',
        log,
        options: { maxRetriesPerRequest: null },
      }),
    ]);
    this.sub.on('message', (_channel: string, raw: string) => this.onMessage(raw));
    let missed = this.sub.status !== 'ready';
    this.sub.on('close', () => (missed = true));
    this.sub.on('ready', () => {
      if (!missed || this.closing) return;
      missed = false;
      this.dataKeys.flushAll();
      log.info('key cache bus: listening again; cached data keys dropped in case a flush was missed');
    });
    const subscribed = this.sub.subscribe(CHANNEL).catch((err: Error) => {
      if (!this.closing) log.warn({ err: { name: err.name } }, 'key cache bus: could not subscribe');
    });
    if (await whenReady(this.sub)) await settlesWithin(subscribed, START_WAIT_MS);
  }

  async onModuleDestroy(): Promise<void> {
    this.closing = true;
    await Promise.all([closeRedis(this.pub), closeRedis(this.sub)]);
  }

  /**
   * Acts in this process at once, then tells the others. Resolves once the message is published; when Redis
   * does not take it (down, or no answer in time) the other processes were not told, and the caller gets a
   * 503 to retry.
   */
  async publish(tenantId: string, scope: Scope): Promise<{ replicasNotified: boolean }> {
    this.apply(tenantId, scope);
    if (!this.pub) return { replicasNotified: false };
    const message: Message = { tenantId, scope, origin: this.origin };
    try {
      await this.pub.publish(CHANNEL, JSON.stringify(message));
    } catch (err) {
      const e = new CommonException(
        'temporarily_unavailable',
        'The other Custos processes could not be told; retry shortly',
      );
      e.cause = err;
      throw e;
    }
    return { replicasNotified: true };
  }

  private onMessage(raw: string): void {
    try {
      const m = JSON.parse(raw) as Message;
      if (m.origin === this.origin || typeof m.tenantId !== 'string') return;
      if (m.scope !== 'keys' && m.scope !== 'epoch') return;
      this.received++;
      this.apply(m.tenantId, m.scope);
    } catch {
      // Not ours.
    }
  }

  private apply(tenantId: string, scope: Scope): void {
    if (scope === 'keys') this.dataKeys.flushTenant(tenantId);
    else this.dataKeys.forgetCurrent(tenantId);
  }
}
