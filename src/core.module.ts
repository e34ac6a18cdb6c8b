/**
 * What every domain is given, from what bootstrap.ts built before Nest starts: the validated configuration,
 * the logger, the metrics registry, the one SSRF-safe HTTP client and the root keyring.
 */
import { type DynamicModule, Global, Module } from '@nestjs/common';
import type { Logger } from 'pino';
import { LOGGER } from './common/logger.js';
import { Metrics } from './common/metrics.js';
import { OutboundHttpClient } from './common/outbound-http.js';
import { RootKeyring } from './common/root-keyring.js';
import { CONFIG, type Config } from './config/config.js';

@Global()
@Module({})
export class CoreModule {
  static forRoot(rt: { config: Config; logger: Logger; keyring: RootKeyring }): DynamicModule {
    const { config, logger, keyring } = rt;
    const providers = [
      { provide: CONFIG, useValue: config },
      { provide: LOGGER, useValue: logger },
      { provide: RootKeyring, useValue: keyring },
      { provide: Metrics, useValue: new Metrics() },
      // The one SSRF-safe client for every tenant-influenced URL (JWKS, custom providers, key backends, webhooks).
      {
        provide: OutboundHttpClient,
        useValue: new OutboundHttpClient({ allowHosts: config.outboundAllowHosts }),
      },
    ];
    return { module: CoreModule, providers, exports: providers.map((p) => p.provide) };
  }
}
