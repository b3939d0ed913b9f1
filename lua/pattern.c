/*
 * pattern.c - Lua 5.4 patterns with a step budget: string.find,
 * string.match, string.gmatch and string.gsub for the sandbox.
 *
 * Exports lh_pattern_open. Lua's own matcher backtracks in C, where the
 * count hook never runs: string.find(("a"):rep(3000), ".-.-.-.-b") takes
 * hours, and every session waits for it. These functions match as the
 * reference manual (§6.4.1, §6.4) and stock Lua 5.4 do, result for result
 * and error for error, but count their steps: past pattern_budget steps a
 * call raises "pattern too complex: step budget exhausted". The steps are
 * charged to the hook call like instructions (lh_charge), so a hook that
 * matches a lot still yields to the event loop, and a call that runs into
 * hook_timeout or the stall limit is stopped on the way.
 *
 * A pattern is compiled into items first. A malformed item compiles to an
 * error item, raised when the matcher gets there: stock Lua raises only
 * then ("x[" finds nothing in "abc", and is no error), and scripts may
 * rely on that.
 */
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include <lualib.h>

#include "luahost.h"

/* As stock Lua (LUA_MAXCAPTURES, MAXCCALLS): more captures is "too many
 * captures", deeper nesting of the matcher "pattern too complex". The
 * depth limit also bounds the C stack the matcher uses. */
#define PM_MAXCAPTURES 32
#define PM_MAXDEPTH 200

/* A long call looks at the clock (hook_timeout, the stall limit) this
 * often; a few hundred microseconds of matching. */
#define PM_CHECK_EVERY 65536

/* Patterns this short are compiled on the C stack, longer ones into a
 * userdata (so the memory limit applies to them). */
#define PM_SMALL 64

/* The capture lengths that are not lengths. */
#define PM_UNFINISHED (-1)
#define PM_POSITION (-2)

/* A step: one item tried, one character tested; skipping ahead with
 * memchr or comparing a back-reference costs one per this many octets. */
#define PM_OCTETS_PER_STEP 16

enum pm_op {
	PM_SINGLE, /* a character class, maybe with a quantifier */
	PM_OPEN, /* ( */
	PM_POSCAP, /* () */
	PM_CLOSE, /* ) */
	PM_BALANCE, /* %bxy */
	PM_FRONTIER, /* %f[set] */
	PM_BACKREF, /* %1 to %9 */
	PM_END, /* $ at the end of the pattern */
	PM_ERROR, /* a malformed item, raised when reached */
	PM_DONE, /* the end of the pattern */
};

enum pm_test {
	PT_CHAR, /* one octet */
	PT_ANY, /* . */
	PT_CLASS, /* %a and friends */
	PT_SET, /* [...] */
};

enum pm_err {
	PE_ENDS_ESC,
	PE_BRACKET,
	PE_BALANCE_ARGS,
	PE_FRONTIER,
	PE_CAPTURE_INDEX,
	PE_PATTERN_CAPTURE,
	PE_TOO_MANY,
};

/* Stock Lua's messages, word for word: scripts may match on them. */
static const char *const pm_errors[] = {
    [PE_ENDS_ESC] = "malformed pattern (ends with '%')",
    [PE_BRACKET] = "malformed pattern (missing ']')",
    [PE_BALANCE_ARGS] = "malformed pattern (missing arguments to '%b')",
    [PE_FRONTIER] = "missing '[' after '%f' in pattern",
    [PE_CAPTURE_INDEX] = "invalid capture index",
    [PE_PATTERN_CAPTURE] = "invalid pattern capture",
    [PE_TOO_MANY] = "too many captures",
};

/* The class letters, in the order of their bits in pm_ctype; %z (the
 * octet 0) is deprecated since Lua 5.2 but stock Lua 5.4 still has it. */
static const char pm_class_letters[] = "acdglpsuwxz";
#define PM_NCLASSES 11

struct pm_item {
	unsigned char op; /* enum pm_op */
	unsigned char rep; /* PM_SINGLE: 0, '?', '*', '+' or '-' */
	unsigned char test; /* PM_SINGLE: enum pm_test */
	unsigned char a; /* the octet; the class; %b's opener; a capture; the error */
	unsigned char b; /* PT_CLASS: complemented; %b's closer; the error's index */
	unsigned int set; /* PT_SET, PM_FRONTIER: which bitmap */
};

/* The octets in a set (or a class), a bit each. */
struct pm_set {
	uint32_t w[8];
};

struct pm_prog {
	struct pm_item *items;
	struct pm_set *sets;
	int ncap; /* the captures a match has */
	int first; /* an octet every match starts with, or -1 */
};

/* Room for a short pattern: a pattern of n octets has at most n items
 * (and the end), and a set takes three octets at least. */
struct pm_small {
	struct pm_item items[PM_SMALL + 1];
	struct pm_set sets[PM_SMALL / 3 + 1];
};

struct pm_capture {
	const char *init;
	ptrdiff_t len; /* or PM_UNFINISHED, PM_POSITION */
};

