-- ratecount.lua - at most `limit` messages per sending network per window,
-- counted in the daemon's store, so the count survives restarts (LMDB) or
-- is shared by every proxy behind a load balancer (Redis).
--
-- What it does
--   * At MAIL it counts one more message for the client's network (IPv4
--     /24, IPv6 /64 by default) in a counter that lives `window` seconds
--     from the network's first message (a fixed window).
--   * Past `limit` it answers 451 4.7.1 (try again later): the sender's
--     server retries, after the window has passed.
--   * Clients that logged in (SMTP AUTH) and the `trusted` networks are
--     not counted.
--   * When the store fails (Redis down, no answer in store_timeout), mail
--     goes on and the log says why: an outage of the counter must not stop
--     mail.
--
-- Configuration: every key but kv_store is optional.
--
--   [lua ratecount]
--   script   = /etc/portcullis/ratecount.lua
--   kv_store = redis://10.0.0.5:6379/1      # or lmdb:/var/lib/portcullis/lua, or default
--   limit    = 200                          # messages per network and window
--   window   = 3600                         # seconds
--   v4bits   = 24                           # the network of an IPv4 client
--   v6bits   = 64                           # the network of an IPv6 client
--   trusted  = 127.0.0.0/8 ::1/128          # networks never counted; "none" for none
--
-- With kv_store = memory (the default) it still works, per process and
-- forgotten at each restart.
--
-- Try it with `observe = yes` in the section first: the log tells you who
-- would have been deferred.

-- ---------------------------------------------------------------------------
-- Settings, read once when the script is loaded (and again on reload).
-- ---------------------------------------------------------------------------

local function number(key, default, min)
	local v = tonumber(config[key] or default)
	if v == nil or v < min or v ~= math.floor(v) then
		error(string.format("%s: expected a whole number of at least %d, not %q", key, min,
			config[key]))
	end
	return v
end

local LIMIT = number("limit", "200", 1)
local WINDOW = number("window", "3600", 1)
local V4BITS = number("v4bits", "24", 1)
local V6BITS = number("v6bits", "64", 1)
if V4BITS > 32 or V6BITS > 128 then
	error("v4bits is at most 32 and v6bits at most 128")
end

-- The trusted networks, as smtp.net() writes them: "10.0.0.0/8".
local TRUSTED = {}
for w in string.gmatch(config.trusted or "127.0.0.0/8 ::1/128", "%S+") do
	if w ~= "none" then
		local ip, bits = string.match(w, "^([^/]+)/(%d+)$")
		bits = tonumber(bits)
		local net = ip and bits and smtp.net(ip, bits, bits)
		if net == nil or net ~= w then
			error("trusted: not a network (address/bits, no bits set past the prefix): " .. w)
		end
		TRUSTED[#TRUSTED + 1] = { net = net, bits = bits, v6 = string.find(ip, ":", 1, true) ~= nil }
	end
end

local function trusted(ip)
	local v6 = string.find(ip, ":", 1, true) ~= nil
	for _, t in ipairs(TRUSTED) do
		if t.v6 == v6 and smtp.net(ip, t.bits, t.bits) == t.net then
			return true
		end
	end
	return false
end

-- ---------------------------------------------------------------------------
-- The hook.
-- ---------------------------------------------------------------------------

function on_mail(tx, sender)
	local conn = tx.conn
	if conn.auth_user or trusted(conn.client_ip) then
		return
	end
	local net = smtp.net(conn.client_ip, V4BITS, V6BITS)
	if net == nil then
		return
	end
	-- The key is ours: other sections and plugins on the same store use
	-- prefixes of their own.
	local n, err = kv.incr("ratecount:" .. net, 1, WINDOW)
	if n == nil then
		log.warn("ratecount: cannot count %s: %s", net, err)
		return
	end
	if n > LIMIT then
		conn:log("ratecount: %s sent %d messages in %d s (limit %d)", net, n, WINDOW, LIMIT)
		return smtp.tempfail("451 4.7.1", "Too much mail from your network, try again later")
	end
end
