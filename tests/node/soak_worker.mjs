// The Node worker of tests/test_soak.py: serves the queue QUEUE (CONCURRENCY jobs at once)
// like soak_agents.py does in Python: logs "<jobId> <pid>" on the Redis list input.log when
// a job starts, works input.ms ms, returns the seed's response shape.
import { Worker } from 'bullmq';
import IORedis from 'ioredis';

const url = process.env.REDIS_URL;
const queue = process.env.QUEUE;
const concurrency = Number(process.env.CONCURRENCY || 4);
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const log = new IORedis(url);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const worker = new Worker(queue, async (job) => {
  const { action, input, context } = job.data;
  await log.rpush(input.log, `${context.jobId} ${process.pid}`);
  await sleep(Number(input.ms));
  return { action, confidence: 1.0, reasoning: 'soak',
           data: { pid: process.pid, jobId: context.jobId, worker: 'node' } };
}, { connection, concurrency, maxStalledCount: 0 });

worker.on('ready', () => console.log(`node soak worker ready: queue ${queue}`));

async function stop() {
  await Promise.race([worker.close(), sleep(3000)]);
  log.disconnect();
  connection.disconnect();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