/* One call (or one step of a gmatch iterator). */
struct pm_state {
	lua_State *L;
	const char *src, *end; /* the subject */
	const struct pm_prog *g;
	int depth;
	unsigned long steps, budget, next_check, charged;
	struct pm_capture cap[PM_MAXCAPTURES];
};

struct pm_gmatch {
	size_t pos; /* where the next search starts */
	size_t last; /* where the last match ended, or SIZE_MAX */
	struct pm_prog g;
};

/* pm_ctype[c]: a bit per class letter that c belongs to */
static uint16_t pm_ctype[256];
static struct pm_set pm_class_sets[PM_NCLASSES];
static int pm_ready;

static void pm_tables(void);
static int pm_class_index(int letter);
static int pm_in_class(int cls, int neg, unsigned char c);
static int pm_in_set(const struct pm_prog *g, unsigned set, unsigned char c);
static void pm_state_init(
    struct pm_state *m, lua_State *L, const char *s, size_t ls, unsigned long budget);
static inline void pm_step(struct pm_state *m, unsigned long n);
static void pm_checkpoint(struct pm_state *m);
static void pm_prog_alloc(
    lua_State *L, struct pm_prog *g, size_t len, struct pm_small *small, void *room);
static size_t pm_prog_size(size_t len);
static void pm_compile(struct pm_state *m, struct pm_prog *g, const char *p, size_t len);
static size_t pm_set_end(const char *p, size_t len, size_t i);
static void pm_set_build(struct pm_set *bm, const char *p, size_t i, size_t ec);
static size_t pm_single(
    struct pm_item *it, struct pm_prog *g, unsigned *nsets, const char *p, size_t len, size_t i);
static inline int pm_test(struct pm_state *m, const struct pm_item *it, unsigned char c);
static const char *pm_match(struct pm_state *m, const char *s, const struct pm_item *it);
static const char *pm_run(struct pm_state *m, const char *s, const struct pm_item *it);
static const char *pm_greedy(struct pm_state *m, const char *s, const struct pm_item *it);
static const char *pm_lazy(struct pm_state *m, const char *s, const struct pm_item *it);
static const char *pm_balance(struct pm_state *m, const char *s, const struct pm_item *it);
static const char *pm_backref(struct pm_state *m, const char *s, int l);
static void pm_raise(struct pm_state *m, const struct pm_item *it);
static const char *pm_try(struct pm_state *m, const char *s);
static const char *pm_skip(struct pm_state *m, const char *s);
static void pm_push_capture(struct pm_state *m, int i, const char *s, const char *e);
static int pm_push_captures(struct pm_state *m, const char *s, const char *e, int whole);
static int pm_finish(struct pm_state *m, int nres);
static int pm_resumed(lua_State *L, int status, lua_KContext ctx);
static size_t pm_init_arg(lua_State *L, int arg, size_t len);
static int pm_nospecials(const char *p, size_t len);
static int pm_find_aux(lua_State *L, int find);
static int pm_find_body(lua_State *L);
static int pm_match_body(lua_State *L);
static int pm_gmatch_body(lua_State *L);
static int pm_gmatch_next_body(lua_State *L);
static void pm_add_string(struct pm_state *m, luaL_Buffer *b, const char *s, const char *e);
static void pm_add_value(struct pm_state *m, luaL_Buffer *b, const char *s, const char *e, int tr);
static int pm_gsub_body(lua_State *L);
static int pm_begin(lua_State *L, int which);
static int pm_begun(lua_State *L, int status, lua_KContext ctx);
static int pm_find(lua_State *L);
static int pm_match_fn(lua_State *L);
static int pm_gmatch(lua_State *L);
static int pm_gmatch_next(lua_State *L);
static int pm_gsub(lua_State *L);

/* What the functions do, once pm_begin let them start. */
enum { PM_FIND, PM_MATCH, PM_GMATCH, PM_GMATCH_NEXT, PM_GSUB };
static const lua_CFunction pm_bodies[] = {
    [PM_FIND] = pm_find_body,
    [PM_MATCH] = pm_match_body,
    [PM_GMATCH] = pm_gmatch_body,
    [PM_GMATCH_NEXT] = pm_gmatch_next_body,
    [PM_GSUB] = pm_gsub_body,
};

/* pm_tables - the class bitmaps, once (the daemon keeps the C locale) */
static void
pm_tables(void)
{
	for (int c = 0; c < 256; c++) {
		uint16_t bits = 0;
		bits |= isalpha(c) ? 1u << 0 : 0;
		bits |= iscntrl(c) ? 1u << 1 : 0;
		bits |= isdigit(c) ? 1u << 2 : 0;
		bits |= isgraph(c) ? 1u << 3 : 0;
		bits |= islower(c) ? 1u << 4 : 0;
		bits |= ispunct(c) ? 1u << 5 : 0;
		bits |= isspace(c) ? 1u << 6 : 0;
		bits |= isupper(c) ? 1u << 7 : 0;
		bits |= isalnum(c) ? 1u << 8 : 0;
		bits |= isxdigit(c) ? 1u << 9 : 0;
		bits |= c == 0 ? 1u << 10 : 0;
		pm_ctype[c] = bits;
		for (int k = 0; k < PM_NCLASSES; k++) {
			if (bits & (1u << k))
				pm_class_sets[k].w[c >> 5] |= 1u << (c & 31);
		}
	}
	pm_ready = 1;
}

