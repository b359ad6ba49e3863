/*
 * keytool.c — hsm-keytool, the key ceremony tool for the soft backend
 * (docs/hsm-keytool.md): creates the master key and the key store, and
 * generates, imports (clear components under dual control, or TR-31 key
 * blocks), exports (TR-31), lists, rotates and destroys keys.
 *
 * It uses only the public contract (hsm.h): the store is opened with
 * hsm_open("soft") on a private libuv loop, and every key operation goes
 * through hsm_key_*, so the tool enforces nothing the library does not and
 * can never write a store the switch would refuse.
 *
 * What it guarantees:
 *   - Key material never reaches argv, the environment, stdout, stderr or
 *     the audit log: clear components are read from standard input (echo
 *     off on a terminal) with read(2), not stdio, so no FILE buffer keeps a
 *     copy; every buffer that held one is wiped with OPENSSL_cleanse as soon
 *     as it has been used and on every error path; core dumps are disabled
 *     and the buffers locked in memory (best effort) while they exist.
 *     Messages about a bad component give its position and length, never
 *     its content.
 *   - Every key event the library reports (created, imported, exported,
 *     rotated, destroyed, a failed check, each component entered) is
 *     appended to the audit log as one JSON line, written with one write(2)
 *     and fsynced before the tool goes on; so is a check value a custodian
 *     rejects.  If a record cannot be written the tool still exits 1, saying
 *     the key operation itself was carried out.
 *   - The key store and the master key file are checked (regular file,
 *     owned by this user, no access for group or others) before they are
 *     opened, so an error names the file and says how to fix it.  The
 *     library checks them again on the open descriptor.
 *   - Input is parsed strictly: labels [A-Za-z0-9._-]{1,63}, usage names
 *     as hsm_usage_parse knows them, TDES|AES|HMAC with a length valid for
 *     the algorithm, hex digits only and exactly as many as the key needs,
 *     6-digit check values, UTC times in one of two ISO 8601 forms.
 *
 * Exit status: 0 done, 1 the operation failed (message and hint on
 * stderr), 2 usage error.  The only environment variables read are
 * SUDO_USER and USER, to name the operator in the audit log.
 */
#include "hsm.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

enum { KT_EXIT_OK = 0, KT_EXIT_FAIL = 1, KT_EXIT_USAGE = 2 };

#define KT_PROG "hsm-keytool"
#define KT_DEFAULT_KEYSTORE "var/hsm/keys.store"
#define KT_DEFAULT_MASTER "var/hsm/master.key"
#define KT_DEFAULT_AUDIT "var/hsm/audit.log"
#define KT_LABEL_MAX 63
#define KT_WHO_MAX 64
#define KT_KEY_MAX 64
/* X9.143 key block lengths are four decimal digits. */
#define KT_BLOCK_MAX 9999
/* A component line: 128 hex digits at most; one more character than the
 * longest valid line, so an over-long one is told apart from a fit. */
#define KT_COMPONENT_LINE (2 * KT_KEY_MAX + 2)

/* ------------------------------------------------------------------------ */
/* State                                                                     */

typedef struct kt_audit_s {
  int fd; /* the audit log, or -1 for commands that change no key */
  const char *path;
  const char *keystore;
  int write_failed;
  /* The latest event, for messages (a failed check's computed value). */
  hsm_audit_kind_t last_kind;
  int last_status;
  char last_kcv[7];
} kt_audit_t;

typedef struct kt_cmd_s kt_cmd_t;

typedef struct kt_args_s {
  const kt_cmd_t *cmd; /* for usage messages */
  const char *pos[4];
  int npos;
  const char *kcv;        /* --kcv, normalised to upper case in kcv_buf */
  const char *changeover; /* --changeover-until */
  const char *components; /* --components */
  int yes;
  int json;
  char kcv_buf[7];
} kt_args_t;

typedef struct kt_s {
  const char *keystore;
  const char *master_key;
  const char *who;
  const char *audit_log;
  int tty; /* standard input is a terminal */
  uv_loop_t loop;
  int loop_ready;
  hsm_t *hsm;
  kt_audit_t audit;
  char who_buf[KT_WHO_MAX + 1];
} kt_t;

/* Command options, as bits of kt_cmd_t.opts. */
#define KT_OPT_KCV 0x01u
#define KT_OPT_CHANGEOVER 0x02u
#define KT_OPT_COMPONENTS 0x04u
#define KT_OPT_YES 0x08u
#define KT_OPT_JSON 0x10u

struct kt_cmd_s {
  const char *name;
  int npos;
  unsigned opts;
  const char *synopsis;
  int (*run)(kt_t *kt, kt_args_t *a);
};

/* ------------------------------------------------------------------------ */
/* Messages                                                                  */

static const char kt_usage_text[] =
    "usage: " KT_PROG " [--keystore PATH] [--master-key PATH] [--who NAME]\n"
    "                   [--audit-log FILE] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  init-master-key     write a new random master key (mode 0600)\n"
    "  init                create an empty key store\n"
    "  list [--json]       every key version: label, usage, algorithm,\n"
    "                      length, version, check value, dates\n"
    "  generate LABEL USAGE ALG LENGTH\n"
    "  import-components LABEL USAGE ALG LENGTH [--components 2|3]\n"
    "                    [--kcv KCV]\n"
    "  import-tr31 LABEL USAGE KEK_LABEL [--kcv KCV]\n"
    "              [--changeover-until TIME]     (key block on stdin)\n"
    "  export-tr31 LABEL KEK_LABEL [--json]\n"
    "  rotate LABEL [--changeover-until TIME]\n"
    "  destroy LABEL [--yes]\n"
    "  kcv ALG             check value of one component read from stdin\n"
    "\n"
    "USAGE: ZMK TMK ZPK TPK BDK PVK CVK TAK ZAK DEK HMAC KBPK\n"
    "ALG and LENGTH (bytes): TDES 16|24, AES 16|24|32, HMAC 16..64\n"
    "KCV: 6 hex digits.  TIME (UTC): YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD\n"
    "defaults: --keystore " KT_DEFAULT_KEYSTORE
    " --master-key " KT_DEFAULT_MASTER "\n"
    "          --audit-log " KT_DEFAULT_AUDIT
    " --who $SUDO_USER, $USER or the login name\n";

__attribute__((format(printf, 2, 0))) static void
kt_vsay(const char *kind, const char *fmt, va_list ap) {
  fprintf(stderr, "%s: %s", KT_PROG, kind);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
}

__attribute__((format(printf, 1, 2))) static void kt_error(const char *fmt,
                                                           ...) {
  va_list ap;
  va_start(ap, fmt);
  kt_vsay("error: ", fmt, ap);
  va_end(ap);
}

__attribute__((format(printf, 1, 2))) static void kt_hint(const char *fmt,
                                                          ...) {
  va_list ap;
  va_start(ap, fmt);
  kt_vsay("hint: ", fmt, ap);
  va_end(ap);
}

__attribute__((format(printf, 1, 2))) static void kt_warn(const char *fmt,
                                                          ...) {
  va_list ap;
  va_start(ap, fmt);
  kt_vsay("warning: ", fmt, ap);
  va_end(ap);
}

/* A usage error: the message, then the command's synopsis (or the whole
 * usage text when no command was recognised). */
__attribute__((format(printf, 2, 3))) static int
kt_usage(const kt_cmd_t *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kt_vsay("error: ", fmt, ap);
  va_end(ap);
  if (cmd)
    fprintf(stderr, "usage: %s [OPTIONS] %s\n", KT_PROG, cmd->synopsis);
  else
    fputs(kt_usage_text, stderr);
  return KT_EXIT_USAGE;
}

/* ------------------------------------------------------------------------ */
/* Strict parsing                                                            */

static int kt_label_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > KT_LABEL_MAX)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

static int kt_alg_parse(const char *s, hsm_alg_t *alg) {
  if (strcmp(s, "TDES") == 0)
    *alg = HSM_ALG_TDES;
  else if (strcmp(s, "AES") == 0)
    *alg = HSM_ALG_AES;
  else if (strcmp(s, "HMAC") == 0)
    *alg = HSM_ALG_HMAC;
  else
    return 0;
  return 1;
}

