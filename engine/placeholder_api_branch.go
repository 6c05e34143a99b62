package engine

// Placeholder so the CLI compiles before the engine wiring exists. Delete
// this file when engine.go provides Engine, New and Run.

import (
	"context"
	"errors"

	"github.com/hashicorp/go-hclog"
)

// Engine is one running role.
type Engine struct{}

// New builds an engine from cfg.
func New(cfg Config, logger hclog.Logger) (*Engine, error) {
	return nil, errors.New("engine not wired yet")
}

// Run runs the engine until ctx is cancelled.
func (e *Engine) Run(ctx context.Context) error {
	return errors.New("engine not wired yet")
}
