declare module '*.css';
declare module '@novnc/novnc' {
  export default class RFB extends EventTarget {
    constructor(target: HTMLElement, url: string, options?: { wsProtocols?: string[]; credentials?: { password?: string } });
    scaleViewport: boolean;
    resizeSession: boolean;
    viewOnly: boolean;
    disconnect(): void;
    focus(): void;
  }
}

// The wire types come from src/contract (type-only imports, erased from the bundle). Two of those
// files name Node things in passing; these stand in for them so the web typecheck needs no Node types.
type Buffer = Uint8Array;
declare module 'node:path' {
  export const posix: { normalize(p: string): string };
}
