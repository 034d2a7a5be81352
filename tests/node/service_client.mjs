// The seed's front-end client (socket.io-client) against `orchkit serve`, driven by
// tests/test_service_socket.py: node service_client.mjs URL LEARNER_ID TOKEN
// Starts a session over REST, asks for an activity and answers it wrongly over Socket.IO
// until the tutor intervenes; prints one JSON line with what it saw.
import { io } from "socket.io-client";

const [url, learnerId, token] = process.argv.slice(2);
const headers = { "content-type": "application/json", authorization: `Bearer ${token}` };
const out = { events: [] };
const timer = setTimeout(() => { console.log(JSON.stringify({ ...out, error: "timeout" })); process.exit(1); }, 20000);

const started = await fetch(`${url}/api/agents`, {
  method: "POST", headers, body: JSON.stringify({ action: "start_session", learnerId, data: { gradeLevel: 5 } }),
});
out.startStatus = started.status;
out.session = await started.json();

out.refused = await new Promise((resolve) => {
  const bad = io(url, { auth: { learnerId, token: "wrong" }, transports: ["websocket"], reconnection: false });
  bad.on("connect", () => { bad.close(); resolve(null); });
  bad.on("connect_error", (err) => { bad.close(); resolve(err.message); });
});

const socket = io(url, { auth: { learnerId, token }, transports: ["websocket"], reconnection: false });
const intervened = new Promise((resolve) => {
  let seen = {};
  for (const name of ["tutor:intervention:required", "content:adapted"]) {
    socket.on(name, (payload) => {
      out.events.push(name);
      seen[name] = payload;
      if (seen["tutor:intervention:required"] && seen["content:adapted"]) resolve(seen);
    });
  }
});
await new Promise((resolve, reject) => { socket.on("connect", resolve); socket.on("connect_error", reject); });

let ack = await socket.timeout(10000).emitWithAck("agent:learning", { action: "get_next_activity", data: {} });
out.firstAck = ack;
let activityId = ack.response.data.activity.activityId;
out.answers = [];
for (let i = 0; i < 5 && out.events.length === 0; i++) {
  ack = await socket.timeout(10000).emitWithAck("agent:learning", {
    action: "process_interaction", data: { activityId, response: { answer: "wrong on purpose" } },
  });
  out.answers.push({ correct: ack.response.data.correct, struggling: ack.response.data.struggling, agentMs: ack.agentMs });
  await new Promise((r) => setTimeout(r, 50));
}
const seen = await intervened;
out.intervention = seen["tutor:intervention:required"];
out.adapted = seen["content:adapted"];
out.badAck = await socket.timeout(10000).emitWithAck("agent:tutor", { action: "no_such_action" });
socket.close();
clearTimeout(timer);
console.log(JSON.stringify(out));
process.exit(0);