/* pm_class_index - which class %letter is, or -1 for a plain octet */
static int
pm_class_index(int letter)
{
	const char *p = strchr(pm_class_letters, tolower(letter));

	if (letter == '\0' || p == NULL)
		return -1;
	return (int)(p - pm_class_letters);
}

/* pm_in_class - does c belong to class cls (or to its complement)? */
static int
pm_in_class(int cls, int neg, unsigned char c)
{
	return ((pm_ctype[c] >> cls) & 1) ^ neg;
}

/* pm_in_set - is c in bitmap set? */
static int
pm_in_set(const struct pm_prog *g, unsigned set, unsigned char c)
{
	return (g->sets[set].w[c >> 5] >> (c & 31)) & 1;
}

/* ---- steps ---- */

/* pm_state_init - a fresh count for one call */
static void
pm_state_init(struct pm_state *m, lua_State *L, const char *s, size_t ls, unsigned long budget)
{
	m->L = L;
	m->src = s;
	m->end = s + ls;
	m->g = NULL;
	m->depth = 0;
	m->steps = m->charged = 0;
	m->budget = budget;
	m->next_check = budget < PM_CHECK_EVERY ? budget + 1 : PM_CHECK_EVERY;
}

/* pm_step - count n steps; the slow part only now and then */
static inline void
pm_step(struct pm_state *m, unsigned long n)
{
	m->steps += n;
	if (m->steps >= m->next_check)
		pm_checkpoint(m);
}

/* pm_checkpoint - over budget? Past the host's limits? */
static void
pm_checkpoint(struct pm_state *m)
{
	if (m->steps > m->budget) {
		/* Charged first: a script that catches this and tries again
		 * yields before its next call (pm_begin). */
		lh_charge(m->L, m->steps - m->charged, 0);
		m->charged = m->steps;
		luaL_error(m->L, "pattern too complex: step budget exhausted (pattern_budget %I)",
		    (lua_Integer)m->budget);
	}
	/* Cannot yield in the middle of a match: lh_charge raises when
	 * the hook call ran out of time or held the loop too long. */
	lh_charge(m->L, m->steps - m->charged, 0);
	m->charged = m->steps;
	m->next_check = m->steps + PM_CHECK_EVERY;
	if (m->next_check > m->budget + 1)
		m->next_check = m->budget + 1;
}

/* ---- compiling ---- */

/* pm_prog_size - the octets a compiled pattern of len octets may need */
static size_t
pm_prog_size(size_t len)
{
	return (len + 1) * sizeof(struct pm_item) + (len / 3 + 1) * sizeof(struct pm_set);
}

/* pm_prog_alloc - room for the items: small, room (pm_prog_size
 * octets), or a new userdata left on the stack */
static void
pm_prog_alloc(lua_State *L, struct pm_prog *g, size_t len, struct pm_small *small, void *room)
{
	if (small != NULL && len <= PM_SMALL) {
		g->items = small->items;
		g->sets = small->sets;
		return;
	}
	if (room == NULL) {
		if (len >= (SIZE_MAX - 2 * sizeof(struct pm_set)) / 16)
			luaL_error(L, "pattern too long");
		room = lua_newuserdatauv(L, pm_prog_size(len), 0);
	}
	/* The bitmaps first: they need the stricter alignment. */
	g->sets = room;
	g->items = (struct pm_item *)((char *)room + (len / 3 + 1) * sizeof(struct pm_set));
}

/* pm_set_end - the index after the ']' of the set at p[i] == '[', or 0
 * when it has none. The first octet (after a '^') is always a member,
 * even ']'; '%' escapes the octet after it. */
static size_t
pm_set_end(const char *p, size_t len, size_t i)
{
	size_t q = i + 1;

	if (q < len && p[q] == '^')
		q++;
	do {
		if (q >= len)
			return 0;
		if (p[q++] == '%' && q < len)
			q++;
	} while (q >= len || p[q] != ']');
	return q + 1;
}

