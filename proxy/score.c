/*
 * score.c - the score sets of transactions (see score.h).
 *
 * Exports score_add, score_at, score_copy, score_clear and score_summary.
 * A symbol added twice accumulates (rspamd and Haraka count a rule that
 * fires twice twice, too), so the total is always the sum of the entries.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "score.h"

static int symbol_ok(const char *s);
static int detail_ok(const char *s);
static struct score_entry *entry_find(const struct score_set *set, const char *symbol);
static int entry_new(struct score_set *set, const char *symbol, double points, const char *detail);

/* symbol_ok - [A-Z0-9_], 1 to SCORE_SYMBOL_MAX octets */
static int
symbol_ok(const char *s)
{
	size_t n;

	if (s == NULL)
		return 0;
	for (n = 0; s[n] != '\0'; n++) {
		char c = s[n];
		if (n >= SCORE_SYMBOL_MAX ||
		    !((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
			return 0;
	}
	return n > 0;
}

/* detail_ok - NULL, or at most SCORE_DETAIL_MAX octets without controls */
static int
detail_ok(const char *s)
{
	size_t n;

	if (s == NULL)
		return 1;
	for (n = 0; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];
		if (n >= SCORE_DETAIL_MAX || c < 0x20 || c == 0x7f)
			return 0;
	}
	return 1;
}

static struct score_entry *
entry_find(const struct score_set *set, const char *symbol)
{
	for (size_t i = 0; i < set->n; i++) {
		if (strcmp(set->e[i]->symbol, symbol) == 0)
			return set->e[i];
	}
	return NULL;
}

/* entry_new - append an entry (one allocation each, so pointers to a
 * symbol or detail stay good while the set grows) */
static int
entry_new(struct score_set *set, const char *symbol, double points, const char *detail)
{
	struct score_entry *e;

	if (set->n >= SCORE_MAX_SYMBOLS)
		return -1;
	if (set->n == set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 8;
		struct score_entry **t = realloc(set->e, cap * sizeof(*t));
		if (t == NULL)
			return -1;
		set->e = t;
		set->cap = cap;
	}
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return -1;
	if (detail != NULL && (e->detail = strdup(detail)) == NULL) {
		free(e);
		return -1;
	}
	snprintf(e->symbol, sizeof(e->symbol), "%s", symbol);
	e->points = points;
	set->e[set->n++] = e;
	return 0;
}

/* score_add - see score.h */
int
score_add(struct score_set *set, const char *symbol, double points, const char *detail)
{
	struct score_entry *e;

	if (!symbol_ok(symbol) || !isfinite(points) || !detail_ok(detail))
		return -1;
	if ((e = entry_find(set, symbol)) != NULL) {
		if (!isfinite(e->points + points) || !isfinite(set->total + points))
			return -1;
		e->points += points;
	} else if (entry_new(set, symbol, points, detail) != 0) {
		return -1;
	}
	set->total += points;
	return 0;
}

/* score_at - see score.h */
int
score_at(
    const struct score_set *set, size_t n, const char **symbol, double *points, const char **detail)
{
	if (n >= set->n)
		return -1;
	if (symbol != NULL)
		*symbol = set->e[n]->symbol;
	if (points != NULL)
		*points = set->e[n]->points;
	if (detail != NULL)
		*detail = set->e[n]->detail;
	return 0;
}

/* score_copy - the session's symbols into a new transaction */
int
score_copy(struct score_set *dst, const struct score_set *src)
{
	for (size_t i = 0; i < src->n; i++) {
		const struct score_entry *e = src->e[i];
		if (entry_new(dst, e->symbol, e->points, e->detail) != 0)
			return -1;
		dst->total += e->points;
	}
	return 0;
}

/* score_clear - free every entry */
void
score_clear(struct score_set *set)
{
	for (size_t i = 0; i < set->n; i++) {
		free(set->e[i]->detail);
		free(set->e[i]);
	}
	free(set->e);
	memset(set, 0, sizeof(*set));
}

/* score_summary - for the transaction's summary log line */
size_t
score_summary(const struct score_set *set, char *buf, size_t size)
{
	static const char cut[] = "...";
	size_t o;
	int n;

	buf[0] = '\0';
	if (set->n == 0 || size < 16)
		return 0;
	n = snprintf(buf, size, "score=%g symbols=", set->total);
	if (n < 0 || (size_t)n >= size) {
		buf[0] = '\0';
		return 0;
	}
	o = (size_t)n;
	for (size_t i = 0; i < set->n; i++) {
		char item[SCORE_SYMBOL_MAX + 48];
		size_t len;

		n = snprintf(item, sizeof(item), "%s%s(%g)", i ? "," : "", set->e[i]->symbol,
		    set->e[i]->points);
		len = (size_t)n;
		/* Room for this item, and for the cut mark if more follow. */
		if (o + len + (i + 1 < set->n ? sizeof(cut) - 1 : 0) >= size) {
			if (o + sizeof(cut) - 1 < size) {
				memcpy(buf + o, cut, sizeof(cut));
				o += sizeof(cut) - 1;
			}
			break;
		}
		memcpy(buf + o, item, len + 1);
		o += len;
	}
	return o;
}
