package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/kds-engine/kds-engine/cmd/kds-engine/internal/config"
	"github.com/kds-engine/kds-engine/engine"
)

type tokenFlags struct {
	zone           string
	validFor       time.Duration
	dataDir        string
	signingKeyFile string
	clusterID      string
	output         string
}

func (a *App) tokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage zone tokens",
		Args:  cobra.NoArgs,
	}
	var f tokenFlags
	gen := &cobra.Command{
		Use:   "generate --zone NAME",
		Short: "Sign a token for a zone with global's signing key",
		Long: "Sign a token for a zone with global's token signing key and print it (or write it to -o FILE, mode 0600).\n" +
			"Run it on global's machine with global's --data-dir (or --token-signing-key-file and --cluster-id); the zone\n" +
			"presents the token from its --token-file. Without --token-signing-key-file the key is\n" +
			"DATA_DIR/zone-token-signing.key, created when missing (global creates and loads the same file). The token\n" +
			"names the global it is for (its audience): --cluster-id, or the id in DATA_DIR/cluster-id, created when\n" +
			"missing (global does the same). The data dir, key file and cluster id also come from KDS_ENGINE_DATA_DIR,\n" +
			"KDS_ENGINE_TOKEN_SIGNING_KEY_FILE and KDS_ENGINE_CLUSTER_ID, like global's.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.tokenGenerate(cmd, f) },
	}
	fs := gen.Flags()
	fs.StringVar(&f.zone, "zone", "", "the zone the token is for (required)")
	fs.DurationVar(&f.validFor, "valid-for", engine.DefaultTokenValidity, "how long the token is valid")
	fs.StringVar(&f.dataDir, "data-dir", "kds-data/global", "global's data dir, holding the signing key (env KDS_ENGINE_DATA_DIR)")
	fs.StringVar(&f.signingKeyFile, "token-signing-key-file", "",
		"global's signing key (default: DATA_DIR/zone-token-signing.key) (env KDS_ENGINE_TOKEN_SIGNING_KEY_FILE)")
	fs.StringVar(&f.clusterID, "cluster-id", "", "global's cluster id, the token's audience (default: the id in DATA_DIR/cluster-id) (env KDS_ENGINE_CLUSTER_ID)")
	fs.StringVarP(&f.output, "output", "o", "", "write the token to this file (mode 0600) instead of stdout")

	var format string
	inspect := &cobra.Command{
		Use:   "inspect [FILE|-]",
		Short: "Show a zone token's zone, id, key id and validity (not verified)",
		Long: "Show what a zone token says about itself: its zone, its id (what --token-revocation-file lists to revoke it),\n" +
			"the id of the key that signed it, and when it was issued and expires. The token is read from FILE, or from\n" +
			"stdin with - or no argument. Its signature is not checked: only global can tell whether it would be accepted.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return a.tokenInspect(args, format) },
	}
	inspect.Flags().StringVarP(&format, "output", "o", "text", "output format: text or json")
	cmd.AddCommand(gen, inspect)
	return cmd
}

