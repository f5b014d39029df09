/**
 * The wire format between the host and the guest agent (native/agentbox-vm-agent.c says what each
 * frame means): type (1 byte) | stream id (4 bytes BE) | payload length (4 bytes BE) | payload.
 * One virtio-serial port carries every stream, so every frame names its stream.
 */
export const HEADER_BYTES = 9;
/** The hello's payload starts with it; the agent scans for it to get back in step with a new host. */
export const MAGIC = Buffer.from('\x7fagentbox-vm-1\n\0', 'latin1');
export const NONCE_BYTES = 8;
/** Largest stdin/output frame payload either side sends. */
export const CHUNK_BYTES = 65536;
/** Largest 'R' (open) payload the agent takes: argv + env + cwd. */
export const MAX_REQUEST_BYTES = 1 << 20;
/** Credit each stream starts with, both ways (the agent's WINDOW). */
export const WINDOW_BYTES = 1024 << 10;

export type HostFrameType = 'H' | 'R' | 'I' | 'E' | 'K' | 'S' | 'W' | 'Q';
export type GuestFrameType = 'H' | 'P' | 'O' | 'e' | 'D' | 'W' | 'X';

export interface Frame {
  type: GuestFrameType;
  stream: number;
  payload: Buffer;
}

const GUEST_TYPES = new Set<string>(['H', 'P', 'O', 'e', 'D', 'W', 'X']);
/** Guest frames are at most a chunk (output) or 5 bytes (exit); the hello is 24. Anything bigger is a broken guest. */
const MAX_GUEST_PAYLOAD = CHUNK_BYTES;

export function encodeFrame(type: HostFrameType, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  h.write(type, 0, 'latin1');
  h.writeUInt32BE(stream >>> 0, 1);
  h.writeUInt32BE(payload.length, 5);
  return payload.length ? Buffer.concat([h, payload]) : h;
}

export function encodeU32(type: HostFrameType, stream: number, value: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(value >>> 0, 0);
  return encodeFrame(type, stream, p);
}

export function helloFrame(nonce: Buffer): Buffer {
  return encodeFrame('H', 0, Buffer.concat([MAGIC, nonce]));
}

/** What an 'R' frame carries. Strings may not hold NUL bytes (checked by encodeOpen). */
export interface OpenRequest {
  kind: 'exec' | 'file' | 'ps' | 'signal' | 'stats' | 'freeze' | 'thaw' | 'sync' | 'egress';
  cwd: string;
  /** 0: none. */
  timeoutMs: number;
  argv: readonly string[];
  env: Readonly<Record<string, string>>;
}

/** The 'R' payload, or undefined when a string holds a NUL byte (it cannot cross the wire). */
export function encodeOpen(stream: number, r: OpenRequest): Buffer | undefined {
  const strings = [r.kind, r.cwd, String(Math.max(0, Math.floor(r.timeoutMs))), String(r.argv.length), ...r.argv, ...Object.entries(r.env).map(([k, v]) => `${k}=${v}`)];
  if (strings.some((s) => s.includes('\0'))) return undefined;
  return encodeFrame('R', stream, Buffer.from(strings.map((s) => `${s}\0`).join(''), 'utf8'));
}

/**
 * Splits the guest's byte stream into frames. Until the hello answer with our nonce has been seen,
 * everything is skipped: bytes an earlier connection left in QEMU's buffers must not be taken for ours.
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  private synced = false;

  constructor(private readonly nonce: Buffer) {}

  /** The frames completed by `chunk`; throws on a frame no agent sends (a broken or hostile guest). */
  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Frame[] = [];
    if (!this.synced) {
      const want = Buffer.concat([Buffer.from('H\0\0\0\0\0\0\0\x18', 'latin1'), MAGIC, this.nonce]);
      const at = this.buf.indexOf(want);
      if (at < 0) {
        // Keep a tail that may hold the start of the answer.
        if (this.buf.length > want.length) this.buf = this.buf.subarray(this.buf.length - want.length + 1);
        return out;
      }
      // The answer itself is not returned: `ready` says it came. A later 'H' is the agent's own (a restart).
      this.synced = true;
      this.buf = this.buf.subarray(at + want.length);
    }
    let off = 0;
    while (this.buf.length - off >= HEADER_BYTES) {
      const type = String.fromCharCode(this.buf[off] as number);
      const stream = this.buf.readUInt32BE(off + 1);
      const len = this.buf.readUInt32BE(off + 5);
      if (!GUEST_TYPES.has(type) || len > MAX_GUEST_PAYLOAD) throw new Error(`bad frame from the guest agent (type 0x${(this.buf[off] as number).toString(16)}, ${len} bytes)`);
      if (this.buf.length - off < HEADER_BYTES + len) break;
      out.push({ type: type as GuestFrameType, stream, payload: this.buf.subarray(off + HEADER_BYTES, off + HEADER_BYTES + len) });
      off += HEADER_BYTES + len;
    }
    this.buf = this.buf.subarray(off);
    return out;
  }

  get ready(): boolean {
    return this.synced;
  }
}
