/*
 * test_spec_json.c — dialect files: the two examples in tests/data/dialects
 * load as documented, a base is inherited and overridden key by key, fields,
 * variants and mandatory rules can be added, replaced and removed, every
 * kind of mistake is reported with its JSON path, hostile documents fail
 * cleanly, and a loaded dialect parses and builds messages.  Run under
 * ASan, the load/free loops prove iso_spec_free releases everything.
 */
#include "iso8583_spec.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BIT(n) (UINT64_C(1) << (63 - ((n)-1) % 64))
#define WORD(n) (((n)-1) / 64)

static iso_dialect_t *load_ok(const char *json) {
  iso_dialect_t *d = NULL;
  char msg[512];
  int rc = iso_spec_load_string(json, strlen(json), &d, msg, sizeof msg);
  if (rc)
    fprintf(stderr, "\nunexpected error: %s\n", msg);
  CU_ASSERT_EQUAL(rc, 0);
  return d;
}

/* Loading fails with ISO_E_DIALECT and a message containing want. */
static void load_fails(const char *json, const char *want) {
  iso_dialect_t *d = (iso_dialect_t *)&d; /* must be reset to NULL */
  char msg[512];
  int rc = iso_spec_load_string(json, strlen(json), &d, msg, sizeof msg);
  CU_ASSERT_EQUAL(rc, ISO_E_DIALECT);
  CU_ASSERT_PTR_NULL(d);
  if (!strstr(msg, want))
    fprintf(stderr, "\n  document: %s\n  message:  %s\n  wanted:   %s\n", json,
            msg, want);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, want));
}

static const iso_dialect_t *builtin(const char *name) {
  const iso_dialect_t *d = iso_dialect_find(name);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  return d;
}

static int same_def(const iso_field_def_t *a, const iso_field_def_t *b) {
  return a->max_len == b->max_len && a->len_type == b->len_type &&
         a->len_enc == b->len_enc && a->body_enc == b->body_enc &&
         a->cls == b->cls && a->pad == b->pad && a->flags == b->flags &&
         ((!a->name && !b->name) ||
          (a->name && b->name && strcmp(a->name, b->name) == 0));
}

static const iso_mandatory_t *rule_for(const iso_dialect_t *d,
                                       const char *mti) {
  for (size_t i = 0; i < d->nmandatory; i++)
    if (memcmp(d->mandatory[i].mti, mti, 4) == 0)
      return &d->mandatory[i];
  return NULL;
}

/* ------------------------------------------------------------------------ */

static void test_acme_example_overrides_iso87a(void) {
  iso_dialect_t *d = NULL;
  char msg[512];
  int rc = iso_spec_load_file(tu_data_path("dialects/acme-acquirer.json"), &d,
                              msg, sizeof msg);
  if (rc)
    fprintf(stderr, "\n%s\n", msg);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  const iso_dialect_t *base = builtin("iso87a");
  CU_ASSERT_STRING_EQUAL(d->name, "acme-acquirer");
  CU_ASSERT_PTR_NOT_NULL(strstr(d->description, "ACME"));
  CU_ASSERT_EQUAL(d->mti_enc, base->mti_enc);
  CU_ASSERT_EQUAL(d->bitmap_enc, base->bitmap_enc);
  CU_ASSERT_EQUAL(d->max_bitmaps, 3);
  /* Unlisted fields are the base's. */
  for (int n = 1; n <= ISO_MAX_FIELD; n++)
    if (n != 36 && n != 45 && n != 48 && n != 62)
      CU_ASSERT_TRUE(same_def(&d->fields[n], &base->fields[n]));
  /* Removed. */
  CU_ASSERT_PTR_NULL(d->fields[36].name);
  CU_ASSERT_PTR_NULL(d->fields[45].name);
  /* Overridden key by key: DE48 keeps its LLL ans layout. */
  CU_ASSERT_STRING_EQUAL(d->fields[48].name, "additional data - ACME");
  CU_ASSERT_EQUAL(d->fields[48].max_len, 255);
  CU_ASSERT_EQUAL(d->fields[48].len_type, ISO_LEN_LLL);
  CU_ASSERT_EQUAL(d->fields[48].cls, ISO_CLS_ANS);
  /* DE62 changed class, length and prefix. */
  CU_ASSERT_EQUAL(d->fields[62].cls, ISO_CLS_AN);
  CU_ASSERT_EQUAL(d->fields[62].max_len, 10);
  CU_ASSERT_EQUAL(d->fields[62].len_type, ISO_LEN_LL);
  CU_ASSERT_EQUAL(d->fields[62].len_enc, ISO_ENC_ASCII);

  CU_ASSERT_EQUAL_FATAL(d->nvariants, 2);
  const iso_variant_t *v = &d->variants[0];
  CU_ASSERT_EQUAL(memcmp(v->mti, "0210", 4), 0);
  CU_ASSERT_EQUAL(v->proc_len, 2);
  CU_ASSERT_EQUAL(memcmp(v->proc, "31", 2), 0);
  CU_ASSERT_EQUAL(v->field, 54);
  CU_ASSERT_EQUAL(v->def.len_type, ISO_LEN_FIXED);
  CU_ASSERT_EQUAL(v->def.max_len, 40);
  CU_ASSERT_EQUAL(v->def.cls, ISO_CLS_ANS); /* from the dialect's DE54 */
  v = &d->variants[1];
  CU_ASSERT_EQUAL(memcmp(v->mti, "08..", 4), 0);
  CU_ASSERT_EQUAL(v->proc_len, 0);
  CU_ASSERT_EQUAL(v->field, 48);
  CU_ASSERT_EQUAL(v->def.cls, ISO_CLS_B);
  CU_ASSERT_EQUAL(v->def.body_enc, ISO_ENC_HEX);
  CU_ASSERT_TRUE(v->def.flags & ISO_F_SENSITIVE);

  /* 0200 replaced, 0220 removed, the rest inherited. */
  CU_ASSERT_EQUAL(d->nmandatory, base->nmandatory - 1);
  CU_ASSERT_PTR_NULL(rule_for(d, "0220"));
  const iso_mandatory_t *r = rule_for(d, "0200");
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  uint64_t want[3] = {0, 0, 0};
  static const int req[] = {2, 3, 4, 7, 11, 22, 41, 42, 49};
  for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
    want[WORD(req[i])] |= BIT(req[i]);
  CU_ASSERT_EQUAL(memcmp(r->fields, want, sizeof want), 0);
  CU_ASSERT_PTR_NOT_NULL(rule_for(d, "0800"));
  iso_spec_free(d);
}

