// Loaded into every test process (`node --import`, which node:test passes on to each file's child).
//
// Why: with --test-force-exit, node 20's runner calls process.exit() as soon as a file's reporter
// closes. A test file's child reports to its parent over a pipe, and libuv queues a pipe write the
// pipe cannot take at once; process.exit() drops the queue, and with it the events of the file's
// last tests: they vanish from the run, passed or failed (measured: 1 run in 2 of a 77-test file
// lost 2 to 18 tests). A blocking pipe makes every write complete before the next line runs.
process.stdout._handle?.setBlocking?.(true);
