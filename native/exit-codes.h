/*
 * The exit codes the native programs decide themselves: the same numbers as src/contract/exit-codes.ts
 * (124, 125, 128+N), plus the shell's 126 and 127 for a command that could not be started. Anything
 * else is the command's own status.
 */
#ifndef AGENTBOX_EXIT_CODES_H
#define AGENTBOX_EXIT_CODES_H

/* The command ran past its timeout and was killed, as timeout(1) reports it. */
#define EXIT_TIMED_OUT 124
/* agentbox itself failed (bad arguments, a setup step), not the command: as docker run reports its own failures. */
#define EXIT_AGENTBOX_FAILED 125
/* The command was found but could not be started (not executable, no cwd, no pipe), as sh reports it. */
#define EXIT_CANNOT_EXECUTE 126
/* The command was not found, as sh reports it. */
#define EXIT_NOT_FOUND 127
/* 128+N: a command ended by signal N, as sh reports it (137 = 128+SIGKILL is how an OOM kill reads). */
#define EXIT_SIGNAL_BASE 128

#endif
