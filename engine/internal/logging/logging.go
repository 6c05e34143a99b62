// Package logging builds the engine's root hclog.Logger from the two
// user-facing settings, log level and log format. Components receive the
// logger (or a named sub-logger of it) as a dependency; nothing here is
// global.
package logging

import (
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// Levels are the accepted log levels, most verbose first.
var Levels = []string{"trace", "debug", "info", "warn", "error"}

// Formats are the accepted log formats.
var Formats = []string{"text", "json"}

// ParseLevel returns the hclog level for one of Levels (case-insensitive).
func ParseLevel(level string) (hclog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(level)) {
	case "trace":
		return hclog.Trace, nil
	case "debug":
		return hclog.Debug, nil
	case "info":
		return hclog.Info, nil
	case "warn":
		return hclog.Warn, nil
	case "error":
		return hclog.Error, nil
	}
	return hclog.NoLevel, fmt.Errorf("log-level: %q is not a level (accepted: %s)", level, strings.Join(Levels, ", "))
}

// ValidateFormat reports whether format is one of Formats (case-insensitive).
func ValidateFormat(format string) error {
	switch strings.ToLower(strings.TrimSpace(format)) {
	case "text", "json":
		return nil
	}
	return fmt.Errorf("log-format: %q is not a format (accepted: %s)", format, strings.Join(Formats, ", "))
}

// New returns a logger named "kds-engine" writing to out at the given level
// ("trace", "debug", "info", "warn" or "error") in the given format ("text"
// or "json"). An invalid level or format is an error that names the setting
// and the accepted values. The returned logger is safe for concurrent use;
// out must be safe for the writes hclog makes (it serialises its own).
func New(level, format string, out io.Writer) (hclog.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	if err := ValidateFormat(format); err != nil {
		return nil, err
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "kds-engine",
		Level:      lvl,
		Output:     out,
		JSONFormat: strings.EqualFold(strings.TrimSpace(format), "json"),
	}), nil
}
