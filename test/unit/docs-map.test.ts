/**
 * The map of the code stays true: every repository path the docs name in backticks exists, and
 * every `ARCHITECTURE` reference in a src/ comment names a heading that ARCHITECTURE.md has.
 * Needs nothing but the checkout (no root, no build output besides this file).
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/** dist/test/unit/docs-map.test.js -> the repository root. */
const root = fileURLToPath(new URL('../../../', import.meta.url));

const DOCS = ['ARCHITECTURE.md', 'CONTRIBUTING.md', 'native/README.md'];
const PATH_PREFIXES = ['src/', 'test/', 'native/', 'scripts/', 'bench/', 'examples/', '.ci/'];
const ROOT_FILES = new Set(['package.json', 'package-lock.json', 'tsconfig.json']);

/** Inline code spans outside fenced blocks, with their line numbers. */
function codeSpans(markdown: string): { text: string; line: number }[] {
  const out: { text: string; line: number }[] = [];
  let fenced = false;
  markdown.split('\n').forEach((line, i) => {
    if (/^\s*(```|~~~)/.test(line)) {
      fenced = !fenced;
      return;
    }
    if (fenced) return;
    for (const m of line.matchAll(/`([^`]+)`/g)) out.push({ text: (m[1] as string).trim(), line: i + 1 });
  });
  return out;
}

/** Whether a code span names a file or folder of this repository (and not, say, a command or a host path). */
function isRepoPath(text: string): boolean {
  if (/\s/.test(text)) return false;
  if (PATH_PREFIXES.some((p) => text.startsWith(p))) return true;
  return ROOT_FILES.has(text) || /^[A-Z][A-Za-z0-9_-]*\.md$/.test(text);
}

/** A path exists; with a glob or placeholder (`src/runtime/*`, `native/*.h`, `test/conformance/<name>.test.ts`) the directory before it must. */
function repoPathExists(repoRoot: string, text: string): boolean {
  const star = text.search(/[*?[{<]/);
  const path = star === -1 ? text : text.slice(0, text.lastIndexOf('/', star) + 1);
  if (!existsSync(join(repoRoot, path))) return false;
  return !path.endsWith('/') || statSync(join(repoRoot, path)).isDirectory();
}

/** Headings (`#` to `######`) of a Markdown file, without the hashes. */
function headings(markdown: string): Set<string> {
  const out = new Set<string>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    else if (!fenced) {
      const m = /^#{1,6}\s+(.+?)\s*#*\s*$/.exec(line);
      if (m) out.add(m[1] as string);
    }
  }
  return out;
}

/**
 * The section an ARCHITECTURE reference names: `(ARCHITECTURE: CLI flags)`,
 * `ARCHITECTURE.md ("The local driver")`, `(ARCHITECTURE.md, "The policy file")`; null when the
 * reference names none.
 */
function referencedSection(line: string): string | null | undefined {
  if (!/ARCHITECTURE(\.md|:)/.test(line)) return undefined;
  const colon = /ARCHITECTURE:\s*([^)\n]+?)\s*(?:\)|\*\/|$)/.exec(line);
  if (colon) return (colon[1] as string).replace(/[.;,]$/, '');
  const quoted = /ARCHITECTURE\.md[\s,(]*["“]([^"”]+)["”]/.exec(line);
  return quoted ? (quoted[1] as string) : null;
}

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

test('helpers: spans, paths, globs, references', () => {
  assert.deepEqual(codeSpans('a `src/x.ts` b\n```\n`src/in-fence.ts`\n```\n`README.md`').map((s) => s.text), ['src/x.ts', 'README.md']);
  assert.equal(isRepoPath('src/runtime/types.ts'), true);
  assert.equal(isRepoPath('CONTRIBUTING.md'), true);
  assert.equal(isRepoPath('npm test -- conformance'), false);
  assert.equal(isRepoPath('/run/agentbox/proxy.sock'), false);
  assert.equal(isRepoPath('agentbox.db'), false);
  assert.equal(repoPathExists(root, 'src/runtime/*'), true);
  assert.equal(repoPathExists(root, 'native/*.h'), true);
  assert.equal(repoPathExists(root, 'src/no-such-dir/*'), false);
  assert.equal(referencedSection('/** CLI flags (ARCHITECTURE: CLI flags) turned into API request bodies. */'), 'CLI flags');
  assert.equal(referencedSection(' * See ARCHITECTURE.md ("The local driver") for the traps this design avoids.'), 'The local driver');
  assert.equal(referencedSection(' * The policy file (ARCHITECTURE.md, "The policy file"). Strict everywhere'), 'The policy file');
  assert.equal(referencedSection(' * the contracts in ARCHITECTURE.md shared by every surface.'), null);
  assert.equal(referencedSection('no reference here'), undefined);
});

for (const doc of DOCS) {
  test(`${doc}: every repository path it names exists`, () => {
    const file = join(root, doc);
    assert.ok(existsSync(file), `${doc} is missing`);
    const missing = codeSpans(readFileSync(file, 'utf8'))
      .filter((s) => isRepoPath(s.text) && !repoPathExists(root, s.text))
      .map((s) => `${doc}:${s.line}: ${s.text}`);
    assert.deepEqual([...new Set(missing)], [], 'paths named in the docs that do not exist');
  });
}

test('every ARCHITECTURE reference in src/ names a section of ARCHITECTURE.md', () => {
  const sections = headings(readFileSync(join(root, 'ARCHITECTURE.md'), 'utf8'));
  const problems: string[] = [];
  let found = 0;
  for (const file of walk(join(root, 'src')).filter((f) => f.endsWith('.ts'))) {
    readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
      const section = referencedSection(line);
      if (section === undefined) return;
      found++;
      const where = `${relative(root, file)}:${i + 1}`;
      if (section === null) problems.push(`${where}: names no section (write "ARCHITECTURE: <heading>")`);
      else if (!sections.has(section)) problems.push(`${where}: no heading "${section}" in ARCHITECTURE.md`);
    });
  }
  assert.ok(found > 0, 'no ARCHITECTURE references found in src/: is the root right?');
  assert.deepEqual(problems, []);
});
