#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

enum ub_log_level ub_log_threshold = UB_LOG_INFO;
static char log_tag[64] = "";

static const char *const level_names[] = { "error", "warn", "info", "debug" };

int ub_log_set_level(const char *name)
{
    for (unsigned i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            ub_log_threshold = (enum ub_log_level)i;
            return 0;
        }
    }
    return -1;
}

void ub_log_set_tag(const char *tag)
{
    snprintf(log_tag, sizeof log_tag, "%s", tag ? tag : "");
}

void ub_log_write(enum ub_log_level level, const char *module, const char *fmt,
                  ...)
{
    char line[1024];
    struct timeval tv;
    struct tm tm;
    size_t n;
    va_list ap;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03dZ %-5s %s%s%s: ",
                          (int)(tv.tv_usec / 1000), level_names[level],
                          log_tag, log_tag[0] ? " " : "", module);
    if (n < sizeof line) {
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof line - n, fmt, ap);
        va_end(ap);
    }
    /* One fputs per line keeps lines from different threads whole. */
    n = strlen(line);
    if (n + 1 < sizeof line) {
        line[n] = '\n';
        line[n + 1] = '\0';
    }
    fputs(line, stderr);
}