static const char *kt_alg_name(hsm_alg_t alg) {
  switch (alg) {
  case HSM_ALG_TDES:
    return "TDES";
  case HSM_ALG_AES:
    return "AES";
  case HSM_ALG_HMAC:
    return "HMAC";
  default:
    return NULL;
  }
}

/* The key lengths the soft backend stores (single DES is not offered). */
static int kt_length_ok(hsm_alg_t alg, size_t len) {
  switch (alg) {
  case HSM_ALG_TDES:
    return len == 16 || len == 24;
  case HSM_ALG_AES:
    return len == 16 || len == 24 || len == 32;
  case HSM_ALG_HMAC:
    return len >= 16 && len <= 64;
  default:
    return 0;
  }
}

static const char *kt_lengths_of(hsm_alg_t alg) {
  return alg == HSM_ALG_TDES  ? "16 or 24"
         : alg == HSM_ALG_AES ? "16, 24 or 32"
                              : "16 to 64";
}

/* Decimal, no sign, no leading zero, lo..hi. */
static int kt_uint_parse(const char *s, unsigned long lo, unsigned long hi,
                         unsigned long *out) {
  unsigned long v = 0;
  if (!*s || (s[0] == '0' && s[1]) || strlen(s) > 9)
    return 0;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9')
      return 0;
    v = v * 10 + (unsigned long)(*p - '0');
  }
  if (v < lo || v > hi)
    return 0;
  *out = v;
  return 1;
}

