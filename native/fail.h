/*
 * How the native programs give up: one line on stderr, prefixed with the program's name, and exit
 * EXIT_AGENTBOX_FAILED (125, the CLI's "agentbox itself failed" code). The includer defines FAIL_PROGRAM first.
 */
#ifndef AGENTBOX_FAIL_H
#define AGENTBOX_FAIL_H
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "exit-codes.h"

#ifndef FAIL_PROGRAM
#error "define FAIL_PROGRAM before including fail.h"
#endif

static void die(const char *what) {
  fprintf(stderr, FAIL_PROGRAM ": %s: %s\n", what, strerror(errno));
  exit(EXIT_AGENTBOX_FAILED);
}

static void die_msg(const char *msg) {
  fprintf(stderr, FAIL_PROGRAM ": %s\n", msg);
  exit(EXIT_AGENTBOX_FAILED);
}

/* A non-negative decimal, or die naming WHAT. */
static long parse_num(const char *s, const char *what) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || !end || *end || v < 0) {
    fprintf(stderr, FAIL_PROGRAM ": bad %s: %s\n", what, s);
    exit(EXIT_AGENTBOX_FAILED);
  }
  return v;
}

#endif
