// Preloaded into the Custos process by bench/exchange.ts (node --import): counts every statement sent to
// PostgreSQL and answers {statements, rss} over the IPC channel. Benchmark-only; never used by Custos itself.
import pg from 'pg';

let statements = 0;
const original = pg.Client.prototype.query;
pg.Client.prototype.query = function (...args) {
  statements++;
  return original.apply(this, args);
};
process.on('message', (m) => {
  if (m === 'stats')
    process.send({ statements, rss: process.memoryUsage().rss, memory: process.memoryUsage() });
  if (m === 'gc' && global.gc) global.gc();
});
