/**
 * The dependency rules between the folders of src/, checked on every import of every .ts file under
 * src/ (type-only, re-exports and dynamic `import()` included: a type import is still a dependency of
 * the published .d.ts). To add a rule, add a row to RULES.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

interface Rule {
  /** The files it applies to: a folder (`src/sdk/`) or one file. */
  from: string;
  /** When given, every import must match one of these. */
  only?: string[];
  /** Imports that must not appear. */
  never?: string[];
  /** Imports allowed in spite of `never`, each with the reason. */
  except?: Record<string, string>;
  why: string;
}

/**
 * Patterns: `node:` is any builtin; a package name (`zod`) is it and its subpaths; `src/x/` is a folder;
 * anything else is one file (`src/core/async-queue.ts`). src/daemon/ (the composition root) and the
 * surfaces' own imports of each other are not restricted here: the root may import anything.
 */
const BELOW_SURFACES = ['src/core/', 'src/runtime/', 'src/policy/', 'src/store/', 'src/egress/', 'src/storage/'];
const SURFACES = ['src/api/', 'src/cli/', 'src/mcp/', 'src/doctor/', 'src/daemon/'];
const RULES: Rule[] = [
  { from: 'src/contract/', only: ['src/contract/', 'zod', 'node:'], why: 'the wire contract is shared by the SDK and the daemon: it cannot pull in either' },
  {
    from: 'src/sdk/',
    only: ['src/sdk/', 'src/contract/', 'node:', 'ws', '@opentelemetry/api'],
    why: 'the published SDK is a thin HTTP client (and ws, for terminals: Node 20 has no WebSocket client; @opentelemetry/api, the dependency-free API package, to send the caller\'s traceparent, a no-op without OpenTelemetry): it depends on nothing of the core',
  },
  ...BELOW_SURFACES.map((from) => ({ from, never: SURFACES, why: 'the core and what it drives know nothing of the surfaces (api, cli, mcp, doctor) or the daemon that wires them' })),
  {
    from: 'src/runtime/',
    never: ['src/core/'],
    except: { 'src/core/async-queue.ts': 'a dependency-free push-to-pull helper (pinned below to import nothing); core imports it too, and core may import only runtime/types.ts' },
    why: 'drivers are driven by the core, never the other way round',
  },
  { from: 'src/storage/', only: ['src/storage/', 'src/contract/', 'zod', 'node:'], why: 'the disk store is driven by the daemon, the core and tests alike: it knows nothing of any of them' },
  { from: 'src/core/async-queue.ts', only: [], why: 'the runtime may import it (see above) only as long as it brings nothing of the core along' },
  { from: 'src/core/', never: ['src/webhooks/'], why: 'core knows no HTTP: it tells lifecycle events to a sink (src/core/lifecycle-events.ts) the daemon wires in' },
  {
    from: 'src/webhooks/',
    never: [...SURFACES, 'src/core/'],
    except: { 'src/core/lifecycle-events.ts': 'the event sink it implements' },
    why: 'the webhook sender implements core\'s event sink and is wired in by the daemon: it knows nothing else of core, nor any surface',
  },
];

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? sourceFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Every module specifier the file imports or re-exports, static, dynamic or type-only. */
function specifiers(file: string): string[] {
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const out: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) out.push(node.moduleSpecifier.text);
    else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference) && ts.isStringLiteral(node.moduleReference.expression)) out.push(node.moduleReference.expression.text);
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const arg = node.arguments[0];
      out.push(arg && ts.isStringLiteralLike(arg) ? arg.text : `<dynamic import of ${arg?.getText(sf) ?? 'nothing'}>`);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) out.push(node.argument.literal.text);
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

/** A relative import as the repository path of the .ts file it names; anything else as written. */
function target(file: string, spec: string): string {
  if (!spec.startsWith('.')) return spec;
  return relative(root, resolve(dirname(file), spec)).split(sep).join('/').replace(/\.js$/, '.ts');
}

function matches(path: string, pattern: string): boolean {
  if (pattern.endsWith('/') || pattern.endsWith(':')) return path.startsWith(pattern);
  return path === pattern || path.startsWith(`${pattern}/`);
}

const files = sourceFiles(join(root, 'src')).map((abs) => ({
  path: relative(root, abs).split(sep).join('/'),
  imports: specifiers(abs).map((spec) => ({ spec, target: target(abs, spec) })),
}));

/** The broken rules, one line each: file, import as written, what it resolves to, the rule's reason. */
function violations(rule: Rule): string[] {
  const out: string[] = [];
  for (const f of files.filter((x) => matches(x.path, rule.from))) {
    for (const imp of f.imports) {
      const notOnly = rule.only !== undefined && !rule.only.some((p) => matches(imp.target, p));
      const never = (rule.never ?? []).some((p) => matches(imp.target, p)) && !Object.keys(rule.except ?? {}).some((p) => matches(imp.target, p));
      if (notOnly || never) {
        const allowed = rule.only ? `may import only ${rule.only.join(', ') || 'nothing'}` : `must not import ${rule.never?.join(', ')}`;
        out.push(`${f.path} imports '${imp.spec}' (${imp.target}): ${rule.from} ${allowed} (${rule.why})`);
      }
    }
  }
  return out;
}

test('the import scan sees the imports', () => {
  // A parser that found nothing would pass every rule.
  const sdk = files.find((f) => f.path === 'src/sdk/client.ts');
  assert.ok(sdk, 'src/sdk/client.ts is where the SDK client lives');
  assert.ok(sdk.imports.some((i) => i.target === 'src/contract/errors.ts'), 'the SDK client imports src/contract/errors.ts');
  assert.ok(files.length > 50, `only ${files.length} source files found under ${root}/src`);
});

for (const rule of RULES) {
  test(`layers: ${rule.from} (${rule.only ? `only ${rule.only.join(', ') || 'nothing'}` : `never ${rule.never?.join(', ')}`})`, () => {
    // A rule that applies to no file (a folder renamed) checks nothing.
    assert.ok(files.some((f) => matches(f.path, rule.from)), `no source file matches ${rule.from}: update RULES in test/unit/layers.test.ts`);
    for (const allowed of Object.keys(rule.except ?? {})) {
      assert.ok(files.some((f) => f.path === allowed || matches(f.path, allowed)), `the exception ${allowed} names no source file: drop it from RULES`);
    }
    const broken = violations(rule);
    assert.equal(broken.length, 0, `layer rule broken:\n  ${broken.join('\n  ')}`);
  });
}