static void test_mini_pos_example_is_complete(void) {
  iso_dialect_t *d = NULL;
  char msg[512];
  int rc = iso_spec_load_file(tu_data_path("dialects/mini-pos.json"), &d, msg,
                              sizeof msg);
  if (rc)
    fprintf(stderr, "\n%s\n", msg);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_STRING_EQUAL(d->name, "mini-pos");
  CU_ASSERT_EQUAL(d->mti_enc, ISO_ENC_BCD);
  CU_ASSERT_EQUAL(d->bitmap_enc, ISO_ENC_BINARY);
  CU_ASSERT_EQUAL(d->max_bitmaps, 1);
  CU_ASSERT_PTR_NULL(d->fields[1].name); /* no secondary bitmap */
  int defined = 0;
  for (int n = 1; n <= ISO_MAX_FIELD; n++)
    defined += d->fields[n].name != NULL;
  CU_ASSERT_EQUAL(defined, 22);
  const iso_field_def_t *f = &d->fields[2];
  CU_ASSERT_EQUAL(f->flags, ISO_F_PAN | ISO_F_SENSITIVE); /* pan => sens. */
  CU_ASSERT_EQUAL(f->len_enc, ISO_ENC_BCD); /* default after a bcd body */
  CU_ASSERT_EQUAL(f->pad, ISO_PAD_RIGHT_F); /* default for variable n */
  CU_ASSERT_EQUAL(d->fields[3].pad, ISO_PAD_LEFT_0);
  CU_ASSERT_EQUAL(d->fields[37].body_enc, ISO_ENC_ASCII);
  CU_ASSERT_EQUAL(d->fields[55].flags, ISO_F_TLV | ISO_F_SENSITIVE);
  CU_ASSERT_EQUAL(d->fields[63].flags, ISO_F_NO_VALIDATE);
  CU_ASSERT_EQUAL(d->fields[63].len_enc, ISO_ENC_BCD);
  CU_ASSERT_EQUAL_FATAL(d->nvariants, 1);
  CU_ASSERT_EQUAL(d->variants[0].def.flags, 0);             /* validate: true */
  CU_ASSERT_EQUAL(d->variants[0].def.len_enc, ISO_ENC_BCD); /* inherited */
  CU_ASSERT_EQUAL(d->nmandatory, 3);
  iso_err_t err;
  CU_ASSERT_EQUAL(iso_dialect_check(d, &err), 0);
  iso_spec_free(d);
}

static void test_base_override_changes_only_listed_keys(void) {
  iso_dialect_t *d = load_ok("{\"name\": \"short-track\", \"base\": \"iso87b\","
                             " \"fields\": {\"35\": {\"length\": 30}}}");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  const iso_dialect_t *base = builtin("iso87b");
  iso_field_def_t want = base->fields[35];
  want.max_len = 30;
  CU_ASSERT_TRUE(same_def(&d->fields[35], &want));
  /* Description, variants and rules come from the base when not given. */
  CU_ASSERT_STRING_EQUAL(d->description, base->description);
  CU_ASSERT_EQUAL(d->nmandatory, base->nmandatory);
  CU_ASSERT_EQUAL(d->nvariants, base->nvariants);
  /* The built-in is untouched. */
  CU_ASSERT_EQUAL(base->fields[35].max_len, 37);
  iso_spec_free(d);
}

static void test_null_removes_a_field(void) {
  iso_dialect_t *d = load_ok("{\"name\": \"no48\", \"base\": \"iso93a\","
                             " \"fields\": {\"48\": null, \"127\": null}}");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_PTR_NULL(d->fields[48].name);
  CU_ASSERT_PTR_NULL(d->fields[127].name);
  CU_ASSERT_PTR_NOT_NULL(d->fields[47].name);
  /* A message carrying the removed field no longer parses. */
  iso_builder_t b;
  iso_builder_init(&b, builtin("iso93a"), "1200");
  CU_ASSERT_EQUAL(iso_set_text(&b, 11, "000001", 6), 0);
  CU_ASSERT_EQUAL(iso_set_text(&b, 48, "X", 1), 0);
  uint8_t buf[256];
  size_t len;
  CU_ASSERT_EQUAL_FATAL(iso_build(&b, buf, sizeof buf, &len, NULL), 0);
  iso_msg_t m;
  iso_err_t err;
  CU_ASSERT_EQUAL(iso_parse(&m, d, buf, len, &err), ISO_E_UNDEFINED_FIELD);
  CU_ASSERT_EQUAL(err.field, 48);
  iso_spec_free(d);
}

