/**
 * Reading the policy file, with every problem pointing at a line. An invalid file is an error,
 * never the default policy: a typo must not quietly open what the operator meant to close.
 */
import { readFileSync } from 'node:fs';
import { LineCounter, isMap, isPair, isScalar, isSeq, parseDocument } from 'yaml';
import type { Document, Node } from 'yaml';
import { z } from 'zod';
import { BadRequestError } from '../contract/errors.js';
import { DEFAULT_POLICY, PolicySchema } from './schema.js';
import type { Policy } from './schema.js';

export type LoadPolicyResult =
  | { kind: 'ok'; policy: Policy; source: string }
  | { kind: 'missing'; source: string }
  | { kind: 'invalid'; source: string; reason: string; line?: number; column?: number };

type Invalid = Extract<LoadPolicyResult, { kind: 'invalid' }>;

/** Parse and validate policy text; `source` names it in messages (usually the file path). */
export function parsePolicyText(text: string, source: string): LoadPolicyResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true });
  const syntax = doc.errors[0];
  if (syntax) {
    const pos = syntax.linePos?.[0];
    // prettyErrors appends " at line N, column M:" and a source excerpt; the prefix carries the line.
    const reason = (syntax.message.split('\n')[0] ?? syntax.message).replace(/ at line \d+, column \d+:?$/, '');
    return invalid(source, `YAML syntax: ${reason}`, pos);
  }
  let data: unknown;
  try {
    data = doc.toJS();
  } catch (err) {
    // e.g. too many aliases: yaml refuses to expand a "billion laughs" document
    return invalid(source, `YAML: ${err instanceof Error ? err.message : String(err)}`, undefined);
  }
  if (data === null || data === undefined) return invalid(source, 'the file is empty; a policy starts with "version: 1"', { line: 1, col: 1 });
  const parsed = PolicySchema.safeParse(data, { error: issueMessage });
  if (parsed.success) return { kind: 'ok', policy: parsed.data, source };
  const issue = parsed.error.issues[0] as z.core.$ZodIssue;
  const path = issue.code === 'unrecognized_keys' && issue.keys[0] !== undefined ? [...issue.path, issue.keys[0]] : issue.path;
  const at = pathString(issue.path);
  return invalid(source, at === '' ? issue.message : `${at}: ${issue.message}`, positionOf(doc, path, lineCounter));
}

/** Read a policy file; a file that is not there is `missing`, one that cannot be read is `invalid`. */
export function loadPolicyFile(path: string): LoadPolicyResult {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { kind: 'missing', source: path };
    return invalid(path, `cannot read the file (${code ?? String(err)})`, undefined);
  }
  return parsePolicyText(text, path);
}

export interface LoadPolicyOpts {
  /** @default AGENTBOX_POLICY */
  path?: string;
  /** Refuse to start without a policy file. @default AGENTBOX_REQUIRE_POLICY=1 */
  requirePolicy?: boolean;
  env?: NodeJS.ProcessEnv;
}

/**
 * The policy a daemon runs with: the file at `path` (or AGENTBOX_POLICY), the built-in defaults
 * when there is none (unless strict mode), and a BadRequestError naming file and line when invalid.
 */
export function loadPolicy(opts: LoadPolicyOpts = {}): { policy: Policy; source: string | null } {
  const env = opts.env ?? process.env;
  const path = opts.path ?? (env.AGENTBOX_POLICY || undefined);
  const strict = opts.requirePolicy === true || env.AGENTBOX_REQUIRE_POLICY === '1';
  const result = path === undefined ? undefined : loadPolicyFile(path);
  if (result?.kind === 'ok') return { policy: result.policy, source: result.source };
  if (result?.kind === 'invalid') {
    throw new BadRequestError(formatPolicyProblem(result), {
      hint: result.line === undefined ? `check ${result.source}` : `check ${result.source} line ${result.line}`,
    });
  }
  if (strict) {
    throw new BadRequestError(path === undefined ? 'no policy file: AGENTBOX_POLICY is not set' : `no policy file at ${path}`, {
      hint: 'set AGENTBOX_POLICY or write policy.yaml; strict mode (AGENTBOX_REQUIRE_POLICY=1) refuses to start without one',
    });
  }
  return { policy: DEFAULT_POLICY, source: null };
}