func (a *App) tokenInspect(args []string, format string) error {
	const verb = "token inspect"
	if format != "text" && format != "json" {
		return usageError(fmt.Errorf("%s: -o %q: want text or json", verb, format))
	}
	src, read := "stdin", func() ([]byte, error) { return io.ReadAll(io.LimitReader(a.Stdin, 1<<20)) }
	if len(args) == 1 && args[0] != "-" {
		src, read = args[0], func() ([]byte, error) { return os.ReadFile(args[0]) }
	}
	raw, err := read()
	if err != nil {
		return failed(fmt.Errorf("%s: read %s: %w", verb, src, err))
	}
	info, err := engine.InspectZoneToken(string(raw))
	if err != nil {
		return failed(fmt.Errorf("%s: %s: %w", verb, src, err))
	}
	if format == "json" {
		enc := json.NewEncoder(a.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	expiry := "expired"
	if left := time.Until(info.ExpiresAt); left > 0 {
		expiry = "in " + left.Truncate(time.Minute).String()
	}
	fmt.Fprintf(a.Stdout, "zone:       %s\nfor global: %s\nid:         %s\nkey id:     %s\nissued at:  %s\nexpires at: %s (%s)\n",
		info.Zone, info.Audience, info.ID, info.KeyID, info.IssuedAt.Format(time.RFC3339), info.ExpiresAt.Format(time.RFC3339), expiry)
	fmt.Fprintln(a.Stderr, "not verified: only global can tell whether it accepts this token")
	return nil
}

func (a *App) tokenGenerate(cmd *cobra.Command, f tokenFlags) error {
	const verb = "token generate"
	switch {
	case f.zone == "":
		return usageError(fmt.Errorf("%s: --zone is required", verb))
	case !config.ValidZoneName(f.zone):
		return usageError(fmt.Errorf("%s: --zone %q is not a valid zone name (accepted: %s)", verb, f.zone, config.ZoneNameAccepted))
	case f.validFor <= 0:
		return usageError(fmt.Errorf("%s: --valid-for %s must be positive (tokens always expire)", verb, f.validFor))
	}
	fromEnv := func(flag, env string, dst *string) {
		if !cmd.Flags().Changed(flag) {
			if v, ok := a.LookupEnv(env); ok && v != "" {
				*dst = v
			}
		}
	}
	fromEnv("data-dir", config.EnvPrefix+"DATA_DIR", &f.dataDir)
	fromEnv("token-signing-key-file", config.EnvPrefix+"TOKEN_SIGNING_KEY_FILE", &f.signingKeyFile)
	fromEnv("cluster-id", config.EnvPrefix+"CLUSTER_ID", &f.clusterID)
	if f.clusterID != "" && !config.ValidZoneName(f.clusterID) {
		return usageError(fmt.Errorf("%s: --cluster-id %q is not a valid cluster id (accepted: %s)", verb, f.clusterID, config.ClusterIDAccepted))
	}

	keyFile := engine.SigningKeyFile(f.dataDir, f.signingKeyFile)
	_, statErr := os.Stat(keyFile)
	created := f.signingKeyFile == "" && errors.Is(statErr, os.ErrNotExist)
	idFile := engine.ClusterIDFile(f.dataDir)
	_, statErr = os.Stat(idFile)
	idCreated := f.clusterID == "" && errors.Is(statErr, os.ErrNotExist)
	tok, err := engine.GenerateZoneToken(f.dataDir, f.signingKeyFile, f.clusterID, f.zone, f.validFor)
	if err != nil {
		return failed(fmt.Errorf("%s: %w", verb, err))
	}
	if created {
		fmt.Fprintf(a.Stderr, "%s: created the signing key %s; global must run with --data-dir %s to accept this token\n",
			verb, keyFile, f.dataDir)
	}
	if idCreated {
		fmt.Fprintf(a.Stderr, "%s: created the cluster id %s; global must run with --data-dir %s to accept this token\n",
			verb, idFile, f.dataDir)
	}
	info, err := engine.InspectZoneToken(tok)
	if err != nil {
		return failed(fmt.Errorf("%s: %w", verb, err))
	}
	id := info.ID
	if f.output == "" {
		fmt.Fprintln(a.Stdout, tok)
		fmt.Fprintf(a.Stderr, "token id %s (list it in global's --token-revocation-file to revoke the token)\n", id)
		return nil
	}
	if err := writePrivateFile(f.output, []byte(tok+"\n")); err != nil {
		return failed(fmt.Errorf("%s: %w", verb, err))
	}
	fmt.Fprintf(a.Stderr, "token of zone %s for global %s written to %s (valid for %s); token id %s (list it in global's --token-revocation-file to revoke the token)\n",
		f.zone, info.Audience, f.output, f.validFor, id)
	return nil
}

// writePrivateFile replaces path with data, mode 0600: it writes a temporary
// file next to it (created 0600) and renames it over path, so a reader never
// sees a partial token and the file is never readable by others.
func writePrivateFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