static int kt_hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Exactly 2 * len hex digits and nothing else, into out[len]. */
static int kt_unhex(const char *s, size_t slen, uint8_t *out, size_t len) {
  if (slen != 2 * len)
    return 0;
  for (size_t i = 0; i < len; i++) {
    int hi = kt_hexval(s[2 * i]), lo = kt_hexval(s[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      OPENSSL_cleanse(out, len);
      return 0;
    }
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return 1;
}

/* 6 hex digits, upper-cased into out (the library compares upper case). */
static int kt_kcv_parse(const char *s, char out[7]) {
  if (strlen(s) != 6)
    return 0;
  for (int i = 0; i < 6; i++) {
    if (kt_hexval(s[i]) < 0)
      return 0;
    out[i] = (char)((s[i] >= 'a' && s[i] <= 'f') ? s[i] - 'a' + 'A' : s[i]);
  }
  out[6] = '\0';
  return 1;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
 * (H. Hinnant's days_from_civil): timegm is not POSIX. */
static int64_t kt_days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static int kt_digits(const char *s, int n, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return 0;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  *out = v;
  return 1;
}

/* "YYYY-MM-DDTHH:MM:SSZ" or "YYYY-MM-DD" (midnight), UTC, to Unix time. */
static int kt_time_parse(const char *s, int64_t *out) {
  static const unsigned mdays[] = {31, 28, 31, 30, 31, 30,
                                   31, 31, 30, 31, 30, 31};
  size_t n = strlen(s);
  unsigned y, mo, d, hh = 0, mi = 0, ss = 0;
  if (n != 10 && n != 20)
    return 0;
  if (!kt_digits(s, 4, &y) || s[4] != '-' || !kt_digits(s + 5, 2, &mo) ||
      s[7] != '-' || !kt_digits(s + 8, 2, &d))
    return 0;
  if (n == 20 && (s[10] != 'T' || !kt_digits(s + 11, 2, &hh) || s[13] != ':' ||
                  !kt_digits(s + 14, 2, &mi) || s[16] != ':' ||
                  !kt_digits(s + 17, 2, &ss) || s[19] != 'Z'))
    return 0;
  if (y < 1970 || mo < 1 || mo > 12 || hh > 23 || mi > 59 || ss > 59)
    return 0;
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (d < 1 || d > mdays[mo - 1] + (mo == 2 && leap))
    return 0;
  *out = kt_days_from_civil(y, mo, d) * 86400 + (int64_t)hh * 3600 +
         (int64_t)mi * 60 + (int64_t)ss;
  return 1;
}

static void kt_time_format(int64_t t, char out[21]) {
  time_t tt = (time_t)t;
  struct tm tm;
  if (!gmtime_r(&tt, &tm) || strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    snprintf(out, 21, "%" PRId64, t);
}

/* The operator's name for the audit log, as given or from the environment;
 * printable ASCII only, so a log line cannot be forged through it. */
static int kt_who_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > KT_WHO_MAX)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < 0x20 || s[i] > 0x7e)
      return 0;
  return 1;
}

static const char *kt_default_who(void) {
  const char *cand[3] = {getenv("SUDO_USER"), getenv("USER"), getlogin()};
  for (int i = 0; i < 3; i++)
    if (cand[i] && kt_who_ok(cand[i]))
      return cand[i];
  return "unknown";
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */

static void kt_json_str(FILE *f, const char *s) {
  if (!s) {
    fputs("null", f);
    return;
  }
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

/* ------------------------------------------------------------------------ */
/* Terminal and standard input                                               */

/* The terminal settings to put back if a signal arrives while echo is off.
 * File scope because a signal handler can reach nothing else. */
static struct termios kt_saved_tty;
static volatile sig_atomic_t kt_echo_is_off;

static void kt_on_signal(int sig) {
  if (kt_echo_is_off)
    tcsetattr(STDIN_FILENO, TCSANOW, &kt_saved_tty);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigaction(sig, &sa, NULL);
  raise(sig);
}

static void kt_echo_off(void) {
  static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
  struct termios t;
  if (tcgetattr(STDIN_FILENO, &kt_saved_tty) != 0)
    return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = kt_on_signal;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    sigaction(sigs[i], &sa, NULL);
  t = kt_saved_tty;
  t.c_lflag &= ~(tcflag_t)ECHO;
  t.c_lflag |= ECHONL; /* the cursor still moves on after Enter */
  /* TCSAFLUSH: anything typed ahead, before echo went off, is dropped
   * rather than read as (part of) the secret. */
  if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) == 0)
    kt_echo_is_off = 1;
}

static void kt_echo_on(void) {
  if (kt_echo_is_off) {
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &kt_saved_tty);
    kt_echo_is_off = 0;
  }
}

enum { KT_LINE_EOF = -1, KT_LINE_LONG = -2, KT_LINE_ERR = -3 };

/* Reads one line of standard input into buf (at most cap - 1 characters
 * and a NUL), without its newline; a last line without one counts.  One
 * byte per read(2), not stdio: a FILE buffer would keep a copy of a clear
 * component where it cannot be wiped, and would swallow the lines meant
 * for the next prompt.  Returns the length or a KT_LINE_* code; on an
 * error buf is wiped. */
static long kt_read_line(char *buf, size_t cap) {
  size_t n = 0;
  for (;;) {
    char c;
    ssize_t r = read(STDIN_FILENO, &c, 1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      OPENSSL_cleanse(buf, cap);
      return KT_LINE_ERR;
    }
    if (r == 0) {
      if (n == 0)
        return KT_LINE_EOF;
      break;
    }
    if (c == '\n')
      break;
    if (n + 1 >= cap) {
      OPENSSL_cleanse(buf, cap);
      OPENSSL_cleanse(&c, sizeof c);
      return KT_LINE_LONG;
    }
    buf[n++] = c;
    OPENSSL_cleanse(&c, sizeof c);
  }
  buf[n] = '\0';
  return (long)n;
}

/* Asks a yes/no question on the terminal; 1 for "y" or "yes". */
static int kt_confirm(const char *question) {
  char ans[16];
  fprintf(stderr, "%s [y/N] ", question);
  fflush(stderr);
  long n = kt_read_line(ans, sizeof ans);
  return n > 0 && (strcmp(ans, "y") == 0 || strcmp(ans, "Y") == 0 ||
                   strcmp(ans, "yes") == 0 || strcmp(ans, "YES") == 0);
}

/* ------------------------------------------------------------------------ */
/* Audit log                                                                 */

static const char *kt_event_name(hsm_audit_kind_t k) {
  switch (k) {
  case HSM_AUDIT_CREATED:
    return "created";
  case HSM_AUDIT_IMPORTED:
    return "imported";
  case HSM_AUDIT_EXPORTED:
    return "exported";
  case HSM_AUDIT_ROTATED:
    return "rotated";
  case HSM_AUDIT_DESTROYED:
    return "destroyed";
  case HSM_AUDIT_CHECK_FAILED:
    return "check_failed";
  case HSM_AUDIT_COMPONENT:
    return "component";
  }
  return "unknown";
}

/* One event as one JSON line (with its newline) in a new buffer. */
static char *kt_audit_line(const kt_audit_t *au, const hsm_audit_event_t *ev,
                           size_t *len) {
  char *buf = NULL;
  FILE *f = open_memstream(&buf, len);
  if (!f)
    return NULL;
  char when[21];
  kt_time_format(ev->when, when);
  fprintf(f, "{\"when\":\"%s\",\"who\":", when);
  kt_json_str(f, ev->who);
  fprintf(f, ",\"uid\":%ld,\"event\":\"%s\",\"label\":", (long)geteuid(),
          kt_event_name(ev->kind));
  kt_json_str(f, ev->label);
  fputs(",\"usage\":", f);
  kt_json_str(f,
              ev->usage == HSM_USAGE_NONE ? NULL : hsm_usage_name(ev->usage));
  fputs(",\"alg\":", f);
  kt_json_str(f, kt_alg_name(ev->alg));
  fprintf(f, ",\"version\":%" PRIu32 ",\"kcv\":", ev->version);
  kt_json_str(f, ev->kcv[0] ? ev->kcv : NULL);
  fputs(",\"status\":", f);
  kt_json_str(f, ev->status ? hsm_err_name(ev->status) : "ok");
  fputs(",\"detail\":", f);
  kt_json_str(f, ev->detail);
  fputs(",\"keystore\":", f);
  kt_json_str(f, au->keystore);
  fputs("}\n", f);
  if (fclose(f) != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

static int kt_write_all(int fd, const char *p, size_t len) {
  while (len) {
    ssize_t w = write(fd, p, len);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

/* The audit callback: log line (fsynced), then a summary on stderr. */
static void kt_on_audit(void *ctx, const hsm_audit_event_t *ev) {
  kt_audit_t *au = ctx;
  au->last_kind = ev->kind;
  au->last_status = ev->status;
  memcpy(au->last_kcv, ev->kcv, sizeof au->last_kcv);
  au->last_kcv[6] = '\0';
  if (au->fd >= 0) {
    size_t len = 0;
    char *line = kt_audit_line(au, ev, &len);
    int ok = line && kt_write_all(au->fd, line, len) == 0 && fsync(au->fd) == 0;
    free(line);
    if (!ok) {
      if (!au->write_failed)
        kt_error("cannot write audit log \"%s\": %s", au->path,
                 strerror(errno));
      au->write_failed = 1;
    }
  }
  fprintf(stderr, "%s: audit: %s \"%s\"", KT_PROG, kt_event_name(ev->kind),
          ev->label ? ev->label : "");
  if (ev->version)
    fprintf(stderr, " version %" PRIu32, ev->version);
  if (ev->usage != HSM_USAGE_NONE)
    fprintf(stderr, " %s", hsm_usage_name(ev->usage));
  if (kt_alg_name(ev->alg))
    fprintf(stderr, " %s", kt_alg_name(ev->alg));
  if (ev->kcv[0])
    fprintf(stderr, " check value %s", ev->kcv);
  fprintf(stderr, " by %s: %s", ev->who ? ev->who : "unknown",
          ev->status ? hsm_err_name(ev->status) : "ok");
  if (ev->detail)
    fprintf(stderr, " (%s)", ev->detail);
  fputc('\n', stderr);
}

/* An event the tool itself observes (a custodian rejecting a check value),
 * reported through the same path as the library's. */
static void kt_audit_local(kt_t *kt, hsm_audit_kind_t kind, const char *label,
                           hsm_usage_t usage, hsm_alg_t alg, const char *kcv,
                           int status, const char *detail) {
  hsm_audit_event_t ev;
  memset(&ev, 0, sizeof ev);
  ev.kind = kind;
  ev.who = kt->who;
  ev.label = label;
  ev.usage = usage;
  ev.alg = alg;
  if (kcv)
    snprintf(ev.kcv, sizeof ev.kcv, "%s", kcv);
  ev.when = (int64_t)time(NULL);
  ev.status = status;
  ev.detail = detail;
  kt_on_audit(&kt->audit, &ev);
}

static int kt_audit_open(kt_t *kt) {
  int fd =
      open(kt->audit_log,
           O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK,
           0600);
  if (fd < 0) {
    int e = errno;
    kt_error("cannot open audit log \"%s\": %s", kt->audit_log, strerror(e));
    if (e == ENOENT)
      kt_hint("create its directory (mode 700) or name another file with "
              "--audit-log");
    else if (e == ELOOP)
      kt_hint("the audit log may not be a symbolic link");
    return KT_EXIT_FAIL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    kt_error("cannot open audit log \"%s\": not a regular file", kt->audit_log);
    close(fd);
    return KT_EXIT_FAIL;
  }
  kt->audit.fd = fd;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Files                                                                     */

/* Creates the directory that will hold path, and any missing parent, mode
 * 0700; warns when the nearest one is open to group or others. */
static int kt_make_parent(const char *path) {
  char dir[4096];
  const char *slash = strrchr(path, '/');
  if (!slash || slash == path)
    return 0;
  size_t n = (size_t)(slash - path);
  if (n >= sizeof dir) {
    kt_error("path \"%s\" is too long", path);
    return KT_EXIT_FAIL;
  }
  memcpy(dir, path, n);
  dir[n] = '\0';
  for (size_t i = 1; i <= n; i++) {
    if (dir[i] != '/' && dir[i] != '\0')
      continue;
    char saved = dir[i];
    dir[i] = '\0';
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
      kt_error("cannot create directory \"%s\": %s", dir, strerror(errno));
      return KT_EXIT_FAIL;
    }
    dir[i] = saved;
  }
  struct stat st;
  if (stat(dir, &st) == 0 && (st.st_mode & 077)) {
    kt_warn("directory \"%s\" is open to group or others (mode %04o)", dir,
            (unsigned)(st.st_mode & 07777));
    kt_hint("chmod 700 %s", dir);
  }
  return 0;
}

/* Checks a file the soft backend will insist on (regular, ours, 0600 or
 * narrower), so the error can name the file and the fix.  what: "open key
 * store" or "read master key". */
static int kt_check_private(const char *path, const char *what,
                            const char *missing_hint) {
  struct stat st;
  if (lstat(path, &st) != 0) {
    int e = errno;
    kt_error("cannot %s \"%s\": %s", what, path, strerror(e));
    if (e == ENOENT && missing_hint)
      kt_hint("%s", missing_hint);
    return KT_EXIT_FAIL;
  }
  if (S_ISLNK(st.st_mode)) {
    kt_error("cannot %s \"%s\": it is a symbolic link", what, path);
    kt_hint("name the file itself, not a link to it");
    return KT_EXIT_FAIL;
  }
  if (!S_ISREG(st.st_mode)) {
    kt_error("cannot %s \"%s\": not a regular file", what, path);
    return KT_EXIT_FAIL;
  }
  if (st.st_uid != geteuid()) {
    kt_error("cannot %s \"%s\": it is owned by uid %ld, not by uid %ld who "
             "runs " KT_PROG,
             what, path, (long)st.st_uid, (long)geteuid());
    kt_hint("run " KT_PROG " as the owner of the file, or chown it");
    return KT_EXIT_FAIL;
  }
  if (st.st_mode & 077) {
    kt_error("cannot %s \"%s\": %s (mode %04o)", what, path,
             hsm_strerror(HSM_E_PERMISSIONS), (unsigned)(st.st_mode & 07777));
    kt_hint("chmod 600 %s", path);
    return KT_EXIT_FAIL;
  }
  return 0;
}

static int kt_check_master(const kt_t *kt) {
  char hint[4200];
  snprintf(hint, sizeof hint,
           "create one with: " KT_PROG " --master-key %s init-master-key",
           kt->master_key);
  return kt_check_private(kt->master_key, "read master key", hint);
}

/* Opens the store (creating it when create) on the tool's own loop. */
static int kt_open_store(kt_t *kt, int create) {
  int rc = kt_check_master(kt);
  if (rc)
    return rc;
  if (!create) {
    char hint[4200];
    snprintf(hint, sizeof hint,
             "create an empty one with: " KT_PROG " --keystore %s init",
             kt->keystore);
    if ((rc = kt_check_private(kt->keystore, "open key store", hint)))
      return rc;
  }
  if (uv_loop_init(&kt->loop) != 0) {
    kt_error("cannot start an event loop");
    return KT_EXIT_FAIL;
  }
  kt->loop_ready = 1;
  hsm_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.backend = "soft";
  cfg.keystore_path = kt->keystore;
  cfg.master_key_path = kt->master_key;
  cfg.create = create;
  cfg.audit = kt_on_audit;
  cfg.audit_ctx = &kt->audit;
  char err[512];
  err[0] = '\0';
  rc = hsm_open(&kt->hsm, &kt->loop, &cfg, err, sizeof err);
  if (rc == 0)
    return 0;
  kt->hsm = NULL;
  kt_error("cannot open key store \"%s\": %s", kt->keystore, hsm_strerror(rc));
  switch (rc) {
  case HSM_E_MASTER_KEY:
    kt_hint("the store was written under another master key, or was "
            "altered or truncated: check --master-key (%s), then restore "
            "the store from its backup",
            kt->master_key);
    break;
  case HSM_E_KEYSTORE:
    kt_hint("check that \"%s\" is a key store written by " KT_PROG
            " and that its directory is writable; restore it from its "
            "backup if it is damaged",
            kt->keystore);
    break;
  case HSM_E_PERMISSIONS:
    kt_hint("chmod 600 %s %s, owned by the user who runs " KT_PROG,
            kt->keystore, kt->master_key);
    break;
  default:
    if (err[0])
      kt_hint("%s", err);
  }
  return KT_EXIT_FAIL;
}

static void kt_close(kt_t *kt) {
  if (kt->hsm)
    hsm_close(kt->hsm);
  kt->hsm = NULL;
  if (kt->loop_ready) {
    uv_run(&kt->loop, UV_RUN_NOWAIT);
    uv_loop_close(&kt->loop);
    kt->loop_ready = 0;
  }
  if (kt->audit.fd >= 0)
    close(kt->audit.fd);
  kt->audit.fd = -1;
}

/* Opens the audit log, then the store: a key may not change unless its
 * change can be recorded. */
static int kt_open_for_change(kt_t *kt) {
  int rc = kt_audit_open(kt);
  return rc ? rc : kt_open_store(kt, 0);
}

/* Exit status once the operation is done: a lost audit record fails the
 * run even though the key operation itself happened. */
static int kt_finish(kt_t *kt, int rc) {
  if (kt->audit.write_failed) {
    kt_error("the key operation was carried out, but its audit record could "
             "not be written to \"%s\"",
             kt->audit_log);
    kt_hint("check free space and the file's permissions, and record the "
            "event by hand from the lines above");
    return KT_EXIT_FAIL;
  }
  return rc;
}

/* The message and hint for a failed key operation on label. */
static int kt_key_error(kt_t *kt, const char *doing, const char *label,
                        const char *kek, int rc) {
  kt_error("cannot %s \"%s\": %s", doing, label, hsm_strerror(rc));
  hsm_key_info_t info;
  switch (rc) {
  case HSM_E_KEY_NOT_FOUND:
    kt_hint("see the labels in the store with: " KT_PROG " list");
    break;
  case HSM_E_EXISTS:
    kt_hint("\"%s\" exists with another usage or algorithm: choose another "
            "label, or destroy the old key first",
            label);
    break;
  case HSM_E_KEY_USAGE:
    if (kek)
      kt_hint("the key-encrypting key must be a KBPK, ZMK or TMK, and the "
              "key block's usage must agree with the usage given");
    break;
  case HSM_E_KEY_BLOCK:
    if (kek && hsm_key_info(kt->hsm, kek, &info) == 0)
      kt_hint("check that the block was copied whole, on one line, and was "
              "wrapped under the key whose check value is %s (\"%s\" here)",
              info.kcv, kek);
    break;
  case HSM_E_KCV_MISMATCH:
    kt_hint("the key is not the one its paper record describes: nothing "
            "was stored; ask the sender to confirm the check value");
    break;
  case HSM_E_KEYSTORE:
    kt_hint("the key store could not be written: check free space and that "
            "its directory is writable; nothing was changed");
    break;
  default:
    break;
  }
  return KT_EXIT_FAIL;
}

/* ------------------------------------------------------------------------ */
/* Commands                                                                  */

static void kt_print_key(const char *verb, const hsm_key_info_t *k) {
  printf("%s \"%s\" version %" PRIu32 ": %s %s %zu bytes, check value %s\n",
         verb, k->label, k->version, hsm_usage_name(k->usage),
         kt_alg_name(k->alg) ? kt_alg_name(k->alg) : "?", k->length, k->kcv);
}

static int kt_cmd_init_master_key(kt_t *kt, kt_args_t *a) {
  (void)a;
  int rc = kt_make_parent(kt->master_key);
  if (rc)
    return rc;
  int fd = open(kt->master_key,
                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    kt_error("cannot create master key \"%s\": %s", kt->master_key,
             strerror(e));
    if (e == EEXIST)
      kt_hint("a master key is never overwritten: every store encrypted "
              "under it would become unreadable; remove the file by hand "
              "only if no key store uses it");
    return KT_EXIT_FAIL;
  }
  uint8_t key[32];
  char hex[65];
  static const char digits[] = "0123456789ABCDEF";
  int ok = RAND_bytes(key, sizeof key) == 1;
  for (size_t i = 0; ok && i < sizeof key; i++) {
    hex[2 * i] = digits[key[i] >> 4];
    hex[2 * i + 1] = digits[key[i] & 15];
  }
  hex[64] = '\n';
  ok = ok && fchmod(fd, 0600) == 0 && kt_write_all(fd, hex, sizeof hex) == 0 &&
       fsync(fd) == 0;
  int e = errno;
  OPENSSL_cleanse(key, sizeof key);
  OPENSSL_cleanse(hex, sizeof hex);
  if (close(fd) != 0)
    ok = 0;
  if (!ok) {
    unlink(kt->master_key);
    kt_error("cannot write master key \"%s\": %s", kt->master_key, strerror(e));
    return KT_EXIT_FAIL;
  }
  printf("wrote a new master key to \"%s\" (mode 0600)\n", kt->master_key);
  fprintf(stderr,
          "%s: keep a backup of the master key apart from the key store: "
          "without it the store cannot be read\n",
          KT_PROG);
  return KT_EXIT_OK;
}

static int kt_cmd_init(kt_t *kt, kt_args_t *a) {
  (void)a;
  struct stat st;
  if (lstat(kt->keystore, &st) == 0) {
    kt_error("cannot create key store \"%s\": %s", kt->keystore,
             "the file exists already");
    kt_hint("see its keys with: " KT_PROG " --keystore %s list", kt->keystore);
    return KT_EXIT_FAIL;
  }
  int rc = kt_make_parent(kt->keystore);
  if (!rc)
    rc = kt_open_store(kt, 1);
  if (rc)
    return rc;
  printf("created an empty key store \"%s\" under master key \"%s\"\n",
         kt->keystore, kt->master_key);
  return KT_EXIT_OK;
}

typedef struct kt_keys_s {
  hsm_key_info_t *v;
  size_t n, cap;
  int nomem;
} kt_keys_t;

static void kt_collect(void *ctx, const hsm_key_info_t *info) {
  kt_keys_t *ks = ctx;
  if (ks->nomem)
    return;
  if (ks->n == ks->cap) {
    size_t cap = ks->cap ? 2 * ks->cap : 16;
    hsm_key_info_t *v = realloc(ks->v, cap * sizeof *v);
    if (!v) {
      ks->nomem = 1;
      return;
    }
    ks->v = v;
    ks->cap = cap;
  }
  ks->v[ks->n++] = *info;
}

static int kt_list_keys(kt_t *kt, kt_keys_t *ks) {
  memset(ks, 0, sizeof *ks);
  int rc = hsm_key_list(kt->hsm, kt_collect, ks);
  if (!rc && ks->nomem)
    rc = HSM_E_NOMEM;
  if (rc) {
    kt_error("cannot list key store \"%s\": %s", kt->keystore,
             hsm_strerror(rc));
    free(ks->v);
    ks->v = NULL;
    return KT_EXIT_FAIL;
  }
  return 0;
}

static void kt_list_json(const kt_keys_t *ks) {
  for (size_t i = 0; i < ks->n; i++) {
    const hsm_key_info_t *k = &ks->v[i];
    char created[21], until[21];
    kt_time_format(k->created, created);
    kt_time_format(k->not_after, until);
    fputs("{\"label\":", stdout);
    kt_json_str(stdout, k->label);
    printf(",\"usage\":\"%s\",\"alg\":", hsm_usage_name(k->usage));
    kt_json_str(stdout, kt_alg_name(k->alg));
    printf(",\"length\":%zu,\"version\":%" PRIu32
           ",\"kcv\":\"%s\",\"created\":\"%s\",\"not_after\":",
           k->length, k->version, k->kcv, created);
    kt_json_str(stdout, k->not_after ? until : NULL);
    fputs("}\n", stdout);
  }
}

static void kt_list_text(const kt_keys_t *ks) {
  int w = 5; /* "label" */
  for (size_t i = 0; i < ks->n; i++) {
    int n = (int)strlen(ks->v[i].label);
    if (n > w)
      w = n;
  }
  printf("%-*s  %-5s  %-4s  %6s  %7s  %-6s  %-20s  %s\n", w, "label", "usage",
         "alg", "length", "version", "kcv", "created", "not_after");
  for (size_t i = 0; i < ks->n; i++) {
    const hsm_key_info_t *k = &ks->v[i];
    char created[21], until[21];
    kt_time_format(k->created, created);
    if (k->not_after)
      kt_time_format(k->not_after, until);
    else
      snprintf(until, sizeof until, "-");
    printf("%-*s  %-5s  %-4s  %6zu  %7" PRIu32 "  %-6s  %-20s  %s\n", w,
           k->label, hsm_usage_name(k->usage),
           kt_alg_name(k->alg) ? kt_alg_name(k->alg) : "?", k->length,
           k->version, k->kcv, created, until);
  }
}

static int kt_cmd_list(kt_t *kt, kt_args_t *a) {
  int rc = kt_open_store(kt, 0);
  if (rc)
    return rc;
  kt_keys_t ks;
  if ((rc = kt_list_keys(kt, &ks)))
    return rc;
  if (a->json)
    kt_list_json(&ks);
  else
    kt_list_text(&ks);
  free(ks.v);
  return KT_EXIT_OK;
}

/* Parses USAGE ALG LENGTH (positions i..i+2) for generate and
 * import-components. */
static int kt_parse_key_spec(kt_args_t *a, int i, hsm_usage_t *usage,
                             hsm_alg_t *alg, size_t *len) {
  const kt_cmd_t *cmd = a->cmd;
  unsigned long n;
  if ((*usage = hsm_usage_parse(a->pos[i])) == HSM_USAGE_NONE)
    return kt_usage(cmd,
                    "unknown key usage \"%.20s\" (one of ZMK TMK ZPK TPK BDK "
                    "PVK CVK TAK ZAK DEK HMAC KBPK)",
                    a->pos[i]);
  if (!kt_alg_parse(a->pos[i + 1], alg))
    return kt_usage(cmd, "unknown algorithm \"%.20s\" (TDES, AES or HMAC)",
                    a->pos[i + 1]);
  if (!kt_uint_parse(a->pos[i + 2], 1, KT_KEY_MAX, &n) ||
      !kt_length_ok(*alg, n))
    return kt_usage(cmd, "key length \"%.20s\" is not valid for %s (%s bytes)",
                    a->pos[i + 2], kt_alg_name(*alg), kt_lengths_of(*alg));
  *len = n;
  return 0;
}

/* The soft backend stores any usage with any algorithm, but refuses at
 * use time what its operations cannot take (soft.c's usage rules): say so
 * while the operator can still choose again. */
static void kt_warn_unusable(hsm_usage_t usage, hsm_alg_t alg, size_t len) {
  const char *need = NULL;
  switch (usage) {
  case HSM_USAGE_DEK:
    need = alg == HSM_ALG_AES && len == 32 ? NULL : "AES 32";
    break;
  case HSM_USAGE_CVK:
    need = alg == HSM_ALG_TDES && len == 16 ? NULL : "TDES 16";
    break;
  case HSM_USAGE_PVK:
    need = alg == HSM_ALG_TDES ? NULL : "TDES";
    break;
  case HSM_USAGE_BDK:
    need = (alg == HSM_ALG_TDES && len == 16) || alg == HSM_ALG_AES
               ? NULL
               : "TDES 16 or AES";
    break;
  case HSM_USAGE_HMAC:
    break;
  default:
    need = alg == HSM_ALG_HMAC ? "TDES or AES" : NULL;
    break;
  }
  if (need)
    kt_warn("a %s key must be %s to be used by the soft backend; this %s %zu "
            "key will be refused when used",
            hsm_usage_name(usage), need, kt_alg_name(alg), len);
}

static int kt_cmd_generate(kt_t *kt, kt_args_t *a) {
  const char *label = a->pos[0];
  hsm_usage_t usage = HSM_USAGE_NONE;
  hsm_alg_t alg = HSM_ALG_TDES;
  size_t len = 0;
  int rc = kt_parse_key_spec(a, 1, &usage, &alg, &len);
  if (rc)
    return rc;
  if ((rc = kt_open_for_change(kt)))
    return rc;
  kt_warn_unusable(usage, alg, len);
  hsm_key_info_t info;
  /* generate makes a first key; a new version of a working key is a
   * rotation, and the operator should say so. */
  if (hsm_key_info(kt->hsm, label, &info) == 0) {
    kt_error("cannot generate key \"%s\": %s (version %" PRIu32
             ", %s %s, check value %s)",
             label, hsm_strerror(HSM_E_EXISTS), info.version,
             hsm_usage_name(info.usage),
             kt_alg_name(info.alg) ? kt_alg_name(info.alg) : "?", info.kcv);
    kt_hint("make a new version with: " KT_PROG " rotate %s", label);
    return KT_EXIT_FAIL;
  }
  rc = hsm_key_generate(kt->hsm, label, usage, alg, len, kt->who, &info);
  if (rc)
    return kt_finish(kt, kt_key_error(kt, "generate key", label, NULL, rc));
  kt_print_key("generated", &info);
  return kt_finish(kt, KT_EXIT_OK);
}

/* 1 if every byte has odd parity, as DES key components should. */
static int kt_odd_parity(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned b = p[i], ones = 0;
    for (; b; b >>= 1)
      ones += b & 1u;
    if (!(ones & 1u))
      return 0;
  }
  return 1;
}

/* What a component ceremony holds in memory: locked (best effort) so it is
 * not swapped out, wiped on every way out. */
typedef struct kt_components_s {
  uint8_t comp[3][KT_KEY_MAX];
  char line[KT_COMPONENT_LINE + 1];
} kt_components_t;

static void kt_components_wipe(kt_components_t *c) {
  OPENSSL_cleanse(c, sizeof *c);
}

/* Reads component i (0-based) of n into c->comp[i]; prints its check
 * value; on a terminal, asks the custodian to confirm it.  Returns 0 or an
 * exit status (the caller wipes). */
static int kt_read_component(kt_t *kt, kt_components_t *c, int i, int n,
                             const char *label, hsm_usage_t usage,
                             hsm_alg_t alg, size_t len) {
  if (kt->tty) {
    fprintf(stderr, "component %d of %d for %s: ", i + 1, n, label);
    fflush(stderr);
    kt_echo_off();
  }
  long got = kt_read_line(c->line, sizeof c->line);
  kt_echo_on();
  if (got == KT_LINE_EOF || got == KT_LINE_ERR) {
    kt_error("cannot read component %d of %d for \"%s\": %s", i + 1, n, label,
             got == KT_LINE_EOF ? "standard input ended" : strerror(errno));
    kt_hint("give one component per line, %zu hex digits each", 2 * len);
    return KT_EXIT_FAIL;
  }
  int ok = got >= 0 && kt_unhex(c->line, (size_t)got, c->comp[i], len);
  OPENSSL_cleanse(c->line, sizeof c->line);
  if (!ok) {
    if (got == KT_LINE_LONG)
      kt_error("component %d of %d for \"%s\" is not valid: it is longer "
               "than %zu hex digits",
               i + 1, n, label, 2 * len);
    else
      kt_error("component %d of %d for \"%s\" is not valid: it must be "
               "exactly %zu hex digits (0-9, A-F), not %ld characters",
               i + 1, n, label, 2 * len, got);
    kt_hint("nothing was stored; enter the components again");
    return KT_EXIT_FAIL;
  }
  char kcv[7];
  int rc = hsm_component_kcv(alg, c->comp[i], len, kcv);
  if (rc) {
    kt_error("cannot compute the check value of component %d of \"%s\": %s",
             i + 1, label, hsm_strerror(rc));
    return KT_EXIT_FAIL;
  }
  printf("component %d of %d: check value %s\n", i + 1, n, kcv);
  fflush(stdout);
  if (alg == HSM_ALG_TDES && !kt_odd_parity(c->comp[i], len))
    kt_warn("component %d does not have odd parity on every byte: check it "
            "was copied correctly",
            i + 1);
  for (int j = 0; j < i; j++)
    if (CRYPTO_memcmp(c->comp[i], c->comp[j], len) == 0) {
      kt_error("component %d of \"%s\" is the same as component %d", i + 1,
               label, j + 1);
      kt_hint("each custodian enters a different component; nothing was "
              "stored");
      kt_audit_local(kt, HSM_AUDIT_CHECK_FAILED, label, usage, alg, kcv,
                     HSM_E_BAD_DATA, "two components are the same");
      return KT_EXIT_FAIL;
    }
  if (kt->tty) {
    char q[96];
    snprintf(q, sizeof q,
             "does %s match the check value on component %d's paper?", kcv,
             i + 1);
    if (!kt_confirm(q)) {
      char detail[80];
      snprintf(detail, sizeof detail,
               "custodian rejected the check value of component %d", i + 1);
      kt_audit_local(kt, HSM_AUDIT_CHECK_FAILED, label, usage, alg, kcv,
                     HSM_E_KCV_MISMATCH, detail);
      kt_error("component %d of \"%s\" was not confirmed: nothing was stored",
               i + 1, label);
      kt_hint("the custodian enters the component again; if the check "
              "value still differs, the paper record is wrong");
      return KT_EXIT_FAIL;
    }
  }
  return 0;
}

static int kt_cmd_import_components(kt_t *kt, kt_args_t *a) {
  const char *label = a->pos[0];
  hsm_usage_t usage = HSM_USAGE_NONE;
  hsm_alg_t alg = HSM_ALG_TDES;
  size_t len = 0;
  unsigned long n = 2;
  int rc = kt_parse_key_spec(a, 1, &usage, &alg, &len);
  if (rc)
    return rc;
  if (a->components && !kt_uint_parse(a->components, 2, 3, &n))
    return kt_usage(a->cmd, "--components must be 2 or 3");
  if ((rc = kt_open_for_change(kt)))
    return rc;
  kt_warn_unusable(usage, alg, len);

  kt_components_t *c = malloc(sizeof *c);
  if (!c) {
    kt_error("out of memory");
    return KT_EXIT_FAIL;
  }
  memset(c, 0, sizeof *c);
  int locked = mlock(c, sizeof *c) == 0;
  for (int i = 0; i < (int)n && !rc; i++)
    rc = kt_read_component(kt, c, i, (int)n, label, usage, alg, len);
  hsm_key_info_t info;
  int hrc = 0;
  if (!rc) {
    const uint8_t *parts[3] = {c->comp[0], c->comp[1], c->comp[2]};
    hrc = hsm_key_import_components(kt->hsm, label, usage, alg, parts, n, len,
                                    a->kcv, kt->who, &info);
  }
  kt_components_wipe(c);
  if (locked)
    munlock(c, sizeof *c);
  free(c);
  if (rc)
    return kt_finish(kt, rc);
  if (hrc == HSM_E_KCV_MISMATCH &&
      kt->audit.last_kind == HSM_AUDIT_CHECK_FAILED) {
    printf("combined key: check value %s\n", kt->audit.last_kcv);
    kt_error("check value of the combined key for \"%s\" is %s, not the "
             "expected %s: nothing was stored",
             label, kt->audit.last_kcv, a->kcv);
    kt_hint("compare each component's check value above with its paper "
            "record; a component was mistyped or a paper record is wrong");
    return kt_finish(kt, KT_EXIT_FAIL);
  }
  if (hrc)
    return kt_finish(kt, kt_key_error(kt, "import key", label, NULL, hrc));
  printf("combined key: check value %s\n", info.kcv);
  kt_print_key("imported", &info);
  return kt_finish(kt, KT_EXIT_OK);
}

static int kt_parse_changeover(const kt_args_t *a, int64_t *until) {
  const kt_cmd_t *cmd = a->cmd;
  *until = 0;
  if (!a->changeover)
    return 0;
  if (!kt_time_parse(a->changeover, until))
    return kt_usage(cmd,
                    "--changeover-until \"%.40s\" is not a UTC time "
                    "(YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD)",
                    a->changeover);
  if (*until <= (int64_t)time(NULL))
    return kt_usage(cmd, "--changeover-until %s is not in the future",
                    a->changeover);
  return 0;
}

/* Prints what became of the previous version after a new one was made. */
static void kt_print_previous(const hsm_key_info_t *old, int64_t until) {
  if (!old->version)
    return;
  if (until) {
    char t[21];
    kt_time_format(until, t);
    printf("version %" PRIu32 " (check value %s) stays usable until %s\n",
           old->version, old->kcv, t);
  } else {
    printf("version %" PRIu32 " (check value %s) stays usable until it is "
           "destroyed\n",
           old->version, old->kcv);
  }
}

static int kt_cmd_import_tr31(kt_t *kt, kt_args_t *a) {
  const char *label = a->pos[0], *kek = a->pos[2];
  hsm_usage_t usage = hsm_usage_parse(a->pos[1]);
  int64_t until;
  if (usage == HSM_USAGE_NONE)
    return kt_usage(a->cmd, "unknown key usage \"%.20s\"", a->pos[1]);
  int rc = kt_parse_changeover(a, &until);
  if (rc)
    return rc;
  char *block = malloc(KT_BLOCK_MAX + 2);
  if (!block) {
    kt_error("out of memory");
    return KT_EXIT_FAIL;
  }
  if (kt->tty) {
    fprintf(stderr, "TR-31 key block for %s under %s: ", label, kek);
    fflush(stderr);
  }
  long got = kt_read_line(block, KT_BLOCK_MAX + 2);
  int ok = got > 0;
  for (long i = 0; ok && i < got; i++)
    ok = block[i] > 0x20 && block[i] < 0x7f;
  if (!ok) {
    free(block);
    kt_error("cannot import key \"%s\": %s", label,
             got == KT_LINE_EOF    ? "no key block on standard input"
             : got == KT_LINE_LONG ? "the key block is longer than 9999 "
                                     "characters"
                                   : "the key block is not one line of "
                                     "printable characters");
    kt_hint("give the key block on standard input, on one line");
    return KT_EXIT_FAIL;
  }
  if ((rc = kt_open_for_change(kt))) {
    free(block);
    return rc;
  }
  hsm_key_info_t old, info;
  memset(&old, 0, sizeof old);
  hsm_key_info(kt->hsm, label, &old);
  if (until && !old.version)
    kt_warn("\"%s\" has no previous version: --changeover-until has no "
            "effect",
            label);
  rc = hsm_key_import_tr31(kt->hsm, label, usage, kek, block, a->kcv, until,
                           kt->who, &info);
  free(block);
  if (rc == HSM_E_KCV_MISMATCH) {
    kt_error("check value of the key in the block for \"%s\" is %s, not the "
             "expected %s: nothing was stored",
             label, kt->audit.last_kcv, a->kcv);
    kt_hint("the block does not hold the key its paper record describes: "
            "ask the sender to confirm the check value");
    return kt_finish(kt, KT_EXIT_FAIL);
  }
  if (rc)
    return kt_finish(kt, kt_key_error(kt, "import key", label, kek, rc));
  kt_print_key("imported", &info);
  kt_print_previous(&old, until);
  return kt_finish(kt, KT_EXIT_OK);
}

static int kt_cmd_export_tr31(kt_t *kt, kt_args_t *a) {
  const char *label = a->pos[0], *kek = a->pos[1];
  int rc = kt_open_for_change(kt);
  if (rc)
    return rc;
  hsm_key_info_t info;
  if ((rc = hsm_key_info(kt->hsm, label, &info)))
    return kt_finish(kt, kt_key_error(kt, "export key", label, kek, rc));
  char *block = malloc(KT_BLOCK_MAX + 1);
  if (!block) {
    kt_error("out of memory");
    return KT_EXIT_FAIL;
  }
  rc = hsm_key_export_tr31(kt->hsm, label, kek, block, KT_BLOCK_MAX + 1,
                           kt->who);
  if (rc) {
    free(block);
    return kt_finish(kt, kt_key_error(kt, "export key", label, kek, rc));
  }
  if (a->json) {
    fputs("{\"label\":", stdout);
    kt_json_str(stdout, label);
    printf(",\"version\":%" PRIu32 ",\"kek\":", info.version);
    kt_json_str(stdout, kek);
    printf(",\"kcv\":\"%s\",\"block\":", info.kcv);
    kt_json_str(stdout, block);
    fputs("}\n", stdout);
  } else {
    printf("%s\n", block);
    fprintf(stderr,
            "%s: exported \"%s\" version %" PRIu32 " (%s %s) under \"%s\": "
            "check value %s\n",
            KT_PROG, label, info.version, hsm_usage_name(info.usage),
            kt_alg_name(info.alg) ? kt_alg_name(info.alg) : "?", kek, info.kcv);
  }
  free(block);
  return kt_finish(kt, KT_EXIT_OK);
}

static int kt_cmd_rotate(kt_t *kt, kt_args_t *a) {
  const char *label = a->pos[0];
  int64_t until;
  int rc = kt_parse_changeover(a, &until);
  if (rc)
    return rc;
  if ((rc = kt_open_for_change(kt)))
    return rc;
  hsm_key_info_t old, info;
  if ((rc = hsm_key_info(kt->hsm, label, &old)))
    return kt_finish(kt, kt_key_error(kt, "rotate key", label, NULL, rc));
  rc = hsm_key_rotate(kt->hsm, label, until, kt->who, &info);
  if (rc)
    return kt_finish(kt, kt_key_error(kt, "rotate key", label, NULL, rc));
  kt_print_key("rotated", &info);
  kt_print_previous(&old, until);
  return kt_finish(kt, KT_EXIT_OK);
}

static int kt_cmd_destroy(kt_t *kt, kt_args_t *a) {
  const char *label = a->pos[0];
  if (!a->yes && !kt->tty)
    return kt_usage(a->cmd, "destroy needs --yes when standard input is not a "
                            "terminal");
  int rc = kt_open_for_change(kt);
  if (rc)
    return rc;
  hsm_key_info_t info;
  if ((rc = hsm_key_info(kt->hsm, label, &info)))
    return kt_finish(kt, kt_key_error(kt, "destroy key", label, NULL, rc));
  kt_keys_t ks;
  if ((rc = kt_list_keys(kt, &ks)))
    return rc;
  size_t versions = 0;
  for (size_t i = 0; i < ks.n; i++)
    versions += strcmp(ks.v[i].label, label) == 0;
  free(ks.v);
  if (!a->yes) {
    char q[256];
    snprintf(q, sizeof q,
             "destroy all %zu version(s) of \"%s\" (%s, current check value "
             "%s)? this cannot be undone.",
             versions, label, hsm_usage_name(info.usage), info.kcv);
    if (!kt_confirm(q)) {
      kt_error("destroy of \"%s\" was not confirmed: nothing was destroyed",
               label);
      return KT_EXIT_FAIL;
    }
  }
  if ((rc = hsm_key_destroy(kt->hsm, label, kt->who)))
    return kt_finish(kt, kt_key_error(kt, "destroy key", label, NULL, rc));
  printf("destroyed \"%s\": %zu version(s), last check value %s\n", label,
         versions, info.kcv);
  return kt_finish(kt, KT_EXIT_OK);
}

/* One old version: what it protected can no longer be recovered (the
 * journal's retention purge of encrypted PANs). */
static int kt_cmd_destroy_version(kt_t *kt, kt_args_t *a) {
  const char *label = a->pos[0];
  char *end = NULL;
  unsigned long v = strtoul(a->pos[1], &end, 10);
  if (!end || *end || v == 0 || v > UINT32_MAX || a->pos[1][0] == '-')
    return kt_usage(a->cmd, "VERSION is a positive number, not \"%.20s\"",
                    a->pos[1]);
  if (!a->yes && !kt->tty)
    return kt_usage(a->cmd, "destroy-version needs --yes when standard input "
                            "is not a terminal");
  int rc = kt_open_for_change(kt);
  if (rc)
    return rc;
  hsm_key_info_t cur;
  if ((rc = hsm_key_info(kt->hsm, label, &cur)))
    return kt_finish(kt, kt_key_error(kt, "destroy version", label, NULL, rc));
  if (!a->yes) {
    char q[256];
    snprintf(q, sizeof q,
             "destroy version %lu of \"%s\" (the current one is %u)? what it "
             "protected can never be recovered.",
             v, label, cur.version);
    if (!kt_confirm(q)) {
      kt_error("nothing was destroyed");
      return KT_EXIT_FAIL;
    }
  }
  rc = hsm_key_destroy_version(kt->hsm, label, (uint32_t)v, kt->who);
  if (rc == HSM_E_INVAL) {
    kt_error("version %lu is the current version of \"%s\": rotate it first", v,
             label);
    return kt_finish(kt, KT_EXIT_FAIL);
  }
  if (rc)
    return kt_finish(kt, kt_key_error(kt, "destroy version", label, NULL, rc));
  printf("destroyed \"%s\" version %lu\n", label, v);
  return kt_finish(kt, KT_EXIT_OK);
}

static int kt_cmd_kcv(kt_t *kt, kt_args_t *a) {
  hsm_alg_t alg;
  if (!kt_alg_parse(a->pos[0], &alg))
    return kt_usage(a->cmd, "unknown algorithm \"%.20s\" (TDES, AES or HMAC)",
                    a->pos[0]);
  kt_components_t *c = malloc(sizeof *c);
  if (!c) {
    kt_error("out of memory");
    return KT_EXIT_FAIL;
  }
  memset(c, 0, sizeof *c);
  int locked = mlock(c, sizeof *c) == 0;
  if (kt->tty) {
    fprintf(stderr, "component (%s): ", kt_alg_name(alg));
    fflush(stderr);
    kt_echo_off();
  }
  long got = kt_read_line(c->line, sizeof c->line);
  kt_echo_on();
  size_t len = got > 0 ? (size_t)got / 2 : 0;
  int ok = got > 0 && got % 2 == 0 && kt_length_ok(alg, len) &&
           kt_unhex(c->line, (size_t)got, c->comp[0], len);
  OPENSSL_cleanse(c->line, sizeof c->line);
  char kcv[7];
  int rc = ok ? hsm_component_kcv(alg, c->comp[0], len, kcv) : 0;
  int parity = alg != HSM_ALG_TDES || kt_odd_parity(c->comp[0], len);
  kt_components_wipe(c);
  if (locked)
    munlock(c, sizeof *c);
  free(c);
  if (!ok) {
    kt_error("the component on standard input is not valid: it must be %s "
             "bytes as hex digits (0-9, A-F) on one line",
             kt_lengths_of(alg));
    return KT_EXIT_FAIL;
  }
  if (rc) {
    kt_error("cannot compute the check value: %s", hsm_strerror(rc));
    return KT_EXIT_FAIL;
  }
  if (!parity)
    kt_warn("the component does not have odd parity on every byte");
  printf("%s\n", kcv);
  return KT_EXIT_OK;
}

/* ------------------------------------------------------------------------ */
/* Command line                                                              */

static const kt_cmd_t kt_cmds[] = {
    {"init-master-key", 0, 0, "init-master-key", kt_cmd_init_master_key},
    {"init", 0, 0, "init", kt_cmd_init},
    {"list", 0, KT_OPT_JSON, "list [--json]", kt_cmd_list},
    {"generate", 4, 0, "generate LABEL USAGE ALG LENGTH", kt_cmd_generate},
    {"import-components", 4, KT_OPT_COMPONENTS | KT_OPT_KCV,
     "import-components LABEL USAGE ALG LENGTH [--components 2|3] [--kcv KCV]",
     kt_cmd_import_components},
    {"import-tr31", 3, KT_OPT_KCV | KT_OPT_CHANGEOVER,
     "import-tr31 LABEL USAGE KEK_LABEL [--kcv KCV] [--changeover-until TIME]",
     kt_cmd_import_tr31},
    {"export-tr31", 2, KT_OPT_JSON, "export-tr31 LABEL KEK_LABEL [--json]",
     kt_cmd_export_tr31},
    {"rotate", 1, KT_OPT_CHANGEOVER, "rotate LABEL [--changeover-until TIME]",
     kt_cmd_rotate},
    {"destroy", 1, KT_OPT_YES, "destroy LABEL [--yes]", kt_cmd_destroy},
    {"destroy-version", 2, KT_OPT_YES, "destroy-version LABEL VERSION [--yes]",
     kt_cmd_destroy_version},
    {"kcv", 1, 0, "kcv ALG", kt_cmd_kcv},
};

/* "--name VALUE" or "--name=VALUE" at argv[*i]: the value, or NULL when
 * argv[*i] is not this option.  *missing is set when the value is absent. */
static const char *kt_opt_value(int argc, char **argv, int *i, const char *name,
                                int *missing) {
  const char *arg = argv[*i];
  size_t n = strlen(name);
  if (strncmp(arg, name, n) != 0)
    return NULL;
  if (arg[n] == '=')
    return arg + n + 1;
  if (arg[n] != '\0')
    return NULL;
  if (*i + 1 >= argc || !argv[*i + 1]) {
    *missing = 1;
    return NULL;
  }
  return argv[++*i];
}

/* Parses a command's arguments: positionals (every label checked) and the
 * options it allows, in any order; "--" ends the options. */
static int kt_parse_cmd(const kt_cmd_t *cmd, int argc, char **argv,
                        kt_args_t *a) {
  int only_pos = 0;
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i], *v;
    int missing = 0;
    if (!only_pos && strcmp(arg, "--") == 0) {
      only_pos = 1;
    } else if (!only_pos && arg[0] == '-' && arg[1] != '\0') {
      if ((cmd->opts & KT_OPT_KCV) &&
          ((v = kt_opt_value(argc, argv, &i, "--kcv", &missing)) || missing)) {
        if (missing || !kt_kcv_parse(v, a->kcv_buf))
          return kt_usage(cmd, "--kcv needs a check value of 6 hex digits");
        a->kcv = a->kcv_buf;
      } else if ((cmd->opts & KT_OPT_CHANGEOVER) &&
                 ((v = kt_opt_value(argc, argv, &i, "--changeover-until",
                                    &missing)) ||
                  missing)) {
        if (missing)
          return kt_usage(cmd, "--changeover-until needs a time");
        a->changeover = v;
      } else if ((cmd->opts & KT_OPT_COMPONENTS) &&
                 ((v = kt_opt_value(argc, argv, &i, "--components",
                                    &missing)) ||
                  missing)) {
        if (missing)
          return kt_usage(cmd, "--components needs 2 or 3");
        a->components = v;
      } else if ((cmd->opts & KT_OPT_YES) && strcmp(arg, "--yes") == 0) {
        a->yes = 1;
      } else if ((cmd->opts & KT_OPT_JSON) && strcmp(arg, "--json") == 0) {
        a->json = 1;
      } else {
        return kt_usage(cmd, "unknown option for %s: %.40s", cmd->name, arg);
      }
    } else {
      if (a->npos >= cmd->npos)
        return kt_usage(cmd, "%s takes %d argument(s)", cmd->name, cmd->npos);
      a->pos[a->npos++] = arg;
    }
  }
  if (a->npos != cmd->npos)
    return kt_usage(cmd, "%s takes %d argument(s), not %d", cmd->name,
                    cmd->npos, a->npos);
  /* Labels are in the first position, and the KEK in the last of the
   * TR-31 commands. */
  if (cmd->npos && strcmp(cmd->name, "kcv") != 0 && !kt_label_ok(a->pos[0]))
    return kt_usage(cmd,
                    "label \"%.70s\" is not valid (1 to 63 of A-Z a-z 0-9 "
                    ". _ -)",
                    a->pos[0]);
  if (strncmp(cmd->name, "export-tr31", 11) == 0 ||
      strncmp(cmd->name, "import-tr31", 11) == 0) {
    const char *kek = a->pos[cmd->npos - 1];
    if (!kt_label_ok(kek))
      return kt_usage(cmd, "key-encrypting key label \"%.70s\" is not valid",
                      kek);
  }
  return 0;
}

/* Parses the global options; *next is the index of the command. */
static int kt_parse_global(kt_t *kt, int argc, char **argv, int *next) {
  static const char *const names[] = {"--keystore", "--master-key",
                                      "--audit-log", "--who"};
  const char **slots[] = {&kt->keystore, &kt->master_key, &kt->audit_log,
                          &kt->who};
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *opt = argv[i], *v = NULL, **slot = NULL;
    int missing = 0;
    if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
      fputs(kt_usage_text, stdout);
      return -1;
    }
    for (size_t k = 0; k < sizeof names / sizeof names[0] && !slot; k++) {
      v = kt_opt_value(argc, argv, &i, names[k], &missing);
      if (v || missing)
        slot = slots[k];
    }
    if (!slot)
      return kt_usage(NULL, "unknown option: %.40s", opt);
    if (!v || !*v)
      return kt_usage(NULL, "%.40s needs a value", opt);
    if (slot == &kt->who && !kt_who_ok(v))
      return kt_usage(NULL, "--who must be 1 to 64 printable characters");
    *slot = v;
  }
  *next = i;
  return 0;
}

