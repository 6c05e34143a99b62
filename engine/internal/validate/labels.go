package validate

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/kds-engine/kds-engine/engine/internal/logsafe"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// Label rules: Kubernetes' syntax for label keys and values, so labels
// carry over between kds-engine and the systems around it unchanged.
const (
	// ReservedLabelPrefix starts the label keys only the engine may set.
	// A write or a synced resource carrying one is refused.
	ReservedLabelPrefix = "kds-engine.io/"
	// MaxLabelNameLength bounds a label key's name part and a label value.
	MaxLabelNameLength = 63
	// MaxLabelPrefixLength bounds a label key's prefix (a DNS subdomain).
	MaxLabelPrefixLength = 253
)

var (
	labelNameRE   = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelPrefixRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// LabelProblem says what is wrong with the label key=value, or "" when
// nothing is. A key is an optional prefix — a DNS subdomain of at most 253
// characters, then '/' — and a name of 1 to 63 characters: letters,
// digits, '-', '_' and '.', starting and ending with a letter or digit. A
// value is empty or follows the rule of names. Keys starting with
// ReservedLabelPrefix are refused: the engine sets those.
func LabelProblem(key, value string) string {
	quoted := logsafe.Peer(key)
	if !strings.HasPrefix(quoted, `"`) {
		quoted = `"` + quoted + `"`
	}
	if strings.HasPrefix(key, ReservedLabelPrefix) {
		return fmt.Sprintf("label %s: the prefix %s is reserved for labels the engine sets; choose another key", quoted, ReservedLabelPrefix)
	}
	prefix, name, hasPrefix := strings.Cut(key, "/")
	if !hasPrefix {
		prefix, name = "", key
	}
	switch {
	case hasPrefix && prefix == "":
		return fmt.Sprintf("label %s: the prefix before '/' is empty", quoted)
	case len(prefix) > MaxLabelPrefixLength:
		return fmt.Sprintf("label %s: the prefix is %d characters, at most %d are allowed", quoted, len(prefix), MaxLabelPrefixLength)
	case hasPrefix && !labelPrefixRE.MatchString(prefix):
		return fmt.Sprintf("label %s: the prefix must be a DNS subdomain: lower-case letters, digits, '-' and '.', each part starting and ending with a letter or digit", quoted)
	case name == "":
		return fmt.Sprintf("label %s: the name is empty", quoted)
	case len(name) > MaxLabelNameLength:
		return fmt.Sprintf("label %s: the name is %d characters, at most %d are allowed", quoted, len(name), MaxLabelNameLength)
	case !labelNameRE.MatchString(name):
		return fmt.Sprintf("label %s: the name may hold only letters, digits, '-', '_' and '.', and must start and end with a letter or digit", quoted)
	case len(value) > MaxLabelNameLength:
		return fmt.Sprintf("label %s: the value is %d characters, at most %d are allowed", quoted, len(value), MaxLabelNameLength)
	case value != "" && !labelNameRE.MatchString(value):
		return fmt.Sprintf("label %s: the value %s may hold only letters, digits, '-', '_' and '.', and must start and end with a letter or digit (or be empty)",
			quoted, logsafe.Peer(value))
	}
	return ""
}

// labelErrors returns one field error per bad label of labels, by key.
func labelErrors(labels map[string]string) []resource.FieldError {
	var fes []resource.FieldError
	for k, v := range labels {
		if msg := LabelProblem(k, v); msg != "" {
			fes = append(fes, resource.FieldError{Field: "labels", Message: msg})
		}
	}
	slices.SortFunc(fes, func(a, b resource.FieldError) int { return strings.Compare(a.Message, b.Message) })
	return fes
}
