/*
 * dialects_builtin.c — the built-in dialects, as data.
 *
 * Each standard's field table (ISO 8583:1987, ISO 8583:1993) is written once
 * as an X-macro list of (number, content class, length type, length, flags,
 * name).  A dialect is that list expanded under a wire *profile* that says
 * how each class is encoded:
 *
 *   dialect          MTI     bitmap  prefixes  n/z/x+n  text     b
 *   iso87a           ASCII   hex     ASCII     ASCII    ASCII    hex
 *   iso87a-bbitmap   ASCII   binary  ASCII     ASCII    ASCII    hex
 *   iso87b           BCD     binary  BCD       BCD      ASCII    binary
 *   iso87e           EBCDIC  binary  EBCDIC    EBCDIC   EBCDIC   binary
 *   iso93a           ASCII   hex     ASCII     ASCII    ASCII    hex
 *   iso93b           BCD     binary  BCD       BCD      ASCII    binary
 *
 * Lengths count digits for n, z and x+n (the x+n sign included), characters
 * for text classes and bytes for b.  Odd digit counts in packed BCD are
 * padded with a leading 0 for fixed numerics and x+n, and a trailing F for
 * variable numerics and track data (PAN, DE35).  Field 65 is the tertiary
 * bitmap in every built-in dialect, so fields 129-192 can be carried; ISO
 * leaves those undefined and they are declared here as private LLLVAR ans.
 * docs/dialects.md is the readable form of these tables.
 */
#include "internal.h"

/* Flags shorthands for the tables. */
#define F_NONE 0
#define F_SENS ISO_F_SENSITIVE
#define F_PAN (ISO_F_SENSITIVE | ISO_F_PAN)
#define F_ICC (ISO_F_SENSITIVE | ISO_F_TLV)

