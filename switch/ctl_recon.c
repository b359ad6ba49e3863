/*
 * ctl_recon.c — switchctl recon: the switch's totals of one terminal batch
 * (DE74-77, DE86-89, DE97 of a 0500) from the journal, compared with the
 * terminal's when given (db/lookup.h, docs/lookup-and-recon.md).
 *
 *   switchctl recon --terminal T --batch B [--currency NNN]
 *                   [--date D | --from D --to D]
 *                   [--terminal-totals 'de74=N,...,de97=DN']
 *
 * Prints the switch's totals in every case, then "match" or "mismatch"
 * with each differing field and both values.  Exit status: 0 match, or
 * no terminal totals given; 3 mismatch; 1 failed; 2 usage.
 */
#include "ctl.h"
#include "lookup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *terminal, *batch, *currency, *date, *from, *to, *totals;
  int32_t batch_no;
} recon_args_t;

static int usage_error(const char *msg) {
  fprintf(stderr,
          "switchctl: recon: %s\n"
          "usage: switchctl recon --terminal T --batch B [--currency NNN]\n"
          "                       [--date D | --from D --to D]\n"
          "                       [--terminal-totals "
          "'de74=N,de75=N,de76=N,de77=N,de86=N,de87=N,de88=N,de89=N,"
          "de97=DN']\n",
          msg);
  return CTL_USAGE;
}

static int parse_args(int argc, char **argv, recon_args_t *a) {
  static const char *const names[] = {
      "--terminal", "--batch", "--currency",       "--date",
      "--from",     "--to",    "--terminal-totals"};
  const char **slots[] = {&a->terminal, &a->batch, &a->currency, &a->date,
                          &a->from,     &a->to,    &a->totals};
  memset(a, 0, sizeof *a);
  for (int i = 1; i < argc; i++) {
    size_t k = 0;
    while (k < 7 && strcmp(argv[i], names[k]) != 0)
      k++;
    if (k == 7) {
      fprintf(stderr, "switchctl: recon: unknown argument \"%.40s\"\n",
              argv[i]);
      return usage_error("see the usage");
    }
    if (i + 1 >= argc)
      return usage_error("an option needs a value");
    if (*slots[k])
      return usage_error("an option is given twice");
    *slots[k] = argv[++i];
  }
  return 0;
}