static void test_fewer_bitmaps_drop_unreachable_fields(void) {
  iso_dialect_t *d = load_ok(
      "{\"name\": \"two\", \"base\": \"iso87a\", \"max_bitmaps\": 2,"
      " \"fields\": {\"65\": {\"name\": \"settlement code\", \"class\": \"n\","
      " \"length\": 1}}}");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_EQUAL(d->max_bitmaps, 2);
  CU_ASSERT_TRUE(d->fields[1].flags & ISO_F_BITMAP);
  CU_ASSERT_FALSE(d->fields[65].flags & ISO_F_BITMAP);
  CU_ASSERT_EQUAL(d->fields[65].cls, ISO_CLS_N);
  CU_ASSERT_PTR_NULL(d->fields[129].name);
  CU_ASSERT_PTR_NULL(d->fields[192].name);
  iso_spec_free(d);
}

static void test_new_field_defaults(void) {
  iso_dialect_t *d = load_ok(
      "{\"name\": \"defaults\", \"mti\": \"ebcdic\", \"bitmap\": \"ebcdic\","
      " \"max_bitmaps\": 2, \"fields\": {"
      " \"2\": {\"name\": \"pan\", \"class\": \"n\", \"length\": 19,"
      "       \"prefix\": \"LL\", \"encoding\": \"ebcdic\", \"pan\": true},"
      " \"4\": {\"name\": \"amount\", \"class\": \"n\", \"length\": 12},"
      " \"35\": {\"name\": \"track 2\", \"class\": \"z\", \"length\": 37,"
      "        \"prefix\": \"LL\", \"encoding\": \"bcd\"},"
      " \"52\": {\"name\": \"pin\", \"class\": \"b\", \"length\": 8,"
      "        \"encoding\": \"binary\", \"sensitive\": true},"
      " \"55\": {\"name\": \"icc\", \"class\": \"b\", \"length\": 255,"
      "        \"prefix\": \"LLL\", \"encoding\": \"hex\", \"tlv\": true}}}");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_STRING_EQUAL(d->description, "");
  CU_ASSERT_EQUAL(d->mti_enc, ISO_ENC_EBCDIC);
  CU_ASSERT_EQUAL(d->bitmap_enc, ISO_ENC_EBCDIC);
  CU_ASSERT_EQUAL(d->fields[2].len_enc, ISO_ENC_EBCDIC);
  CU_ASSERT_EQUAL(d->fields[4].len_type, ISO_LEN_FIXED);
  CU_ASSERT_EQUAL(d->fields[4].body_enc, ISO_ENC_ASCII);
  CU_ASSERT_EQUAL(d->fields[4].pad, ISO_PAD_LEFT_0);
  CU_ASSERT_EQUAL(d->fields[4].flags, 0);
  CU_ASSERT_EQUAL(d->fields[35].len_enc, ISO_ENC_BCD);
  CU_ASSERT_EQUAL(d->fields[35].pad, ISO_PAD_RIGHT_F);
  CU_ASSERT_EQUAL(d->fields[52].flags, ISO_F_SENSITIVE);
  CU_ASSERT_EQUAL(d->fields[55].len_enc, ISO_ENC_ASCII);
  CU_ASSERT_EQUAL(d->fields[55].flags, ISO_F_TLV);
  iso_spec_free(d);
}

/* ------------------------------------------------------------------------ */
/* Errors name their JSON path                                               */

#define BASE87 "\"name\": \"t\", \"base\": \"iso87a\""

static void test_unknown_keys_are_errors(void) {
  load_fails("{" BASE87 ", \"colour\": 1}", "colour: unknown key");
  load_fails("{" BASE87 ", \"fields\": {\"35\": {\"lenght\": 30}}}",
             "fields.35.lenght: unknown key");
  load_fails("{" BASE87 ", \"variants\": [{\"mti\": \"0200\", \"field\": 48,"
             " \"def\": {\"length\": 5}, \"procc\": \"31\"}]}",
             "variants[0].procc: unknown key");
  load_fails("{" BASE87 ", \"mandatory\": [{\"mti\": \"0200\", \"fields\": [],"
             " \"field\": 2}]}",
             "mandatory[0].field: unknown key");
}

static void test_wrong_types_are_errors(void) {
  load_fails("[]", "must be a JSON object");
  load_fails("{\"name\": 5, \"base\": \"iso87a\"}", "name: must be a string");
  load_fails("{" BASE87 ", \"fields\": []}", "fields: must be an object");
  load_fails("{" BASE87 ", \"fields\": {\"2\": \"n..19\"}}",
             "fields.2: must be an object or null");
  load_fails("{" BASE87 ", \"fields\": {\"2\": {\"length\": \"19\"}}}",
             "fields.2.length: must be an integer 1..9999");
  load_fails("{" BASE87 ", \"fields\": {\"2\": {\"length\": 19.0}}}",
             "fields.2.length: must be an integer");
  load_fails("{" BASE87 ", \"fields\": {\"2\": {\"pan\": 1}}}",
             "fields.2.pan: must be true or false");
  load_fails("{" BASE87 ", \"variants\": {}}", "variants: must be an array");
  load_fails("{" BASE87 ", \"variants\": [7]}",
             "variants[0]: must be an object");
  load_fails("{" BASE87 ", \"mandatory\": [{\"mti\": \"0200\", \"fields\":"
             " [2, \"3\"]}]}",
             "mandatory[0].fields[1]: must be an integer");
  load_fails("{" BASE87 ", \"base\": 3}", "duplicate object key");
  load_fails("{\"name\": \"t\", \"base\": 3}", "base: must be the name");
  load_fails("{" BASE87 ", \"max_bitmaps\": true}",
             "max_bitmaps: must be an integer 1..3");
}

