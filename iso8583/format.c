/*
 * format.c — field values as text for people: logs, the CLI, debug dumps.
 *
 * Everything here masks the fields a dialect marks sensitive unless the
 * caller passes ISO_FMT_UNMASK: a PAN keeps at most its first six and last
 * four digits (PCI DSS 3.4), any other sensitive field (track data, PIN
 * block, ICC data) becomes '*' of the same length.  The masked text is built
 * in the caller's buffer; the clear value exists there only transiently and
 * is overwritten before return.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* Masks a PAN in place or into out (out may equal pan). */
size_t iso_mask_pan(const char *pan, size_t len, char *out, size_t cap) {
  if (!out || cap == 0)
    return 0;
  if (cap < len + 1)
    len = cap - 1;
  /* Shorter numbers keep less in clear so that most of them stays hidden. */
  size_t head = len >= 13 ? 6 : 0;
  size_t tail = len >= 9 ? 4 : 0;
  for (size_t i = 0; i < len; i++)
    out[i] = (i < head || i >= len - tail) ? pan[i] : '*';
  out[len] = '\0';
  return len;
}

int iso_format_field(const iso_msg_t *m, int n, unsigned flags, char *out,
                     size_t cap, size_t *outlen) {
  if (!m || !out)
    return ISO_E_INVAL;
  const iso_field_def_t *def = iso_msg_field_def(m, n);
  if (!def)
    return ISO_E_ABSENT;
  size_t tl;
  int rc = iso_get_text(m, n, out, cap, &tl);
  if (rc)
    return rc;
  /* A PAN is sensitive whether or not the dialect also says so. */
  if ((def->flags & (ISO_F_SENSITIVE | ISO_F_PAN)) &&
      !(flags & ISO_FMT_UNMASK)) {
    if ((def->flags & ISO_F_PAN) && cap > tl) {
      iso_mask_pan(out, tl, out, cap);
    } else {
      memset(out, '*', tl);
    }
  }
  if (cap > tl)
    out[tl] = '\0';
  if (outlen)
    *outlen = tl;
  return 0;
}

/* Appends printf-style text, keeping the running length and truncating
 * safely at cap. */
static void append(char *out, size_t cap, size_t *pos, const char *s,
                   size_t n) {
  if (*pos + 1 >= cap)
    return;
  size_t room = cap - 1 - *pos;
  if (n > room)
    n = room;
  memcpy(out + *pos, s, n);
  *pos += n;
  out[*pos] = '\0';
}

size_t iso_dump(const iso_msg_t *m, unsigned flags, char *out, size_t cap) {
  if (!out || cap == 0)
    return 0;
  out[0] = '\0';
  if (!m)
    return 0;
  size_t pos = 0;
  char line[96];
  int k = snprintf(line, sizeof line, "MTI %.4s\n", m->mti);
  append(out, cap, &pos, line, (size_t)k);
  /* Large enough for the longest field text (LLLL hex: 19998 chars) would
   * be wasteful on a stack; long values are shown truncated. */
  char val[1024];
  for (int n = 2; n <= ISO_MAX_FIELD; n++) {
    if (!iso_has(m, n) || (n == 65 && m->dialect->max_bitmaps == 3))
      continue;
    const iso_field_def_t *def = iso_msg_field_def(m, n);
    size_t tl = 0;
    int rc = iso_format_field(m, n, flags, val, sizeof val, &tl);
    k = snprintf(line, sizeof line, "  %3d [%s] ", n,
                 def->name ? def->name : "?");
    if (k < 0)
      continue;
    append(out, cap, &pos, line,
           (size_t)k < sizeof line ? (size_t)k : sizeof line - 1);
    if (rc == ISO_E_NOSPACE)
      append(out, cap, &pos, "(too long to show)", 18);
    else if (rc == 0)
      append(out, cap, &pos, val, tl);
    append(out, cap, &pos, "\n", 1);
  }
  return pos;
}