/* ISO 8583:1987 data elements. */
/* clang-format off */
#define ISO87_FIELDS(X)                                                       \
  X(2, N, LL, 19, F_PAN, "primary account number")                            \
  X(3, N, FIXED, 6, F_NONE, "processing code")                                \
  X(4, N, FIXED, 12, F_NONE, "amount, transaction")                           \
  X(5, N, FIXED, 12, F_NONE, "amount, settlement")                            \
  X(6, N, FIXED, 12, F_NONE, "amount, cardholder billing")                    \
  X(7, N, FIXED, 10, F_NONE, "transmission date and time")                    \
  X(8, N, FIXED, 8, F_NONE, "amount, cardholder billing fee")                 \
  X(9, N, FIXED, 8, F_NONE, "conversion rate, settlement")                    \
  X(10, N, FIXED, 8, F_NONE, "conversion rate, cardholder billing")           \
  X(11, N, FIXED, 6, F_NONE, "systems trace audit number")                    \
  X(12, N, FIXED, 6, F_NONE, "time, local transaction")                       \
  X(13, N, FIXED, 4, F_NONE, "date, local transaction")                       \
  X(14, N, FIXED, 4, F_NONE, "date, expiration")                              \
  X(15, N, FIXED, 4, F_NONE, "date, settlement")                              \
  X(16, N, FIXED, 4, F_NONE, "date, conversion")                              \
  X(17, N, FIXED, 4, F_NONE, "date, capture")                                 \
  X(18, N, FIXED, 4, F_NONE, "merchant type")                                 \
  X(19, N, FIXED, 3, F_NONE, "acquiring institution country code")           \
  X(20, N, FIXED, 3, F_NONE, "PAN extended, country code")                    \
  X(21, N, FIXED, 3, F_NONE, "forwarding institution country code")          \
  X(22, N, FIXED, 3, F_NONE, "point of service entry mode")                   \
  X(23, N, FIXED, 3, F_NONE, "card sequence number")                          \
  X(24, N, FIXED, 3, F_NONE, "network international identifier")             \
  X(25, N, FIXED, 2, F_NONE, "point of service condition code")               \
  X(26, N, FIXED, 2, F_NONE, "point of service PIN capture code")             \
  X(27, N, FIXED, 1, F_NONE, "authorization identification response length") \
  X(28, XN, FIXED, 9, F_NONE, "amount, transaction fee")                      \
  X(29, XN, FIXED, 9, F_NONE, "amount, settlement fee")                       \
  X(30, XN, FIXED, 9, F_NONE, "amount, transaction processing fee")           \
  X(31, XN, FIXED, 9, F_NONE, "amount, settlement processing fee")            \
  X(32, N, LL, 11, F_NONE, "acquiring institution identification code")      \
  X(33, N, LL, 11, F_NONE, "forwarding institution identification code")     \
  X(34, NS, LL, 28, F_PAN, "primary account number, extended")                \
  X(35, Z, LL, 37, F_SENS, "track 2 data")                                    \
  X(36, Z, LLL, 104, F_SENS, "track 3 data")                                  \
  X(37, AN, FIXED, 12, F_NONE, "retrieval reference number")                  \
  X(38, AN, FIXED, 6, F_NONE, "authorization identification response")       \
  X(39, AN, FIXED, 2, F_NONE, "response code")                                \
  X(40, AN, FIXED, 3, F_NONE, "service restriction code")                     \
  X(41, ANS, FIXED, 8, F_NONE, "card acceptor terminal identification")      \
  X(42, ANS, FIXED, 15, F_NONE, "card acceptor identification code")         \
  X(43, ANS, FIXED, 40, F_NONE, "card acceptor name/location")                \
  X(44, ANS, LL, 25, F_NONE, "additional response data")                      \
  X(45, ANS, LL, 76, F_SENS, "track 1 data")                                  \
  X(46, ANS, LLL, 999, F_NONE, "additional data - ISO")                       \
  X(47, ANS, LLL, 999, F_NONE, "additional data - national")                  \
  X(48, ANS, LLL, 999, F_NONE, "additional data - private")                   \
  X(49, AN, FIXED, 3, F_NONE, "currency code, transaction")                   \
  X(50, AN, FIXED, 3, F_NONE, "currency code, settlement")                    \
  X(51, AN, FIXED, 3, F_NONE, "currency code, cardholder billing")            \
  X(52, B, FIXED, 8, F_SENS, "personal identification number data")          \
  X(53, N, FIXED, 16, F_NONE, "security related control information")        \
  X(54, ANS, LLL, 120, F_NONE, "additional amounts")                          \
  X(55, B, LLL, 255, F_ICC, "ICC data (EMV)")                                 \
  X(56, ANS, LLL, 999, F_NONE, "reserved ISO")                                \
  X(57, ANS, LLL, 999, F_NONE, "reserved national")                           \
  X(58, ANS, LLL, 999, F_NONE, "reserved national")                           \
  X(59, ANS, LLL, 999, F_NONE, "reserved national")                           \
  X(60, ANS, LLL, 999, F_NONE, "reserved private")                            \
  X(61, ANS, LLL, 999, F_NONE, "reserved private")                            \
  X(62, ANS, LLL, 999, F_NONE, "reserved private")                            \
  X(63, ANS, LLL, 999, F_NONE, "reserved private")                            \
  X(64, B, FIXED, 8, F_NONE, "message authentication code")                  \
  X(66, N, FIXED, 1, F_NONE, "settlement code")                               \
  X(67, N, FIXED, 2, F_NONE, "extended payment code")                         \
  X(68, N, FIXED, 3, F_NONE, "receiving institution country code")           \
  X(69, N, FIXED, 3, F_NONE, "settlement institution country code")          \
  X(70, N, FIXED, 3, F_NONE, "network management information code")         \
  X(71, N, FIXED, 4, F_NONE, "message number")                                \
  X(72, N, FIXED, 4, F_NONE, "message number, last")                          \
  X(73, N, FIXED, 6, F_NONE, "date, action")                                  \
  X(74, N, FIXED, 10, F_NONE, "credits, number")                              \
  X(75, N, FIXED, 10, F_NONE, "credits reversal, number")                     \
  X(76, N, FIXED, 10, F_NONE, "debits, number")                               \
  X(77, N, FIXED, 10, F_NONE, "debits reversal, number")                      \
  X(78, N, FIXED, 10, F_NONE, "transfer, number")                             \
  X(79, N, FIXED, 10, F_NONE, "transfer reversal, number")                    \
  X(80, N, FIXED, 10, F_NONE, "inquiries, number")                            \
  X(81, N, FIXED, 10, F_NONE, "authorizations, number")                       \
  X(82, N, FIXED, 12, F_NONE, "credits, processing fee amount")               \
  X(83, N, FIXED, 12, F_NONE, "credits, transaction fee amount")              \
  X(84, N, FIXED, 12, F_NONE, "debits, processing fee amount")                \
  X(85, N, FIXED, 12, F_NONE, "debits, transaction fee amount")               \
  X(86, N, FIXED, 16, F_NONE, "credits, amount")                              \
  X(87, N, FIXED, 16, F_NONE, "credits reversal, amount")                     \
  X(88, N, FIXED, 16, F_NONE, "debits, amount")                               \
  X(89, N, FIXED, 16, F_NONE, "debits reversal, amount")                      \
  X(90, N, FIXED, 42, F_NONE, "original data elements")                       \
  X(91, AN, FIXED, 1, F_NONE, "file update code")                             \
  X(92, AN, FIXED, 2, F_NONE, "file security code")                           \
  X(93, AN, FIXED, 5, F_NONE, "response indicator")                           \
  X(94, AN, FIXED, 7, F_NONE, "service indicator")                            \
  X(95, AN, FIXED, 42, F_NONE, "replacement amounts")                         \
  X(96, B, FIXED, 8, F_NONE, "message security code")                         \
  X(97, XN, FIXED, 17, F_NONE, "amount, net settlement")                      \
  X(98, ANS, FIXED, 25, F_NONE, "payee")                                      \
  X(99, N, LL, 11, F_NONE, "settlement institution identification code")     \
  X(100, N, LL, 11, F_NONE, "receiving institution identification code")     \
  X(101, ANS, LL, 17, F_NONE, "file name")                                    \
  X(102, ANS, LL, 28, F_NONE, "account identification 1")                     \
  X(103, ANS, LL, 28, F_NONE, "account identification 2")                     \
  X(104, ANS, LLL, 100, F_NONE, "transaction description")                    \
  X(105, ANS, LLL, 999, F_NONE, "reserved ISO")                               \
  X(106, ANS, LLL, 999, F_NONE, "reserved ISO")                               \
  X(107, ANS, LLL, 999, F_NONE, "reserved ISO")                               \
  X(108, ANS, LLL, 999, F_NONE, "reserved ISO")                               \
  X(109, ANS, LLL, 999, F_NONE, "reserved ISO")                               \
  X(110, ANS, LLL, 999, F_NONE, "reserved ISO")                               \
  X(111, ANS, LLL, 999, F_NONE, "reserved ISO")                               \
  X(112, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(113, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(114, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(115, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(116, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(117, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(118, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(119, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(120, ANS, LLL, 999, F_NONE, "reserved private")                           \
  X(121, ANS, LLL, 999, F_NONE, "reserved private")                           \
  X(122, ANS, LLL, 999, F_NONE, "reserved private")                           \
  X(123, ANS, LLL, 999, F_NONE, "reserved private")                           \
  X(124, ANS, LLL, 999, F_NONE, "reserved private")                           \
  X(125, ANS, LLL, 999, F_NONE, "reserved private")                           \
  X(126, ANS, LLL, 999, F_NONE, "reserved private")                           \
  X(127, ANS, LLL, 999, F_NONE, "reserved private")                           \
  X(128, B, FIXED, 8, F_NONE, "message authentication code")                 \
  ISO_PRIVATE_129_192(X)

/* ISO 8583:1993 data elements. */
#define ISO93_FIELDS(X)                                                       \
  X(2, N, LL, 19, F_PAN, "primary account number")                            \
  X(3, N, FIXED, 6, F_NONE, "processing code")                                \
  X(4, N, FIXED, 12, F_NONE, "amount, transaction")                           \
  X(5, N, FIXED, 12, F_NONE, "amount, reconciliation")                        \
  X(6, N, FIXED, 12, F_NONE, "amount, cardholder billing")                    \
  X(7, N, FIXED, 10, F_NONE, "date and time, transmission")                   \
  X(8, N, FIXED, 8, F_NONE, "amount, cardholder billing fee")                 \
  X(9, N, FIXED, 8, F_NONE, "conversion rate, reconciliation")               \
  X(10, N, FIXED, 8, F_NONE, "conversion rate, cardholder billing")           \
  X(11, N, FIXED, 6, F_NONE, "systems trace audit number")                    \
  X(12, N, FIXED, 12, F_NONE, "date and time, local transaction")             \
  X(13, N, FIXED, 4, F_NONE, "date, effective")                               \
  X(14, N, FIXED, 4, F_NONE, "date, expiration")                              \
  X(15, N, FIXED, 6, F_NONE, "date, settlement")                              \
  X(16, N, FIXED, 4, F_NONE, "date, conversion")                              \
  X(17, N, FIXED, 4, F_NONE, "date, capture")                                 \
  X(18, N, FIXED, 4, F_NONE, "merchant type")                                 \
  X(19, N, FIXED, 3, F_NONE, "country code, acquiring institution")          \
  X(20, N, FIXED, 3, F_NONE, "country code, primary account number")         \
  X(21, N, FIXED, 3, F_NONE, "country code, forwarding institution")         \
  X(22, AN, FIXED, 12, F_NONE, "point of service data code")                  \
  X(23, N, FIXED, 3, F_NONE, "card sequence number")                          \
  X(24, N, FIXED, 3, F_NONE, "function code")                                 \
  X(25, N, FIXED, 4, F_NONE, "message reason code")                           \
  X(26, N, FIXED, 4, F_NONE, "card acceptor business code")                   \
  X(27, N, FIXED, 1, F_NONE, "approval code length")                          \
  X(28, N, FIXED, 6, F_NONE, "date, reconciliation")                          \
  X(29, N, FIXED, 3, F_NONE, "reconciliation indicator")                      \
  X(30, N, FIXED, 24, F_NONE, "amounts, original")                            \
  X(31, ANS, LL, 99, F_NONE, "acquirer reference data")                       \
  X(32, N, LL, 11, F_NONE, "acquiring institution identification code")      \
  X(33, N, LL, 11, F_NONE, "forwarding institution identification code")     \
  X(34, NS, LL, 28, F_PAN, "primary account number, extended")                \
  X(35, Z, LL, 37, F_SENS, "track 2 data")                                    \
  X(36, Z, LLL, 104, F_SENS, "track 3 data")                                  \
  X(37, AN, FIXED, 12, F_NONE, "retrieval reference number")                  \
  X(38, AN, FIXED, 6, F_NONE, "approval code")                                \
  X(39, N, FIXED, 3, F_NONE, "action code")                                   \
  X(40, N, FIXED, 3, F_NONE, "service code")                                  \
  X(41, ANS, FIXED, 8, F_NONE, "card acceptor terminal identification")      \
  X(42, ANS, FIXED, 15, F_NONE, "card acceptor identification code")         \
  X(43, ANS, LL, 99, F_NONE, "card acceptor name/location")                   \
  X(44, ANS, LL, 99, F_NONE, "additional response data")                      \
  X(45, ANS, LL, 76, F_SENS, "track 1 data")                                  \
  X(46, ANS, LLL, 204, F_NONE, "amounts, fees")                               \
  X(47, ANS, LLL, 999, F_NONE, "additional data - national")                  \
  X(48, ANS, LLL, 999, F_NONE, "additional data - private")                   \
  X(49, AN, FIXED, 3, F_NONE, "currency code, transaction")                   \
  X(50, AN, FIXED, 3, F_NONE, "currency code, reconciliation")                \
  X(51, AN, FIXED, 3, F_NONE, "currency code, cardholder billing")            \
  X(52, B, FIXED, 8, F_SENS, "personal identification number data")          \
  X(53, B, LL, 48, F_NONE, "security related control information")           \
  X(54, ANS, LLL, 120, F_NONE, "amounts, additional")                         \
  X(55, B, LLL, 255, F_ICC, "integrated circuit card system related data")   \
  X(56, N, LL, 35, F_NONE, "original data elements")                          \
  X(57, N, FIXED, 3, F_NONE, "authorization life cycle code")                 \
  X(58, N, LL, 11, F_NONE, "authorizing agent institution identification")   \
  X(59, ANS, LLL, 999, F_NONE, "transport data")                              \
  X(60, ANS, LLL, 999, F_NONE, "reserved national")                           \
  X(61, ANS, LLL, 999, F_NONE, "reserved national")                           \
  X(62, ANS, LLL, 999, F_NONE, "reserved private")                            \
  X(63, ANS, LLL, 999, F_NONE, "reserved private")                            \
  X(64, B, FIXED, 8, F_NONE, "message authentication code")                  \
  X(66, ANS, LLL, 204, F_NONE, "amounts, original fees")                      \
  X(67, N, FIXED, 2, F_NONE, "extended payment data")                         \
  X(68, N, FIXED, 3, F_NONE, "country code, receiving institution")          \
  X(69, N, FIXED, 3, F_NONE, "country code, settlement institution")         \
  X(70, N, FIXED, 3, F_NONE, "country code, authorizing agent institution")  \
  X(71, N, FIXED, 8, F_NONE, "message number")                                \
  X(72, ANS, LLL, 999, F_NONE, "data record")                                 \
  X(73, N, FIXED, 6, F_NONE, "date, action")                                  \
  X(74, N, FIXED, 10, F_NONE, "credits, number")                              \
  X(75, N, FIXED, 10, F_NONE, "credits reversal, number")                     \
  X(76, N, FIXED, 10, F_NONE, "debits, number")                               \
  X(77, N, FIXED, 10, F_NONE, "debits reversal, number")                      \
  X(78, N, FIXED, 10, F_NONE, "transfer, number")                             \
  X(79, N, FIXED, 10, F_NONE, "transfer reversal, number")                    \
  X(80, N, FIXED, 10, F_NONE, "inquiries, number")                            \
  X(81, N, FIXED, 10, F_NONE, "authorizations, number")                       \
  X(82, N, FIXED, 10, F_NONE, "inquiries reversal, number")                   \
  X(83, N, FIXED, 10, F_NONE, "payments, number")                             \
  X(84, N, FIXED, 10, F_NONE, "payments reversal, number")                    \
  X(85, N, FIXED, 10, F_NONE, "fee collections, number")                      \
  X(86, N, FIXED, 16, F_NONE, "credits, amount")                              \
  X(87, N, FIXED, 16, F_NONE, "credits reversal, amount")                     \
  X(88, N, FIXED, 16, F_NONE, "debits, amount")                               \
  X(89, N, FIXED, 16, F_NONE, "debits reversal, amount")                      \
  X(90, N, FIXED, 10, F_NONE, "authorizations reversal, number")              \
  X(91, N, FIXED, 3, F_NONE, "country code, transaction destination")        \
  X(92, N, FIXED, 3, F_NONE, "country code, transaction originator")         \
  X(93, N, LL, 11, F_NONE, "transaction destination institution id")         \
  X(94, N, LL, 11, F_NONE, "transaction originator institution id")          \
  X(95, ANS, LL, 99, F_NONE, "card issuer reference data")                    \
  X(96, B, LLL, 999, F_NONE, "key management data")                           \
  X(97, XN, FIXED, 17, F_NONE, "amount, net reconciliation")                  \
  X(98, ANS, FIXED, 25, F_NONE, "payee")                                      \
  X(99, AN, LL, 11, F_NONE, "settlement institution identification code")    \
  X(100, N, LL, 11, F_NONE, "receiving institution identification code")     \
  X(101, ANS, LL, 17, F_NONE, "file name")                                    \
  X(102, ANS, LL, 28, F_NONE, "account identification 1")                     \
  X(103, ANS, LL, 28, F_NONE, "account identification 2")                     \
  X(104, ANS, LLL, 100, F_NONE, "transaction description")                    \
  X(105, N, FIXED, 16, F_NONE, "credits, chargeback amount")                  \
  X(106, N, FIXED, 16, F_NONE, "debits, chargeback amount")                   \
  X(107, N, FIXED, 10, F_NONE, "credits, chargeback number")                  \
  X(108, N, FIXED, 10, F_NONE, "debits, chargeback number")                   \
  X(109, ANS, LL, 84, F_NONE, "credits, fee amounts")                         \
  X(110, ANS, LL, 84, F_NONE, "debits, fee amounts")                          \
  X(111, ANS, LLL, 999, F_NONE, "reserved ISO")                               \
  X(112, ANS, LLL, 999, F_NONE, "reserved ISO")                               \
  X(113, ANS, LLL, 999, F_NONE, "reserved ISO")                               \
  X(114, ANS, LLL, 999, F_NONE, "reserved ISO")                               \
  X(115, ANS, LLL, 999, F_NONE, "reserved ISO")                               \
  X(116, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(117, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(118, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(119, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(120, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(121, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(122, ANS, LLL, 999, F_NONE, "reserved national")                          \
  X(123, ANS, LLL, 999, F_NONE, "reserved private")                           \
  X(124, ANS, LLL, 999, F_NONE, "reserved private")                           \
  X(125, ANS, LLL, 999, F_NONE, "reserved private")                           \
  X(126, ANS, LLL, 999, F_NONE, "reserved private")                           \
  X(127, ANS, LLL, 999, F_NONE, "reserved private")                           \
  X(128, B, FIXED, 8, F_NONE, "message authentication code")                 \
  ISO_PRIVATE_129_192(X)

#define ISO__PRIV(X, n) X(n, ANS, LLL, 999, F_NONE, "private use")
#define ISO__PRIV10(X, n)                                                      \
  ISO__PRIV(X, n##0) ISO__PRIV(X, n##1) ISO__PRIV(X, n##2)                   \
  ISO__PRIV(X, n##3) ISO__PRIV(X, n##4) ISO__PRIV(X, n##5)                   \
  ISO__PRIV(X, n##6) ISO__PRIV(X, n##7) ISO__PRIV(X, n##8)                   \
  ISO__PRIV(X, n##9)
#define ISO_PRIVATE_129_192(X)                                                \
  ISO__PRIV(X, 129)                                                           \
  ISO__PRIV10(X, 13) ISO__PRIV10(X, 14) ISO__PRIV10(X, 15) ISO__PRIV10(X, 16)    \
  ISO__PRIV10(X, 17) ISO__PRIV10(X, 18) ISO__PRIV(X, 190) ISO__PRIV(X, 191)    \
  ISO__PRIV(X, 192)
/* clang-format on */

/* Length-type and class tokens used by the tables. */
#define LEN_FIXED ISO_LEN_FIXED
#define LEN_LL ISO_LEN_LL
#define LEN_LLL ISO_LEN_LLL
#define LEN_LLLL ISO_LEN_LLLL
#define CLS_N ISO_CLS_N
#define CLS_A ISO_CLS_A
#define CLS_AN ISO_CLS_AN
#define CLS_ANS ISO_CLS_ANS
#define CLS_NS ISO_CLS_NS
#define CLS_B ISO_CLS_B
#define CLS_Z ISO_CLS_Z
#define CLS_XN ISO_CLS_XN

/* Padding by class and length type: numbers right-justified (leading 0),
 * variable digit strings and track data left-justified (trailing F). */
#define PAD_N_FIXED ISO_PAD_LEFT_0
#define PAD_N_LL ISO_PAD_RIGHT_F
#define PAD_N_LLL ISO_PAD_RIGHT_F
#define PAD_N_LLLL ISO_PAD_RIGHT_F
#define PAD_Z_FIXED ISO_PAD_RIGHT_F
#define PAD_Z_LL ISO_PAD_RIGHT_F
#define PAD_Z_LLL ISO_PAD_RIGHT_F
#define PAD_Z_LLLL ISO_PAD_RIGHT_F
#define PAD_XN_FIXED ISO_PAD_LEFT_0
#define PAD_A_FIXED ISO_PAD_LEFT_0
#define PAD_A_LL ISO_PAD_LEFT_0
#define PAD_A_LLL ISO_PAD_LEFT_0
#define PAD_AN_FIXED ISO_PAD_LEFT_0
#define PAD_AN_LL ISO_PAD_LEFT_0
#define PAD_AN_LLL ISO_PAD_LEFT_0
#define PAD_ANS_FIXED ISO_PAD_LEFT_0
#define PAD_ANS_LL ISO_PAD_LEFT_0
#define PAD_ANS_LLL ISO_PAD_LEFT_0
#define PAD_NS_LL ISO_PAD_LEFT_0
#define PAD_B_FIXED ISO_PAD_LEFT_0
#define PAD_B_LL ISO_PAD_LEFT_0
#define PAD_B_LLL ISO_PAD_LEFT_0

/* Profiles: body encoding per class. */
#define ASCII_BODY_N ISO_ENC_ASCII
#define ASCII_BODY_Z ISO_ENC_ASCII
#define ASCII_BODY_XN ISO_ENC_ASCII
#define ASCII_BODY_A ISO_ENC_ASCII
#define ASCII_BODY_AN ISO_ENC_ASCII
#define ASCII_BODY_ANS ISO_ENC_ASCII
#define ASCII_BODY_NS ISO_ENC_ASCII
#define ASCII_BODY_B ISO_ENC_HEX

#define BCD_BODY_N ISO_ENC_BCD
#define BCD_BODY_Z ISO_ENC_BCD
#define BCD_BODY_XN ISO_ENC_BCD
#define BCD_BODY_A ISO_ENC_ASCII
#define BCD_BODY_AN ISO_ENC_ASCII
#define BCD_BODY_ANS ISO_ENC_ASCII
#define BCD_BODY_NS ISO_ENC_ASCII
#define BCD_BODY_B ISO_ENC_BINARY

#define EBCDIC_BODY_N ISO_ENC_EBCDIC
#define EBCDIC_BODY_Z ISO_ENC_EBCDIC
#define EBCDIC_BODY_XN ISO_ENC_EBCDIC
#define EBCDIC_BODY_A ISO_ENC_EBCDIC
#define EBCDIC_BODY_AN ISO_ENC_EBCDIC
#define EBCDIC_BODY_ANS ISO_ENC_EBCDIC
#define EBCDIC_BODY_NS ISO_ENC_EBCDIC
#define EBCDIC_BODY_B ISO_ENC_BINARY

#define DEF(prof, prefix_enc, n, k, lt, max, fl, nm)                           \
  [n] = {.name = nm,                                                           \
         .max_len = max,                                                       \
         .len_type = LEN_##lt,                                                 \
         .len_enc = prefix_enc,                                                \
         .body_enc = prof##_BODY_##k,                                          \
         .cls = CLS_##k,                                                       \
         .pad = PAD_##k##_##lt,                                                \
         .flags = fl},

#define DEF_ASCII(n, k, lt, max, fl, nm)                                       \
  DEF(ASCII, ISO_ENC_ASCII, n, k, lt, max, fl, nm)
#define DEF_BCD(n, k, lt, max, fl, nm)                                         \
  DEF(BCD, ISO_ENC_BCD, n, k, lt, max, fl, nm)
#define DEF_EBCDIC(n, k, lt, max, fl, nm)                                      \
  DEF(EBCDIC, ISO_ENC_EBCDIC, n, k, lt, max, fl, nm)

#define BITMAP_SLOTS                                                           \
  [1] = {.name = "secondary bitmap",                                           \
         .max_len = 8,                                                         \
         .cls = ISO_CLS_B,                                                     \
         .body_enc = ISO_ENC_BINARY,                                           \
         .flags = ISO_F_BITMAP},                                               \
  [65] = {.name = "tertiary bitmap",                                           \
          .max_len = 8,                                                        \
          .cls = ISO_CLS_B,                                                    \
          .body_enc = ISO_ENC_BINARY,                                          \
          .flags = ISO_F_BITMAP},

/* Mandatory fields: a conservative core that every network requires; a
 * network's own dialect file adds its rules (docs/dialect-files.md). Words
 * are fields 1-64, 65-128, 129-192. */
#define B(n) ISO__BIT(n)
static const iso_mandatory_t iso87_mandatory[] = {
    {"0100", {B(3) | B(11) | B(41), 0, 0}},
    {"0200", {B(3) | B(11) | B(41), 0, 0}},
    {"0220", {B(3) | B(11) | B(41), 0, 0}},
    {"0110", {B(3) | B(11) | B(39) | B(41), 0, 0}},
    {"0210", {B(3) | B(11) | B(39) | B(41), 0, 0}},
    {"0230", {B(3) | B(11) | B(39) | B(41), 0, 0}},
    {"0400", {B(3) | B(4) | B(11) | B(41), 0, 0}},
    {"0420", {B(3) | B(4) | B(11) | B(41), 0, 0}},
    {"0410", {B(3) | B(11) | B(39), 0, 0}},
    {"0430", {B(3) | B(11) | B(39), 0, 0}},
    {"0800", {B(11), B(70), 0}},
    {"0810", {B(11) | B(39), B(70), 0}},
};

static const iso_mandatory_t iso93_mandatory[] = {
    {"1100", {B(3) | B(11) | B(24), 0, 0}},
    {"1200", {B(3) | B(11) | B(24), 0, 0}},
    {"1220", {B(3) | B(11) | B(24), 0, 0}},
    {"1110", {B(3) | B(11) | B(39), 0, 0}},
    {"1210", {B(3) | B(11) | B(39), 0, 0}},
    {"1230", {B(3) | B(11) | B(39), 0, 0}},
    {"1420", {B(3) | B(4) | B(11) | B(24) | B(56), 0, 0}},
    {"1421", {B(3) | B(4) | B(11) | B(24) | B(56), 0, 0}},
    {"1430", {B(3) | B(11) | B(39), 0, 0}},
    {"1804", {B(11) | B(24), 0, 0}},
    {"1814", {B(11) | B(24) | B(39), 0, 0}},
};
#undef B

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const iso_dialect_t iso87a = {
    .name = "iso87a",
    .description = "ISO 8583:1987, ASCII, hex-ASCII bitmap (jPOS ISO87A)",
    .mti_enc = ISO_ENC_ASCII,
    .bitmap_enc = ISO_ENC_HEX,
    .max_bitmaps = 3,
    .fields = {BITMAP_SLOTS ISO87_FIELDS(DEF_ASCII)},
    .mandatory = iso87_mandatory,
    .nmandatory = NELEM(iso87_mandatory),
};

static const iso_dialect_t iso87a_bbitmap = {
    .name = "iso87a-bbitmap",
    .description = "ISO 8583:1987, ASCII, binary bitmap",
    .mti_enc = ISO_ENC_ASCII,
    .bitmap_enc = ISO_ENC_BINARY,
    .max_bitmaps = 3,
    .fields = {BITMAP_SLOTS ISO87_FIELDS(DEF_ASCII)},
    .mandatory = iso87_mandatory,
    .nmandatory = NELEM(iso87_mandatory),
};

static const iso_dialect_t iso87b = {
    .name = "iso87b",
    .description = "ISO 8583:1987, binary POS style: BCD MTI, packed BCD "
                   "numerics and lengths (jPOS ISO87B)",
    .mti_enc = ISO_ENC_BCD,
    .bitmap_enc = ISO_ENC_BINARY,
    .max_bitmaps = 3,
    .fields = {BITMAP_SLOTS ISO87_FIELDS(DEF_BCD)},
    .mandatory = iso87_mandatory,
    .nmandatory = NELEM(iso87_mandatory),
};

static const iso_dialect_t iso87e = {
    .name = "iso87e",
    .description = "ISO 8583:1987, EBCDIC (code page 037) bodies and "
                   "lengths, binary bitmap",
    .mti_enc = ISO_ENC_EBCDIC,
    .bitmap_enc = ISO_ENC_BINARY,
    .max_bitmaps = 3,
    .fields = {BITMAP_SLOTS ISO87_FIELDS(DEF_EBCDIC)},
    .mandatory = iso87_mandatory,
    .nmandatory = NELEM(iso87_mandatory),
};

static const iso_dialect_t iso93a = {
    .name = "iso93a",
    .description = "ISO 8583:1993, ASCII, hex-ASCII bitmap",
    .mti_enc = ISO_ENC_ASCII,
    .bitmap_enc = ISO_ENC_HEX,
    .max_bitmaps = 3,
    .fields = {BITMAP_SLOTS ISO93_FIELDS(DEF_ASCII)},
    .mandatory = iso93_mandatory,
    .nmandatory = NELEM(iso93_mandatory),
};

static const iso_dialect_t iso93b = {
    .name = "iso93b",
    .description = "ISO 8583:1993, binary: BCD MTI, packed BCD numerics and "
                   "lengths, binary bitmap",
    .mti_enc = ISO_ENC_BCD,
    .bitmap_enc = ISO_ENC_BINARY,
    .max_bitmaps = 3,
    .fields = {BITMAP_SLOTS ISO93_FIELDS(DEF_BCD)},
    .mandatory = iso93_mandatory,
    .nmandatory = NELEM(iso93_mandatory),
};

const iso_dialect_t *const iso__builtin[] = {
    &iso87a, &iso87a_bbitmap, &iso87b, &iso87e, &iso93a, &iso93b,
};
const size_t iso__nbuiltin = NELEM(iso__builtin);
