/* Small file-system helpers shared by the daemon's modules. */
#ifndef UB_FS_H
#define UB_FS_H

/* Creates dir and its missing parents with mode 0700 (state directories
 * hold keys and raft logs). Returns 0, or -1 with errno set. */
int ub_mkdir_p(const char *dir);

#endif
