// A Node agent worker for orchkit (SPEC §9): serves one BullMQ queue with Node's `bullmq`,
// returning the seed's response shape {action, confidence, reasoning, data}.
//
//   npm install bullmq ioredis          (or NODE_PATH=path/to/node_modules)
//   REDIS_URL=redis://127.0.0.1:6379/0 QUEUE=tutor-agent-node node worker.js
//
// Job data (written by orchkit's RemoteAgent): {agentId, action, input, context}.
// Cancellation: orchkit publishes a cancelled job's id on `orchkit:cancel:<queue>`; the
// worker aborts the signal it gave that job's processor. An invalid input is an
// UnrecoverableError, which orchkit treats as non-retryable.
'use strict';
const { Worker, UnrecoverableError } = require('bullmq');
const IORedis = require('ioredis');

const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379/0';
const queue = process.env.QUEUE || 'tutor-agent-node';
const concurrency = Number(process.env.CONCURRENCY || 4);

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(timer); reject(new Error('cancelled')); });
  });
}

const actions = {
  // the seed's tutor-agent answer, reduced to what an example needs
  async generate_hint(input) {
    const topic = input?.topic;
    if (typeof topic !== 'string' || !topic) {
      throw new UnrecoverableError("generate_hint needs input.topic (a non-empty string)");
    }
    return { action: 'generate_hint', confidence: 0.8,
             reasoning: `hint for ${topic} from a Node worker`,
             data: { hint: `Break ${topic} into smaller steps.`, worker: 'node', pid: process.pid },
             nextSteps: ['try_again'] };
  },
  async slow_hint(input, context, signal) {
    await sleep(Number(input?.ms ?? 1000), signal);
    return { action: 'slow_hint', confidence: 0.5, reasoning: 'slept', data: { pid: process.pid } };
  },
};

const connection = new IORedis(url, { maxRetriesPerRequest: null });
const worker = new Worker(queue, async (job, token, signal) => {
  const { agentId, action, input, context } = job.data;
  const handler = actions[action];
  if (!handler) {
    throw new UnrecoverableError(`agent '${agentId}' (Node) has no action '${action}' ` +
                                 `(actions: ${Object.keys(actions).join(', ')})`);
  }
  const response = await handler(input, context, signal);
  return { ...response, data: { ...response.data, agentId, step: context?.stepId } };
}, { connection, concurrency, maxStalledCount: 0 });

const subscriber = new IORedis(url);
subscriber.subscribe(`orchkit:cancel:${queue}`);
subscriber.on('message', (_channel, jobId) => {
  if (worker.cancelJob(jobId, 'cancelled by the orchestrator')) console.log(`cancelled ${jobId}`);
});

worker.on('ready', () => console.log(`node worker ready: queue ${queue}`));
worker.on('failed', (job, err) => console.log(`failed ${job?.id}: ${err.message}`));

async function stop() {
  await Promise.race([worker.close(), sleep(5000)]);
  subscriber.disconnect();
  connection.disconnect();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
