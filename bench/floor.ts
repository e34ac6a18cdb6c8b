/**
 * The floor the token endpoint is measured against: a bare node:http server that does the least any
 * credential broker must do per request — one SELECT of the user's connection and one audit INSERT,
 * group-committed like Custos's, answering only after the INSERT commits. No authentication, no crypto,
 * no framework. Started by exchange.ts as a child process: `node --import tsx bench/floor.ts <databaseUrl> <poolSize>`.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';

const [databaseUrl, poolSizeArg] = process.argv.slice(2);
const pool = new pg.Pool({ connectionString: databaseUrl, max: Number(poolSizeArg ?? 10) });
let queries = 0;

interface Pending {
  row: unknown[];
  done(err?: unknown): void;
}
let queue: Pending[] = [];
let flushing = false;

async function flush(): Promise<void> {
  while (queue.length > 0) {
    const batch = queue;
    queue = [];
    const cols: unknown[][] = Array.from({ length: 4 }, () => []);
    for (const p of batch) p.row.forEach((v, i) => cols[i].push(v));
    try {
      queries++;
      await pool.query({
        name: 'floor_audit',
        text: `INSERT INTO audit_events (tenant_id, action, outcome, actor_type, subject_user_id, provider, details)
         SELECT t, 'token.exchange', 'allowed', 'connector', u, p, d FROM
           unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[]) AS x(t, u, p, d)`,
        values: cols,
      });
      for (const p of batch) p.done();
    } catch (err) {
      for (const p of batch) p.done(err);
    }
  }
  flushing = false;
}

function audit(row: unknown[]): Promise<void> {
  return new Promise((resolve, reject) => {
    queue.push({
      row,
      done: (err) =>
        err ? reject(err instanceof Error ? err : new Error('audit insert failed')) : resolve(),
    });
    if (!flushing) {
      flushing = true;
      setImmediate(() => void flush());
    }
  });
}

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    void (async () => {
      try {
        const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
        const tenantId = form.get('tenant_id');
        const userId = form.get('user_id');
        const provider = form.get('audience');
        queries++;
        // Named statements are parsed and planned once per connection, as Custos's hot statements are.
        const { rows } = await pool.query({
          name: 'floor_select',
          text: `SELECT id, type, status, scopes, expires_at, secret FROM connections
            WHERE tenant_id = $1 AND user_id = $2 AND provider = $3 AND revoked_at IS NULL`,
          values: [tenantId, userId, provider],
        });
        await audit([tenantId, userId, provider, '{}']);
        const body = JSON.stringify({ access_token: (rows[0] as { id: string } | undefined)?.id ?? null });
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(body);
      } catch {
        res.writeHead(503).end();
      }
    })();
  });
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: (server.address() as AddressInfo).port }) + '\n');
});
process.on('message', () => {
  process.send?.({ queries, rss: process.memoryUsage().rss });
});
