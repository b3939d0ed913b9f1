-- dnsbl.lua - refuse mail from clients listed on DNS blocklists.
--
-- What it does
--   * At connect it asks the blocklists (DNSBLs) named in `zones` whether the
--     client's IP address is listed; all zones are asked at once.
--   * It does not refuse the connection. It remembers the answer in
--     conn.notes and refuses each recipient at RCPT instead, so that:
--       - the log shows who the client wanted to write to;
--       - postmaster@ and abuse@ (the `allow_rcpt` list) can still be
--         reached by someone who is listed by mistake and wants to say so;
--       - a client that logs in (SMTP AUTH, conn.auth_user) is never refused,
--         whatever network it comes from.
--   * Clients in the `trusted` networks are not looked up at all.
--   * A blocklist that does not answer (timeout, SERVFAIL, an error code)
--     refuses nobody: mail goes on and the log says what went wrong.
--
-- Configuration: every key is optional.
--
--   [lua dnsbl]
--   script     = /etc/portcullis/dnsbl.lua
--   zones      = zen.spamhaus.org           # space-separated list of DNSBL zones
--   allow_rcpt = postmaster abuse           # local parts always accepted (any domain)
--   trusted    = 127.0.0.0/8 ::1/128        # networks never looked up (CIDR or address)
--   reject     = 554 5.7.1                  # code (and enhanced code) of the refusal
--
-- Lists are separated by spaces; `none` stands for an empty list
-- (`trusted = none` looks up even the local host).
--
-- Try it without refusing anything first: add `observe = yes` to the
-- section and the log tells you what would have been refused.
--
-- Note for Spamhaus: their public mirrors refuse queries that come through
-- big public resolvers (8.8.8.8 and the like) and answer 127.255.255.254
-- instead; this script logs that as an error, not as a listing. Use your
-- own resolver (the top-level `dns_server` key).

-- ---------------------------------------------------------------------------
-- Settings, read once when the script is loaded (and again on reload).
-- ---------------------------------------------------------------------------

-- setting(key, default) -> the words of config[key] (or of the default):
-- "a b  c" -> { "a", "b", "c" }. The word "none" is an empty list (the
-- configuration has no empty values: write `trusted = none`).
local function setting(key, default)
	local out = {}
	for w in string.gmatch(config[key] or default, "%S+") do
		out[#out + 1] = w
	end
	if #out == 1 and out[1] == "none" then
		return {}
	end
	return out
end

-- DNS names do not care about case; lower case keeps the log tidy.
local ZONES = {}
for _, z in ipairs(setting("zones", "zen.spamhaus.org")) do
	ZONES[#ZONES + 1] = string.lower(z)
end
if #ZONES == 0 then
	error("zones: name at least one blocklist zone")
end

-- Local parts that stay reachable even from a listed client, as a set
-- (lower case): ALLOW_RCPT["postmaster"] = true.
local ALLOW_RCPT = {}
for _, w in ipairs(setting("allow_rcpt", "postmaster abuse")) do
	ALLOW_RCPT[string.lower(w)] = true
end

local REJECT_CODE = config.reject or "554 5.7.1"

-- Trusted networks. Each entry is turned into its canonical form with
-- smtp.net(), so that comparing a client with it is one more smtp.net() call:
-- a client is in 192.0.2.0/24 when smtp.net(client, 24, 24) == "192.0.2.0/24".
--   TRUSTED = { { bits = 24, v6 = false, net = "192.0.2.0/24" }, ... }
local TRUSTED = {}
for _, w in ipairs(setting("trusted", "127.0.0.0/8 ::1/128")) do
	local addr, bits = string.match(w, "^([^/]+)/(%d+)$")
	if not addr then
		addr = w -- a single address: a network of one
	end
	local v6 = string.find(addr, ":", 1, true) ~= nil
	local max = v6 and 128 or 32
	bits = tonumber(bits) or max
	if bits > max then
		error("trusted: bad prefix length in " .. w)
	end
	local ok, net = pcall(smtp.net, addr, bits, bits)
	if not ok or type(net) ~= "string" then
		error("trusted: not an address or network: " .. w)
	end
	TRUSTED[#TRUSTED + 1] = { bits = bits, v6 = v6, net = net }
end

-- plain(ip) -> the IPv4 address inside an IPv4-mapped IPv6 one (a dual-stack
-- listener on [::]:25 reports IPv4 clients as "::ffff:192.0.2.7"), else ip
local function plain(ip)
	return string.match(ip, "^::[fF][fF][fF][fF]:(%d+%.%d+%.%d+%.%d+)$") or ip
end

-- is_trusted(ip) -> the trusted network ip is in, or nil
local function is_trusted(ip)
	local v6 = string.find(ip, ":", 1, true) ~= nil
	for _, t in ipairs(TRUSTED) do
		-- smtp.net uses the first number for IPv4 and the second for IPv6.
		if t.v6 == v6 and smtp.net(ip, t.bits, t.bits) == t.net then
			return t.net
		end
	end
	return nil
end

-- ---------------------------------------------------------------------------
-- Hooks
-- ---------------------------------------------------------------------------

-- At connect: look the client up, keep the result for on_rcpt.
--   conn.notes.dnsbl = { ip = "192.0.2.7", zone = "zen.spamhaus.org", answer = "127.0.0.2" }
-- (absent when the client is not listed).
function on_connect(conn)
	if conn.trusted then
		return -- the host already trusts this client
	end
	local ip = plain(conn.client_ip)
	local net = is_trusted(ip)
	if net then
		conn:log("%s is in trusted network %s, not looked up", ip, net)
		return
	end

	local listed, errors = dns.rbl(ip, ZONES)
	if not listed then
		-- The lookup could not even start (errors is then the reason).
		log.warn("lookup of %s failed: %s (not blocking)", ip, tostring(errors))
		return
	end

	-- A zone that could not answer is logged and otherwise ignored.
	for zone, err in pairs(errors or {}) do
		log.warn("lookup of %s in %s failed: %s (not blocking)", ip, zone, err)
	end

	-- Listed: remember the first zone in the order of `zones`, log them all.
	local found = {}
	for _, zone in ipairs(ZONES) do
		local answer = listed[zone]
		if answer then
			conn.notes.dnsbl = conn.notes.dnsbl or { ip = ip, zone = zone, answer = answer }
			found[#found + 1] = zone .. " (" .. answer .. ")"
		end
	end
	if #found > 0 then
		conn:log("%s is listed in %s", ip, table.concat(found, ", "))
	end
end

-- At each RCPT: refuse the recipient if the client is listed, except for an
-- authenticated client and for the allow_rcpt local parts.
function on_rcpt(tx, rcpt)
	local conn = tx.conn
	local hit = conn.notes.dnsbl
	if not hit then
		return -- not listed (or trusted, or not looked up): carry on
	end
	if conn.auth_user then
		conn:log("%s is listed in %s but logged in as %s: accepted",
			hit.ip, hit.zone, conn.auth_user)
		return
	end
	if ALLOW_RCPT[string.lower(rcpt.user or "")] then
		conn:log("%s is listed in %s: letting <%s> through (allow_rcpt)",
			hit.ip, hit.zone, rcpt.addr)
		return
	end
	conn:log("refusing <%s> from %s, listed in %s (%s)",
		rcpt.addr, hit.ip, hit.zone, hit.answer)
	return smtp.reject(REJECT_CODE,
		"Service unavailable; client host [" .. hit.ip .. "] blocked using " .. hit.zone)
end