/* pm_set_build - the members of the set p[i] == '[' up to its ']' at ec */
static void
pm_set_build(struct pm_set *bm, const char *p, size_t i, size_t ec)
{
	int neg = 0;
	size_t k = i + 1;

	memset(bm, 0, sizeof(*bm));
	if (p[k] == '^') {
		neg = 1;
		k++;
	}
	for (; k < ec; k++) {
		unsigned char c = (unsigned char)p[k];
		if (c == '%') {
			/* An escape takes the next octet even if it is the
			 * closing ']' (which happens after a range "a-%"). */
			int cls = pm_class_index((unsigned char)p[++k]);
			if (cls < 0) {
				c = (unsigned char)p[k];
				bm->w[c >> 5] |= 1u << (c & 31);
				continue;
			}
			for (int w = 0; w < 8; w++)
				bm->w[w] |= isupper((unsigned char)p[k]) ? ~pm_class_sets[cls].w[w]
				                                         : pm_class_sets[cls].w[w];
		} else if (k + 2 < ec && p[k + 1] == '-') {
			unsigned char hi = (unsigned char)p[k + 2];
			for (unsigned x = c; x <= hi; x++)
				bm->w[x >> 5] |= 1u << (x & 31);
			k += 2;
		} else {
			bm->w[c >> 5] |= 1u << (c & 31);
		}
	}
	if (neg) {
		for (int w = 0; w < 8; w++)
			bm->w[w] = ~bm->w[w];
	}
}

/* pm_single - a character class at p[i] into it: the index after it (and
 * its quantifier), or 0 when it is malformed (it is then the error) */
static size_t
pm_single(
    struct pm_item *it, struct pm_prog *g, unsigned *nsets, const char *p, size_t len, size_t i)
{
	size_t e;
	int cls;

	it->op = PM_SINGLE;
	it->rep = 0;
	switch (p[i]) {
	case '.':
		it->test = PT_ANY;
		e = i + 1;
		break;
	case '%':
		if (i + 1 >= len) {
			it->op = PM_ERROR;
			it->a = PE_ENDS_ESC;
			return 0;
		}
		cls = pm_class_index((unsigned char)p[i + 1]);
		if (cls < 0) {
			it->test = PT_CHAR;
			it->a = (unsigned char)p[i + 1];
		} else {
			it->test = PT_CLASS;
			it->a = (unsigned char)cls;
			it->b = isupper((unsigned char)p[i + 1]) ? 1 : 0;
		}
		e = i + 2;
		break;
	case '[':
		if ((e = pm_set_end(p, len, i)) == 0) {
			it->op = PM_ERROR;
			it->a = PE_BRACKET;
			return 0;
		}
		it->test = PT_SET;
		it->set = (*nsets)++;
		pm_set_build(&g->sets[it->set], p, i, e - 1);
		break;
	default:
		it->test = PT_CHAR;
		it->a = (unsigned char)p[i];
		e = i + 1;
		break;
	}
	if (e < len && strchr("?*+-", p[e]) != NULL && p[e] != '\0')
		it->rep = (unsigned char)p[e++];
	return e;
}

/* pm_compile - the items of pattern p (its '^' anchor already taken off);
 * capture indexes and their validity are known here, since the matcher
 * always walks the pattern left to right */
static void
pm_compile(struct pm_state *m, struct pm_prog *g, const char *p, size_t len)
{
	unsigned char open[PM_MAXCAPTURES]; /* captures not closed yet */
	int nopen = 0, ncap = 0;
	unsigned nsets = 0;
	size_t i = 0;
	struct pm_item *it = g->items;

	if (!pm_ready)
		pm_tables();
	pm_step(m, len / PM_OCTETS_PER_STEP + 1);
	for (; i < len; it++) {
		memset(it, 0, sizeof(*it));
		switch (p[i]) {
		case '(':
			if (ncap >= PM_MAXCAPTURES) {
				it->op = PM_ERROR;
				it->a = PE_TOO_MANY;
				goto done;
			}
			if (i + 1 < len && p[i + 1] == ')') {
				it->op = PM_POSCAP;
				i += 2;
			} else {
				it->op = PM_OPEN;
				open[nopen++] = (unsigned char)ncap;
				i++;
			}
			it->a = (unsigned char)ncap++;
			continue;
		case ')':
			if (nopen == 0) {
				it->op = PM_ERROR;
				it->a = PE_PATTERN_CAPTURE;
				goto done;
			}
			it->op = PM_CLOSE;
			it->a = open[--nopen];
			i++;
			continue;
		case '$':
			if (i + 1 == len) {
				it->op = PM_END;
				i++;
				continue;
			}
			break;
		case '%':
			if (i + 1 >= len)
				break;
			if (p[i + 1] == 'b') {
				if (i + 3 >= len) {
					it->op = PM_ERROR;
					it->a = PE_BALANCE_ARGS;
					goto done;
				}
				it->op = PM_BALANCE;
				it->a = (unsigned char)p[i + 2];
				it->b = (unsigned char)p[i + 3];
				i += 4;
				continue;
			}
			if (p[i + 1] == 'f') {
				size_t e;
				if (i + 2 >= len || p[i + 2] != '[') {
					it->op = PM_ERROR;
					it->a = PE_FRONTIER;
					goto done;
				}
				if ((e = pm_set_end(p, len, i + 2)) == 0) {
					it->op = PM_ERROR;
					it->a = PE_BRACKET;
					goto done;
				}
				it->op = PM_FRONTIER;
				it->set = nsets++;
				pm_set_build(&g->sets[it->set], p, i + 2, e - 1);
				i = e;
				continue;
			}
			if (p[i + 1] >= '0' && p[i + 1] <= '9') {
				int l = p[i + 1] - '1', closed = l >= 0 && l < ncap;
				for (int k = 0; k < nopen && closed; k++)
					closed = open[k] != l;
				if (!closed) {
					it->op = PM_ERROR;
					it->a = PE_CAPTURE_INDEX;
					it->b = (unsigned char)(l + 1);
					goto done;
				}
				it->op = PM_BACKREF;
				it->a = (unsigned char)l;
				i += 2;
				continue;
			}
			break;
		default:
			break;
		}
		if ((i = pm_single(it, g, &nsets, p, len, i)) == 0)
			goto done;
	}
	memset(it, 0, sizeof(*it));
	it->op = PM_DONE;
done:
	g->ncap = ncap;
	it = g->items;
	g->first = it->op == PM_SINGLE && it->test == PT_CHAR && (it->rep == 0 || it->rep == '+')
	    ? it->a
	    : -1;
}

