/**
 * The peer of bench/fleet.ts: the smallest WebSocket server that can fan a message out, with the
 * same `ws` library Cairn uses. It accepts sockets and, when told over IPC, sends one message to
 * every socket in a loop. What Cairn's fan-out is compared with.
 */
import { WebSocketServer } from 'ws';

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
wss.on('listening', () => {
  const address = wss.address();
  process.send!({ type: 'listening', port: typeof address === 'object' && address ? address.port : 0 });
});
process.on('message', (m: { cmd: 'count' } | { cmd: 'broadcast'; message: string }) => {
  if (m.cmd === 'count') {
    process.send!({ type: 'count', count: wss.clients.size });
    return;
  }
  const t0 = Date.now();
  for (const ws of wss.clients) ws.send(m.message);
  process.send!({ type: 'sent', t0, sentMs: Date.now() - t0 });
});
process.on('disconnect', () => process.exit(0));
