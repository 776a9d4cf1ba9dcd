package events

// A fast path for the common case of a well-formed job: a flat JSON
// object whose values are all plain strings (no escapes, ASCII only). It
// checks exactly the constraints of the job schemas, so whatever it
// accepts the schema accepts and decodes to the same value; anything it
// does not fully understand (escapes, non-ASCII, numbers, nesting,
// duplicate or unknown keys, a broken value) goes to the full schema
// validation, which also words the error. FuzzFastJob checks the
// equivalence.

// flatField is one key/value pair of a flat object; both are slices of
// the input without quotes.
type flatField struct{ key, val []byte }

// scanFlat reads one JSON object made only of plain string members from
// the start of data (after optional white space) into buf. It returns the
// members and the offset just after the closing brace; ok is false for
// anything else, which the caller must treat as "ask the full parser".
func scanFlat(data []byte, buf []flatField) (fields []flatField, end int, ok bool) {
	i := skipWS(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, 0, false
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		return buf, i + 1, true
	}
	fields = buf
	for {
		var key, val []byte
		if key, i, ok = scanPlainString(data, i); !ok {
			return nil, 0, false
		}
		i = skipWS(data, i)
		if i >= len(data) || data[i] != ':' {
			return nil, 0, false
		}
		i = skipWS(data, i+1)
		if val, i, ok = scanPlainString(data, i); !ok {
			return nil, 0, false
		}
		fields = append(fields, flatField{key: key, val: val})
		i = skipWS(data, i)
		if i >= len(data) {
			return nil, 0, false
		}
		switch data[i] {
		case ',':
			i = skipWS(data, i+1)
		case '}':
			return fields, i + 1, true
		default:
			return nil, 0, false
		}
	}
}

func skipWS(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// scanPlainString reads a JSON string at data[i] made only of printable
// ASCII other than the backslash (so its bytes are its value).
func scanPlainString(data []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(data) || data[i] != '"' {
		return nil, 0, false
	}
	start := i + 1
	for j := start; j < len(data); j++ {
		c := data[j]
		switch {
		case c == '"':
			return data[start:j], j + 1, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// Character classes of the job schemas' patterns.
func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// matchJobID: ^[A-Za-z0-9._:-]{1,128}$
func matchJobID(s []byte) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !isAlnum(c) && c != '.' && c != '_' && c != ':' && c != '-' {
			return false
		}
	}
	return true
}

// matchID64: ^[A-Za-z0-9_-]{1,64}$ (appid, openid)
func matchID64(s []byte) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !isAlnum(c) && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// matchCode: ^[!-~]{1,512}$
func matchCode(s []byte) bool {
	if len(s) < 1 || len(s) > 512 {
		return false
	}
	for _, c := range s {
		if c < '!' || c > '~' {
			return false
		}
	}
	return true
}

// matchState: ^[a-zA-Z0-9]{0,128}$
func matchState(s []byte) bool {
	if len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !isAlnum(c) {
			return false
		}
	}
	return true
}

// matchLang: enum zh_CN, zh_TW, en
func matchLang(s []byte) bool {
	switch string(s) {
	case "zh_CN", "zh_TW", "en":
		return true
	}
	return false
}

// onlyWS reports whether data[i:] is JSON white space.
func onlyWS(data []byte, i int) bool { return skipWS(data, i) == len(data) }

// fastField is one property a fast decoder accepts: its key, the schema's
// constraint on its value, and where the value goes.
type fastField struct {
	key      string
	match    func([]byte) bool
	dst      *string
	required bool
}

// fastDecode fills the fields' destinations from a plain flat object that
// satisfies the schema the fields describe (no unknown, duplicate or
// missing keys). false means "use the full path": the message may still be
// valid, and the destinations may be partly written.
func fastDecode(data []byte, spec []fastField) bool {
	if len(data) > MaxJobSize {
		return false
	}
	var buf [8]flatField
	fields, end, ok := scanFlat(data, buf[:0])
	if !ok || !onlyWS(data, end) {
		return false
	}
	var vals [8][]byte // by spec index
	if len(spec) > len(vals) {
		return false
	}
	var seen uint32
	for _, f := range fields {
		i := -1
		for k := range spec {
			if spec[k].key == string(f.key) {
				i = k
				break
			}
		}
		if i < 0 || seen&(1<<i) != 0 || !spec[i].match(f.val) {
			return false
		}
		seen |= 1 << i
		vals[i] = f.val
	}
	for i := range spec {
		if spec[i].required && seen&(1<<i) == 0 {
			return false
		}
	}
	// One string for the whole object, the fields slices of it: one
	// allocation per job instead of one per field.
	whole := string(data[:end])
	for i := range spec {
		if seen&(1<<i) != 0 {
			*spec[i].dst = within(whole, data, vals[i])
		}
	}
	return true
}

// within returns the part of whole (a copy of data) where part (a slice
// of data) lies.
func within(whole string, data, part []byte) string {
	start := cap(data) - cap(part)
	return whole[start : start+len(part)]
}

// fastUserLookup decodes a plain, valid user.lookup; ok false means "use
// the full path" (the job may still be valid).
func fastUserLookup(data []byte) (v UserLookup, ok bool) {
	spec := [...]fastField{
		{"job_id", matchJobID, &v.JobID, true},
		{"appid", matchID64, &v.AppID, true},
		{"openid", matchID64, &v.OpenID, true},
		{"lang", matchLang, &v.Lang, false},
	}
	if !fastDecode(data, spec[:]) {
		return UserLookup{}, false
	}
	return v, true
}

// fastOAuthCodeReceived decodes a plain, valid oauth.code.received; ok
// false means "use the full path".
func fastOAuthCodeReceived(data []byte) (v OAuthCodeReceived, ok bool) {
	spec := [...]fastField{
		{"job_id", matchJobID, &v.JobID, true},
		{"appid", matchID64, &v.AppID, true},
		{"code", matchCode, &v.Code, true},
		{"state", matchState, &v.State, false},
		{"lang", matchLang, &v.Lang, false},
	}
	if !fastDecode(data, spec[:]) {
		return OAuthCodeReceived{}, false
	}
	return v, true
}

// fastPeek is PeekJobIdentity for a plain flat object: ok false means
// "use the full path". Like the full path it reads only the first value
// and lets the last of duplicate keys win.
func fastPeek(data []byte) (jobID, appID string, ok bool) {
	var buf [8]flatField
	fields, end, ok := scanFlat(data, buf[:0])
	if !ok {
		return "", "", false
	}
	var jid, aid []byte
	var hasJ, hasA bool
	for _, f := range fields {
		switch string(f.key) {
		case "job_id":
			jid, hasJ = f.val, true
		case "appid":
			aid, hasA = f.val, true
		}
	}
	hasJ = hasJ && matchJobID(jid)
	hasA = hasA && matchID64(aid)
	if !hasJ && !hasA {
		return "", "", true
	}
	whole := string(data[:end]) // one string for both (see fastDecode)
	if hasJ {
		jobID = within(whole, data, jid)
	}
	if hasA {
		appID = within(whole, data, aid)
	}
	return jobID, appID, true
}