/* ---- matching ---- */

/* pm_test - does octet c match the class of item it? One step. */
static inline int
pm_test(struct pm_state *m, const struct pm_item *it, unsigned char c)
{
	pm_step(m, 1);
	switch (it->test) {
	case PT_CHAR:
		return c == it->a;
	case PT_ANY:
		return 1;
	case PT_CLASS:
		return pm_in_class(it->a, it->b, c);
	default:
		return pm_in_set(m->g, it->set, c);
	}
}

/* pm_match - match the items from it on against the subject from s: the
 * end of the match, or NULL. Each level of nesting is a C call, so it is
 * bounded. */
static const char *
pm_match(struct pm_state *m, const char *s, const struct pm_item *it)
{
	const char *r;

	if (m->depth >= PM_MAXDEPTH)
		luaL_error(m->L, "pattern too complex");
	m->depth++;
	r = pm_run(m, s, it);
	m->depth--;
	return r;
}

/* pm_run - the body of pm_match: items that need no backtracking are
 * taken in a loop, the others recurse for the rest of the pattern */
static const char *
pm_run(struct pm_state *m, const char *s, const struct pm_item *it)
{
	const char *r;

	for (;; it++) {
		pm_step(m, 1);
		switch (it->op) {
		case PM_DONE:
			return s;
		case PM_SINGLE:
			if (s < m->end && pm_test(m, it, (unsigned char)*s)) {
				switch (it->rep) {
				case '?':
					if ((r = pm_match(m, s + 1, it + 1)) != NULL)
						return r;
					continue;
				case '*':
					return pm_greedy(m, s, it);
				case '+':
					return pm_greedy(m, s + 1, it);
				case '-':
					return pm_lazy(m, s, it);
				default:
					s++;
					continue;
				}
			}
			if (it->rep == '?' || it->rep == '*' || it->rep == '-')
				continue; /* none is enough */
			return NULL;
		case PM_OPEN:
		case PM_POSCAP:
			m->cap[it->a].init = s;
			m->cap[it->a].len = it->op == PM_OPEN ? PM_UNFINISHED : PM_POSITION;
			return pm_match(m, s, it + 1);
		case PM_CLOSE:
			m->cap[it->a].len = s - m->cap[it->a].init;
			if ((r = pm_match(m, s, it + 1)) == NULL)
				m->cap[it->a].len = PM_UNFINISHED;
			return r;
		case PM_BALANCE:
			if ((s = pm_balance(m, s, it)) == NULL)
				return NULL;
			continue;
		case PM_FRONTIER: {
			/* Outside the subject is '\0', at both ends. */
			unsigned char prev = s == m->src ? 0 : (unsigned char)s[-1];
			unsigned char cur = s < m->end ? (unsigned char)*s : 0;
			if (pm_in_set(m->g, it->set, prev) || !pm_in_set(m->g, it->set, cur))
				return NULL;
			continue;
		}
		case PM_BACKREF:
			if ((s = pm_backref(m, s, it->a)) == NULL)
				return NULL;
			continue;
		case PM_END:
			return s == m->end ? s : NULL;
		default:
			pm_raise(m, it);
			return NULL;
		}
	}
}

/* pm_greedy - item it as many times as it goes from s, then fewer until
 * the rest matches */
static const char *
pm_greedy(struct pm_state *m, const char *s, const struct pm_item *it)
{
	size_t n = 0;
	const char *r;

	while (s + n < m->end && pm_test(m, it, (unsigned char)s[n]))
		n++;
	for (;;) {
		if ((r = pm_match(m, s + n, it + 1)) != NULL)
			return r;
		if (n-- == 0)
			return NULL;
	}
}

/* pm_lazy - item it as few times as will do, from none */
static const char *
pm_lazy(struct pm_state *m, const char *s, const struct pm_item *it)
{
	const char *r;

	for (;;) {
		if ((r = pm_match(m, s, it + 1)) != NULL)
			return r;
		if (s < m->end && pm_test(m, it, (unsigned char)*s))
			s++;
		else
			return NULL;
	}
}

