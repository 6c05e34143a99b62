package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/kds-engine/kds-engine/engine/kdsbench"
)

func syncCmd(g *globals) *cobra.Command {
	var c kdsbench.SyncConfig
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Initial sync of N resources both ways vs go-control-plane's delta server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, g, func(ctx context.Context, o kdsbench.Options) (*kdsbench.Report, error) {
				return kdsbench.Sync(ctx, o, c)
			})
		},
	}
	cmd.Flags().IntSliceVar(&c.Ns, "n", []int{10000, 100000}, "resource counts")
	cmd.Flags().IntVar(&c.Size, "size", 1024, "spec size in bytes")
	return cmd
}

var _ = time.Second
