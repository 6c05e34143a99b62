package pgstore

import (
	"net/url"
	"regexp"
	"strings"
)

// redacted replaces a password wherever one is shown.
const redacted = "xxxxx"

// dsnPassword matches password=VALUE in a key=value connection string,
// VALUE bare or single-quoted (with backslash escapes).
var dsnPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']\S*)`)

// RedactURL returns the PostgreSQL connection string s, in URL form
// (postgres://user:password@host/db?...) or key=value form
// (host=... password=...), with every password replaced by "xxxxx": the
// user info's password and a password query parameter of a URL, and a
// password key of a key=value string. Everything else is kept, so the
// result still says where the store is. A string that is neither is
// returned with anything after "password" up to the next separator
// replaced, rather than verbatim.
func RedactURL(s string) string {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err == nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), redacted)
			}
			q := u.Query()
			if q.Has("password") {
				q.Set("password", redacted)
				u.RawQuery = q.Encode()
			}
			return u.String()
		}
		// Unparsable URL: hide the user info wholesale.
		rest := s[strings.Index(s, "://")+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			s = s[:len(s)-len(rest)] + redacted + rest[at:]
		}
	}
	return dsnPassword.ReplaceAllString(s, "${1}"+redacted)
}