/* pm_balance - %bxy: from an x at s to its matching y */
static const char *
pm_balance(struct pm_state *m, const char *s, const struct pm_item *it)
{
	int depth = 1;

	if (s >= m->end || (unsigned char)*s != it->a)
		return NULL;
	/* The closer is tried first, so %bxx ends at the next x. */
	while (++s < m->end) {
		pm_step(m, 1);
		if ((unsigned char)*s == it->b) {
			if (--depth == 0)
				return s + 1;
		} else if ((unsigned char)*s == it->a) {
			depth++;
		}
	}
	return NULL;
}

/* pm_backref - %n: the text capture l matched, again at s */
static const char *
pm_backref(struct pm_state *m, const char *s, int l)
{
	ptrdiff_t len = m->cap[l].len;

	/* A position capture matches nothing, as in stock Lua. */
	if (len < 0 || m->end - s < len)
		return NULL;
	pm_step(m, (unsigned long)len / PM_OCTETS_PER_STEP);
	return memcmp(m->cap[l].init, s, (size_t)len) == 0 ? s + len : NULL;
}

/* pm_raise - the matcher reached a malformed item */
static void
pm_raise(struct pm_state *m, const struct pm_item *it)
{
	if (it->a == PE_CAPTURE_INDEX)
		luaL_error(m->L, "%s %%%d", pm_errors[it->a], (int)it->b);
	luaL_error(m->L, "%s", pm_errors[it->a]);
}

/* pm_try - one attempt at a match starting at s */
static const char *
pm_try(struct pm_state *m, const char *s)
{
	m->depth = 0;
	return pm_match(m, s, m->g->items);
}

/* pm_skip - the first place from s where a match may start, or NULL when
 * none can: a pattern that starts with a plain octet is looked for with
 * memchr instead of trying every position */
static const char *
pm_skip(struct pm_state *m, const char *s)
{
	const char *p;

	if (m->g->first < 0)
		return s;
	p = s < m->end ? memchr(s, m->g->first, (size_t)(m->end - s)) : NULL;
	pm_step(m, (unsigned long)((p != NULL ? p : m->end) - s) / PM_OCTETS_PER_STEP);
	return p;
}

/* ---- results ---- */

/* pm_push_capture - capture i; with no captures, i == 0 is the match */
static void
pm_push_capture(struct pm_state *m, int i, const char *s, const char *e)
{
	if (i >= m->g->ncap) {
		if (i != 0)
			luaL_error(m->L, "invalid capture index %%%d", i + 1);
		lua_pushlstring(m->L, s, (size_t)(e - s));
		return;
	}
	if (m->cap[i].len == PM_UNFINISHED)
		luaL_error(m->L, "unfinished capture");
	if (m->cap[i].len == PM_POSITION)
		lua_pushinteger(m->L, (lua_Integer)(m->cap[i].init - m->src) + 1);
	else
		lua_pushlstring(m->L, m->cap[i].init, (size_t)m->cap[i].len);
}

/* pm_push_captures - every capture, or (whole) the match if none */
static int
pm_push_captures(struct pm_state *m, const char *s, const char *e, int whole)
{
	int n = m->g->ncap == 0 && whole ? 1 : m->g->ncap;

	luaL_checkstack(m->L, n, "too many captures");
	for (int i = 0; i < n; i++)
		pm_push_capture(m, i, s, e);
	return n;
}

/* pm_finish - return nres results, after a yield if the host wants one
 * (the steps count as the hook call's instructions) */
static int
pm_finish(struct pm_state *m, int nres)
{
	lua_State *L = m->L;

	if (lh_charge(L, m->steps - m->charged, 1))
		return lua_yieldk(L, 0, ((lua_KContext)lua_gettop(L) << 8) | nres, pm_resumed);
	return nres;
}

/* pm_resumed - back from that yield: the results are still on the stack */
static int
pm_resumed(lua_State *L, int status, lua_KContext ctx)
{
	lua_settop(L, (int)(ctx >> 8));
	return (int)(ctx & 0xff);
}

/* ---- the functions ---- */

/* pm_init_arg - init at arg as a 0-based offset: negative counts from
 * the end, 0 and anything before the start is the start */
static size_t
pm_init_arg(lua_State *L, int arg, size_t len)
{
	lua_Integer pos = luaL_optinteger(L, arg, 1);

	if (pos > 0)
		return (size_t)pos - 1;
	if (pos == 0 || pos < -(lua_Integer)len)
		return 0;
	return len + (size_t)pos;
}

/* pm_nospecials - no magic character: a plain search will do */
static int
pm_nospecials(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (p[i] != '\0' && strchr("^$*+?.([%-", p[i]) != NULL)
			return 0;
	}
	return 1;
}