static void test_out_of_range_values_are_errors(void) {
  load_fails("{" BASE87 ", \"fields\": {\"35\": {\"length\": 0}}}",
             "fields.35.length: must be 1..9999");
  load_fails("{" BASE87 ", \"fields\": {\"35\": {\"length\": 10000}}}",
             "fields.35.length: must be 1..9999");
  load_fails("{" BASE87 ", \"fields\": {\"35\": {\"length\": -1}}}",
             "fields.35.length: must be 1..9999");
  load_fails("{" BASE87 ", \"fields\": {\"35\": {\"length\": "
             "99999999999999999999999999}}}",
             "too big integer");
  load_fails("{" BASE87 ", \"fields\": {\"35\": {\"length\": 1e400}}}",
             "line 1");
  load_fails("{" BASE87 ", \"max_bitmaps\": 4}", "max_bitmaps: must be 1..3");
  load_fails("{" BASE87 ", \"fields\": {\"35\": {\"length\": 120}}}",
             "fields.35: length 120 does not fit a LL prefix in ascii (at "
             "most 99)");
  load_fails("{" BASE87 ", \"fields\": {\"48\": {\"prefix\": \"LL\"}}}",
             "fields.48: length 999 does not fit a LL prefix");
  load_fails("{" BASE87 ", \"fields\": {\"2\": {\"class\": \"q\"}}}",
             "fields.2.class: must be one of \"n\", \"a\"");
  load_fails("{" BASE87 ", \"fields\": {\"2\": {\"prefix\": \"ll\"}}}",
             "fields.2.prefix: must be one of \"fixed\", \"LL\"");
  load_fails("{" BASE87 ", \"fields\": {\"2\": {\"pad\": \"left\"}}}",
             "fields.2.pad: must be one of");
  load_fails("{" BASE87 ", \"fields\": {\"2\": {\"prefix_encoding\": "
             "\"hex\"}}}",
             "fields.2.prefix_encoding: must be one of");
  load_fails("{" BASE87 ", \"mti\": \"binary\"}", "mti: must be one of");
  load_fails("{" BASE87 ", \"bitmap\": \"bcd\"}", "bitmap: must be one of");
  load_fails("{\"name\": \"has space\", \"base\": \"iso87a\"}",
             "name: may contain only letters");
  load_fails("{\"name\": \"\", \"base\": \"iso87a\"}",
             "name: must be 1..63 characters");
  load_fails("{\"name\": \"t\", \"description\": \"tab\\there\","
             " \"base\": \"iso87a\"}",
             "description: character 4 is not printable ASCII");
  load_fails("{\"name\": \"t\", \"base\": \"iso87z\"}",
             "base: no built-in dialect is named \"iso87z\"");
}

static void test_impossible_layouts_are_errors(void) {
  load_fails("{" BASE87 ", \"fields\": {\"52\": {\"encoding\": \"ascii\"}}}",
             "fields.52: class \"b\" needs encoding \"binary\" or \"hex\"");
  load_fails("{" BASE87 ", \"fields\": {\"43\": {\"encoding\": \"bcd\"}}}",
             "fields.43: encoding \"bcd\" carries only classes");
  load_fails("{" BASE87 ", \"fields\": {\"4\": {\"encoding\": \"binary\"}}}",
             "fields.4: encoding \"binary\" carries only class \"b\"");
  load_fails("{" BASE87 ", \"fields\": {\"28\": {\"length\": 1}}}",
             "fields.28: class \"x+n\" needs a length of at least 2");
  load_fails("{" BASE87 ", \"fields\": {\"48\": {\"tlv\": true}}}",
             "fields.48: \"tlv\" needs class \"b\"");
  load_fails("{" BASE87 ", \"fields\": {\"2\": {\"sensitive\": false}}}",
             "fields.2.sensitive: a PAN is always sensitive");
  /* A binary LL prefix counts to 255. */
  iso_dialect_t *d =
      load_ok("{" BASE87 ", \"fields\": {\"44\": {\"length\": 200,"
              " \"prefix_encoding\": \"binary\"}}}");
  CU_ASSERT_PTR_NOT_NULL(d);
  iso_spec_free(d);
}

static void test_field_numbers_are_checked(void) {
  load_fails("{" BASE87 ", \"fields\": {\"abc\": null}}",
             "fields.abc: key must be a field number 2..192");
  load_fails("{" BASE87 ", \"fields\": {\"02\": null}}",
             "fields.02: key must be a field number");
  load_fails("{" BASE87 ", \"fields\": {\"193\": null}}",
             "fields.193: key must be a field number");
  load_fails("{" BASE87 ", \"fields\": {\"1\": null}}",
             "fields.1: field 1 is the secondary bitmap");
  load_fails("{" BASE87 ", \"fields\": {\"65\": null}}",
             "fields.65: with 3 bitmaps field 65 is the tertiary bitmap");
  load_fails("{" BASE87 ", \"max_bitmaps\": 1, \"fields\": {\"70\": null}}",
             "fields.70: field 70 cannot be carried with 1 bitmap");
}

static void test_missing_keys_are_errors(void) {
  load_fails("{\"base\": \"iso87a\"}", "name: missing");
  load_fails("{\"name\": \"t\"}", "mti: missing (required when there is no "
                                  "\"base\")");
  load_fails("{\"name\": \"t\", \"mti\": \"ascii\", \"bitmap\": \"hex\","
             " \"max_bitmaps\": 1}",
             "fields: missing");
  load_fails("{\"name\": \"t\", \"mti\": \"ascii\", \"bitmap\": \"hex\","
             " \"max_bitmaps\": 1, \"fields\": {\"2\": {\"name\": \"pan\","
             " \"class\": \"n\"}}}",
             "fields.2.length: missing (required for a field not inherited");
  load_fails("{" BASE87 ", \"variants\": [{\"mti\": \"0200\", \"field\": 48}]}",
             "variants[0].def: missing");
  load_fails("{" BASE87 ", \"mandatory\": [{\"mti\": \"0200\"}]}",
             "mandatory[0].fields: missing");
}

