/**
 * The exit codes agentbox itself gives a command (ARCHITECTURE.md, "Contracts"): exit codes are data in
 * ExecResult, so they belong to the wire contract. native/exit-codes.h holds the same numbers for the
 * C helpers. Anything else is the command's own code, or 128+N when signal N ended it.
 */

/** The command ran past its timeout and was killed (`timedOut: true`), as timeout(1) reports it. */
export const EXIT_TIMED_OUT = 124;
/** agentbox itself failed (bad flag, policy denial, runtime down, a helper that could not start), not the command: as docker run reports its own failures. */
export const EXIT_AGENTBOX_FAILED = 125;
/** 128+N: a command ended by signal N, as a shell reports it. */
export const EXIT_SIGNAL_BASE = 128;
/** 128+SIGKILL: killed outright; with `oomKilled: true` this is how an OOM kill reads. */
export const EXIT_KILLED = 137;
