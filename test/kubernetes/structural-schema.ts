/**
 * Validation of an object against a CRD's structural OpenAPI v3 schema, as the API server does it
 * for a custom resource, for the agent-sandbox CRD vendored in agent-sandbox-crd.json.
 *
 * The one rule that matters most here is unknown fields: the API server PRUNES a field its schema
 * does not know (silently, or refuses it with fieldValidation=Strict). A hardening field of the pod
 * template that the CRD did not know would vanish from the pod, so an unknown field is an error
 * here. Checked: type (integer vs number, int-or-string), properties, additionalProperties, items,
 * required, enum, pattern, minimum/maximum, minLength/maxLength, x-kubernetes-list-map-keys
 * uniqueness. Not checked: CEL rules (x-kubernetes-validations) and formats other than int32/int64.
 * metadata is the API server's ObjectMeta, validated elsewhere: only its being an object is.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface Schema {
  type?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema | boolean;
  items?: Schema;
  required?: string[];
  enum?: unknown[];
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  format?: string;
  anyOf?: Schema[];
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-list-type'?: string;
  'x-kubernetes-list-map-keys'?: string[];
}

export interface VendoredCrd {
  source: { repository: string; commit: string; path: string };
  group: string;
  names: { kind: string; plural: string };
  versions: Record<string, { served: boolean; storage: boolean; deprecated?: boolean; schema: Schema }>;
}

/** The Sandbox CRD of kubernetes-sigs/agent-sandbox (see its `source`). */
export function sandboxCrd(): VendoredCrd {
  // dist/test/kubernetes/ → the source tree's test/kubernetes/ (tsc does not copy JSON).
  const path = fileURLToPath(new URL('../../../test/kubernetes/agent-sandbox-crd.json', import.meta.url));
  return JSON.parse(readFileSync(path, 'utf8')) as VendoredCrd;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function typeError(s: Schema, v: unknown): string | undefined {
  if (s['x-kubernetes-int-or-string']) return Number.isInteger(v) || typeof v === 'string' ? undefined : 'an integer or a string';
  switch (s.type) {
    case undefined:
      return undefined;
    case 'object':
      return isObject(v) ? undefined : 'an object';
    case 'array':
      return Array.isArray(v) ? undefined : 'an array';
    case 'string':
      return typeof v === 'string' ? undefined : 'a string';
    case 'boolean':
      return typeof v === 'boolean' ? undefined : 'a boolean';
    case 'integer':
      return Number.isInteger(v) ? undefined : 'an integer';
    case 'number':
      return typeof v === 'number' && Number.isFinite(v) ? undefined : 'a number';
    default:
      return `of the unknown schema type ${s.type}`;
  }
}

/** Every problem of `value` against `schema`, each as `path: what` ([] = valid). */
export function validate(schema: Schema, value: unknown, path = ''): string[] {
  const at = path || '<root>';
  const wrong = typeError(schema, value);
  if (wrong) return [`${at}: must be ${wrong}, is ${JSON.stringify(value)?.slice(0, 60)}`];
  const out: string[] = [];
  if (schema.enum && !schema.enum.includes(value)) out.push(`${at}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
  if (typeof value === 'string') {
    if (schema.pattern && !new RegExp(schema.pattern, 'u').test(value)) out.push(`${at}: does not match ${schema.pattern}`);
    if (schema.minLength !== undefined && value.length < schema.minLength) out.push(`${at}: shorter than ${schema.minLength}`);
    if (schema.maxLength !== undefined && value.length > schema.maxLength) out.push(`${at}: longer than ${schema.maxLength}`);
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) out.push(`${at}: below ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) out.push(`${at}: above ${schema.maximum}`);
    if (schema.format === 'int32' && (value < -(2 ** 31) || value >= 2 ** 31)) out.push(`${at}: not an int32`);
  }
  if (Array.isArray(value)) {
    value.forEach((item, i) => out.push(...(schema.items ? validate(schema.items, item, `${path}[${i}]`) : [])));
    const keys = schema['x-kubernetes-list-map-keys'];
    if (schema['x-kubernetes-list-type'] === 'map' && keys) {
      const seen = new Set<string>();
      for (const item of value) {
        const k = JSON.stringify(keys.map((key) => (isObject(item) ? item[key] : undefined)));
        if (seen.has(k)) out.push(`${at}: duplicate entry ${k} of a list keyed by ${keys.join(',')}`);
        seen.add(k);
      }
    }
  }
  if (isObject(value) && path !== '.metadata') {
    for (const req of schema.required ?? []) if (!(req in value)) out.push(`${path}.${req}: required`);
    for (const [k, v] of Object.entries(value)) {
      const p = `${path}.${k}`;
      const known = schema.properties?.[k];
      if (known) out.push(...validate(known, v, p));
      else if (isObject(schema.additionalProperties)) out.push(...validate(schema.additionalProperties, v, p));
      else if (schema.additionalProperties !== true && !schema['x-kubernetes-preserve-unknown-fields']) out.push(`${p}: unknown field (the API server would prune it)`);
    }
  }
  return out;
}

/** VALUE without the fields SCHEMA does not know: what the API server stores without fieldValidation=Strict. */
export function prune(schema: Schema, value: unknown, path = ''): unknown {
  if (Array.isArray(value)) return schema.items ? value.map((v, i) => prune(schema.items!, v, `${path}[${i}]`)) : value;
  if (!isObject(value) || path === '.metadata' || schema['x-kubernetes-preserve-unknown-fields']) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const known = schema.properties?.[k];
    if (known) out[k] = prune(known, v, `${path}.${k}`);
    else if (isObject(schema.additionalProperties)) out[k] = prune(schema.additionalProperties, v, `${path}.${k}`);
    else if (schema.additionalProperties === true) out[k] = v;
  }
  return out;
}