static void test_variant_errors(void) {
  load_fails("{" BASE87 ", \"variants\": [{\"mti\": \"02x0\", \"field\": 48,"
             " \"def\": {}}]}",
             "variants[0].mti: must be 4 characters, each a digit or '.'");
  load_fails("{" BASE87 ", \"variants\": [{\"mti\": \"0200\", \"field\": 48,"
             " \"proc\": \"1234567\", \"def\": {}}]}",
             "variants[0].proc: must be 1..6 characters");
  load_fails("{" BASE87 ", \"variants\": [{\"mti\": \"0200\", \"field\": 3,"
             " \"proc\": \"31\", \"def\": {}}]}",
             "variants[0].proc: a processing-code pattern applies only to "
             "fields above 3");
  load_fails("{" BASE87 ", \"variants\": [{\"mti\": \"0200\", \"field\": 65,"
             " \"def\": {}}]}",
             "variants[0].field: field 65 is not a data field");
  load_fails("{" BASE87 ", \"variants\": [{\"mti\": \"0200\", \"field\": 1,"
             " \"def\": {}}]}",
             "variants[0].field: must be 2..192");
  load_fails("{" BASE87 ", \"variants\": [{\"mti\": \"0200\", \"field\": 48,"
             " \"def\": {\"length\": 5}}, {\"mti\": \"0200\", \"field\": 48,"
             " \"def\": {\"length\": 6}}]}",
             "variants[1]: repeats the mti, proc and field of an earlier "
             "entry");
  load_fails("{" BASE87 ", \"variants\": [{\"mti\": \"0200\", \"field\": 48,"
             " \"def\": null}]}",
             "variants[0].def: null removes an inherited variant");
  load_fails("{" BASE87 ", \"fields\": {\"48\": null}, \"variants\": "
             "[{\"mti\": \"0200\", \"field\": 48, \"def\": {\"length\": 5}}]}",
             "variants[0].def.name: missing");
  load_fails("{" BASE87 ", \"variants\": [{\"mti\": \"0200\", \"field\": 48,"
             " \"def\": {\"encoding\": \"bcd\"}}]}",
             "variants[0].def: encoding \"bcd\" carries only classes");
}

static void test_mandatory_errors(void) {
  load_fails("{" BASE87 ", \"mandatory\": [{\"mti\": \"02\", \"fields\": []}]}",
             "mandatory[0].mti: must be 4 characters");
  load_fails("{" BASE87 ", \"fields\": {\"48\": null}, \"mandatory\": "
             "[{\"mti\": \"0200\", \"fields\": [2, 48]}]}",
             "mandatory[0].fields[1]: field 48 is not a data field of this "
             "dialect");
  load_fails("{" BASE87 ", \"mandatory\": [{\"mti\": \"0200\", \"fields\":"
             " [1]}]}",
             "mandatory[0].fields[0]: must be 2..192");
  load_fails("{" BASE87 ", \"mandatory\": [{\"mti\": \"0200\", \"fields\":"
             " [65]}]}",
             "mandatory[0].fields[0]: field 65 is not a data field");
  load_fails("{" BASE87 ", \"mandatory\": [{\"mti\": \"0200\", \"fields\":"
             " [2]}, {\"mti\": \"0200\", \"fields\": [3]}]}",
             "mandatory[1]: repeats the mti of an earlier entry");
  load_fails("{" BASE87 ", \"mandatory\": [{\"mti\": \"0299\", \"fields\":"
             " null}]}",
             "mandatory[0].fields: null removes an inherited rule");
  /* An inherited rule may not require a field the file removed. */
  load_fails("{" BASE87 ", \"fields\": {\"41\": null}}",
             "mandatory: the rule for mti 0100 requires field 41");
}

/* ------------------------------------------------------------------------ */
/* Hostile documents                                                         */

static void test_deep_nesting_fails_cleanly(void) {
  size_t depth = 100000;
  char *doc = malloc(2 * depth + 64);
  CU_ASSERT_PTR_NOT_NULL_FATAL(doc);
  size_t n = (size_t)sprintf(doc, "{" BASE87 ", \"fields\": ");
  for (size_t i = 0; i < depth; i++)
    doc[n++] = '[';
  for (size_t i = 0; i < depth; i++)
    doc[n++] = ']';
  doc[n++] = '}';
  doc[n] = '\0';
  iso_dialect_t *d = NULL;
  char msg[256];
  CU_ASSERT_EQUAL(iso_spec_load_string(doc, n, &d, msg, sizeof msg),
                  ISO_E_DIALECT);
  CU_ASSERT_PTR_NULL(d);
  free(doc);
  /* Nesting the loader accepts structurally but not semantically. */
  load_fails("{" BASE87 ", \"fields\": {\"2\": {\"name\": {\"name\": {}}}}}",
             "fields.2.name: must be a string");
}

static void test_every_truncation_of_an_example_fails_cleanly(void) {
  FILE *f = fopen(tu_data_path("dialects/mini-pos.json"), "rb");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  static char doc[16384];
  size_t len = fread(doc, 1, sizeof doc, f);
  fclose(f);
  CU_ASSERT_FATAL(len > 0 && len < sizeof doc);
  /* Every proper prefix is invalid JSON (the document is one object). */
  size_t end = len;
  while (end > 0 && (doc[end - 1] == '\n' || doc[end - 1] == ' '))
    end--;
  for (size_t cut = 0; cut < end; cut++) {
    iso_dialect_t *d = NULL;
    char msg[256];
    int rc = iso_spec_load_string(doc, cut, &d, msg, sizeof msg);
    CU_ASSERT_EQUAL(rc, ISO_E_DIALECT);
    CU_ASSERT_PTR_NULL(d);
    CU_ASSERT(strlen(msg) > 0);
  }
}