/** One line for humans: `policy.yaml:3: defaults.limits.memoryMb: expected a number`. */
export function formatPolicyProblem(result: LoadPolicyResult): string {
  switch (result.kind) {
    case 'ok':
      return `${result.source}: ok`;
    case 'missing':
      return `${result.source}: no such file`;
    case 'invalid':
      return `${result.source}${result.line === undefined ? '' : `:${result.line}`}: ${result.reason}`;
  }
}

function invalid(source: string, reason: string, pos: { line: number; col: number } | undefined): Invalid {
  return pos === undefined ? { kind: 'invalid', source, reason } : { kind: 'invalid', source, reason, line: pos.line, column: pos.col };
}

function pathString(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z0-9_-]+$/.test(String(seg))) out += `${out === '' ? '' : '.'}${String(seg)}`;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out;
}

/**
 * Where the issue's path leads in the YAML document: the deepest node that exists on it. A key
 * that is missing points at its parent's key; a collection found without a key at its start.
 */
function positionOf(doc: Document, path: readonly PropertyKey[], lc: LineCounter): { line: number; col: number } | undefined {
  let node: Node | null = doc.contents;
  let keyNode: Node | null = null;
  for (const seg of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) break;
      keyNode = isScalar(pair.key) ? pair.key : null;
      // A key with no value (`memoryMb:`) has no node of its own: point at the key.
      node = isPair(pair) && pair.value !== null && isNodeLike(pair.value) ? pair.value : null;
      if (node === null) break;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item: unknown = node.items[seg];
      if (!isNodeLike(item)) break;
      node = item;
      keyNode = null;
    } else {
      break;
    }
  }
  const target = node !== null && (isScalar(node) || keyNode === null) ? node : keyNode;
  const offset = target?.range?.[0];
  return offset === undefined ? undefined : lc.linePos(offset);
}

function isNodeLike(value: unknown): value is Node {
  return isScalar(value) || isMap(value) || isSeq(value);
}

const TYPE_NAMES: Record<string, string> = {
  number: 'a number',
  int: 'a whole number',
  string: 'a string',
  boolean: 'true or false',
  array: 'a list',
  object: 'a mapping (key: value)',
  record: 'a mapping (key: value)',
};

/** Messages for issues whose schema has none of its own, in the words of a policy file. */
function issueMessage(iss: z.core.$ZodRawIssue): string | undefined {
  switch (iss.code) {
    case 'invalid_type':
      return iss.input === undefined ? 'is required' : `expected ${TYPE_NAMES[iss.expected] ?? iss.expected}`;
    case 'too_small':
      return bound('at least', iss.origin, iss.minimum, iss.inclusive);
    case 'too_big':
      return bound('at most', iss.origin, iss.maximum, iss.inclusive);
    case 'invalid_value':
      return iss.values.length === 1 ? `expected ${String(iss.values[0])}` : `expected one of: ${iss.values.map(String).join(', ')}`;
    case 'unrecognized_keys': {
      const known = iss.inst instanceof z.ZodObject ? Object.keys(iss.inst.shape) : [];
      const keys = iss.keys.map((k) => `"${k}"`).join(', ');
      return `unknown key${iss.keys.length > 1 ? 's' : ''} ${keys}${known.length > 0 ? ` (known: ${known.join(', ')})` : ''}`;
    }
    case 'invalid_key':
      return `"${String(iss.input)}" is not a valid name (letters, digits, . _ -)`;
    case 'invalid_union':
      return 'does not match any accepted form';
    default:
      return undefined;
  }
}

function bound(word: string, origin: string, limit: number | bigint, inclusive: boolean | undefined): string {
  const n = Number(limit);
  if (origin === 'array') return `needs ${word} ${n} item${n === 1 ? '' : 's'}`;
  if (origin === 'string') return `must be ${word} ${n} character${n === 1 ? '' : 's'} long`;
  if (inclusive === false) return `must be ${word === 'at least' ? 'more' : 'less'} than ${n}`;
  return `must be ${word} ${n}`;
}
