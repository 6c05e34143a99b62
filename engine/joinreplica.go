package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// ErrReplicaTrustMissing is wrapped by Run's error when a global on
// PostgreSQL would create a zone token signing key or cluster id of its
// own for a database that global replicas already use: it would refuse the
// zone tokens the others accept, which shows only when zones fail over to
// it. Nothing is created; the data dir needs the other replicas' files.
var ErrReplicaTrustMissing = errors.New("zone token signing key or cluster id missing on a replica of a database already in use")

// joinTimeout bounds reading whether the database is in use.
const joinTimeout = 5 * time.Second

// checkJoiningReplica returns an error wrapping ErrReplicaTrustMissing when
// the store is PostgreSQL, the default cluster id or signing key file in
// the data dir does not exist (and no --cluster-id or
// --token-signing-key-file replaces it), and the database is already in
// use: it holds commits or zone session leases. A new database (nothing
// written, no zone connected) may be started on by a first replica that
// creates both files.
func (e *Engine) checkJoiningReplica() error {
	if e.cfg.Store != StorePostgres || e.cfg.Role != RoleGlobal {
		return nil
	}
	var missing []string
	if e.cfg.ClusterID == "" {
		if _, err := os.Stat(ClusterIDFile(e.cfg.DataDir)); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, ClusterIDFile(e.cfg.DataDir))
		}
	}
	if e.cfg.TokenSigningKeyFile == "" {
		if _, err := os.Stat(SigningKeyFile(e.cfg.DataDir, "")); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, SigningKeyFile(e.cfg.DataDir, ""))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	rev, leases := e.raw.Revision(), 0
	if e.live != nil && e.live.leases != nil {
		ctx, cancel := context.WithTimeout(context.Background(), joinTimeout)
		ls, err := e.live.leases.Leases(ctx)
		cancel()
		if err == nil {
			leases = len(ls)
		}
	}
	if rev == 0 && leases == 0 {
		return nil // a new database: this is its first replica
	}
	target := "the PostgreSQL database"
	if t, ok := e.raw.(interface{ Target() string }); ok {
		target = "the PostgreSQL database at " + t.Target()
	}
	verb := "does"
	if len(missing) > 1 {
		verb = "do"
	}
	return fmt.Errorf("%w: %s %s not exist, and %s is already used by global replicas (revision %d, %d zone session leases): "+
		"with a cluster id or signing key of its own this replica would refuse the zone tokens the others accept. "+
		"Copy cluster-id and zone-token-signing.key from another replica's data dir into %s "+
		"(or set --cluster-id and --token-signing-key-file to the ones the others use) and start again; "+
		"if no replica has them any more, create new ones with `kds-engine token generate --data-dir %s --zone NAME` and give every zone a new token",
		ErrReplicaTrustMissing, strings.Join(missing, " and "), verb, target, rev, leases, e.cfg.DataDir, e.cfg.DataDir)
}
