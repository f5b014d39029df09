/**
 * Desktop sandboxes (ARCHITECTURE.md, "Desktops"): a sandbox of the `desktop` image runs an X
 * desktop with a VNC server and Chromium, all listening on the sandbox's own loopback only. The
 * daemon reaches them the way it reaches any port (from inside); a browser sees the desktop through
 * the VNC WebSocket route (`vncPath`), an agent drives Chromium through its DevTools port.
 */
import { z } from 'zod';

/** Where the session script (`agentbox-desktop start|status|stop`) lives in a desktop image. */
export const DESKTOP_SCRIPT_PATH = '/usr/local/bin/agentbox-desktop';
/** Xvnc's RFB port, on 127.0.0.1 inside the sandbox. */
export const DESKTOP_VNC_PORT = 5900;
/** Chromium's DevTools (remote debugging) port, on 127.0.0.1 inside the sandbox. */
export const DESKTOP_DEVTOOLS_PORT = 9222;
export const DESKTOP_DISPLAY = ':1';
/** The file the session script writes the screen size to (WIDTHxHEIGHT). */
export const DESKTOP_GEOMETRY_FILE = '/tmp/agentbox-desktop/geometry';

export const DesktopSchema = z.object({
  sandboxId: z.string(),
  available: z.boolean().describe(`whether the sandbox's image has a desktop (${DESKTOP_SCRIPT_PATH}); false also while the sandbox is paused (not looked at)`),
  running: z.boolean().describe('whether the VNC server accepts connections'),
  paused: z.boolean().describe('the sandbox is paused: nothing was looked at (any call into it, or POST .../desktop, resumes it)'),
  display: z.string().describe('the X display inside the sandbox'),
  width: z.number().int().nullable().describe('screen width in pixels, when running'),
  height: z.number().int().nullable().describe('screen height in pixels, when running'),
  vncPort: z.number().int().describe('the VNC (RFB) port inside the sandbox'),
  vncPath: z.string().describe('the WebSocket route that carries RFB (noVNC: binary messages); authenticate as for any API WebSocket'),
  devtoolsPort: z.number().int().describe("Chromium's DevTools port inside the sandbox: reach it with the port routes (openPort, port-forward, the port proxy)"),
  chromium: z.boolean().describe("whether Chromium's DevTools port accepts connections"),
});
export type Desktop = z.infer<typeof DesktopSchema>;