static int check_args(recon_args_t *a) {
  if (!a->terminal || !a->batch)
    return usage_error("--terminal and --batch are required");
  if (db_lookup_check_terminal_id(a->terminal) != 0)
    return usage_error("invalid --terminal: 1 to 8 letters, digits or spaces");
  size_t n = strlen(a->batch);
  if (n < 1 || n > 6 || strspn(a->batch, "0123456789") != n)
    return usage_error("invalid --batch: 1 to 6 digits");
  a->batch_no = (int32_t)atoi(a->batch);
  if (a->currency && db_lookup_check_currency(a->currency) != 0)
    return usage_error("invalid --currency: 3 digits (ISO 4217 numeric)");
  if (a->date && (a->from || a->to))
    return usage_error("--date or --from/--to, not both");
  const char *dates[3] = {a->date, a->from, a->to};
  for (int i = 0; i < 3; i++)
    if (dates[i] && ctl_check_date(dates[i]) != 0)
      return usage_error("invalid date: expected YYYY-MM-DD");
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */

static const int des[DB_RECON_FIELDS] = {74, 75, 76, 77, 86, 87, 88, 89, 97};

static int64_t value_of(const db_recon_totals_t *t, int de) {
  switch (de) {
  case 74:
    return t->credits_count;
  case 75:
    return t->credits_reversal_count;
  case 76:
    return t->debits_count;
  case 77:
    return t->debits_reversal_count;
  case 86:
    return t->credits_amount;
  case 87:
    return t->credits_reversal_amount;
  case 88:
    return t->debits_amount;
  case 89:
    return t->debits_reversal_amount;
  default:
    return t->net_amount;
  }
}

/* A field's value as shown: counts plain, amounts as decimals with the
 * minor units in brackets, DE97 with its sign. */
static void field_text(const db_recon_totals_t *t, int de, char *buf,
                       size_t cap) {
  int64_t v = value_of(t, de);
  char dec[32];
  if (de < 86) {
    snprintf(buf, cap, "%lld", (long long)v);
    return;
  }
  if (t->exponent < 0 || !db_money_decimal(v, t->exponent, dec, sizeof dec))
    snprintf(dec, sizeof dec, "?");
  snprintf(buf, cap, "%s%s (%lld)",
           de == 97 ? (t->net_sign == 'D' ? "D " : "C ") : "", dec,
           (long long)v);
}

static void print_totals_human(const db_recon_totals_t *t) {
  printf("currency %s (exponent %d)\n", t->currency, t->exponent);
  for (int i = 0; i < DB_RECON_FIELDS; i++) {
    char buf[80];
    field_text(t, des[i], buf, sizeof buf);
    printf("  DE%d %-24s %s\n", des[i], db_recon_field_name(des[i]), buf);
  }
}

static void print_totals_json(const db_recon_batch_t *b,
                              const db_recon_totals_t *t) {
  printf("{\"terminal_id\":\"%s\",\"batch_no\":%d,\"date_from\":\"%s\","
         "\"date_to\":\"%s\",\"currency\":\"%s\",\"exponent\":%d",
         b->terminal_id, (int)b->batch_no, b->date_from, b->date_to,
         t->currency, t->exponent);
  for (int i = 0; i < DB_RECON_FIELDS; i++)
    printf(",\"de%d\":%lld", des[i], (long long)value_of(t, des[i]));
  printf(",\"de97_sign\":\"%c\"}\n", t->net_sign);
}

static void print_batch(const ctl_t *ctl, const db_recon_batch_t *b) {
  if (!ctl->json)
    printf("terminal \"%s\" batch %d, business dates %s to %s: %zu "
           "transaction%s, %zu counted\n",
           b->terminal_id, (int)b->batch_no, b->date_from, b->date_to,
           b->transactions, b->transactions == 1 ? "" : "s", b->counted);
  for (size_t i = 0; i < b->n; i++) {
    if (ctl->json)
      print_totals_json(b, &b->totals[i]);
    else
      print_totals_human(&b->totals[i]);
  }
  if (!ctl->json && b->n == 0)
    printf("nothing counted: every total is zero\n");
  if (b->n > 1 || b->more_currencies)
    fprintf(stderr,
            "switchctl: recon: the batch holds %s%zu currencies; a 0500 "
            "carries the totals of one\nHINT:  choose one with --currency\n",
            b->more_currencies ? "more than " : "", b->n);
}

static void print_outcome(const ctl_t *ctl, const db_recon_totals_t *sw,
                          const db_recon_totals_t *term,
                          const db_recon_diff_t *d, size_t n, int match) {
  int cur_differs = sw->currency[0] && term->currency[0] &&
                    strcmp(sw->currency, term->currency) != 0;
  if (ctl->json) {
    printf("{\"result\":\"%s\",\"currency\":\"%s\",\"differences\":[",
           match ? "match" : "mismatch", sw->currency);
    for (size_t i = 0; i < n; i++) {
      printf("%s{\"field\":\"DE%d\",\"name\":\"%s\",\"switch\":%lld,"
             "\"terminal\":%lld",
             i ? "," : "", d[i].de, d[i].name, (long long)d[i].switch_value,
             (long long)d[i].terminal_value);
      if (d[i].de == 97)
        printf(",\"switch_sign\":\"%c\",\"terminal_sign\":\"%c\"",
               d[i].switch_sign, d[i].terminal_sign);
      putchar('}');
    }
    printf("]}\n");
    return;
  }
  if (match) {
    printf("match\n");
    return;
  }
  printf("mismatch\n");
  if (cur_differs)
    printf("  currency: switch %s, terminal %s\n", sw->currency,
           term->currency);
  for (size_t i = 0; i < n; i++) {
    if (d[i].de == 97)
      printf("  DE97 %s: switch %c%lld, terminal %c%lld\n", d[i].name,
             d[i].switch_sign, (long long)d[i].switch_value, d[i].terminal_sign,
             (long long)d[i].terminal_value);
    else
      printf("  DE%d %s: switch %lld, terminal %lld\n", d[i].de, d[i].name,
             (long long)d[i].switch_value, (long long)d[i].terminal_value);
  }
}

/* The switch's totals to compare with the terminal's: the terminal's own
 * currency, else --currency, else the batch's only one; zero totals when
 * the batch has nothing in that currency.  -1 when it cannot choose. */
static int choose(const db_recon_batch_t *b, const char *cur,
                  db_recon_totals_t *out) {
  if (!cur && b->n > 1)
    return -1;
  if (!cur && b->n == 1) {
    *out = b->totals[0];
    return 0;
  }
  for (size_t i = 0; cur && i < b->n; i++)
    if (strcmp(b->totals[i].currency, cur) == 0) {
      *out = b->totals[i];
      return 0;
    }
  db_recon_totals_init(out, cur);
  return 0;
}

static int compare(const ctl_t *ctl, const recon_args_t *a,
                   const db_recon_batch_t *b) {
  db_recon_totals_t term, sw;
  char err[256];
  if (db_recon_parse_totals(a->totals, &term, err, sizeof err) != 0) {
    fprintf(stderr, "switchctl: recon: %s\n", err);
    return CTL_USAGE;
  }
  const char *cur = term.currency[0] ? term.currency : a->currency;
  if (choose(b, cur, &sw) != 0) {
    fprintf(stderr, "switchctl: recon: cannot compare: the batch holds "
                    "several currencies and the terminal's totals name none\n"
                    "HINT:  give --currency or currency=NNN in "
                    "--terminal-totals\n");
    return CTL_FAILED;
  }
  db_recon_diff_t d[DB_RECON_FIELDS];
  size_t n = 0;
  int rc = db_recon_compare(&sw, &term, d, &n);
  print_outcome(ctl, &sw, &term, d, n, rc == 0);
  return rc == 0 ? CTL_OK : CTL_MISMATCH;
}

int ctl_recon(const ctl_t *ctl, int argc, char **argv) {
  recon_args_t a;
  int rc = parse_args(argc, argv, &a);
  if (rc || (rc = check_args(&a)) != 0)
    return rc;
  if (a.totals) {
    /* Refuse malformed totals before the database is touched. */
    db_recon_totals_t t;
    char err[256];
    if (db_recon_parse_totals(a.totals, &t, err, sizeof err) != 0) {
      fprintf(stderr, "switchctl: recon: %s\n", err);
      return CTL_USAGE;
    }
  }
  PGconn *c = ctl_connect(ctl);
  if (!c)
    return CTL_FAILED;
  db_recon_batch_t b;
  char err[512];
  rc = db_recon_batch(c, a.terminal, a.batch_no, a.date ? a.date : a.from,
                      a.date ? a.date : a.to, a.currency, &b, err, sizeof err);
  PQfinish(c);
  if (rc) {
    fprintf(stderr, "switchctl: recon: %s\n", err[0] ? err : db_strerror(rc));
    return CTL_FAILED;
  }
  print_batch(ctl, &b);
  return a.totals ? compare(ctl, &a, &b) : CTL_OK;
}