static void test_mutated_examples_never_crash(void) {
  static const char *const files[] = {"dialects/mini-pos.json",
                                      "dialects/acme-acquirer.json"};
  static const char repl[] = {'0', '9', '"', '{', '}',  '[',
                              ':', ',', 'x', '-', '\0', (char)0xff};
  for (size_t fi = 0; fi < 2; fi++) {
    FILE *f = fopen(tu_data_path(files[fi]), "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    static char doc[16384];
    size_t len = fread(doc, 1, sizeof doc, f);
    fclose(f);
    int loaded = 0, failed = 0;
    /* Every fourth byte against every replacement keeps the run short
     * under ASan while still hitting every key and value. */
    for (size_t pos = 0; pos < len; pos += 4) {
      char saved = doc[pos];
      for (size_t k = 0; k < sizeof repl; k++) {
        doc[pos] = repl[k];
        iso_dialect_t *d = NULL;
        char msg[128];
        int rc = iso_spec_load_string(doc, len, &d, msg, sizeof msg);
        if (rc == 0) {
          iso_err_t err;
          CU_ASSERT_EQUAL(iso_dialect_check(d, &err), 0);
          iso_spec_free(d);
          loaded++;
        } else {
          CU_ASSERT_PTR_NULL(d);
          CU_ASSERT(strlen(msg) < sizeof msg);
          failed++;
        }
      }
      doc[pos] = saved;
    }
    CU_ASSERT(failed > 0);
    CU_ASSERT(loaded > 0);
  }
}

static void test_small_message_buffers_are_respected(void) {
  const char *doc = "{" BASE87 ", \"fields\": {\"35\": {\"lenght\": 30}}}";
  char msg[9];
  memset(msg, 'Z', sizeof msg);
  iso_dialect_t *d = NULL;
  CU_ASSERT_EQUAL(iso_spec_load_string(doc, strlen(doc), &d, msg, 8),
                  ISO_E_DIALECT);
  CU_ASSERT_EQUAL(msg[7], '\0');
  CU_ASSERT_EQUAL(msg[8], 'Z');
  CU_ASSERT_STRING_EQUAL(msg, "fields.");
  CU_ASSERT_EQUAL(iso_spec_load_string(doc, strlen(doc), &d, NULL, 0),
                  ISO_E_DIALECT);
  CU_ASSERT_EQUAL(iso_spec_load_string(NULL, 0, &d, msg, sizeof msg),
                  ISO_E_INVAL);
  CU_ASSERT_EQUAL(iso_spec_load_string(doc, strlen(doc), NULL, msg, 8),
                  ISO_E_INVAL);
}

/* ------------------------------------------------------------------------ */
/* Files and resolution                                                      */

static void test_load_file_errors(void) {
  iso_dialect_t *d = NULL;
  char msg[512];
  CU_ASSERT_EQUAL(
      iso_spec_load_file("/nonexistent/dialect.json", &d, msg, sizeof msg),
      ISO_E_NOT_FOUND);
  CU_ASSERT_PTR_NULL(d);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "/nonexistent/dialect.json: cannot "
                                     "open"));
  /* A directory opens but cannot be read. */
  CU_ASSERT_EQUAL(
      iso_spec_load_file(tu_data_path("dialects"), &d, msg, sizeof msg),
      ISO_E_INVAL);
  CU_ASSERT_PTR_NULL(d);

  char path[] = "/tmp/test_spec_json_XXXXXX";
  int fd = mkstemp(path);
  CU_ASSERT_FATAL(fd >= 0);
  FILE *f = fdopen(fd, "wb");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs("{\"name\": \"big\", \"base\": \"iso87a\", \"description\": \"", f);
  for (size_t i = 0; i < ISO_SPEC_MAX_FILE; i++)
    fputc('x', f);
  fputs("\"}", f);
  fclose(f);
  CU_ASSERT_EQUAL(iso_spec_load_file(path, &d, msg, sizeof msg), ISO_E_DIALECT);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "file is larger than"));

  f = fopen(path, "wb");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs("{\"name\": \"t\",\n \"base\": \"iso87a\",\n \"fields\": {\"2\": "
        "{\"length\": 2O}}}",
        f);
  fclose(f);
  CU_ASSERT_EQUAL(iso_spec_load_file(path, &d, msg, sizeof msg), ISO_E_DIALECT);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, path));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "line 3, column"));
  CU_ASSERT_PTR_NULL(strstr(msg, "2O")); /* input is not quoted back */
  unlink(path);
}

static void test_resolve_builtin_or_file(void) {
  iso_dialect_t *owned = (iso_dialect_t *)&owned;
  char msg[512];
  const iso_dialect_t *d = iso_spec_resolve("iso87e", &owned, msg, sizeof msg);
  CU_ASSERT_PTR_EQUAL(d, iso_dialect_find("iso87e"));
  CU_ASSERT_PTR_NULL(owned);

  d = iso_spec_resolve(tu_data_path("dialects/mini-pos.json"), &owned, msg,
                       sizeof msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_PTR_EQUAL(d, owned);
  CU_ASSERT_STRING_EQUAL(d->name, "mini-pos");
  iso_spec_free(owned);

  d = iso_spec_resolve("iso87x", &owned, msg, sizeof msg);
  CU_ASSERT_PTR_NULL(d);
  CU_ASSERT_PTR_NULL(owned);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "\"iso87x\" is neither a built-in "
                                     "dialect"));
  d = iso_spec_resolve("/nonexistent.json", &owned, msg, sizeof msg);
  CU_ASSERT_PTR_NULL(d);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "/nonexistent.json: cannot open"));
}

