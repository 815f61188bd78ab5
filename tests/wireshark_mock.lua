-- A stand-in for the part of Wireshark's Lua API that tools/thecal.lua uses, for
-- tests/test_dissector.py. It is strict where Wireshark is: a field used before it is
-- registered, a range past the end of its buffer, an integer read of the wrong width, a
-- value of the wrong type, or a boolean with a display but no mask all raise, as they
-- raise (or show a Lua error) in Wireshark. It runs on Lua 5.1 to 5.4.
--
-- The dissector's tree comes back as plain tables: each item has `abbr` (nil for text
-- items), `label` (as Wireshark would show it), `value` (a string: decimal for integers,
-- "true"/"false", the text, bytes as hex), `experts` and `children`.

local mock = { tables = {}, registered = {}, experts = {} }

base = { NONE = 0, DEC = 1, HEX = 2, OCT = 3, DEC_HEX = 4, HEX_DEC = 5, LOCAL = 1000, UTC = 1001, DOY_UTC = 1002 }
ENC_BIG_ENDIAN = 0
ENC_ASCII = 0
ENC_UTF_8 = 2
ENC_LITTLE_ENDIAN = 0x80000000
expert = {
    group = { CHECKSUM = 0x01000000, SEQUENCE = 0x02000000, RESPONSE_CODE = 0x03000000, REQUEST_CODE = 0x04000000,
              UNDECODED = 0x05000000, REASSEMBLE = 0x06000000, MALFORMED = 0x07000000, DEBUG = 0x08000000,
              PROTOCOL = 0x09000000, SECURITY = 0x0a000000, COMMENTS_GROUP = 0x0b000000 },
    severity = { COMMENT = 0x00100000, CHAT = 0x00200000, NOTE = 0x00400000, WARN = 0x00600000,
                 ERROR = 0x00800000 },
}
wtap_encap = { USER0 = 45 }

local function check(cond, msg) if not cond then error(msg, 3) end end

-- ---------------------------------------------------------------- 64-bit integers

local TWO32 = 4294967296

-- Decimal text of hi * 2^32 + lo without losing digits (Lua 5.1 and 5.2 have only doubles).
local function u64_text(hi, lo)
    if hi == 0 then return string.format("%.0f", lo) end
    local digits = {}
    while hi > 0 or lo > 0 do
        local r = hi % 10
        hi = (hi - r) / 10
        local cur = r * TWO32 + lo
        local d = cur % 10
        lo = (cur - d) / 10
        table.insert(digits, 1, string.format("%d", d))
    end
    return table.concat(digits)
end

local U64 = {}
U64.__index = U64
U64.__tostring = function(self)
    if self.signed and self.hi >= 2147483648 then  -- negative: two's complement magnitude
        local lo = (TWO32 - self.lo) % TWO32
        local hi = TWO32 - 1 - self.hi + (self.lo == 0 and 1 or 0)
        return "-" .. u64_text(hi, lo)
    end
    return u64_text(self.hi, self.lo)
end
function U64:tonumber()
    local v = self.hi * TWO32 + self.lo
    if self.signed and self.hi >= 2147483648 then v = v - TWO32 * TWO32 end
    return v
end

NSTime = {}
function NSTime.new(secs, nsecs)
    check(type(secs) == "number" and type(nsecs) == "number", "NSTime.new: numbers expected")
    -- Wireshark reads both with luaL_optinteger: Lua 5.3+ refuses a fractional float there
    check(secs == math.floor(secs) and nsecs == math.floor(nsecs), "NSTime.new: number has no integer representation")
    return setmetatable({ secs = secs, nsecs = nsecs }, { __tostring = function(t)
        return string.format("%d.%09d", t.secs, t.nsecs)
    end, __index = { is_nstime = true } })
end

