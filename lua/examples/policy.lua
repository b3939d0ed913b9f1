-- policy.lua - refuse senders from listed domains, accept only known recipients.
--
-- What it does
--   * MAIL FROM: a sender whose domain is on the `sender_domains` list, or a
--     subdomain of one, is refused (550 5.7.1). The null sender <> (bounces)
--     has no domain and is never refused here.
--   * RCPT TO: with a `recipients` list, only the addresses on it are
--     accepted; anyone else gets 550 5.1.1 (user unknown), before the
--     message is sent, so nobody has to bounce it later.
--   Either list may be left out: that check is then off.
--
-- Configuration
--
--   [lua policy]
--   script         = /etc/portcullis/policy.lua
--   sender_domains = /etc/portcullis/bad-sender-domains
--   recipients     = /etc/portcullis/recipients
--   sender_reply   = Mail from this domain is not accepted here   # optional
--   recipient_reply = User unknown                                 # optional
--
-- A value with a "/" in it is a file; anything else is the list itself,
-- written on the line (`sender_domains = spam.example junk.test`): handy
-- for two or three entries. Use absolute paths for files.
--
-- The lists are read when the script is loaded: at start, by
-- `portcullis -t`, and on every reload (kill -HUP). Edit a list, reload,
-- and the new list is in force; if it cannot be read the old one stays.
--
-- List files: one entry per line; blank lines and everything after a "#"
-- are ignored; case does not matter.
--
--   sender_domains file            recipients file
--   -------------------            ---------------
--   # spammers we know             # people
--   spam.example                   alice@example.com
--   bulk-mail.test  # since May    bob@example.com
--                                  postmaster@example.com
--                                  # everyone at this domain
--                                  @lists.example.com
--
-- "spam.example" also refuses "mx1.spam.example" and "a.b.spam.example",
-- but not "notspam.example". A recipient line is a full address, or
-- "@domain" for every address at that domain (not its subdomains).
--
-- Keep postmaster@ (and abuse@) of every domain on the recipients list:
-- RFC 5321 says postmaster must always be reachable.

-- ---------------------------------------------------------------------------
-- Reading the lists (at load time)
-- ---------------------------------------------------------------------------

-- entries(value, what) -> an array of lower-case entries, from a file when
-- the value contains a "/", else from the value itself.
local function entries(value, what)
	local out = {}
	local function add(line)
		line = string.gsub(line, "#.*", "") -- a comment runs to the end of the line
		for word in string.gmatch(line, "%S+") do
			out[#out + 1] = string.lower(word)
		end
	end
	if not string.find(value, "/", 1, true) then
		add(value)
		return out
	end
	-- smtp.lines reads a file; it works only here, while the script loads
	-- (a hook reading files would hold up every other session).
	local lines, err = smtp.lines(value)
	if not lines then
		error(what .. ": " .. err) -- err names the file and why
	end
	for _, line in ipairs(lines) do
		add(line)
	end
	return out
end

-- Bad sender domains, as a set: BAD_DOMAINS["spam.example"] = true.
-- Entries may be written "spam.example", ".spam.example" or "@spam.example".
local BAD_DOMAINS = nil
if config.sender_domains then
	BAD_DOMAINS = {}
	for _, d in ipairs(entries(config.sender_domains, "sender_domains")) do
		BAD_DOMAINS[string.gsub(d, "^[@.]+", "")] = true
	end
end

-- Known recipients: ADDRESSES["alice@example.com"] = true and
-- DOMAINS["lists.example.com"] = true (from "@lists.example.com").
local ADDRESSES, DOMAINS = nil, nil
if config.recipients then
	ADDRESSES, DOMAINS = {}, {}
	for _, a in ipairs(entries(config.recipients, "recipients")) do
		if string.sub(a, 1, 1) == "@" then
			DOMAINS[string.sub(a, 2)] = true
		elseif string.find(a, "@", 1, true) then
			ADDRESSES[a] = true
		else
			error("recipients: not an address or @domain: " .. a)
		end
	end
end

local SENDER_REPLY = config.sender_reply or "Mail from this domain is not accepted here"
local RECIPIENT_REPLY = config.recipient_reply or "User unknown"

-- ---------------------------------------------------------------------------
-- Matching
-- ---------------------------------------------------------------------------

-- bad_domain("mx1.spam.example") -> "spam.example" (the list entry that
-- matches), or nil. Tries the domain, then each parent domain in turn.
local function bad_domain(domain)
	while domain do
		if BAD_DOMAINS[domain] then
			return domain
		end
		domain = string.match(domain, "^[^.]*%.(.+)$") -- drop the first label
	end
	return nil
end

-- known_recipient(rcpt) -> true when the address is on the list.
local function known_recipient(rcpt)
	if rcpt.domain and DOMAINS[rcpt.domain] then
		return true
	end
	return ADDRESSES[string.lower(rcpt.addr)] == true
end

-- ---------------------------------------------------------------------------
-- Hooks
-- ---------------------------------------------------------------------------

function on_mail(tx, sender)
	if not BAD_DOMAINS or not sender.domain then
		return -- no list, or the null sender <>
	end
	local entry = bad_domain(sender.domain)
	if entry then
		tx.conn:log("sender <%s> refused: domain %s is listed", sender.addr, entry)
		return smtp.reject("550 5.7.1", SENDER_REPLY)
	end
end

function on_rcpt(tx, rcpt)
	if not ADDRESSES or known_recipient(rcpt) then
		return -- no list, or a known recipient: the backend has the last word
	end
	tx.conn:log("recipient <%s> refused: not on the recipients list", rcpt.addr)
	return smtp.reject("550 5.1.1", "<" .. rcpt.addr .. ">: " .. RECIPIENT_REPLY)
end