static void test_free_releases_everything(void) {
  iso_spec_free(NULL);
  /* Under ASan (LeakSanitizer) any string or array left behind fails the
   * run; many rounds make a leak per load stand out in a profile too. */
  for (int i = 0; i < 50; i++) {
    iso_dialect_t *d = NULL;
    char msg[256];
    CU_ASSERT_EQUAL(iso_spec_load_file(tu_data_path("dialects/"
                                                    "acme-acquirer.json"),
                                       &d, msg, sizeof msg),
                    0);
    iso_spec_free(d);
    /* Failures half-way through release what they had allocated. */
    load_fails("{" BASE87 ", \"description\": \"d\", \"fields\": {\"62\":"
               " {\"name\": \"a\"}, \"63\": {\"name\": \"b\", \"class\": "
               "\"q\"}}}",
               "fields.63.class");
    load_fails("{" BASE87 ", \"variants\": [{\"mti\": \"0200\", \"field\": "
               "48, \"def\": {\"name\": \"x\"}}], \"mandatory\": "
               "[{\"mti\": \"0200\", \"fields\": [999]}]}",
               "mandatory[0].fields[0]");
  }
}

/* ------------------------------------------------------------------------ */
/* Using a loaded dialect                                                    */

static void test_round_trip_with_mini_pos(void) {
  iso_dialect_t *d = NULL;
  char msg[256];
  CU_ASSERT_EQUAL_FATAL(iso_spec_load_file(tu_data_path("dialects/"
                                                        "mini-pos.json"),
                                           &d, msg, sizeof msg),
                        0);
  /* Written from the layout: BCD MTI, binary bitmap (2, 3, 4, 11, 22, 24,
   * 25, 35, 41, 55), DE2 LL BCD, BCD numerics (DE22/24 left-padded), DE35
   * with D separator and F pad, ASCII DE41, DE55 with a BCD LLL prefix. */
  static const char wire[] = "0200"
                             "7020058020800200"
                             "16 4761739001010010"
                             "000000"
                             "000000001000"
                             "000042"
                             "0051"
                             "0001"
                             "00"
                             "33 4761739001010010D2512201123456789F"
                             "5445524D30303031"
                             "0011 9F26080102030405060708";
  uint8_t buf[256];
  size_t len = tu_unhex(wire, buf, sizeof buf);
  CU_ASSERT_FATAL(len != (size_t)-1);
  iso_msg_t m;
  iso_err_t err;
  int rc = iso_parse(&m, d, buf, len, &err);
  if (rc) {
    iso_err_format(&err, d, msg, sizeof msg);
    fprintf(stderr, "\n%s\n", msg);
  }
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  char text[64];
  size_t tl;
  CU_ASSERT_EQUAL(iso_get_text(&m, 2, text, sizeof text, &tl), 0);
  CU_ASSERT_STRING_EQUAL(text, "4761739001010010");
  CU_ASSERT_EQUAL(iso_get_text(&m, 35, text, sizeof text, &tl), 0);
  CU_ASSERT_STRING_EQUAL(text, "4761739001010010D2512201123456789");
  CU_ASSERT_EQUAL(iso_format_field(&m, 2, 0, text, sizeof text, &tl), 0);
  CU_ASSERT_STRING_EQUAL(text, "476173******0010");
  CU_ASSERT_EQUAL(iso_get_text(&m, 22, text, sizeof text, &tl), 0);
  CU_ASSERT_STRING_EQUAL(text, "051");
  /* The file's 0200 rule requires DE42, which this message lacks. */
  CU_ASSERT_EQUAL(iso_check_mandatory(&m, &err), ISO_E_MISSING);
  CU_ASSERT_EQUAL(err.field, 42);

  /* Copy every field into a builder: the same bytes come out. */
  iso_builder_t b;
  iso_builder_init(&b, d, m.mti);
  for (int n = 2; n <= 64; n++)
    if (iso_has(&m, n))
      CU_ASSERT_EQUAL(iso_set_from(&b, n, &m), 0);
  uint8_t out[256];
  size_t olen;
  CU_ASSERT_EQUAL_FATAL(iso_build(&b, out, sizeof out, &olen, &err), 0);
  CU_ASSERT_EQUAL(olen, len);
  CU_ASSERT_EQUAL(memcmp(out, buf, len), 0);

  /* Fields beyond one bitmap cannot be built. */
  CU_ASSERT_NOT_EQUAL(iso_set_text(&b, 70, "301", 3), 0);
  iso_spec_free(d);
}

static void test_variant_selected_by_mti_and_processing_code(void) {
  iso_dialect_t *d = NULL;
  char msg[256];
  CU_ASSERT_EQUAL_FATAL(iso_spec_load_file(tu_data_path("dialects/"
                                                        "acme-acquirer.json"),
                                           &d, msg, sizeof msg),
                        0);
  static const char balances[] = "C000000012345C000000010000D0000000000  ";
  char bal40[41];
  snprintf(bal40, sizeof bal40, "%-40s", balances);
  const char *procs[] = {"310000", "000000"};
  for (int i = 0; i < 2; i++) {
    iso_builder_t b;
    iso_builder_init(&b, d, "0210");
    CU_ASSERT_EQUAL(iso_set_text(&b, 3, procs[i], 6), 0);
    CU_ASSERT_EQUAL(iso_set_text(&b, 11, "000001", 6), 0);
    CU_ASSERT_EQUAL(iso_set_text(&b, 54, bal40, 40), 0);
    uint8_t out[256];
    size_t olen;
    iso_err_t err;
    CU_ASSERT_EQUAL_FATAL(iso_build(&b, out, sizeof out, &olen, &err), 0);
    iso_msg_t m;
    CU_ASSERT_EQUAL_FATAL(iso_parse(&m, d, out, olen, &err), 0);
    const iso_field_def_t *def = iso_msg_field_def(&m, 54);
    CU_ASSERT_PTR_NOT_NULL_FATAL(def);
    iso_view_t raw;
    CU_ASSERT_EQUAL(iso_get_raw(&m, 54, &raw), 0);
    if (i == 0) { /* balance inquiry: the fixed 40-character variant */
      CU_ASSERT_PTR_EQUAL(def, &d->variants[0].def);
      CU_ASSERT_EQUAL(raw.len, 40);
    } else { /* purchase: the base's LLL layout */
      CU_ASSERT_PTR_EQUAL(def, &d->fields[54]);
      CU_ASSERT_EQUAL(raw.len, 43);
    }
  }
  iso_spec_free(d);
}

