/*
 * score.h - the scores filters give a transaction (plugin.h add_score):
 * named symbols with points and an optional detail, and their total.
 * Pure: no session, no I/O; chain.c keeps one set per session and one per
 * transaction.
 */
#ifndef PORTCULLIS_SCORE_H
#define PORTCULLIS_SCORE_H

#include <stddef.h>

/* At most this many symbols in one set: a filter that adds a new symbol
 * per recipient or per header field cannot grow a transaction without
 * bound (add_score answers -1 beyond). */
#define SCORE_MAX_SYMBOLS 256
/* A symbol is [A-Z0-9_], 1 to this many octets (rspamd-like names). */
#define SCORE_SYMBOL_MAX 64
/* A detail is at most this many octets, without control characters: it
 * ends up in log lines. */
#define SCORE_DETAIL_MAX 256

struct score_entry {
	char symbol[SCORE_SYMBOL_MAX + 1];
	double points; /* the sum of what was added under this symbol */
	char *detail; /* the first detail given, or NULL */
};

struct score_set {
	struct score_entry **e; /* in the order first added; entries never move */
	size_t n, cap;
	double total;
};

/* score_add - add points under symbol: a new entry, or the points added
 * to the symbol's entry (its first detail stays). 0, or -1: a bad symbol,
 * points not finite, a bad detail, SCORE_MAX_SYMBOLS reached, no memory. */
int score_add(struct score_set *set, const char *symbol, double points, const char *detail);

/* score_at - the n-th symbol (in the order added); 0, or -1 past the end. */
int score_at(const struct score_set *set, size_t n, const char **symbol, double *points,
    const char **detail);

/* score_copy - dst (empty) becomes a copy of src; 0 or -1 (no memory). */
int score_copy(struct score_set *dst, const struct score_set *src);

/* score_clear - forget every symbol. */
void score_clear(struct score_set *set);

/* score_summary - "score=3.5 symbols=A(1.5),B(2)" into buf (size > 0),
 * cut with "..." where it does not fit; "" when there are no symbols.
 * Returns the length written. */
size_t score_summary(const struct score_set *set, char *buf, size_t size);

#endif
