/* Process-wide logging: one line per event on stderr, level-filtered before
 * any formatting work is done. Secrets must never be passed to these calls. */
#ifndef UB_LOG_H
#define UB_LOG_H

enum ub_log_level {
    UB_LOG_ERROR = 0,
    UB_LOG_WARN = 1,
    UB_LOG_INFO = 2,
    UB_LOG_DEBUG = 3,
};

/* Current threshold; messages above it are dropped. Defaults to INFO. */
extern enum ub_log_level ub_log_threshold;

/* Parses "error", "warn", "info" or "debug". Returns 0 on success, -1 on an
 * unknown name (the threshold is then left unchanged). */
int ub_log_set_level(const char *name);

/* Sets the component tag printed on every line (e.g. the node name). The
 * string is copied. */
void ub_log_set_tag(const char *tag);

void ub_log_write(enum ub_log_level level, const char *module, const char *fmt,
                  ...) __attribute__((format(printf, 3, 4)));

#define ub_log(level, module, ...)                      \
    do {                                                \
        if ((level) <= ub_log_threshold) {              \
            ub_log_write((level), (module), __VA_ARGS__); \
        }                                               \
    } while (0)

#define ub_error(module, ...) ub_log(UB_LOG_ERROR, module, __VA_ARGS__)
#define ub_warn(module, ...) ub_log(UB_LOG_WARN, module, __VA_ARGS__)
#define ub_info(module, ...) ub_log(UB_LOG_INFO, module, __VA_ARGS__)
#define ub_debug(module, ...) ub_log(UB_LOG_DEBUG, module, __VA_ARGS__)

#endif