static void test_variants_and_rules_merge_with_the_base(void) {
  /* The first file adds; the second derives from a built-in only, so the
   * merge of inherited entries is shown on rules (built-ins carry no
   * variants): same mti replaces in place, null removes, new appends. */
  iso_dialect_t *d =
      load_ok("{" BASE87 ", \"variants\": ["
              " {\"mti\": \"01..\", \"field\": 48, \"def\": {\"length\": 100}},"
              " {\"mti\": \"01..\", \"proc\": \"30\", \"field\": 48,"
              "  \"def\": {\"length\": 50}}],"
              " \"mandatory\": ["
              " {\"mti\": \"0100\", \"fields\": [2, 3]},"
              " {\"mti\": \"0800\", \"fields\": null},"
              " {\"mti\": \"9...\", \"fields\": []}]}");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  const iso_dialect_t *base = builtin("iso87a");
  CU_ASSERT_EQUAL(d->nvariants, 2);
  CU_ASSERT_EQUAL(d->variants[0].def.max_len, 100);
  CU_ASSERT_EQUAL(d->variants[1].proc_len, 2);
  CU_ASSERT_EQUAL(d->nmandatory, base->nmandatory);
  CU_ASSERT_EQUAL(memcmp(d->mandatory[0].mti, "0100", 4), 0);
  CU_ASSERT_EQUAL(d->mandatory[0].fields[0], BIT(2) | BIT(3));
  CU_ASSERT_PTR_NULL(rule_for(d, "0800"));
  CU_ASSERT_EQUAL(memcmp(d->mandatory[d->nmandatory - 1].mti, "9...", 4), 0);
  iso_spec_free(d);

  /* 255 variants fit the parser's 8-bit variant index; 256 do not. */
  size_t cap = 256 * 80 + 128;
  char *doc = malloc(cap);
  CU_ASSERT_PTR_NOT_NULL_FATAL(doc);
  for (int total = 255; total <= 256; total++) {
    size_t n = (size_t)snprintf(doc, cap, "{" BASE87 ", \"variants\": [");
    for (int i = 0; i < total; i++)
      n += (size_t)snprintf(doc + n, cap - n,
                            "%s{\"mti\": \"%04d\", \"field\": 48, \"def\": "
                            "{\"length\": 10}}",
                            i ? "," : "", i);
    snprintf(doc + n, cap - n, "]}");
    if (total == 255) {
      d = load_ok(doc);
      CU_ASSERT_PTR_NOT_NULL(d);
      if (d)
        CU_ASSERT_EQUAL(d->nvariants, 255);
      iso_spec_free(d);
    } else {
      load_fails(doc, "variants: a dialect has at most 255 variants");
    }
  }
  free(doc);
}

int main(void) {
  tu_init();
  static const tu_test_t examples[] = {
      {"acme example overrides iso87a", test_acme_example_overrides_iso87a},
      {"mini-pos example is complete", test_mini_pos_example_is_complete},
      {"base override changes only listed keys",
       test_base_override_changes_only_listed_keys},
      {"null removes a field", test_null_removes_a_field},
      {"fewer bitmaps drop unreachable fields",
       test_fewer_bitmaps_drop_unreachable_fields},
      {"new field defaults", test_new_field_defaults},
      {NULL, NULL}};
  static const tu_test_t errors[] = {
      {"unknown keys are errors", test_unknown_keys_are_errors},
      {"wrong types are errors", test_wrong_types_are_errors},
      {"out of range values are errors", test_out_of_range_values_are_errors},
      {"impossible layouts are errors", test_impossible_layouts_are_errors},
      {"field numbers are checked", test_field_numbers_are_checked},
      {"missing keys are errors", test_missing_keys_are_errors},
      {"variant errors", test_variant_errors},
      {"mandatory errors", test_mandatory_errors},
      {NULL, NULL}};
  static const tu_test_t hostile[] = {
      {"deep nesting fails cleanly", test_deep_nesting_fails_cleanly},
      {"every truncation of an example fails cleanly",
       test_every_truncation_of_an_example_fails_cleanly},
      {"mutated examples never crash", test_mutated_examples_never_crash},
      {"small message buffers are respected",
       test_small_message_buffers_are_respected},
      {NULL, NULL}};
  static const tu_test_t files[] = {
      {"load file errors", test_load_file_errors},
      {"resolve builtin or file", test_resolve_builtin_or_file},
      {"free releases everything", test_free_releases_everything},
      {NULL, NULL}};
  static const tu_test_t use[] = {
      {"round trip with mini-pos", test_round_trip_with_mini_pos},
      {"variant selected by mti and processing code",
       test_variant_selected_by_mti_and_processing_code},
      {"variants and rules merge with the base",
       test_variants_and_rules_merge_with_the_base},
      {NULL, NULL}};
  tu_add_suite("spec_json examples", examples);
  tu_add_suite("spec_json errors", errors);
  tu_add_suite("spec_json hostile input", hostile);
  tu_add_suite("spec_json files", files);
  tu_add_suite("spec_json use", use);
  return tu_run();
}
