// A node:test reporter that writes nothing on its stream; it appends to $AGENTBOX_TEST_LEDGER one
// line per test file that ended without reporting any test of its own.
//
// Why: a test file whose process exits with status 0 part-way (a stray process.exit, a forced exit
// while tests were still pending) loses every event it had not flushed, and node:test then counts
// the whole file as one passing test. The spec reporter shows a green line; the ledger lets
// scripts/run-tests.mjs fail the run instead. Lines are written as the events come, not at the end
// of the stream: the runner may exit before a reporter's stream ends.
import { appendFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';

export default async function* ledger(source) {
  const path = process.env.AGENTBOX_TEST_LEDGER;
  for await (const event of source) {
    // node:test reports a file as a test of its own, named by its absolute path, only when none of
    // the file's own tests reached it.
    const ended = event.type === 'test:pass' || event.type === 'test:fail';
    if (path && ended && event.data.nesting === 0 && isAbsolute(event.data.name) && event.data.name === event.data.file) {
      appendFileSync(path, `${JSON.stringify({ file: event.data.file, outcome: event.type === 'test:pass' ? 'passed' : 'failed' })}\n`);
    }
  }
  yield '';
}
