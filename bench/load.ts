/**
 * Load generator, run as its own process so it never shares an event loop with the server it measures.
 * Reads {url, requests, connections, durationSeconds} as JSON on stdin, drives them with autocannon
 * (cycling through the request list) and prints autocannon's result as JSON on stdout.
 */
import autocannon from 'autocannon';

interface Job {
  url: string;
  connections: number;
  durationSeconds: number;
  requests: { method: 'POST'; path: string; headers: Record<string, string>; body: string }[];
}

const chunks: Buffer[] = [];
for await (const c of process.stdin) chunks.push(c as Buffer);
const job = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Job;
const result = await autocannon({
  url: job.url,
  connections: job.connections,
  duration: job.durationSeconds,
  pipelining: 1,
  requests: job.requests,
});
process.stdout.write(JSON.stringify(result));