int main(int argc, char **argv) {
  kt_t kt;
  memset(&kt, 0, sizeof kt);
  kt.keystore = KT_DEFAULT_KEYSTORE;
  kt.master_key = KT_DEFAULT_MASTER;
  kt.audit_log = KT_DEFAULT_AUDIT;
  kt.audit.fd = -1;

  /* No core file may hold a component or the master key, and nothing this
   * tool creates is for anyone but its owner. */
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  umask(077);

  int next = 0;
  int rc = kt_parse_global(&kt, argc, argv, &next);
  if (rc)
    return rc < 0 ? KT_EXIT_OK : rc;
  if (next >= argc)
    return kt_usage(NULL, "a command is needed");
  const kt_cmd_t *cmd = NULL;
  for (size_t i = 0; i < sizeof kt_cmds / sizeof kt_cmds[0]; i++)
    if (strcmp(kt_cmds[i].name, argv[next]) == 0)
      cmd = &kt_cmds[i];
  if (!cmd)
    return kt_usage(NULL, "unknown command: %.40s", argv[next]);
  for (int i = next + 1; i < argc && strcmp(argv[i], "--") != 0; i++)
    if (strcmp(argv[i], "--help") == 0) {
      printf("usage: %s [OPTIONS] %s\n", KT_PROG, cmd->synopsis);
      return KT_EXIT_OK;
    }
  kt_args_t args;
  memset(&args, 0, sizeof args);
  args.cmd = cmd;
  if ((rc = kt_parse_cmd(cmd, argc - next - 1, argv + next + 1, &args)))
    return rc;

  if (!kt.who) {
    snprintf(kt.who_buf, sizeof kt.who_buf, "%s", kt_default_who());
    kt.who = kt.who_buf;
  }
  kt.tty = isatty(STDIN_FILENO);
  kt.audit.path = kt.audit_log;
  kt.audit.keystore = kt.keystore;
  rc = cmd->run(&kt, &args);
  kt_close(&kt);
  if (fflush(stdout) != 0 && rc == KT_EXIT_OK) {
    kt_error("cannot write standard output: %s", strerror(errno));
    rc = KT_EXIT_FAIL;
  }
  return rc;
}