/* pm_find_aux - string.find and string.match */
static int
pm_find_aux(lua_State *L, int find)
{
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	size_t init = pm_init_arg(L, 3, ls);
	struct pm_state m;
	struct pm_small small;
	struct pm_prog g;
	const char *s1, *e;
	int anchor;

	if (init > ls) {
		luaL_pushfail(L);
		return 1;
	}
	pm_state_init(&m, L, s, ls, (unsigned long)lua_tointeger(L, lua_upvalueindex(1)));
	if (find && (lua_toboolean(L, 4) || pm_nospecials(p, lp))) {
		const char *hit = memmem(s + init, ls - init, p, lp);
		pm_step(&m, (ls - init) / PM_OCTETS_PER_STEP);
		if (hit == NULL) {
			luaL_pushfail(L);
			return pm_finish(&m, 1);
		}
		lua_pushinteger(L, (lua_Integer)(hit - s) + 1);
		lua_pushinteger(L, (lua_Integer)(hit - s + lp));
		return pm_finish(&m, 2);
	}
	anchor = lp > 0 && p[0] == '^';
	pm_prog_alloc(L, &g, lp - anchor, &small, NULL);
	m.g = &g;
	pm_compile(&m, &g, p + anchor, lp - anchor);
	s1 = s + init;
	do {
		if (!anchor && (s1 = pm_skip(&m, s1)) == NULL)
			break;
		if ((e = pm_try(&m, s1)) != NULL) {
			if (!find)
				return pm_finish(&m, pm_push_captures(&m, s1, e, 1));
			lua_pushinteger(L, (lua_Integer)(s1 - s) + 1);
			lua_pushinteger(L, (lua_Integer)(e - s));
			return pm_finish(&m, pm_push_captures(&m, NULL, NULL, 0) + 2);
		}
	} while (s1++ < m.end && !anchor);
	luaL_pushfail(L);
	return pm_finish(&m, 1);
}

/* pm_find_body - string.find(s, pattern [, init [, plain]]) */
static int
pm_find_body(lua_State *L)
{
	return pm_find_aux(L, 1);
}

/* pm_match_body - string.match(s, pattern [, init]) */
static int
pm_match_body(lua_State *L)
{
	return pm_find_aux(L, 0);
}

/* pm_gmatch_body - string.gmatch(s, pattern [, init]): the iterator. The
 * pattern is compiled once, here; a '^' in it is an ordinary octet (an
 * anchor would stop the iteration) */
static int
pm_gmatch_body(lua_State *L)
{
	size_t ls, lp;
	const char *p;
	size_t init;
	struct pm_gmatch *gm;
	struct pm_state m;

	luaL_checklstring(L, 1, &ls);
	p = luaL_checklstring(L, 2, &lp);
	init = pm_init_arg(L, 3, ls);
	lua_settop(L, 2);
	if (lp >= (SIZE_MAX - 2 * sizeof(struct pm_set) - sizeof(*gm)) / 16)
		return luaL_error(L, "pattern too long");
	gm = lua_newuserdatauv(L, sizeof(*gm) + pm_prog_size(lp), 0);
	gm->pos = init > ls ? ls + 1 : init;
	gm->last = SIZE_MAX;
	pm_prog_alloc(L, &gm->g, lp, NULL, gm + 1);
	pm_state_init(&m, L, p, 0, (unsigned long)lua_tointeger(L, lua_upvalueindex(1)));
	pm_compile(&m, &gm->g, p, lp);
	lua_pushvalue(L, 1);
	lua_pushvalue(L, 3);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_pushcclosure(L, pm_gmatch_next, 3);
	return pm_finish(&m, 1);
}

/* pm_gmatch_next_body - the next match after the last one; an empty match
 * where the last one ended does not count (Lua 5.4) */
static int
pm_gmatch_next_body(lua_State *L)
{
	size_t ls;
	const char *s = lua_tolstring(L, lua_upvalueindex(1), &ls);
	struct pm_gmatch *gm = lua_touserdata(L, lua_upvalueindex(2));
	struct pm_state m;
	const char *src, *e;

	pm_state_init(&m, L, s, ls, (unsigned long)lua_tointeger(L, lua_upvalueindex(3)));
	m.g = &gm->g;
	if (gm->pos > ls)
		return pm_finish(&m, 0);
	for (src = s + gm->pos; src <= m.end; src++) {
		if ((src = pm_skip(&m, src)) == NULL)
			break;
		if ((e = pm_try(&m, src)) != NULL && (size_t)(e - s) != gm->last) {
			gm->pos = gm->last = (size_t)(e - s);
			return pm_finish(&m, pm_push_captures(&m, src, e, 1));
		}
	}
	gm->pos = ls + 1;
	return pm_finish(&m, 0);
}

/* pm_add_string - a string replacement: %0-%9 and %% */
static void
pm_add_string(struct pm_state *m, luaL_Buffer *b, const char *s, const char *e)
{
	lua_State *L = m->L;
	size_t l;
	const char *r = lua_tolstring(L, 3, &l), *pct;

	while ((pct = memchr(r, '%', l)) != NULL) {
		luaL_addlstring(b, r, (size_t)(pct - r));
		l -= (size_t)(pct - r) + 1;
		r = pct + 1;
		/* A '%' at the very end is followed by the '\0' every Lua
		 * string ends with: an invalid use, as in stock Lua. */
		if (*r == '%') {
			luaL_addchar(b, '%');
		} else if (*r == '0') {
			luaL_addlstring(b, s, (size_t)(e - s));
		} else if (isdigit((unsigned char)*r)) {
			pm_push_capture(m, *r - '1', s, e);
			luaL_tolstring(L, -1, NULL);
			lua_remove(L, -2);
			luaL_addvalue(b);
		} else {
			luaL_error(L, "invalid use of '%%' in replacement string");
		}
		r++;
		l--;
	}
	luaL_addlstring(b, r, l);
}

