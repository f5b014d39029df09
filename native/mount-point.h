/*
 * Mount points for volumes: agentbox-helper's (on the host, under the stage) and agentbox-vm-agent's
 * (in the guest, under its new root). The includer has fail.h (die, die_msg).
 */
#ifndef AGENTBOX_MOUNT_POINT_H
#define AGENTBOX_MOUNT_POINT_H
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/*
 * mkdir -p BASE/PATH, a mount point for a volume at PATH. PATH: absolute, no empty, "." or ".." part
 * (checked here too: it becomes a path under BASE). With READ_ONLY_OK, a part that cannot be made
 * on a read-only filesystem is passed over (it must be there already, or the mount fails).
 */
static void make_mount_point(const char *base, const char *path, int read_only_ok) {
  char buf[4096];
  size_t len = strlen(path);
  if (path[0] != '/' || len < 2 || len > 1024 || path[len - 1] == '/' || strstr(path, "//") || strstr(path, "/./") ||
      strstr(path, "/../") || (len >= 2 && strcmp(path + len - 2, "/.") == 0) || (len >= 3 && strcmp(path + len - 3, "/..") == 0))
    die_msg("a mount point must be a plain absolute path");
  int n = snprintf(buf, sizeof buf, "%s%s", base, path);
  if (n < 0 || (size_t)n >= sizeof buf) die_msg("mount point too long");
  for (size_t i = strlen(base) + 1; i <= (size_t)n; i++) {
    if (buf[i] != '/' && buf[i] != '\0') continue;
    char saved = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST && !(read_only_ok && errno == EROFS)) die(buf);
    buf[i] = saved;
  }
}

#endif
