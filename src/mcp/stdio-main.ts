/**
 * Stand-alone MCP stdio server: `node dist/src/mcp/stdio-main.js` — the same as `agentbox mcp`
 * (reaches the daemon at AGENTBOX_URL, or the local one, starting it if needed).
 */
import { connectClient } from '../cli/connect.js';
import { clientOps } from './ops.js';
import { runStdioServer } from './stdio.js';

await runStdioServer(clientOps(await connectClient()));
process.exit(0);
