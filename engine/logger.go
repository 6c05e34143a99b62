package engine

import (
	"io"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/engine/internal/logging"
)

// NewLogger returns the root logger for a role from the log-level ("trace",
// "debug", "info", "warn", "error") and log-format ("text", "json")
// settings. An invalid value is an error naming the setting and the accepted
// values. It exists so the CLI, which cannot import engine/internal, builds
// the same logger the engine's own tests do.
func NewLogger(level, format string, out io.Writer) (hclog.Logger, error) {
	return logging.New(level, format, out)
}
