/**
 * Nest's framework messages through pino: its start-up narration (modules, controllers, routes) is at debug,
 * so an `info` start shows Custos's own lines; everything else keeps its level.
 */
import { Writable } from 'node:stream';
import { createLogger, PinoNestLogger } from '../../../src/common/logger.js';

function capture(level: string): { nest: PinoNestLogger; lines: () => { level: number; msg: string }[] } {
  const out: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.push(chunk.toString());
      cb();
    },
  });
  const nest = new PinoNestLogger(createLogger(level, sink));
  return { nest, lines: () => out.map((l) => JSON.parse(l) as { level: number; msg: string }) };
}

describe('PinoNestLogger', () => {
  it("keeps Nest's start-up narration out of info, and everything else at its level", () => {
    const { nest, lines } = capture('info');
    nest.log('CoreModule dependencies initialized', 'InstanceLoader');
    nest.log('Mapped {/healthz, GET} route', 'RouterExplorer');
    nest.log('HealthController {/}:', 'RoutesResolver');
    nest.log('Starting Nest application...', 'NestFactory');
    nest.log('Nest application successfully started', 'NestApplication');
    nest.log('a message of the app', 'Custos');
    nest.log('no context');
    nest.warn('a warning', 'RouterExplorer');
    nest.error('an error', 'trace', 'InstanceLoader');
    expect(lines().map((l) => [l.level, l.msg])).toEqual([
      [30, 'a message of the app'],
      [30, 'no context'],
      [40, 'a warning'],
      [50, 'an error'],
    ]);
  });

  it('shows the narration at debug', () => {
    const { nest, lines } = capture('debug');
    nest.log('Mapped {/healthz, GET} route', 'RouterExplorer');
    expect(lines()).toEqual([expect.objectContaining({ level: 20, msg: 'Mapped {/healthz, GET} route' })]);
  });
});