/* pm_add_value - the replacement for the match s..e */
static void
pm_add_value(struct pm_state *m, luaL_Buffer *b, const char *s, const char *e, int tr)
{
	lua_State *L = m->L;

	switch (tr) {
	case LUA_TFUNCTION:
		/* The callback runs Lua code: the count hook sees it (it
		 * cannot yield there, so the stall limit applies). */
		lua_pushvalue(L, 3);
		lua_call(L, pm_push_captures(m, s, e, 1), 1);
		break;
	case LUA_TTABLE:
		pm_push_capture(m, 0, s, e);
		lua_gettable(L, 3);
		break;
	default:
		pm_add_string(m, b, s, e);
		return;
	}
	if (!lua_toboolean(L, -1)) {
		lua_pop(L, 1);
		luaL_addlstring(b, s, (size_t)(e - s)); /* false or nil: keep the match */
	} else if (!lua_isstring(L, -1)) {
		luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
	} else {
		luaL_addvalue(b);
	}
}

/* pm_gsub_body - string.gsub(s, pattern, repl [, n]) */
static int
pm_gsub_body(lua_State *L)
{
	size_t ls, lp;
	const char *src = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	int tr = lua_type(L, 3);
	lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1), n = 0;
	int anchor = lp > 0 && p[0] == '^';
	const char *last = NULL, *e;
	struct pm_state m;
	struct pm_small small;
	struct pm_prog g;
	luaL_Buffer b;

	luaL_argexpected(L,
	    tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
	    "string/function/table");
	pm_state_init(&m, L, src, ls, (unsigned long)lua_tointeger(L, lua_upvalueindex(1)));
	pm_prog_alloc(L, &g, lp - anchor, &small, NULL);
	m.g = &g;
	pm_compile(&m, &g, p + anchor, lp - anchor);
	luaL_buffinit(L, &b);
	while (n < max) {
		const char *next = anchor ? src : pm_skip(&m, src);
		if (next == NULL)
			break; /* no match in the rest */
		luaL_addlstring(&b, src, (size_t)(next - src));
		src = next;
		if ((e = pm_try(&m, src)) != NULL && e != last) {
			n++;
			pm_add_value(&m, &b, src, e, tr);
			src = last = e;
		} else if (src < m.end) {
			luaL_addchar(&b, *src++);
		} else {
			break;
		}
		if (anchor)
			break;
	}
	luaL_addlstring(&b, src, (size_t)(m.end - src));
	luaL_pushresult(&b);
	lua_pushinteger(L, n);
	return pm_finish(&m, 2);
}

/* pm_begin - yield first if the hook call's slice is over: a script that
 * calls one costly pattern after another (catching each error with
 * pcall) lets the other sessions in between */
static int
pm_begin(lua_State *L, int which)
{
	if (lh_charge(L, 0, 1))
		return lua_yieldk(L, 0, which, pm_begun);
	return pm_bodies[which](L);
}

/* pm_begun - resumed after that yield: the arguments are as they were */
static int
pm_begun(lua_State *L, int status, lua_KContext ctx)
{
	return pm_bodies[ctx](L);
}

/* pm_find - string.find */
static int
pm_find(lua_State *L)
{
	return pm_begin(L, PM_FIND);
}

/* pm_match_fn - string.match */
static int
pm_match_fn(lua_State *L)
{
	return pm_begin(L, PM_MATCH);
}

/* pm_gmatch - string.gmatch */
static int
pm_gmatch(lua_State *L)
{
	return pm_begin(L, PM_GMATCH);
}

/* pm_gmatch_next - what string.gmatch returns */
static int
pm_gmatch_next(lua_State *L)
{
	return pm_begin(L, PM_GMATCH_NEXT);
}

/* pm_gsub - string.gsub */
static int
pm_gsub(lua_State *L)
{
	return pm_begin(L, PM_GSUB);
}

/* lh_pattern_open - put ours in the string table (which is also what
 * the string metatable's __index is, so s:find is ours too) */
void
lh_pattern_open(lua_State *L, unsigned long budget)
{
	static const luaL_Reg fns[] = {
	    {"find", pm_find},
	    {"match", pm_match_fn},
	    {"gmatch", pm_gmatch},
	    {"gsub", pm_gsub},
	};

	if (!pm_ready)
		pm_tables();
	lua_getglobal(L, LUA_STRLIBNAME);
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
		lua_pushinteger(L, (lua_Integer)budget);
		lua_pushcclosure(L, fns[i].func, 1);
		lua_setfield(L, -2, fns[i].name);
	}
	lua_pop(L, 1);
}
