package resource

// ValidTypeName reports whether s has the syntax of a registered type name:
// an upper-case letter, then at most 62 letters and digits (what the SDK
// accepts from a plugin). Names a peer sends are checked with it before
// anything is looked up or kept.
func ValidTypeName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