ByteArray = {}
local BA = {}
BA.__index = BA
function BA:len() return #self.data end
function BA:get_index(i) return self.data:byte(i + 1) end
function BA:tohex()
    return (self.data:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end
function ByteArray.new(hex)
    local data = ""
    if hex then data = hex:gsub("%s", ""):gsub("..", function(h) return string.char(tonumber(h, 16)) end) end
    return setmetatable({ data = data }, BA)
end
local function bytearray(s) return setmetatable({ data = s }, BA) end

-- ---------------------------------------------------------------- Tvb and TvbRange

local Tvb, TvbRange = {}, {}
Tvb.__index = Tvb
TvbRange.__index = TvbRange

local function new_tvb(data) return setmetatable({ data = data }, Tvb) end
mock.new_tvb = new_tvb

function Tvb:len() return #self.data end
function Tvb:range(off, len)
    off = off or 0
    len = len or -1
    check(off >= 0 and off <= #self.data, "Range is out of bounds")
    if len == -1 then len = #self.data - off end
    check(len >= 0 and off + len <= #self.data, "Range is out of bounds")
    return setmetatable({ source = self, off = off, n = len }, TvbRange)
end
Tvb.__call = function(self, off, len) return self:range(off, len) end
function Tvb:raw(off, len)
    local r = self:range(off, len)
    return self.data:sub(r.off + 1, r.off + r.n)
end

local function bytes_of(r) return r.source.data:sub(r.off + 1, r.off + r.n) end

local function unsigned(s, little)
    local v = 0
    if little then
        for i = #s, 1, -1 do v = v * 256 + s:byte(i) end
    else
        for i = 1, #s do v = v * 256 + s:byte(i) end
    end
    return v
end

function TvbRange:len() return self.n end
function TvbRange:offset() return self.off end
function TvbRange:raw() return bytes_of(self) end
function TvbRange:tvb() return new_tvb(bytes_of(self)) end
function TvbRange:bytes() return bytearray(bytes_of(self)) end
function TvbRange:uint()
    check(self.n >= 1 and self.n <= 4, "TvbRange:uint() does not handle " .. self.n .. " byte integers")
    return unsigned(bytes_of(self), false)
end
function TvbRange:le_uint()
    check(self.n >= 1 and self.n <= 4, "TvbRange:le_uint() does not handle " .. self.n .. " byte integers")
    return unsigned(bytes_of(self), true)
end
function TvbRange:le_int()
    local v = self:le_uint()
    local top = 2 ^ (8 * self.n)
    if v >= top / 2 then v = v - top end
    return math.floor(v)
end
local function u64_of(r, signed)
    check(r.n >= 1 and r.n <= 8, "TvbRange:le_(u)int64() does not handle " .. r.n .. " byte integers")
    local s = bytes_of(r)
    local lo = unsigned(s:sub(1, 4), true)
    local hi = #s > 4 and unsigned(s:sub(5), true) or 0
    return setmetatable({ hi = hi, lo = lo, signed = signed }, U64)
end
function TvbRange:le_uint64() return u64_of(self, false) end
function TvbRange:le_int64() return u64_of(self, true) end
function TvbRange:string(enc)
    check(enc == nil or enc == ENC_ASCII or enc == ENC_UTF_8, "TvbRange:string: unsupported encoding")
    return bytes_of(self)
end

-- ---------------------------------------------------------------- ProtoField and Proto

ProtoField = {}
local PF = {}
PF.__index = PF

local INT_SIZES = { uint8 = 1, uint16 = 2, uint32 = 4, uint64 = 8, int8 = 1, int16 = 2, int32 = 4, int64 = 8 }

local function new_field(ftype, abbr, name, opts)
    check(type(abbr) == "string" and abbr:match("^[%w_][%w_%.%-]*$"), "ProtoField: bad abbreviation " ..
        tostring(abbr))
    check(name == nil or type(name) == "string", "ProtoField " .. abbr .. ": name must be a string")
    check(opts.desc == nil or type(opts.desc) == "string", "ProtoField " .. abbr .. ": description must be a string")
    local pf = setmetatable({ ftype = ftype, abbr = abbr, name = name or abbr }, PF)
    for k, v in pairs(opts) do pf[k] = v end
    return pf
end

for ftype, _ in pairs(INT_SIZES) do
    ProtoField[ftype] = function(abbr, name, display, vs, mask, desc)
        check(display == nil or display == base.DEC or display == base.HEX or display == base.OCT or
            display == base.DEC_HEX or display == base.HEX_DEC, "ProtoField." .. ftype .. ": bad base")
        check(vs == nil or type(vs) == "table", "ProtoField." .. ftype .. ": valuestring must be a table")
        if ftype:sub(1, 3) == "int" then check(display ~= base.HEX, "ProtoField." .. ftype .. ": signed in hex") end
        return new_field(ftype, abbr, name, { display = display or base.DEC, vs = vs, mask = mask, desc = desc })
    end
end
function ProtoField.bool(abbr, name, display, tfs, mask, desc)
    if mask == nil or mask == 0 then
        check(display == nil or display == base.NONE,
            "ProtoField.bool: fielddisplay must be base.NONE if bitmask is zero")
    else
        check(display == 8 or display == 16 or display == 24 or display == 32 or display == 64,
            "ProtoField.bool: fielddisplay must be the parent's width in bits with a bitmask")
    end
    return new_field("bool", abbr, name, { display = display, mask = mask, desc = desc })
end
function ProtoField.string(abbr, name, display, desc)
    return new_field("string", abbr, name, { desc = desc })
end
function ProtoField.bytes(abbr, name, display, desc)
    return new_field("bytes", abbr, name, { desc = desc })
end
function ProtoField.none(abbr, name, desc)
    return new_field("none", abbr, name, { desc = desc })
end
function ProtoField.absolute_time(abbr, name, display, desc)
    check(display == nil or display == base.LOCAL or display == base.UTC or display == base.DOY_UTC,
        "ProtoField.absolute_time: bad base")
    return new_field("absolute_time", abbr, name, { desc = desc })
end

ProtoExpert = {}
function ProtoExpert.new(abbr, text, group, severity)
    check(type(abbr) == "string" and type(text) == "string", "ProtoExpert.new: abbr and text must be strings")
    check(type(group) == "number" and type(severity) == "number", "ProtoExpert.new: bad group or severity")
    return { is_expert = true, abbr = abbr, text = text, group = group, severity = severity }
end

local PROTO = {}
PROTO.__index = function(self, k) return rawget(self, "_" .. k) end
PROTO.__newindex = function(self, k, v)
    if k == "fields" then
        check(type(v) == "table", "Proto.fields: a table expected")
        for _, pf in pairs(v) do
            check(getmetatable(pf) == PF, "Proto.fields: not a ProtoField")
            check(not mock.registered[pf.abbr], "Proto.fields: " .. pf.abbr .. " registered twice")
            mock.registered[pf.abbr] = pf
        end
    elseif k == "experts" then
        for _, e in pairs(v) do
            check(type(e) == "table" and e.is_expert, "Proto.experts: not a ProtoExpert")
            check(not mock.experts[e.abbr], "Proto.experts: " .. e.abbr .. " registered twice")
            mock.experts[e.abbr] = e
        end
    elseif k == "dissector" then
        check(type(v) == "function", "Proto.dissector must be a function")
    else
        error("Proto: no attribute " .. tostring(k), 2)
    end
    rawset(self, "_" .. k, v)
end

function Proto(name, desc)
    check(type(name) == "string" and type(desc) == "string", "Proto: name and description must be strings")
    local p = setmetatable({ _name = name, _description = desc, is_proto = true }, PROTO)
    mock.proto = p
    return p
end

DissectorTable = {}
function DissectorTable.get(tname)
    check(tname == "wtap_encap" or tname == "udp.port" or tname == "tcp.port", "no dissector table " .. tname)
    return {
        add = function(self, pattern, proto)
            check(type(pattern) == "number", "DissectorTable:add: pattern must be a number here")
            check(type(proto) == "table" and proto.is_proto, "DissectorTable:add: a Proto expected")
            mock.tables[tname] = mock.tables[tname] or {}
            mock.tables[tname][pattern] = proto
        end,
    }
end

-- ---------------------------------------------------------------- TreeItem

local Item = {}
Item.__index = Item

local function new_item(abbr, label, value)
    return setmetatable({ abbr = abbr, label = label, value = value, children = {}, experts = {} }, Item)
end
mock.new_root = function() return new_item(nil, "root", nil) end

local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end

-- The value a field reads from its range, as Wireshark would (exact widths only: the
-- dissector has no reason to read a field of another width).
local function read_value(pf, r, little)
    local t = pf.ftype
    if INT_SIZES[t] then
        check(r ~= nil and r.n == INT_SIZES[t], "field " .. pf.abbr .. ": " .. t .. " needs " .. INT_SIZES[t] ..
            " bytes, the range has " .. (r and r.n or 0))
        if INT_SIZES[t] == 8 then
            local v = little and r:le_uint64() or error("big-endian 64-bit reads are not used")
            v.signed = t == "int64"
            return tostring(v), v
        end
        local v = little and r:le_uint() or r:uint()
        if t:sub(1, 3) == "int" and v >= 2 ^ (8 * r.n - 1) then v = v - 2 ^ (8 * r.n) end
        return string.format("%d", v), v
    elseif t == "bool" then
        check(r ~= nil and r.n >= 1 and r.n <= 8, "field " .. pf.abbr .. ": bool needs 1 to 8 bytes")
        local v = little and r:le_uint() or r:uint()
        if pf.mask and pf.mask ~= 0 then v = math.floor(v / pf.mask) % 2 end
        return v ~= 0 and "true" or "false", v
    elseif t == "string" then
        return bytes_of(r), nil
    elseif t == "bytes" then
        return hex(bytes_of(r)), nil
    elseif t == "none" then
        return nil, nil
    end
    error("field " .. pf.abbr .. ": a " .. t .. " needs an explicit value")
end

local function label_of(pf, value, raw)
    if pf.ftype == "none" then return pf.name end
    if pf.vs and raw ~= nil then
        local name = pf.vs[raw]
        local num = pf.display == base.HEX and string.format("0x%02x", raw) or string.format("%d", raw)
        return string.format("%s: %s (%s)", pf.name, name or "Unknown", num)
    end
    if pf.ftype == "bool" then return pf.name .. ": " .. (value == "true" and "True" or "False") end
    return pf.name .. ": " .. tostring(value)
end

local function add_any(self, little, a, b, c, d)
    local item
    if type(a) == "table" and a.is_proto then
        check(b == nil or getmetatable(b) == TvbRange, "TreeItem:add: a TvbRange expected after the Proto")
        item = new_item(a._name, c or a._description, nil)
    elseif getmetatable(a) == PF then
        check(mock.registered[a.abbr] == a, "TreeItem:add: field " .. a.abbr .. " is not registered")
        check(b == nil or getmetatable(b) == TvbRange, "TreeItem:add: a TvbRange expected after the field")
        local value, raw
        if c ~= nil then
            local t = a.ftype
            if t == "string" then
                check(type(c) == "string", "TreeItem:add: " .. a.abbr .. " needs a string value")
                value = c
            elseif t == "absolute_time" then
                check(type(c) == "table" and c.is_nstime, "TreeItem:add: " .. a.abbr .. " needs an NSTime value")
                value = tostring(c)
            elseif INT_SIZES[t] then
                check(type(c) == "number", "TreeItem:add: " .. a.abbr .. " needs a number value")
                value, raw = string.format("%d", c), c
            else
                error("TreeItem:add: explicit values for " .. t .. " fields are not used", 2)
            end
        else
            check(b ~= nil or a.ftype == "none", "TreeItem:add: " .. a.abbr .. " needs a range or a value")
            value, raw = read_value(a, b, little)
        end
        if type(raw) == "table" then raw = nil end
        item = new_item(a.abbr, d or label_of(a, value, raw), value)
    elseif getmetatable(a) == TvbRange then
        check(type(b) == "string", "TreeItem:add: a text item needs its label")
        item = new_item(nil, b, nil)
    else
        error("TreeItem:add: a Proto, ProtoField or TvbRange expected, got " .. type(a), 3)
    end
    table.insert(self.children, item)
    return item
end

function Item:add(...) return add_any(self, false, ...) end
function Item:add_le(...) return add_any(self, true, ...) end
function Item:add_packet_field(pf, r, enc)
    check(getmetatable(pf) == PF, "TreeItem:add_packet_field: a ProtoField expected")
    check(type(enc) == "number", "TreeItem:add_packet_field: an encoding is required")
    local little = enc == ENC_LITTLE_ENDIAN
    return add_any(self, little, pf, r)
end
function Item:append_text(s)
    check(type(s) == "string", "TreeItem:append_text: a string expected")
    self.label = self.label .. s
    return self
end
function Item:set_text(s) self.label = s return self end
function Item:set_generated() self.generated = true return self end
function Item:add_proto_expert_info(e, text)
    check(type(e) == "table" and e.is_expert, "TreeItem:add_proto_expert_info: a ProtoExpert expected")
    check(mock.experts[e.abbr] == e, "TreeItem:add_proto_expert_info: " .. e.abbr .. " is not registered")
    table.insert(self.experts, { abbr = e.abbr, text = text or e.text })
    return self
end

-- ---------------------------------------------------------------- running a dissection

local COLUMNS = { protocol = true, info = true, src = true, dst = true }

function mock.dissect(data)
    local cols = {}
    local pinfo = {
        cols = setmetatable({}, {
            __newindex = function(_, k, v)
                check(COLUMNS[k], "pinfo.cols: no column " .. tostring(k))
                check(type(v) == "string", "pinfo.cols." .. k .. ": a string expected")
                cols[k] = v
            end,
            __index = function(_, k) error("pinfo.cols." .. tostring(k) .. " is not read by this mock", 2) end,
        }),
    }
    local root = mock.new_root()
    local tvb = new_tvb(data)
    local consumed = mock.proto._dissector(tvb, pinfo, root)
    return root, cols, consumed
end

return mock
