-- content.lua - score a message by its header fields, mark it, refuse spam.
--
-- What it does, at the end of DATA (when the whole message is known):
--   1. Every rule in RULES below is tried against the message. Each rule
--      that matches adds its score to the transaction under its symbol
--      (a short upper-case name), once, however often it matches.
--   2. The total decides:
--        total >= reject_score                    -> 550 5.7.1, not delivered
--        tempfail_score <= total < reject_score   -> 451 4.7.1, the sender's
--                                                    server tries again later
--                                                    (only if tempfail_score is set)
--        anything lower                           -> delivered, marked
--   3. The message gets a header field on top, for the mail server and the
--      users' filters to sort on (only delivered messages carry it, of course):
--        X-Spam-Score: 7 (SUBJ_ALL_CAPS, SUBJ_FREE_MONEY)
--        X-Spam-Score: 0 (none)
--
-- Configuration: every key is optional.
--
--   [lua content]
--   script         = /etc/portcullis/content.lua
--   reject_score   = 10        # refuse at or above this total (default 10)
--   tempfail_score = 6         # try-again-later at or above this (default: off)
--   header         = X-Spam-Score   # the name of the field we add
--
-- A sender could forge an X-Spam-Score field of its own. To drop it, put a
-- [plugin headers] section with `remove = X-Spam-Score` in front of this one.
--
-- Try new rules without refusing anything: `observe = yes` in the section
-- logs what would have been refused; the log line of every scored message
-- says which rules matched.

-- ---------------------------------------------------------------------------
-- The rules. Edit these.
--
-- Each rule has
--   symbol   a name for the log and the header (keep it unique)
--   score    a number; negative scores are allowed (for "good" signs)
--   header   the header field to look at (any case)
-- and one test:
--   pattern  a Lua pattern looked for in the field's value, lower-cased (so
--            write patterns in lower case). Lua patterns are not regular
--            expressions: "%." is a literal dot, "%s" a blank, "%d" a digit,
--            "[i1!]" one of those characters, "x?" an optional x, "%f[%w]"
--            a word start. Any field of that name may match.
--   missing  true: matches when the message has no such field at all
--   test     a function(value) returning true when it matches (value as
--            written, not lower-cased); for anything a pattern cannot say
-- ---------------------------------------------------------------------------
local RULES = {
	{ symbol = "SUBJ_FREE_MONEY", score = 6, header = "Subject", pattern = "free money" },
	{ symbol = "SUBJ_VIAGRA", score = 8, header = "Subject", pattern = "v[i1!]agra" },
	{ symbol = "SUBJ_LOTTERY_WIN", score = 5, header = "Subject", pattern = "you have won" },
	{ symbol = "SUBJ_URGENT", score = 2, header = "Subject", pattern = "%f[%w]urgent%f[%W]" },
	{
		-- A subject of at least 10 letters, none of them lower case.
		symbol = "SUBJ_ALL_CAPS",
		score = 3,
		header = "Subject",
		test = function(v)
			local letters = select(2, string.gsub(v, "%a", ""))
			return letters >= 10 and not string.find(v, "%l")
		end,
	},
	{ symbol = "MISSING_DATE", score = 1, header = "Date", missing = true },
	{ symbol = "MISSING_MESSAGE_ID", score = 1, header = "Message-ID", missing = true },
	{ symbol = "MASS_MAILER", score = 4, header = "X-Mailer", pattern = "mass ?mail" },
}

-- ---------------------------------------------------------------------------
-- Settings
-- ---------------------------------------------------------------------------

-- number(key, default) -> config[key] as a number (default when not set)
local function number(key, default)
	local v = config[key]
	if v == nil or v == "" then
		return default
	end
	local n = tonumber(v)
	if not n then
		error(key .. " is not a number: " .. v)
	end
	return n
end

local REJECT_SCORE = number("reject_score", 10)
local TEMPFAIL_SCORE = number("tempfail_score", nil) -- nil: never tempfail
local HEADER = config.header or "X-Spam-Score"

-- A field name is printable US-ASCII without ":" or blanks (RFC 5322 §2.2).
if not string.match(HEADER, "^[!-9;-~]+$") then
	error("header: not a header field name: " .. HEADER)
end
if TEMPFAIL_SCORE and TEMPFAIL_SCORE >= REJECT_SCORE then
	error("tempfail_score must be below reject_score")
end

-- Check the rules once, at load, so a typo stops portcullis at start
-- (and `portcullis -t`) instead of failing on the first message.
for i, r in ipairs(RULES) do
	local where = "content.lua: rule " .. i .. " (" .. tostring(r.symbol) .. ")"
	assert(type(r.symbol) == "string" and r.symbol ~= "", where .. ": no symbol")
	assert(type(r.score) == "number", where .. ": score is not a number")
	assert(type(r.header) == "string", where .. ": no header")
	if r.pattern then
		local ok, err = pcall(string.find, "", r.pattern)
		assert(ok, where .. ": bad pattern: " .. tostring(err))
	end
	assert(r.pattern or r.missing or r.test, where .. ": needs pattern, missing or test")
end

-- ---------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------

-- matches(rule, msg) -> true when the rule matches the message
local function matches(rule, msg)
	local values = msg:headers(rule.header)
	if rule.missing then
		return #values == 0
	end
	for _, v in ipairs(values) do
		if rule.pattern and string.find(string.lower(v), rule.pattern) then
			return true
		end
		if rule.test and rule.test(v) then
			return true
		end
	end
	return false
end

-- "7", "7.5", "-2": a score as people write it
local function show(n)
	if n == math.floor(n) then
		return string.format("%d", n)
	end
	return string.format("%.1f", n)
end

-- "SUBJ_ALL_CAPS, SUBJ_FREE_MONEY" (sorted), or "none"
local function symbol_list(symbols)
	local names = {}
	for name in pairs(symbols) do
		names[#names + 1] = name
	end
	table.sort(names)
	return #names > 0 and table.concat(names, ", ") or "none"
end

-- ---------------------------------------------------------------------------
-- The hook
-- ---------------------------------------------------------------------------

function on_data(tx, msg)
	for _, rule in ipairs(RULES) do
		if matches(rule, msg) then
			tx:add_score(rule.score, rule.symbol)
		end
	end

	-- tx.score and tx.symbols hold everything added in this transaction so
	-- far, by earlier hooks of this script too (say an on_rcpt rule).
	local score, symbols = tx.score, symbol_list(tx.symbols)

	-- The header is added whatever the verdict: a refused message is not
	-- delivered anyway, and with `observe = yes` the messages that would
	-- have been refused arrive marked.
	tx:add_header(HEADER, show(score) .. " (" .. symbols .. ")")

	if score >= REJECT_SCORE then
		tx.conn:log("score %s (%s): refused", show(score), symbols)
		return smtp.reject("550 5.7.1", "Message refused as spam")
	end
	if TEMPFAIL_SCORE and score >= TEMPFAIL_SCORE then
		tx.conn:log("score %s (%s): deferred", show(score), symbols)
		return smtp.tempfail("451 4.7.1", "Message deferred, try again later")
	end
	tx.conn:log("score %s (%s): passed", show(score), symbols)
end
