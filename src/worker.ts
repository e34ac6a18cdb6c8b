/** The worker entry point: `node dist/src/worker.js` is `CUSTOS_ROLE=worker node dist/src/main.js`. */
// eslint-disable-next-line no-restricted-properties -- sets the role that main.ts's config then validates
process.env.CUSTOS_ROLE = 'worker';
await import('./main.js');
