/** Access lines at info are for requests people make: healthy probes and scrapes are logged at debug only. */
import { startTestApp, type TestApp } from '../../support/app.js';

let app: TestApp;

beforeAll(async () => {
  app = await startTestApp();
});
afterAll(() => app.close());

/** Access lines at info or above (the test app's sink also receives debug lines). */
const accessLines = (from: number) =>
  app.logs
    .slice(from)
    .join('')
    .split('\n')
    .filter((l) => l.includes('"msg":"request"'))
    .map((l) => JSON.parse(l) as { level: number; route?: string; status: number })
    .filter((l) => l.level >= 30);

it('writes no access line at info for healthy probes and scrapes, and still one for the API', async () => {
  const from = app.logs.length;
  for (const url of ['/healthz', '/readyz', '/metrics']) {
    expect((await app.request('GET', url)).status).toBe(200);
  }
  expect(accessLines(from)).toEqual([]);
  const api = await app.request('GET', '/v1/providers', { key: app.bootstrapKey });
  expect(api.status).toBe(200);
  expect(accessLines(from)).toEqual([expect.objectContaining({ route: '/v1/providers', status: 200 })]);
});
