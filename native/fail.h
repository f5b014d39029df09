/*
 * How the native programs give up: one line on stderr, prefixed with the program's name, and exit
 * 125 (the CLI's "agentbox itself failed" code). The includer defines FAIL_PROGRAM first.
 */
#ifndef AGENTBOX_FAIL_H
#define AGENTBOX_FAIL_H
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FAIL_PROGRAM
#error "define FAIL_PROGRAM before including fail.h"
#endif
#define EXIT_FAIL 125

static void die(const char *what) {
  fprintf(stderr, FAIL_PROGRAM ": %s: %s\n", what, strerror(errno));
  exit(EXIT_FAIL);
}

static void die_msg(const char *msg) {
  fprintf(stderr, FAIL_PROGRAM ": %s\n", msg);
  exit(EXIT_FAIL);
}

/* A non-negative decimal, or die naming WHAT. */
static long parse_num(const char *s, const char *what) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || !end || *end || v < 0) {
    fprintf(stderr, FAIL_PROGRAM ": bad %s: %s\n", what, s);
    exit(EXIT_FAIL);
  }
  return v;
}

#endif
