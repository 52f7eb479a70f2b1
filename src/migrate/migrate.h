/* `membershipd migrate-to-kv`: imports a single-node SQLite allowlist into
 * the replicated KV through a node's bus (DESIGN.md §4, §6 item 4;
 * docs/migrate.md is the operator's page). */
#ifndef UB_MIGRATE_MIGRATE_H
#define UB_MIGRATE_MIGRATE_H

/* Runs the subcommand and returns the process exit status: 0 when every
 * member was created or already present, 1 when a row was invalid, the
 * database or the node could not be used, or a member conflicted or failed,
 * 2 for a usage error or a refused (unencrypted, non-loopback) target.
 * argv[0] is "migrate-to-kv"; argv is borrowed. Prints progress on stdout
 * and errors on stderr; never prints the seed. */
int migrate_main(int argc, char **argv);

#endif
